"""Accuracy and loss of a classifier over a batch iterable."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rlcompress import dist
from rlcompress.engine.runtime import autocast


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device | str = "cpu",
    precision: str = "bf16",
    progress: bool = False,
    desc: str = "eval",
) -> dict[str, float]:
    """Top-1 / top-5 accuracy (in %) and mean cross-entropy of ``model`` over ``batches``.

    When ``batches`` is one rank's shard of a split (it has ``world_size`` > 1, as the loaders
    made under torchrun do), the counts are summed over all ranks: every rank returns the
    accuracy of the whole split.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct1 = correct5 = total = 0
    loss_sum = 0.0
    total_batches = len(batches) if hasattr(batches, "__len__") else None
    for x, y in tqdm(batches, desc=desc, total=total_batches, disable=not progress, leave=False):
        if len(y) == 0:  # a rank's share of a last batch smaller than the number of ranks
            continue
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hits = top.eq(y[:, None])
        correct1 += hits[:, 0].sum().item()
        correct5 += hits.any(dim=1).sum().item()
        total += len(y)
    model.train(was_training)
    if getattr(batches, "world_size", 1) > 1:
        loss_sum, correct1, correct5, total = dist.all_reduce_sum(
            [loss_sum, correct1, correct5, total])
        total = int(total)
    if total == 0:
        raise ValueError("evaluate() got no batches")
    return {
        "top1": 100.0 * correct1 / total,
        "top5": 100.0 * correct5 / total,
        "loss": loss_sum / total,
        "n": total,
    }
