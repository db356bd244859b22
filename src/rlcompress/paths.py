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


BASELINE_DIR = "checkpoints/scratch-{model}"


def checkout_roots() -> list[Path]:
    """Folders that may hold the project's committed ``checkpoints/``: ``$RLCOMPRESS_HOME``,
    the working directory, then the source checkout (an editable install)."""
    roots = [Path(os.environ["RLCOMPRESS_HOME"])] if os.environ.get("RLCOMPRESS_HOME") else []
    return [*roots, Path.cwd(), Path(__file__).resolve().parents[2]]


def baseline_path(model: str) -> Path:
    """The committed clean baseline of ``model``: trained from scratch on the 45,000-image train
    split only (so the validation split stays clean), ``checkpoints/scratch-<model>/best``.

    A training still in progress (no ``summary.json`` beside it) is not a baseline: the error
    says so instead of silently starting from a half-trained network."""
    rel = Path(BASELINE_DIR.format(model=model))
    for root in checkout_roots():
        run = root / rel
        if (run / "best.safetensors").is_file():
            if not (run / "summary.json").is_file():
                raise FileNotFoundError(
                    f"{run} is a from-scratch training still in progress (no summary.json): "
                    f"finish it (checkpoints/README.md says how) or pass --init pretrained "
                    f"(the shared checkpoint, whose training saw the validation images) or "
                    f"--init PATH")
            return run / "best.safetensors"
    raise FileNotFoundError(
        f"no committed clean baseline for {model!r} ({rel}/best.safetensors under any of "
        f"{[str(r) for r in checkout_roots()]}): train one with `rlcompress train --model "
        f"{model} --init scratch`, or pass --init pretrained / --init PATH")
