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

from rlcompress.data.loader import channels_last
from rlcompress.dist import shard


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


class Sharded:
    """One rank's slice of every batch of a loader (torchrun data parallelism over a user's
    DataLoader): every rank reads the whole loader, in the same seeded order, and keeps its
    contiguous part of each batch, so the global batches are exactly the one-process ones.
    Loading is not divided; a loader whose reading dominates should shard itself."""

    def __init__(self, loader: Iterable, rank: int, world_size: int) -> None:
        self.loader, self.rank, self.world_size = loader, rank, world_size
        self.global_size = 0  # the size of the global batch last sliced

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to the wrapped loader (if it is epoch-seeded)."""
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for x, y in self.loader:
            self.global_size = len(y)
            part = shard(len(y), self.rank, self.world_size)
            yield x[part], y[part]


class LongLabels:
    """A loader whose integer labels are given as int64, the class-index type every loss takes
    (labels from NumPy are often int32, which ``cross_entropy`` refuses)."""

    def __init__(self, loader: Iterable) -> None:
        self.loader = loader.loader if isinstance(loader, LongLabels) else loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator:
        for x, y in self.loader:
            yield x, y.long()


@dataclass
class LoaderData:
    """A user's train / validation (/ test) DataLoaders in place of an :class:`ImageData`."""

    train_loader: Iterable
    val_loader: Iterable
    test_loader: Iterable | None = None
    num_classes: int = 0
    input_shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name, loader in (("training", self.train_loader), ("validation", self.val_loader),
                             ("test", self.test_loader)):
            # every stage passes over a loader again (each epoch, each evaluation); iter() is
            # not called here: a shuffling DataLoader draws its seed from torch's RNG
            if isinstance(loader, Iterator):
                raise ValueError(f"the {name} loader is a one-shot iterator ({type(loader).__name__}"
                                 "): pass something that can be iterated again, such as a "
                                 "DataLoader or a list of batches")
        x, y = check_batch(next(iter(self.val_loader)), "validation")
        # a DataLoader draws a seed from torch's RNG per iterator: this check must not shift
        # the random streams of the training that follows
        state = torch.get_rng_state()
        try:
            check_batch(next(iter(self.train_loader)), "training")
        finally:
            torch.set_rng_state(state)
        # int64 labels cost nothing to pass through (``.long()`` returns the tensor itself)
        self.train_loader, self.val_loader = LongLabels(self.train_loader), LongLabels(self.val_loader)
        if self.test_loader is not None:
            self.test_loader = LongLabels(self.test_loader)
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

    def materialise(self, split: str, limit: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """A seeded, class-stratified sample of ``limit`` examples of a split, as batches.

        Loaders are often sorted by class, so the first ``limit`` examples would be one or two
        classes. A first pass reads only the labels, the sample is drawn per class in
        proportion to the split, and a second pass keeps the chosen examples. Both passes run
        with torch's RNG seeded alike, so a shuffling loader yields the same order twice (a
        loader whose order still differs is an error, not a silent wrong sample).
        """
        loader = self.split(split)
        labels = torch.cat([y for _, y in _seeded(loader, seed)])
        if limit <= 0 or limit >= len(labels):
            chosen = torch.arange(len(labels))
        else:
            chosen = stratified_sample(labels, limit, seed)
        keep = torch.zeros(len(labels), dtype=torch.bool)
        keep[chosen] = True
        out, pos = [], 0
        for x, y in _seeded(loader, seed):
            sel = keep[pos : pos + len(y)]
            if not torch.equal(y, labels[pos : pos + len(y)]):
                raise ValueError(f"the {split} loader gave a different order on a second pass; "
                                 "use a loader without random transforms or shuffling")
            if sel.any():
                out.append((channels_last(x[sel]), y[sel]))
            pos += len(y)
        return out


    def head(self, split: str, limit: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``limit`` examples of one seeded pass over a split (the training loader
        shuffles and augments, so these are a random, reproducible sample of it)."""
        out, seen = [], 0
        for x, y in _seeded(self.split(split), seed):
            take = min(len(y), limit - seen)
            out.append((channels_last(x[:take]), y[:take]))
            seen += take
            if seen >= limit:
                break
        return out


def check_batch(batch: object, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` as an (inputs, labels) pair, or a ValueError saying what a loader must yield:
    float32 model inputs (already normalised) and one integer class label per input."""
    need = "must yield (inputs, labels) pairs"
    if isinstance(batch, dict):
        raise ValueError(f"the {name} loader {need}; it yields dicts (keys {sorted(batch)}): "
                         "give its DataLoader a collate_fn that returns an (images, labels) tuple")
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        got = f"{len(batch)} items" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise ValueError(f"the {name} loader {need}; it yields {got}")
    x, y = batch
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"the {name} loader {need} of tensors; it yields "
                         f"({type(x).__name__}, {type(y).__name__})")
    if x.dtype != torch.float32:
        raise ValueError(f"the {name} loader's inputs are {x.dtype}: they must be float32 model "
                         "inputs (normalised images; convert them with .float())")
    if y.dtype.is_floating_point or y.dim() != 1 or len(y) != len(x):
        raise ValueError(f"the {name} loader's labels must be one integer class index per input "
                         f"(got {y.dtype} of shape {tuple(y.shape)} for {len(x)} inputs)")
    return x, y


def _seeded(loader: Iterable, seed: int) -> Iterator:
    state = torch.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield from loader
    finally:
        torch.set_rng_state(state)


def stratified_sample(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Sorted indices of ``n`` examples drawn per class in proportion to the class counts
    (largest remainders get the leftover places), seeded."""
    g = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    share = counts.double() * n / len(labels)
    quota = share.floor().long()
    rest = n - int(quota.sum())
    if rest > 0:
        quota[torch.argsort(share - quota, descending=True, stable=True)[:rest]] += 1
    picks = []
    for c, q in zip(classes.tolist(), quota.tolist(), strict=True):
        members = torch.nonzero(labels == c).flatten()
        picks.append(members[torch.randperm(len(members), generator=g)[:q]])
    return torch.sort(torch.cat(picks)).values
