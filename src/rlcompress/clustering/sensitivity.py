"""Per-weight sensitivity: the diagonal Fisher information from calibration batches.

The loss increase from perturbing weight i by d is about F_ii d^2 / 2 near a trained optimum,
with F_ii estimated by the mean squared gradient of the loss (SqueezeLLM; coremltools' SKM).
Clustering that minimises sum_i F_ii (w_i - c(w_i))^2 therefore spends its centroids where the
loss is sensitive instead of where weights are dense. Positions of pruned filters get zero
importance: they are not clustered at all.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from rlcompress.clustering.sharing import surviving_mask


def fisher_importance(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    layers: list[str],
    micro_batch: int = 32,
) -> dict[str, torch.Tensor]:
    """Mean squared loss gradient of every weight of ``layers`` over ``batches`` (float32, CPU).

    Batches are split into ``micro_batch``-sized pieces: a squared gradient of a smaller batch
    is closer to the per-example Fisher (the mean of per-example squared gradients), while a
    large batch's gradient averages most of it away. The model's mode and gradients are left as
    they were; batch norm uses its running statistics. A layer the output does not depend on
    (defined but never called in ``forward``, e.g. an auxiliary head) gets zero importance and
    a warning; clustering then treats its weights alike (:func:`cluster_layer`).
    """
    modules = dict(model.named_modules())
    missing = [n for n in layers if n not in modules]
    if missing:
        raise KeyError(f"no such layers: {missing}")
    params = {n: modules[n].weight for n in layers}
    sums = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    count, unused = 0, set(params)
    try:
        for x, y in batches:
            for i in range(0, len(y), micro_batch):
                loss = F.cross_entropy(model(x[i : i + micro_batch].float()), y[i : i + micro_batch])
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                for n, g in zip(params, grads, strict=True):
                    if g is not None:
                        sums[n] += g.detach().float() ** 2
                        unused.discard(n)
                count += 1
    finally:
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
        model.train(was_training)
    if count == 0:
        raise ValueError("no calibration batches: Fisher importance needs data")
    if unused:
        warnings.warn(f"layers {sorted(unused)} take no part in the model's output (not called "
                      "in forward?): they get zero importance and are clustered unweighted",
                      stacklevel=2)
    return {n: (s / count * surviving_mask(params[n])).cpu() for n, s in sums.items()}
