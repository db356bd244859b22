"""Batches the stages need outside training: plain split loaders, calibration samples,
and accuracy of a model on a split."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from rlcompress import dist
from rlcompress.data import BatchLoader, ImageData
from rlcompress.data.loaders import LoaderData, Sharded
from rlcompress.engine.evaluate import evaluate
from rlcompress.engine.runtime import pick_device, to_channels_last


def split_loader(data: ImageData | LoaderData, split: str, batch_size: int = 512,
                 sharded: bool = False) -> Iterable:
    """An unshuffled, unaugmented loader over ``train``, ``val`` or ``test``.

    With ``sharded`` under torchrun, this rank's slice of every batch (for evaluation that
    :func:`~rlcompress.engine.evaluate.evaluate` reduces over the ranks).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    rank, world = (dist.rank(), dist.world_size()) if sharded and dist.initialized() else (0, 1)
    if isinstance(data, LoaderData):
        loader = data.split(split)
        return Sharded(loader, rank, world) if world > 1 else loader
    return BatchLoader(getattr(data, split), batch_size, data.mean, data.std, rank=rank,
                       world_size=world)


def calibration_batches(data: ImageData | LoaderData, n: int, seed: int = 0,
                        batch_size: int = 256, augment: bool = True) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed, seeded sample of ``n`` training images as model-input batches, augmented as in
    training (what Fisher importance and batch-norm re-estimation are computed on).

    Augmentation matters for batch norm: a ResNet-20 trained with padded crops lost 2.6 points
    of validation top-1 when its statistics were re-estimated on plain images, and none on
    augmented ones. A user's loaders are used as they are (their train loader augments).
    """
    if n <= 0:
        return []
    if isinstance(data, LoaderData):
        return data.head("train", n, seed)
    loader = BatchLoader(data.train.subset(n, seed=seed), batch_size, data.mean, data.std,
                         shuffle=False, augment=augment, seed=seed)
    loader.set_epoch(0)
    return list(loader)


def evaluate_model(
    model: nn.Module,
    data: ImageData | LoaderData,
    split: str = "test",
    precision: str = "bf16",
    device: str = "auto",
    progress: bool = False,
) -> dict[str, float]:
    """Top-1 / top-5 of ``model`` on one split of ``data`` (divided among the ranks under
    torchrun, the same numbers as one process)."""
    dev = pick_device(device)
    to_channels_last(model.to(dev))
    loader = split_loader(data, split, sharded=True)
    return evaluate(model, loader, dev, precision, progress and dist.is_main(), f"eval {split}")
