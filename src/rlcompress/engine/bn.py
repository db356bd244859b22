"""Batch-norm re-estimation: recompute running statistics for changed weights.

Clustering moves every weight a little, and the per-channel means and variances that batch norm
learnt for the original weights no longer match what the layers produce; at 2 bits this alone
takes ResNet-20 to chance. Re-estimating the statistics on a few thousand training images
(no gradients, nothing else changes) recovers most of it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from rlcompress.engine.runtime import autocast

_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> int:
    """Replace every batch norm's running mean and variance by their exact average over
    ``batches`` (cumulative, not exponential). Returns the number of images used; a model
    without batch norm, or no batches, changes nothing.

    Only the running statistics (and ``num_batches_tracked``) change: weights, biases and the
    model's train/eval mode are as before.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN) and m.track_running_stats]
    if not bns:
        return 0
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(),
              m.momentum) for m in bns]
    modes = {m: m.training for m in model.modules()}
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts equally
    model.eval()
    for m in bns:
        m.train()
    seen = 0
    dev = torch.device(device)
    try:
        for x, _ in batches:
            with autocast(dev, precision):
                model(x.to(dev))
            seen += len(x)
    finally:
        for m, (_, _, _, momentum) in zip(bns, saved, strict=True):
            m.momentum = momentum
        for m, was in modes.items():
            m.train(was)
    if seen == 0:
        for m, (mean, var, n, _) in zip(bns, saved, strict=True):
            m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(n)
    return seen
