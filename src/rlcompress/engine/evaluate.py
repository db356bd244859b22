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
        logits, top = ranked(model, x, device, precision)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
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


def ranked(model: nn.Module, x: torch.Tensor, device: torch.device,
           precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The float logits of one batch and its top-5 classes, best first. bf16 logits tie, and
    ``argmax`` or a ``topk`` of another size may break a tie otherwise: ``evaluate``,
    ``top1_hits`` and the search's exact evaluator rank through this one function so that they
    count the same images right."""
    with autocast(device, precision):
        logits = model(x).float()
    return logits, logits.topk(min(5, logits.shape[1]), dim=1).indices


@torch.inference_mode()
def top1_hits(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
              device: torch.device | str = "cpu", precision: str = "bf16") -> torch.Tensor:
    """Per image of ``batches`` (in order, one process): is ``model``'s top-1 class right?
    Its mean is ``evaluate``'s top-1; paired comparisons of two models need the images."""
    device = torch.device(device)
    model.eval()
    hits = [ranked(model, x.to(device), device, precision)[1][:, 0].cpu() == y
            for x, y in batches]
    return torch.cat(hits)
