"""Readers for the on-disk forms of an image-classification dataset.

Three forms are understood, all decoded into uint8 NHWC arrays:

* the CIFAR-10 python-pickle batches folder (``cifar-10-batches-py``) or its official archive;
* an image-folder tree ``train/<class>/*`` and ``test/<class>/*``, as a folder or a ``.tar.gz``;
* a download of the official CIFAR-10 archive, checked against its published MD5.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


class DatasetError(ValueError):
    """Raised when a dataset source is missing, malformed or fails its checks."""


@dataclass
class RawSplit:
    """Decoded images (uint8, N x H x W x C) and integer labels of one split."""

    images: np.ndarray
    labels: np.ndarray


@dataclass
class RawDataset:
    """The train and test splits of a dataset plus its class names."""

    train: RawSplit
    test: RawSplit
    classes: list[str]
    source: str


# ---------------------------------------------------------------------------- pickle batches


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds NumPy arrays and plain containers.

    The CIFAR batches are pickles; a plain ``pickle.load`` would run any code a tampered file
    names, so only the classes a genuine batch needs are allowed.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> type:  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise DatasetError(f"refusing to unpickle {module}.{name} from a CIFAR batch file")


def _read_batch(fileobj: io.BufferedIOBase, name: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        entry = _NumpyOnlyUnpickler(fileobj, encoding="bytes").load()
    except DatasetError:
        raise
    except Exception as exc:  # pickle raises many types on corrupt input
        raise DatasetError(f"{name}: not a readable CIFAR batch ({exc})") from exc
    if not isinstance(entry, dict) or b"data" not in entry or b"labels" not in entry:
        raise DatasetError(f"{name}: expected a dict with b'data' and b'labels'")
    data = np.asarray(entry[b"data"], dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{name}: expected data of shape (N, 3072), got {data.shape}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    labels = np.asarray(entry[b"labels"], dtype=np.int64)
    if len(labels) != len(images):
        raise DatasetError(f"{name}: {len(images)} images but {len(labels)} labels")
    return np.ascontiguousarray(images), labels


_TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def read_pickle_batches(folder: Path) -> RawDataset:
    """Read a ``cifar-10-batches-py`` folder (the five train batches and the test batch)."""
    folder = Path(folder)
    missing = [n for n in [*_TRAIN_BATCHES, "test_batch"] if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"{folder}: missing CIFAR batch files {missing}")
    parts = []
    for n in [*_TRAIN_BATCHES, "test_batch"]:
        if (folder / n).stat().st_size > MAX_MEMBER_BYTES:
            raise DatasetError(f"{folder / n}: larger than the {MAX_MEMBER_BYTES}-byte limit")
        with open(folder / n, "rb") as f:
            parts.append(_read_batch(f, str(folder / n)))
    return _from_batches(parts, str(folder))


def _from_batches(parts: list[tuple[np.ndarray, np.ndarray]], source: str) -> RawDataset:
    train = RawSplit(
        np.concatenate([p[0] for p in parts[:-1]]), np.concatenate([p[1] for p in parts[:-1]])
    )
    test = RawSplit(*parts[-1])
    return RawDataset(train, test, list(CIFAR10_CLASSES), source)


def read_pickle_archive(archive: Path) -> RawDataset:
    """Read the official ``cifar-10-python.tar.gz`` without unpacking it to disk."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with _open_tar(archive) as tar:
        for member in _members(tar, archive):
            base = Path(member.name).name
            if member.isfile() and base in [*_TRAIN_BATCHES, "test_batch"]:
                data = _read_member(tar, member)
                found[base] = _read_batch(io.BytesIO(data), f"{archive}:{member.name}")
    missing = [n for n in [*_TRAIN_BATCHES, "test_batch"] if n not in found]
    if missing:
        raise DatasetError(f"{archive}: archive lacks CIFAR batch files {missing}")
    return _from_batches([found[n] for n in [*_TRAIN_BATCHES, "test_batch"]], str(archive))


# ---------------------------------------------------------------------------- image folders


def _decode(data: bytes, name: str, image_size: tuple[int, int] | None) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its pixel limit; a dataset image that large is
            # an error here, not a warning
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{name}: cannot decode image ({exc})") from exc
    if image_size is not None and arr.shape[:2] != tuple(image_size):
        raise DatasetError(
            f"{name}: image is {arr.shape[1]}x{arr.shape[0]}, expected "
            f"{image_size[1]}x{image_size[0]}"
        )
    return arr


def _assemble(
    files: dict[str, dict[str, list[tuple[str, bytes]]]],
    source: str,
    image_size: tuple[int, int] | None,
    progress: bool,
) -> RawDataset:
    """Decode ``files[split][class] = [(name, bytes), ...]`` into a dataset."""
    for split in ("train", "test"):
        if split not in files or not files[split]:
            raise DatasetError(f"{source}: no '{split}/<class>/' image folders found")
    classes = sorted(files["train"])
    if sorted(files["test"]) != classes:
        raise DatasetError(
            f"{source}: train and test have different classes: "
            f"{classes} vs {sorted(files['test'])}"
        )
    splits = {}
    total = sum(len(v) for s in files.values() for v in s.values())
    bar = tqdm(total=total, desc="decoding images", unit="img", disable=not progress)
    for split in ("train", "test"):
        images, labels = [], []
        for label, cls in enumerate(classes):
            entries = sorted(files[split][cls])
            if not entries:
                raise DatasetError(f"{source}: class folder '{split}/{cls}' has no images")
            for name, data in entries:
                images.append(_decode(data, f"{source}:{name}", image_size))
                labels.append(label)
            bar.update(len(entries))
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise DatasetError(f"{source}: images of different sizes in '{split}': {shapes}")
        splits[split] = RawSplit(np.stack(images), np.asarray(labels, dtype=np.int64))
    bar.close()
    return RawDataset(splits["train"], splits["test"], classes, source)


