"""Batched, seeded iteration over uint8 image tensors with augmentation in plain torch.

torchvision has no CPU build here, and per-image Python transforms would dominate a CPU
training step anyway, so crop and flip are done on whole batches with index arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rlcompress.data.dataset import SplitData
from rlcompress.dist import shard


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator,
    part: slice | None = None, total: int | None = None,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image, on a uint8 NHWC batch.

    Under data parallelism ``images`` is one rank's ``part`` of a global batch of ``total``
    images: the random draws are made for the whole global batch and sliced, so every image
    gets the same crop and flip however many ranks share the batch.
    """
    n, h, w, _ = images.shape
    dev = images.device
    total = n if total is None else total
    part = part or slice(0, total)
    if padding > 0:
        padded = torch.nn.functional.pad(images, (0, 0, padding, padding, padding, padding))
        # drawn on the CPU generator whatever the device, so every device sees the same batches
        oy = torch.randint(0, 2 * padding + 1, (total,), generator=generator)[part].to(dev)
        ox = torch.randint(0, 2 * padding + 1, (total,), generator=generator)[part].to(dev)
        rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]
        cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]
        images = padded[torch.arange(n, device=dev)[:, None, None], rows, cols]
    if flip:
        mask = (torch.rand(total, generator=generator) < 0.5)[part].to(dev)
        images = torch.where(mask[:, None, None, None], images.flip(2), images)
    return images


def cutout(x: torch.Tensor, size: int, generator: torch.Generator, part: slice | None = None,
           total: int | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): per image, a ``size`` x ``size`` square at a random
    centre (clipped at the border) set to 0 - the dataset mean, on normalised NCHW input.
    Draws are made for the global batch of ``total`` and sliced to ``part``, as in
    :func:`random_crop_flip`."""
    n, _, h, w = x.shape
    dev = x.device
    total = n if total is None else total
    part = part or slice(0, total)
    cy = torch.randint(0, h, (total,), generator=generator)[part].to(dev)
    cx = torch.randint(0, w, (total,), generator=generator)[part].to(dev)
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    lo_y, lo_x = (cy - size // 2)[:, None], (cx - size // 2)[:, None]
    in_y = (rows >= lo_y) & (rows < lo_y + size)  # [n, h]
    in_x = (cols >= lo_x) & (cols < lo_x + size)  # [n, w]
    hole = in_y[:, None, :, None] & in_x[:, None, None, :]
    return x.masked_fill(hole, 0.0)


def to_model_input(
    images: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    channels_last: bool = True,
) -> torch.Tensor:
    """uint8 NHWC -> normalised float32 NCHW (memory in channels_last order if asked)."""
    m = torch.tensor(mean, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255.0
    s = torch.tensor(std, dtype=torch.float32, device=images.device).view(1, -1, 1, 1) * 255.0
    # permute keeps NHWC memory order, which is exactly channels_last for an NCHW view
    x = images.permute(0, 3, 1, 2).float()
    x = (x - m) / s
    return x.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


class BatchLoader:
    """Iterates (inputs, labels) batches over a SplitData.

    ``cutout`` > 0 adds Cutout squares of that side to augmented batches.
    With ``shuffle``/``augment`` the order and the augmentation of epoch ``e`` depend only on
    ``(seed, e)``, so a resumed run sees exactly the batches it would have seen. With
    ``world_size`` > 1 it yields rank ``rank``'s slice of every global batch of ``batch_size``
    (same order, same augmentation of each image, whatever the number of ranks).
    With a ``device`` (e.g. ``cuda``) the split's images and labels move there once and batches
    are cropped, flipped, normalised and cut out there: on a GPU the per-batch index arithmetic
    on the CPU took as long as the training step. The random draws stay on the CPU generator,
    so the batches are the same on every device.
    """

    def __init__(
        self,
        split: SplitData,
        batch_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        shuffle: bool = False,
        augment: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        padding: int = 4,
        channels_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
        cutout: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got {rank} of {world_size}")
        self.rank, self.world_size = rank, world_size
        self.split, self.batch_size = split, batch_size
        self.mean, self.std = mean, std
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.seed, self.padding, self.channels_last = seed, padding, channels_last
        self.epoch = 0
        self.global_size = 0
        self.cutout = cutout
        self.device = torch.device(device) if device is not None else None
        self._on_device: tuple[torch.Tensor, torch.Tensor] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation the next iteration produces."""
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The split's images and labels, on ``device`` (moved once) or where they are."""
        if self.device is None or self.split.images.device == self.device:
            return self.split.images, self.split.labels
        if self._on_device is None:
            self._on_device = (self.split.images.to(self.device), self.split.labels.to(self.device))
        return self._on_device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        all_images, all_labels = self._tensors()
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        n = len(self.split)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            total = len(idx)
            self.global_size = total  # the size of the global batch this one is a slice of
            part = shard(total, self.rank, self.world_size)
            idx = idx[part].to(all_images.device)
            images = all_images[idx]
            if self.augment:
                images = random_crop_flip(images, self.padding, True, g, part, total)
            x = to_model_input(images, self.mean, self.std, self.channels_last)
            if self.augment and self.cutout > 0:
                x = cutout(x, self.cutout, g, part, total)
            yield x, all_labels[idx]
