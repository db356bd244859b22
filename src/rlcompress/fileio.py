"""Atomic file writes: every file a resume, a table or a later stage reads goes through here.

A write goes to a temporary file in the target's folder, is flushed and fsynced, then renamed
over the target (and the folder fsynced), so a kill at any moment leaves either the previous
complete file or the new complete file, never a truncated one.

Under torchrun only rank 0 writes: other ranks write to a private scratch file that is thrown
away, and every write ends with a barrier, so whatever a rank reads next is complete on disk.
Files a rank writes for itself and reads back (probes, exports being verified) belong in a
:func:`scratch_dir`, where every rank writes its own copy and nobody waits.
The module depends only on :mod:`rlcompress.dist`, so every layer may use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rlcompress import dist


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_path(path: str | Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # some platforms cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_SCRATCH: set[Path] = set()


@contextmanager
def scratch_dir(parent: str | Path | None = None) -> Iterator[Path]:
    """A private temporary folder (in ``parent``, default the system's), removed on exit,
    whose files every rank writes itself."""
    with tempfile.TemporaryDirectory(prefix="rlcompress-", dir=parent) as tmp:
        folder = Path(tmp).resolve()
        _SCRATCH.add(folder)
        try:
            yield folder
        finally:
            _SCRATCH.discard(folder)


def _is_scratch(path: Path) -> bool:
    return bool(_SCRATCH) and any(p in _SCRATCH for p in path.resolve().parents)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    For writers that need a file name (``torch.save``, ``safetensors.save_file``). If the body
    raises, the temporary file is removed and ``path`` is left untouched. On ranks other than 0
    the file is written to scratch and discarded (see the module docstring).
    """
    path = Path(path)
    shared = not _is_scratch(path)
    if shared and not dist.is_main():
        with tempfile.TemporaryDirectory(prefix="rlcompress-rank") as scratch:
            yield Path(scratch) / path.name
        dist.barrier()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600; give the file the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_UMASK)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_path(path.parent, directory=True)
    if shared:
        dist.barrier()


def save_figure(fig: object, path: str | Path, dpi: int = 110) -> Path:
    """Save a matplotlib figure atomically (rank 0 only under torchrun)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: object, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically (non-JSON values as ``str``)."""
    return write_text(path, json.dumps(obj, indent=indent, default=str))


def read_json(path: str | Path) -> object:
    """Read a JSON file, naming the path in the error if it is unreadable or not JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: cannot read JSON ({exc.__class__.__name__}: {exc})") from exc
