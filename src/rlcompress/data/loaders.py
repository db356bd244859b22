"""Using a user's own ``torch.utils.data.DataLoader`` objects wherever rlcompress needs data.

The pipeline works on :class:`ImageData` (uint8 tensors, fast batched augmentation). A user
who brings a model usually brings DataLoaders instead; :class:`LoaderData` wraps them so the
same training, evaluation and search code runs on them. Their batches must already be model
inputs (normalised float tensors) with integer labels.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch


class EpochSeeded:
    """Iterate a DataLoader with torch's RNG seeded by (seed, epoch), so shuffling is
    reproducible and a resumed run sees the same batches."""

    def __init__(self, loader: Iterable, seed: int = 0) -> None:
        self.loader, self.seed, self.epoch = loader, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration produces."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        state = torch.get_rng_state()
        torch.manual_seed(self.seed * 100003 + self.epoch)
        try:
            yield from self.loader
        finally:
            torch.set_rng_state(state)


@dataclass
class LoaderData:
    """A user's train / validation (/ test) DataLoaders in place of an :class:`ImageData`."""

    train_loader: Iterable
    val_loader: Iterable
    test_loader: Iterable | None = None
    num_classes: int = 0
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        x, y = next(iter(self.val_loader))
        if not torch.is_floating_point(x):
            raise ValueError("LoaderData batches must be float model inputs (normalised tensors)")
        self.input_shape = tuple(x.shape[1:])
        if not self.num_classes:
            self.num_classes = int(y.max()) + 1

    def split(self, name: str) -> Iterable:
        """The loader of a split (``train``, ``val`` or ``test``)."""
        loader = {"train": self.train_loader, "val": self.val_loader,
                  "test": self.test_loader}.get(name)
        if loader is None:
            raise ValueError(f"no {name!r} loader was given")
        return loader

    def materialise(self, split: str, limit: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``limit`` examples of a split as a list of batches (for fast re-use)."""
        out, n = [], 0
        for x, y in self.split(split):
            take = min(len(y), limit - n)
            out.append((x[:take].contiguous(memory_format=torch.channels_last), y[:take]))
            n += take
            if n >= limit:
                break
        return out
