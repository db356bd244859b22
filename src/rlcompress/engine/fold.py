"""An inference copy of a model with its batch norms folded into the layers before them.

The search scores hundreds of policies on the same network: only weights and batch-norm
statistics change between them. Folding each conv -> batch norm pair (torch.fx's ``fuse``) once
and refreshing the folded weights per policy removes every batch-norm pass from inference
(about a tenth of a CPU ResNet-20 evaluation) without rebuilding or re-tracing anything.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.fx.experimental.optimization import fuse, matches_module_pattern
from torch.nn.utils.fusion import fuse_conv_bn_weights, fuse_linear_bn_weights

# the pairs torch.fx's fuse folds (a list local to it, so repeated here)
_PATTERNS = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d),
             (nn.Conv3d, nn.BatchNorm3d), (nn.Linear, nn.BatchNorm1d))


def folded_pairs(model: nn.Module | fx.GraphModule) -> list[tuple[str, str]]:
    """The (layer, batch norm) pairs that ``torch.fx``'s ``fuse`` folds: a batch norm with
    running statistics right after a conv or linear layer whose only user it is (the same
    rule as ``fuse``, through its own pattern matcher)."""
    traced = model if isinstance(model, fx.GraphModule) else fx.symbolic_trace(model)
    modules = dict(traced.named_modules())
    return [(node.args[0].target, node.target) for node in traced.graph.nodes
            if any(matches_module_pattern(p, node, modules) for p in _PATTERNS)
            and len(node.args[0].users) == 1 and modules[node.target].track_running_stats]


class FoldedCopy:
    """A batch-norm-folded inference copy of ``model`` that :meth:`refresh` keeps equal to the
    model's current weights and statistics (in eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        traced = fx.symbolic_trace(model)  # once: the pairs and the folded copy come from it
        self.pairs = folded_pairs(traced)
        self.net = fuse(traced, no_trace=True).eval()
        src = dict(model.named_modules())
        dst = dict(self.net.named_modules())
        self._folded = [(src[a], src[b], dst[a]) for a, b in self.pairs]
        fused = {a for a, _ in self.pairs}
        # every other parameter and buffer is copied as is, by name
        own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        theirs = {**dict(self.net.named_parameters()), **dict(self.net.named_buffers())}
        self._copied = [(own[k], v) for k, v in theirs.items()
                        if k.rsplit(".", 1)[0] not in fused]

    @classmethod
    def of(cls, model: nn.Module) -> FoldedCopy | None:
        """A folded copy, or None when the model cannot be traced or has nothing to fold."""
        try:
            copy = cls(model)
        except Exception:  # noqa: BLE001 - any model torch.fx cannot trace is evaluated unfolded
            return None
        return copy if copy.pairs else None

    @torch.no_grad()
    def refresh(self) -> nn.Module:
        """Fold the model's current weights and batch-norm statistics; returns the copy."""
        for layer, bn, out in self._folded:
            fold = fuse_conv_bn_weights if isinstance(layer, nn.modules.conv._ConvNd) \
                else fuse_linear_bn_weights
            weight, bias = fold(layer.weight, layer.bias, bn.running_mean, bn.running_var,
                                bn.eps, bn.weight, bn.bias)
            out.weight.copy_(weight)
            out.bias.copy_(bias)
        for src, dst in self._copied:
            dst.copy_(src)
        return self.net
