"""Batched, seeded iteration over uint8 image tensors with augmentation in plain torch.

torchvision has no CPU build here, and per-image Python transforms would dominate a CPU
training step anyway, so crop and flip are done on whole batches with index arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from rlcompress.data.dataset import SplitData
from rlcompress.dist import shard


def crop_flip_draws(total: int, padding: int, flip: bool,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random draws of :func:`random_crop_flip` for a global batch of ``total`` images, in
    the order it makes them (crop rows, crop columns, flips), on the CPU generator."""
    draws = {}
    if padding > 0:
        draws["oy"] = torch.randint(0, 2 * padding + 1, (total,), generator=generator)
        draws["ox"] = torch.randint(0, 2 * padding + 1, (total,), generator=generator)
    if flip:
        draws["flip"] = torch.rand(total, generator=generator) < 0.5
    return draws


def apply_crop_flip(images: torch.Tensor, padding: int, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """Crop (zero padding ``padding``) and flip a uint8 NHWC batch as ``draws`` say (one row
    of draws per image, on the images' device)."""
    n, h, w, _ = images.shape
    dev = images.device
    if "oy" in draws:
        padded = torch.nn.functional.pad(images, (0, 0, padding, padding, padding, padding))
        rows = (draws["oy"][:, None] + torch.arange(h, device=dev))[:, :, None]
        cols = (draws["ox"][:, None] + torch.arange(w, device=dev))[:, None, :]
        images = padded[torch.arange(n, device=dev)[:, None, None], rows, cols]
    if "flip" in draws:
        images = torch.where(draws["flip"][:, None, None, None], images.flip(2), images)
    return images


def _part(draws: dict[str, torch.Tensor], part: slice, device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v[part].to(device) for k, v in draws.items()}


def random_crop_flip(
    images: torch.Tensor, padding: int, flip: bool, generator: torch.Generator,
    part: slice | None = None, total: int | None = None,
) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, per image, on a uint8 NHWC batch.

    Under data parallelism ``images`` is one rank's ``part`` of a global batch of ``total``
    images: the random draws are made for the whole global batch and sliced, so every image
    gets the same crop and flip however many ranks share the batch.
    """
    total = len(images) if total is None else total
    # drawn on the CPU generator whatever the device, so every device sees the same batches
    draws = crop_flip_draws(total, padding, flip, generator)
    return apply_crop_flip(images, padding, _part(draws, part or slice(0, total), images.device))


def cutout_draws(total: int, h: int, w: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The random draws of :func:`cutout` (square centres) for a global batch of ``total``."""
    return {"cy": torch.randint(0, h, (total,), generator=generator),
            "cx": torch.randint(0, w, (total,), generator=generator)}


def apply_cutout(x: torch.Tensor, size: int, draws: dict[str, torch.Tensor]) -> torch.Tensor:
    """Zero a ``size`` x ``size`` square per image of normalised NCHW ``x`` at the drawn
    centres (clipped at the border)."""
    _, _, h, w = x.shape
    dev = x.device
    rows, cols = torch.arange(h, device=dev), torch.arange(w, device=dev)
    lo_y, lo_x = (draws["cy"] - size // 2)[:, None], (draws["cx"] - size // 2)[:, None]
    in_y = (rows >= lo_y) & (rows < lo_y + size)  # [n, h]
    in_x = (cols >= lo_x) & (cols < lo_x + size)  # [n, w]
    hole = in_y[:, None, :, None] & in_x[:, None, None, :]
    return x.masked_fill(hole, 0.0)


def cutout(x: torch.Tensor, size: int, generator: torch.Generator, part: slice | None = None,
           total: int | None = None) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017): per image, a ``size`` x ``size`` square at a random
    centre (clipped at the border) set to 0 - the dataset mean, on normalised NCHW input.
    Draws are made for the global batch of ``total`` and sliced to ``part``, as in
    :func:`random_crop_flip`."""
    _, _, h, w = x.shape
    total = len(x) if total is None else total
    draws = cutout_draws(total, h, w, generator)
    return apply_cutout(x, size, _part(draws, part or slice(0, total), x.device))


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels_last memory order if it is a 4-D image batch; any other input (a 1-D
    signal batch for a Conv1d model, a volume for a Conv3d one) contiguous as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.contiguous()


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

    def _epoch_plan(self, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This epoch's order and every batch's random draws, made on the CPU generator in the
        order per-batch drawing would make them and moved to ``device`` at once: one copy per
        epoch instead of several per batch, each of which made a GPU's queue run dry."""
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        n = len(self.split)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        per_batch: list[dict[str, torch.Tensor]] = []
        if self.augment:
            _, h, w, _ = self.split.images.shape
            for b in range(len(self)):
                total = len(order[b * self.batch_size : (b + 1) * self.batch_size])
                draws = crop_flip_draws(total, self.padding, True, g)
                if self.cutout > 0:
                    draws.update(cutout_draws(total, h, w, g))
                per_batch.append(draws)
        draws = {k: torch.cat([d[k] for d in per_batch]).to(device) for k in
                 (per_batch[0] if per_batch else {})}
        return order.to(device), draws

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        all_images, all_labels = self._tensors()
        order, draws = self._epoch_plan(all_images.device)
        for b in range(len(self)):
            start = b * self.batch_size
            idx = order[start : start + self.batch_size]
            total = len(idx)
            self.global_size = total  # the size of the global batch this one is a slice of
            part = shard(total, self.rank, self.world_size)
            rows = slice(start + part.start, start + part.stop)
            idx = idx[part]
            images = all_images[idx]
            mine = {k: v[rows] for k, v in draws.items()}
            if self.augment:
                images = apply_crop_flip(images, self.padding, mine)
            x = to_model_input(images, self.mean, self.std, self.channels_last)
            if self.augment and self.cutout > 0:
                x = apply_cutout(x, self.cutout, mine)
            yield x, all_labels[idx]
