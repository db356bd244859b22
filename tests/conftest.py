"""Shared fixtures: small datasets the tests generate in the real on-disk formats."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rlcompress.data import ImageData, SplitData
from rlcompress.paths import find_shared

CLASSES = ["cat", "dog", "frog"]


def _images(n: int, seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def write_image_tree(root: Path, per_class: int = 4, size: int = 32, classes=CLASSES) -> Path:
    """``root/{train,test}/<class>/NNNN.png`` with random images (PNG: lossless)."""
    for s, split in enumerate(("train", "test")):
        for c, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(_images(per_class, seed=100 * s + c, size=size)):
                Image.fromarray(img).save(d / f"{i:04d}.png")
    return root


def make_tar(src: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            tar.add(src / split, arcname=split)
    return archive


def write_pickle_batches(folder: Path, per_batch: int = 6) -> Path:
    """A ``cifar-10-batches-py`` folder with tiny batches in the official layout."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        imgs = _images(per_batch, seed=b)
        entry = {
            b"data": imgs.transpose(0, 3, 1, 2).reshape(per_batch, -1),
            b"labels": [int(x) for x in np.arange(per_batch) % 10],
            b"batch_label": name.encode(),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)
    return folder


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return write_image_tree(tmp_path / "tree")


@pytest.fixture
def image_tar(tmp_path: Path) -> Path:
    tree = write_image_tree(tmp_path / "tree")
    return make_tar(tree, tmp_path / "tiny.tar.gz")


# the image size of ``small_tar``, as a DataConfig field and as command-line options
SMALL_SIZE = (16, 16)
SMALL_ARGS = ["--image-size", str(SMALL_SIZE[0]), str(SMALL_SIZE[1])]


@pytest.fixture
def small_tar(tmp_path: Path) -> Path:
    """The tiny archive at 16x16 pixels: a quarter of the compute of ``image_tar`` for the
    end-to-end runs of whole networks (load it with ``SMALL_ARGS`` or ``SMALL_SIZE``)."""
    tree = write_image_tree(tmp_path / "tree16", size=SMALL_SIZE[0])
    return make_tar(tree, tmp_path / "tiny16.tar.gz")


@pytest.fixture
def pickle_dir(tmp_path: Path) -> Path:
    return write_pickle_batches(tmp_path / "cifar-10-batches-py")


def planted_data(n_train: int = 256, n_val: int = 64, size: int = 16, seed: int = 0) -> ImageData:
    """A learnable 4-class problem: each class has its own mean colour, plus noise."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[200, 40, 40], [40, 200, 40], [40, 40, 200], [200, 200, 40]])

    def split(n: int) -> SplitData:
        y = torch.arange(n) % 4
        noise = torch.randint(-40, 41, (n, size, size, 3), generator=g)
        x = (colours[y][:, None, None, :] + noise).clamp(0, 255).to(torch.uint8)
        return SplitData(x, y)

    return ImageData(split(n_train), split(n_val), split(n_val), ["r", "g", "b", "y"],
                     (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "planted")


@pytest.fixture
def planted() -> ImageData:
    return planted_data()


def load_benchmark(name: str, folder: str = "benchmarks") -> object:
    """A script of ``benchmarks/`` (or another folder of the repository) loaded as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shared_or_skip(relpath: str) -> Path:
    path = find_shared(relpath)
    if path is None:
        pytest.skip(f"../shared/{relpath} not present")
    return path


@pytest.fixture
def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_images(1, 0, size=16)[0]).save(buf, format="PNG")
    return buf.getvalue()
