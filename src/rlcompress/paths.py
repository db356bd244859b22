"""Locating the project's ``../shared`` folder (datasets, pretrained checkpoints)."""

from __future__ import annotations

import os
from pathlib import Path

PRETRAINED_FILES = {
    "resnet20": "pretrained/resnet20-12fca82f.th",
    "resnet32": "pretrained/resnet32-d509ac18.th",
}


def shared_roots() -> list[Path]:
    """Candidate ``shared/`` folders: ``$RLCOMPRESS_SHARED``, then ``../shared`` of the working
    directory, then ``../shared`` of the source checkout (an editable install)."""
    roots = []
    if os.environ.get("RLCOMPRESS_SHARED"):
        roots.append(Path(os.environ["RLCOMPRESS_SHARED"]))
    roots += [Path.cwd().parent / "shared", Path.cwd() / "shared"]
    roots.append(Path(__file__).resolve().parents[3] / "shared")
    return roots


def find_shared(relpath: str) -> Path | None:
    """The first existing ``<shared>/relpath``, or None."""
    for root in shared_roots():
        if (root / relpath).exists():
            return root / relpath
    return None


def pretrained_path(model: str) -> Path:
    """Path of the shared pretrained checkpoint of ``model``; a clear error if absent."""
    if model not in PRETRAINED_FILES:
        raise FileNotFoundError(
            f"no shared pretrained checkpoint is known for {model!r}; pass --init PATH "
            f"(known: {sorted(PRETRAINED_FILES)})"
        )
    found = find_shared(PRETRAINED_FILES[model])
    if found is None:
        raise FileNotFoundError(
            f"{PRETRAINED_FILES[model]} not found under any of {[str(r) for r in shared_roots()]}; "
            "set RLCOMPRESS_SHARED or pass --init PATH"
        )
    return found
