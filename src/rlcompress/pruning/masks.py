"""Filter masks on any model's Conv2d layers (the paper's "soft" FPGM pruning).

A mask zeroes the pruned filters of a conv **and** the scale and shift of the batch-norm
channel that directly follows it. FPGM's official code leaves the batch norm alone, so a
"pruned" channel still emits a constant (its BN shift) and is not really gone; zeroing it too
makes the masked network compute exactly what the physically smaller network computes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import fx, nn

from rlcompress.fileio import atomic_path
from rlcompress.pruning.criteria import keep_indices


@dataclass
class PruneConfig:
    """What to prune.

    Attributes:
        rate: fraction of filters pruned in every selected conv layer (the paper: 0.4).
        criterion: filter importance criterion: ``fpgm``, ``l1`` or ``l2``.
        skip: names of conv layers left whole.
        soft: recompute the masks from the current weights at the start of every epoch, as
            FPGM does (pruned filters may come back); otherwise the masks are fixed.
        rates: per-layer rates overriding ``rate`` (e.g. a joint search's policy).
    """

    rate: float = 0.4
    criterion: str = "fpgm"
    skip: list[str] = field(default_factory=list)
    soft: bool = False
    rates: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:  # noqa: D105
        for name, r in {"rate": self.rate, **self.rates}.items():
            if not 0 <= r < 1:
                raise ValueError(f"PruneConfig rate of {name} must be in [0, 1), got {r}")


def conv_layers(model: nn.Module) -> dict[str, nn.Conv2d]:
    """All Conv2d modules of ``model`` by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """Map each conv to the BatchNorm2d that is the only consumer of its output.

    Found by tracing the model with torch.fx; an untraceable model yields no pairs (its
    masks then cover the conv weights only, and physical removal is refused).
    """
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception:  # fx raises many types on dynamic control flow
        return {}
    modules = dict(model.named_modules())
    pairs = {}
    for node in graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Conv2d):
            users = list(node.users)
            if (len(users) == 1 and users[0].op == "call_module"
                    and isinstance(modules.get(users[0].target), nn.BatchNorm2d)):
                pairs[node.target] = users[0].target
    return pairs


class FilterMasks:
    """Boolean keep-masks over the output filters of selected conv layers."""

    def __init__(self, keep: dict[str, torch.Tensor], bn_of: dict[str, str]) -> None:
        self.keep = {k: v.bool() for k, v in keep.items()}
        self.bn_of = dict(bn_of)

    @classmethod
    def compute(cls, model: nn.Module, cfg: PruneConfig) -> FilterMasks:
        """Select the filters to keep in every conv (minus ``cfg.skip``) by ``cfg.criterion``."""
        convs = conv_layers(model)
        if not convs:
            raise ValueError("the model has no Conv2d layer to prune")
        unknown = set(cfg.skip) - set(convs)
        if unknown:
            raise ValueError(f"--skip names layers that are not convs: {sorted(unknown)}")
        unknown = set(cfg.rates) - set(convs)
        if unknown:
            raise ValueError(f"per-layer rates name layers that are not convs: {sorted(unknown)}")
        keep = {}
        for name, conv in convs.items():
            if name in cfg.skip:
                continue
            mask = torch.zeros(conv.out_channels, dtype=torch.bool)
            mask[keep_indices(conv.weight, cfg.rates.get(name, cfg.rate), cfg.criterion)] = True
            keep[name] = mask
        return cls(keep, {c: b for c, b in conv_bn_pairs(model).items() if c in keep})

    @torch.no_grad()
    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        """Zero pruned filters (weights, bias) and their batch-norm scale and shift.

        On a weight-shared layer the pruned positions already point at a constant zero; the
        batch norm after it still needs zeroing, or its shift would drift during fine-tuning
        and feed a constant into the channel (and into any residual add it meets).
        """
        modules = dict(model.named_modules())
        for name, keep in self.keep.items():
            conv = modules[name]
            drop = ~keep.to(conv.weight.device)
            if "weight" in conv._parameters:
                conv.weight[drop] = 0
            if conv.bias is not None:
                conv.bias[drop] = 0
            if name in self.bn_of:
                bn = modules[self.bn_of[name]]
                bn.weight[drop] = 0
                bn.bias[drop] = 0

    def __call__(self, model: nn.Module) -> None:
        """Step hook: re-apply the masks after an optimizer step."""
        self.apply(model)

    def recompute(self, model: nn.Module, cfg: PruneConfig) -> None:
        """Soft pruning: select the kept filters again from the current weights."""
        fresh = FilterMasks.compute(model, cfg)
        self.keep = fresh.keep

    def kept_filters(self) -> dict[str, int]:
        """Kept filter count per masked layer."""
        return {k: int(v.sum()) for k, v in self.keep.items()}

    def save(self, path: str | Path) -> None:
        """Write the masks (uint8) and the conv->BN map to a safetensors file."""
        tensors = {k: v.to(torch.uint8) for k, v in self.keep.items()}
        meta = {f"bn:{c}": b for c, b in self.bn_of.items()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> FilterMasks:
        """Read masks written by :meth:`save`."""
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        keep = load_file(str(path))
        return cls(keep, {k[3:]: v for k, v in meta.items() if k.startswith("bn:")})


def paper_weight_counts(model: nn.Module, masks: FilterMasks | None = None) -> tuple[int, int]:
    """(dense, kept) weight counts of all conv and linear layers, as the paper counts them.

    A pruned filter removes its own weights only (the next layer's input channels are kept),
    which is how the paper arrives at 1.67x for 40% of the filters.
    """
    dense = kept = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            n = m.weight.numel()
            dense += n
            if masks is not None and name in masks.keep:
                k = masks.keep[name]
                n = n * int(k.sum()) // len(k)
            kept += n
    return dense, kept