def _classify_path(rel: str) -> tuple[str, str] | None:
    """Map ``[prefix/]train/<class>/<file>`` to (split, class), or None if not an image."""
    parts = Path(rel).parts
    if len(parts) < 3 or Path(rel).suffix.lower() not in IMAGE_SUFFIXES:
        return None
    split, cls = parts[-3], parts[-2]
    if split not in ("train", "test"):
        return None
    return split, cls


def read_image_folder(
    root: Path, image_size: tuple[int, int] | None = (32, 32), progress: bool = True
) -> RawDataset:
    """Read ``root/train/<class>/*`` and ``root/test/<class>/*`` image files."""
    root = Path(root)
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetError(f"{root}: expected a '{split}/' folder with one folder per class")
        files[split] = {}
        for cls_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files[split][cls_dir.name] = [
                (str(p.relative_to(root)), p.read_bytes())
                for p in cls_dir.iterdir()
                if p.suffix.lower() in IMAGE_SUFFIXES
            ]
    return _assemble(files, str(root), image_size, progress)


def _open_tar(archive: Path) -> tarfile.TarFile:
    archive = Path(archive)
    if not archive.is_file():
        raise DatasetError(f"{archive}: archive not found")
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"{archive}: not a readable tar archive ({exc})") from exc


# A CIFAR pickle batch is 31 MB and an image a few KB; nothing legitimate comes near this.
MAX_MEMBER_BYTES = 256 << 20


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse member names that would escape a folder and members too large to hold."""
    name = member.name
    if name.startswith(("/", "\\")) or ".." in Path(name).parts or (len(name) > 1 and name[1] == ":"):
        raise DatasetError(f"{archive}: member name {name!r} is absolute or contains '..'")
    if member.isfile() and member.size > MAX_MEMBER_BYTES:
        raise DatasetError(f"{archive}: member {name!r} is {member.size} bytes, more than the "
                           f"{MAX_MEMBER_BYTES}-byte limit")


def _members(tar: tarfile.TarFile, archive: Path):  # noqa: ANN202 - generator of TarInfo
    """Iterate checked members, turning a truncated or corrupt stream into a DatasetError."""
    try:
        for member in tar:
            _check_member(member, archive)
            yield member
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DatasetError(f"{archive}: archive is truncated or corrupt ({exc})") from exc


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    """A member's bytes, never more than its checked size (a lying header cannot grow it)."""
    fobj = tar.extractfile(member)
    if fobj is None:
        raise tarfile.TarError(f"member {member.name!r} has no data")
    return fobj.read(min(member.size, MAX_MEMBER_BYTES))


def read_image_archive(
    archive: Path, image_size: tuple[int, int] | None = (32, 32), progress: bool = True
) -> RawDataset:
    """Read an image-folder tree stored in a ``.tar``/``.tar.gz`` without unpacking it."""
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    with _open_tar(archive) as tar:
        try:
            for member in _members(tar, archive):
                if member.isdir():
                    where = _classify_path(member.name + "/x.jpg")
                    if where:
                        files.setdefault(where[0], {}).setdefault(where[1], [])
                    continue
                where = _classify_path(member.name) if member.isfile() else None
                if where is None:
                    continue
                data = _read_member(tar, member)
                files.setdefault(where[0], {}).setdefault(where[1], []).append((member.name, data))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DatasetError(f"{archive}: archive is truncated or corrupt ({exc})") from exc
    return _assemble(files, str(archive), image_size, progress)


def is_pickle_archive(archive: Path) -> bool:
    """True when the archive holds CIFAR pickle batches rather than image folders."""
    with _open_tar(archive) as tar:
        try:
            for member in _members(tar, archive):
                if Path(member.name).name in ("data_batch_1", "test_batch"):
                    return True
                if _classify_path(member.name):
                    return False
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DatasetError(f"{archive}: archive is truncated or corrupt ({exc})") from exc
    return False


# ---------------------------------------------------------------------------- download


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """MD5 hex digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download_cifar10(
    dest_dir: Path, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, progress: bool = True
) -> Path:
    """Download the official CIFAR-10 python archive into ``dest_dir`` and verify its MD5."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / Path(url).name
    if not (target.is_file() and md5sum(target) == md5):
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc="download",
                          disable=not progress) as bar:
                    while block := resp.read(1 << 20):
                        out.write(block)
                        bar.update(len(block))
        except OSError as exc:
            raise DatasetError(f"cannot download {url}: {exc}") from exc
        tmp.replace(target)
    got = md5sum(target)
    if got != md5:
        raise DatasetError(f"{target}: checksum mismatch (md5 {got}, expected {md5})")
    return target
