"""Resizing a user model's layers to the widths recorded in a spec (after physical pruning).

Lives in ``models`` because both pruning (which writes the widths) and the codec (which
rebuilds the model from them) need it, and the codec must not import pruning.
"""

from __future__ import annotations

from torch import nn


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted path ``name`` by ``module``."""
    parent, _, leaf = name.rpartition(".")
    owner = model.get_submodule(parent) if parent else model
    old = getattr(owner, leaf, None)
    if isinstance(old, nn.Module):  # a fresh module is in train mode; keep the model's mode
        module.train(old.training)
    setattr(owner, leaf, module)


def apply_layer_shapes(model: nn.Module, shapes: dict[str, dict[str, int]]) -> nn.Module:
    """Resize a freshly built user model's layers to ``shapes`` (before loading its weights)."""
    for name, shape in shapes.items():
        m = model.get_submodule(name)
        groups = shape.get("groups", getattr(m, "groups", 1))  # depthwise convs shrink theirs
        if isinstance(m, nn.Conv2d) and (m.in_channels, m.out_channels, m.groups) != (
                shape["in"], shape["out"], groups):
            set_module(model, name, nn.Conv2d(shape["in"], shape["out"], m.kernel_size, m.stride,
                                               m.padding, m.dilation, groups, m.bias is not None,
                                               m.padding_mode))
        elif isinstance(m, nn.BatchNorm2d) and m.num_features != shape["out"]:
            set_module(model, name, nn.BatchNorm2d(shape["out"], m.eps, m.momentum, m.affine,
                                                    m.track_running_stats))
        elif isinstance(m, nn.Linear) and (m.in_features, m.out_features) != (shape["in"], shape["out"]):
            set_module(model, name, nn.Linear(shape["in"], shape["out"], m.bias is not None))
    return model
