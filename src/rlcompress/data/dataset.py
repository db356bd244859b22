"""Finding, decoding, caching and splitting an image-classification dataset."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from rlcompress.checks import check_fields
from rlcompress.data.sources import (
    DatasetError,
    RawDataset,
    RawSplit,
    download_cifar10,
    is_pickle_archive,
    read_image_archive,
    read_image_folder,
    read_pickle_archive,
    read_pickle_batches,
)
from rlcompress.fileio import atomic_path, write_json
from rlcompress.paths import shared_roots

SHARED_CIFAR10 = "datasets/cifar10-jpeg.tar.gz"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CACHE_VERSION = 1


def default_data_dir() -> Path:
    """Where datasets and decoded caches live: ``$RLCOMPRESS_DATA`` or ``./data``."""
    return Path(os.environ.get("RLCOMPRESS_DATA", "data"))


@dataclass
class DataConfig:
    """How to find and split the dataset.

    Attributes:
        source: a ``cifar-10-batches-py`` folder, an image-folder tree or a ``.tar(.gz)`` of
            either; empty means: look in the data dir, then ``../shared``, then download.
        data_dir: where downloads and the decoded uint8 cache are written.
        val_size: images held out from the training set for validation (stratified).
        split_seed: seed of the train/validation split.
        image_size: expected height and width of every image (a mismatch is an error).
        mean: per-channel normalisation mean (the shared checkpoints used ImageNet's).
        std: per-channel normalisation std.
        download: allow downloading the official CIFAR-10 archive when nothing is found.
    """

    source: str = ""
    data_dir: str = field(default_factory=lambda: str(default_data_dir()))
    val_size: int = 5000
    split_seed: int = 0
    image_size: tuple[int, int] = (32, 32)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    download: bool = True

    def __post_init__(self) -> None:  # noqa: D105
        check_fields(self, ge0=("val_size", "split_seed"))


@dataclass
class SplitData:
    """A split as tensors: uint8 images (N, H, W, C) and int64 labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, n: int, seed: int = 0) -> SplitData:
        """A fixed random subset of ``n`` images (all of them if ``n`` >= len)."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:n].sort().values
        return SplitData(self.images[idx], self.labels[idx])


@dataclass
class ImageData:
    """Train / validation / test splits plus what is needed to feed them to a model."""

    train: SplitData
    val: SplitData
    test: SplitData
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def resolve_source(cfg: DataConfig, progress: bool = True) -> Path:
    """Find the dataset: the given source, the data dir, ``../shared``, or a download."""
    if cfg.source:
        path = Path(cfg.source)
        if not path.exists():
            raise DatasetError(f"{path}: dataset source does not exist")
        return path
    data_dir = Path(cfg.data_dir)
    for candidate in [
        data_dir / "cifar-10-batches-py",
        data_dir / "cifar-10-python.tar.gz",
        data_dir / "cifar10-jpeg.tar.gz",
        *[r / SHARED_CIFAR10 for r in shared_roots()],
    ]:
        if candidate.exists():
            return candidate
    if not cfg.download:
        raise DatasetError(
            f"no CIFAR-10 found in {data_dir} or ../shared/datasets and downloading is disabled"
        )
    return download_cifar10(data_dir, progress=progress)


def read_source(path: Path, image_size: tuple[int, int], progress: bool = True) -> RawDataset:
    """Decode any supported dataset form at ``path``."""
    path = Path(path)
    if path.is_dir():
        if (path / "cifar-10-batches-py").is_dir():
            path = path / "cifar-10-batches-py"
        if (path / "data_batch_1").exists() or (path / "test_batch").exists():
            return read_pickle_batches(path)
        return read_image_folder(path, image_size, progress)
    if is_pickle_archive(path):
        return read_pickle_archive(path)
    return read_image_archive(path, image_size, progress)


def _cache_key(path: Path, image_size: tuple[int, int]) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{image_size}|{CACHE_VERSION}"
    return hashlib.sha1(ident.encode()).hexdigest()[:12]


def load_raw(cfg: DataConfig, progress: bool = True) -> RawDataset:
    """Decode the dataset once and cache it as uint8 safetensors; later calls read the cache."""
    path = resolve_source(cfg, progress)
    cache = Path(cfg.data_dir) / "cache" / f"{path.name}-{_cache_key(path, cfg.image_size)}"
    tensors, meta = cache.with_suffix(".safetensors"), cache.with_suffix(".json")
    if tensors.is_file() and meta.is_file():
        info = json.loads(meta.read_text())
        arr = load_file(str(tensors))
        return RawDataset(
            RawSplit(arr["train_x"], arr["train_y"]),
            RawSplit(arr["test_x"], arr["test_y"]),
            info["classes"],
            info["source"],
        )
    raw = read_source(path, cfg.image_size, progress)
    cache.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"train_x": raw.train.images, "train_y": raw.train.labels,
              "test_x": raw.test.images, "test_y": raw.test.labels}
    with atomic_path(tensors) as tmp:
        save_file(arrays, str(tmp))
    write_json(meta, {"classes": raw.classes, "source": raw.source})
    return raw


def stratified_split(labels: np.ndarray, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: indices (train, val) with ``val_size`` validation items.

    Each class gives ``val_size * n_class / n`` items, rounded by largest remainder so the
    total is exact; within a class the chosen items are a seeded random sample.
    """
    n = len(labels)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
    classes, counts = np.unique(labels, return_counts=True)
    quota = val_size * counts / n
    take = np.floor(quota).astype(int)
    rest = val_size - take.sum()
    take[np.argsort(-(quota - take), kind="stable")[:rest]] += 1
    rng = np.random.default_rng(seed)
    val = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == cls)
        val.append(np.sort(rng.permutation(members)[:k]))
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=int)
    mask = np.ones(n, dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def load_data(cfg: DataConfig | None = None, progress: bool = True) -> ImageData:
    """Load the dataset (decoding and caching on first use) and split train / validation."""
    cfg = cfg or DataConfig()
    raw = load_raw(cfg, progress)
    train_idx, val_idx = stratified_split(raw.train.labels, cfg.val_size, cfg.split_seed)
    x, y = torch.from_numpy(raw.train.images), torch.from_numpy(raw.train.labels)
    return ImageData(
        train=SplitData(x[train_idx], y[train_idx]),
        val=SplitData(x[val_idx], y[val_idx]),
        test=SplitData(torch.from_numpy(raw.test.images), torch.from_numpy(raw.test.labels)),
        classes=list(raw.classes),
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        source=raw.source,
    )


def describe(data: ImageData) -> dict:
    """A JSON-friendly summary of a loaded dataset."""

    def counts(s: SplitData) -> list[int]:
        return torch.bincount(s.labels, minlength=data.num_classes).tolist()

    return {
        "source": data.source,
        "classes": data.classes,
        "image_shape": list(data.train.images.shape[1:]),
        "train": len(data.train),
        "val": len(data.val),
        "test": len(data.test),
        "train_per_class": counts(data.train),
        "val_per_class": counts(data.val),
        "test_per_class": counts(data.test),
        "mean": list(data.mean),
        "std": list(data.std),
    }


def config_dict(cfg: DataConfig) -> dict:
    """A DataConfig as a JSON-friendly dict."""
    return asdict(cfg)
