"""Physical removal: turn a masked network into the smallest dense network computing the same.

Two paths:

* CIFAR ResNets (spec-driven): residual channels are tracked as *live* or *dead*. A residual
  channel is dead only when every contribution to it is exactly zero: the stem's pruned
  filters, and in a block the pruned filters of ``conv2`` whose shortcut input is dead or an
  option-A padding channel. Dead channels are removed everywhere they are read; live ones
  stay, and a ``conv2`` that lost filters writes its remaining outputs into the residual
  stream through an index map. Torch-Pruning and the FPGM code get this wrong (REFERENCES.md):
  the former breaks the option-A shortcut, the latter never shrinks the network at all.
* Any other model: a masked conv is shrunk when its output provably reaches only one consumer
  through channel-wise ops (its batch norm, activations, pooling, dropout), and that consumer
  is an ungrouped conv or a flatten + linear. Anything else keeps the layer whole, and the
  report says which layer and why.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from rlcompress.models import build_model
from rlcompress.models.resnet_cifar import ARCH, shortcut_map
from rlcompress.models.shapes import (  # noqa: F401 - re-exported
    apply_layer_shapes,
    layer_shapes,
    set_module,
)
from rlcompress.pruning.masks import FilterMasks


@dataclass
class ShrinkReport:
    """What physical removal did: kept channels per layer and the layers it left whole."""

    kept: dict[str, int] = field(default_factory=dict)
    kept_whole: dict[str, str] = field(default_factory=dict)


def _effective_keep(masks: FilterMasks, conv: str, n: int) -> torch.Tensor:
    """Filters whose output is not provably zero: a mask counts only with its batch norm."""
    if conv in masks.keep and conv in masks.bn_of:
        return masks.keep[conv].clone()
    return torch.ones(n, dtype=torch.bool)


def _copy_bn(src: nn.BatchNorm2d, dst: nn.BatchNorm2d, idx: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(dst, name).data.copy_(getattr(src, name).data[idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _positions(alive: torch.Tensor) -> torch.Tensor:
    """Map old channel index -> new index among the live channels (-1 for dead)."""
    return torch.cumsum(alive.long(), 0) - 1


@torch.no_grad()
def shrink_resnet(model: nn.Module, spec: dict, masks: FilterMasks) -> tuple[nn.Module, dict]:
    """Physically prune a masked CIFAR ResNet; returns the smaller model and its spec."""
    if spec.get("arch") != ARCH:
        raise ValueError(f"shrink_resnet needs a {ARCH} spec, got {spec.get('arch')!r}")
    new = copy.deepcopy(spec)
    stem_keep = _effective_keep(masks, "conv1", model.conv1.out_channels)
    new["stem"] = int(stem_keep.sum())
    alive, plans = stem_keep, []
    blocks = [b for s in range(len(spec["stages"])) for b in getattr(model, f"layer{s + 1}")]
    for i, (block, bspec) in enumerate(zip(blocks, spec["blocks"], strict=True)):
        prefix = _block_name(spec, i)
        mid_keep = _effective_keep(masks, f"{prefix}.conv1", block.conv1.out_channels)
        c2_keep = _effective_keep(masks, f"{prefix}.conv2", block.conv2.out_channels)
        dst2 = block.conv2_dst[c2_keep]
        src, dst = (torch.tensor(v, dtype=torch.long) for v in shortcut_map(bspec))
        live_sc = alive[src] if len(src) else torch.zeros(0, dtype=torch.bool)
        alive_out = torch.zeros(bspec["out"], dtype=torch.bool)
        alive_out[dst2] = True
        alive_out[dst[live_sc]] = True
        pin, pout = _positions(alive), _positions(alive_out)
        new["blocks"][i] = {
            "in": int(alive.sum()), "mid": int(mid_keep.sum()), "out": int(alive_out.sum()),
            "stride": bspec["stride"],
            "shortcut": {"src": pin[src[live_sc]].tolist(), "dst": pout[dst[live_sc]].tolist()},
            "conv2_dst": pout[dst2].tolist(),
        }
        plans.append((alive, mid_keep, c2_keep))
        alive = alive_out
    new["blocks"] = [_simplify(b) for b in new["blocks"]]
    out = build_model(new)
    out.conv1.weight.copy_(model.conv1.weight[stem_keep])
    _copy_bn(model.bn1, out.bn1, stem_keep)
    new_blocks = [b for s in range(len(spec["stages"])) for b in getattr(out, f"layer{s + 1}")]
    for old, nb, (a_in, mid_keep, c2_keep) in zip(blocks, new_blocks, plans, strict=True):
        nb.conv1.weight.copy_(old.conv1.weight[mid_keep][:, a_in])
        _copy_bn(old.bn1, nb.bn1, mid_keep)
        nb.conv2.weight.copy_(old.conv2.weight[c2_keep][:, mid_keep])
        _copy_bn(old.bn2, nb.bn2, c2_keep)
    out.linear.weight.copy_(model.linear.weight[:, alive])
    out.linear.bias.copy_(model.linear.bias)
    return out.train(model.training), new


def _block_name(spec: dict, i: int) -> str:
    for s, n in enumerate(spec["stages"]):
        if i < n:
            return f"layer{s + 1}.{i}"
        i -= n
    raise IndexError(i)


def _simplify(block: dict) -> dict:
    """Drop index maps that are the identity, keeping specs of unpruned blocks readable."""
    ident_in = list(range(block["in"]))
    if block["conv2_dst"] == list(range(block["out"])):
        del block["conv2_dst"]
    sc = block["shortcut"]
    if block["in"] == block["out"] and block["stride"] == 1 and sc["src"] == sc["dst"] == ident_in:
        del block["shortcut"]
    return block


# ------------------------------------------------------------------------ generic models

# Channel-wise ops a pruned (all-zero) channel may pass through: each must map 0 to 0, or
# the removed channel would have fed a non-zero value to the next layer (Sigmoid, Hardsigmoid,
# Softplus and the like map 0 elsewhere and are deliberately absent).
_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
    nn.Tanh, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity,
)
_CHANNELWISE_FUNCS = {
    torch.relu, torch.nn.functional.relu, torch.nn.functional.relu6, torch.tanh,
    torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d,
    torch.nn.functional.adaptive_avg_pool2d, torch.nn.functional.gelu, torch.nn.functional.silu,
}
_CHANNELWISE_METHODS = {"relu", "tanh", "contiguous"}
_FLATTEN = {torch.flatten}


def _consumer(node: fx.Node, modules: dict) -> tuple[str, fx.Node | None, str]:
    """Follow channel-wise ops from ``node``; return (kind, consumer node, reason)."""
    while True:
        users = list(node.users)
        if len(users) != 1:
            return "reject", None, f"output of {node.name} has {len(users)} consumers"
        user = users[0]
        mod = modules.get(user.target) if user.op == "call_module" else None
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1:
                return "reject", None, f"consumer {user.target} is a grouped conv"
            return "conv", user, ""
        if isinstance(mod, nn.Flatten) or (user.op == "call_function" and user.target in _FLATTEN) or (
            user.op == "call_method" and user.target in ("flatten", "view", "reshape")
        ):
            nxt = list(user.users)
            lin = modules.get(nxt[0].target) if len(nxt) == 1 and nxt[0].op == "call_module" else None
            if isinstance(lin, nn.Linear):
                return "linear", nxt[0], ""
            return "reject", None, f"flatten at {user.name} does not feed one Linear"
        if (isinstance(mod, _CHANNELWISE_MODULES)
                or (user.op == "call_function" and user.target in _CHANNELWISE_FUNCS)
                or (user.op == "call_method" and user.target in _CHANNELWISE_METHODS)):
            node = user
            continue
        what = user.target if user.op != "call_function" else getattr(user.target, "__name__", user.target)
        if user.op == "call_function" and user.target in (operator.add, torch.add, torch.cat):
            return "reject", None, f"output meets another tensor in {what} (residual/concat)"
        return "reject", None, f"consumer {what} is not a channel-wise op, conv or linear"


@torch.no_grad()
def shrink_generic(
    model: nn.Module, masks: FilterMasks, example: torch.Tensor
) -> tuple[nn.Module, ShrinkReport]:
    """Physically prune the masked convs of any traceable model where provably exact."""
    report = ShrinkReport()
    try:
        gm = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types on dynamic control flow
        report.kept_whole = {n: f"model is not fx-traceable ({exc.__class__.__name__})"
                             for n in masks.keep}
        return copy.deepcopy(model), report
    ShapeProp(gm).propagate(example)
    modules = dict(model.named_modules())
    nodes = {n.target: n for n in gm.graph.nodes if n.op == "call_module"}
    out = copy.deepcopy(model)
    # which input channels of each consumer survive, collected first: one consumer may be
    # fed by exactly one producer here, so there is no conflict to resolve
    for name, keep in masks.keep.items():
        conv = modules[name]
        if name not in masks.bn_of:
            report.kept_whole[name] = "no batch norm directly after it (pruned output not zero)"
            continue
        if conv.groups != 1:
            report.kept_whole[name] = "grouped/depthwise conv"
            continue
        kind, consumer, why = _consumer(nodes[masks.bn_of[name]], modules)
        if kind == "reject":
            report.kept_whole[name] = why
            continue
        idx = keep.nonzero().flatten()
        _shrink_out(out, name, masks.bn_of[name], idx)
        if kind == "conv":
            _shrink_conv_in(out, consumer.target, idx)
        else:
            spatial = consumer.args[0].meta["tensor_meta"].shape[1] // conv.out_channels
            _shrink_linear_in(out, consumer.target, idx, spatial)
        report.kept[name] = len(idx)
    return _verified(model, out, report, example)


def _verified(model: nn.Module, out: nn.Module, report: ShrinkReport,
              example: torch.Tensor) -> tuple[nn.Module, ShrinkReport]:
    """Accept the shrunk model only if it computes what the masked model computes."""
    if not report.kept:
        return out, report
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(max(2, example.shape[0]), *example.shape[1:], generator=g)
    was = model.training
    model.eval()
    out.eval()
    ref, got = model(probe), out(probe)
    model.train(was)
    out.train(was)
    if torch.allclose(ref, got, rtol=1e-4, atol=1e-4 * float(ref.abs().max()) + 1e-6):
        return out, report
    why = (f"shrunk model differs from the masked one (max |diff| "
           f"{float((ref - got).abs().max()):.3g}); kept whole to stay exact")
    return copy.deepcopy(model), ShrinkReport(
        kept={}, kept_whole={**{n: why for n in report.kept}, **report.kept_whole})


def _shrink_out(model: nn.Module, conv_name: str, bn_name: str, idx: torch.Tensor) -> None:
    conv = model.get_submodule(conv_name)
    new = nn.Conv2d(conv.in_channels, len(idx), conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    new.weight.data.copy_(conv.weight.data[idx])
    if conv.bias is not None:
        new.bias.data.copy_(conv.bias.data[idx])
    set_module(model, conv_name, new)
    bn = model.get_submodule(bn_name)
    nbn = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    _copy_bn(bn, nbn, idx)
    set_module(model, bn_name, nbn)


def _shrink_conv_in(model: nn.Module, name: str, idx: torch.Tensor) -> None:
    conv = model.get_submodule(name)
    new = nn.Conv2d(len(idx), conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, 1, conv.bias is not None, conv.padding_mode)
    new.weight.data.copy_(conv.weight.data[:, idx])
    if conv.bias is not None:
        new.bias.data.copy_(conv.bias.data)
    set_module(model, name, new)


def _shrink_linear_in(model: nn.Module, name: str, idx: torch.Tensor, spatial: int) -> None:
    lin = model.get_submodule(name)
    # flatten of (C, H, W) puts channel c at features [c*HW, (c+1)*HW)
    cols = (idx[:, None] * spatial + torch.arange(spatial)).flatten()
    new = nn.Linear(len(cols), lin.out_features, lin.bias is not None)
    new.weight.data.copy_(lin.weight.data[:, cols])
    if lin.bias is not None:
        new.bias.data.copy_(lin.bias.data)
    set_module(model, name, new)
