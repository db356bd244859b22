"""Resizing a user model's layers to the widths recorded in a spec (after physical pruning).

Lives in ``models`` because both pruning (which writes the widths) and the codec (which
rebuilds the model from them) need it, and the codec must not import pruning.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``module``."""
    parent, _, leaf = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = getattr(owner, leaf, None)
    if isinstance(old, nn.Module):  # a fresh module is in train mode; keep the model's mode
        module.train(old.training)
    setattr(owner, leaf, module)


# the torch classes a spec can resize (a user's subclass is rebuilt as its torch base class)
# convs whose weight is (out, in, *kernel): the ones clustered, pruned by groups, chained
PLAIN_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, *PLAIN_CONVS)
NORMS = (nn.SyncBatchNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def layer_shapes(model: nn.Module) -> dict[str, dict]:
    """Channel/feature sizes of every conv (1-3d, transposed too), batch, instance and group
    norm, per-channel PReLU and linear layer, and the shapes of the tensors a user's own module
    holds: the spec of a shrunk user model."""
    shapes = {}
    for name, m in model.named_modules():
        if isinstance(m, CONVS):
            shapes[name] = {"in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, (*NORMS, *INSTANCE_NORMS)):
            shapes[name] = {"out": m.num_features}
        elif isinstance(m, nn.GroupNorm):
            shapes[name] = {"out": m.num_channels}
        elif isinstance(m, nn.PReLU) and m.num_parameters > 1:
            shapes[name] = {"out": m.num_parameters}
        elif isinstance(m, nn.Linear):
            shapes[name] = {"in": m.in_features, "out": m.out_features}
        elif not type(m).__module__.startswith("torch."):
            shapes.update(_own_tensors(name, m))
    return shapes


def _own_tensors(name: str, m: nn.Module) -> dict[str, dict]:
    """The shapes of a user module's own parameters and buffers (a layer scale, a per-channel
    gain): the pruner shrinks them with their channels, and a fresh instance must take them.
    A torch module of a kind not handled above is left out: its attributes (a layer norm's
    ``normalized_shape``) would not follow a replaced tensor."""
    own = {**dict(m.named_parameters(recurse=False)), **dict(m.named_buffers(recurse=False))}
    return {f"{name}.{leaf}" if name else leaf: {"out": int(t.shape[0]), "shape": list(t.shape)}
            for leaf, t in own.items() if t is not None and t.dim() >= 1}


def _resize_tensor(model: nn.Module, name: str, shape: list[int]) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = model.get_submodule(owner_name) if owner_name else model
    old = getattr(owner, leaf)
    if list(old.shape) == list(shape):
        return
    fresh = torch.empty(shape, dtype=old.dtype)
    if leaf in owner._parameters:
        owner._parameters[leaf] = nn.Parameter(fresh, requires_grad=old.requires_grad)
    elif leaf in owner._buffers:
        owner._buffers[leaf] = fresh
    else:
        raise KeyError(f"{name} is neither a parameter nor a buffer")


def _base(m: nn.Module, classes: tuple[type, ...]) -> type:
    return next(c for c in classes if isinstance(m, c))


def _resized(m: nn.Module, shape: dict[str, int]) -> nn.Module | None:
    """A fresh layer like ``m`` at ``shape``'s widths, or None when ``m`` already has them."""
    if isinstance(m, CONVS):
        groups = shape.get("groups", m.groups)  # depthwise convs shrink theirs
        if (m.in_channels, m.out_channels, m.groups) == (shape["in"], shape["out"], groups):
            return None
        kw = {"stride": m.stride, "padding": m.padding, "dilation": m.dilation, "groups": groups,
              "bias": m.bias is not None, "padding_mode": m.padding_mode}
        if m.transposed:
            kw["output_padding"] = m.output_padding
        return _base(m, CONVS)(shape["in"], shape["out"], m.kernel_size, **kw)
    if isinstance(m, NORMS) and m.num_features != shape["out"]:
        return _base(m, NORMS)(shape["out"], m.eps, m.momentum, m.affine, m.track_running_stats)
    if isinstance(m, INSTANCE_NORMS) and m.num_features != shape["out"]:
        return _base(m, INSTANCE_NORMS)(shape["out"], m.eps, m.momentum, m.affine,
                                        m.track_running_stats)
    if isinstance(m, nn.PReLU) and m.num_parameters != shape["out"]:
        return nn.PReLU(shape["out"])
    if isinstance(m, nn.GroupNorm) and m.num_channels != shape["out"]:
        return nn.GroupNorm(m.num_groups, shape["out"], m.eps, m.affine)
    if isinstance(m, nn.Linear) and (m.in_features, m.out_features) != (shape["in"], shape["out"]):
        return nn.Linear(shape["in"], shape["out"], m.bias is not None)
    return None


def apply_layer_shapes(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """Resize a freshly built user model's layers to ``shapes`` (before loading its weights)."""
    for name, shape in shapes.items():
        if "shape" in shape:  # a user module's own tensor
            _resize_tensor(model, name, shape["shape"])
            continue
        fresh = _resized(model.get_submodule(name), shape)
        if fresh is not None:
            set_module(model, name, fresh)
    return model


# the deprecated hook-based reparametrizations and their removers
_HOOKS = {"WeightNorm": nn.utils.remove_weight_norm, "SpectralNorm": nn.utils.remove_spectral_norm}


def fold_parametrizations(model: nn.Module) -> list[str]:
    """Replace every weight reparametrization (``weight_norm``, ``spectral_norm``, a user's
    ``parametrize.register_parametrization``) by the plain tensor it computes now, in place;
    returns the names of the layers changed.

    A compressed file stores a layer's weight as a codebook and indices: the tensors a
    parametrization computes it from (weight_norm's g and v) could be neither clustered nor
    pruned, and Torch-Pruning fails on them. The model computes the same function after.
    """
    folded = []
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m):
            _fold_parametrized(m)
            folded.append(name)
        for hook in list(m._forward_pre_hooks.values()):
            remove = _HOOKS.get(type(hook).__name__)
            if remove is not None and hasattr(hook, "name"):
                remove(m, hook.name)
                if name not in folded:
                    folded.append(name)
    return folded


@torch.no_grad()
def _fold_parametrized(m: nn.Module) -> None:
    # not parametrize.remove_parametrizations: it deletes the property from the module's
    # generated class, which a deep copy shares with the original, so folding a copy would
    # break the caller's model
    values = {t: getattr(m, t).detach().clone() for t in m.parametrizations}
    grads = {t: any(p.requires_grad for p in m.parametrizations[t].parameters()) for t in values}
    del m._modules["parametrizations"]
    m.__class__ = m.__class__.__bases__[0]
    for t, value in values.items():
        m.register_parameter(t, nn.Parameter(value, requires_grad=grads[t]))
