"""Run directories: opening them safely and writing their CSV and JSON files atomically."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from rlcompress import dist
from rlcompress.fileio import atomic_path, write_json  # noqa: F401 - re-exported


def open_run_dir(path: str | Path, resume: bool) -> Path:
    """Create ``path``; refuse a non-empty one unless resuming (nothing is ever overwritten).

    Under torchrun every rank checks before any rank writes (the barrier), and rank 0 creates.
    """
    run = Path(path)
    refuse = run.exists() and any(run.iterdir()) and not resume
    dist.barrier()
    if refuse:
        raise FileExistsError(f"{run} is not empty; pass resume=True (--resume) to continue it")
    if dist.is_main():
        run.mkdir(parents=True, exist_ok=True)
    return run


def read_rows(path: Path, key: str, upto: int) -> list[dict]:
    """Rows of a CSV log whose integer column ``key`` is at most ``upto`` (drops unfinished work)."""
    if not path.is_file():
        return []
    with open(path) as f:
        return [r for r in csv.DictReader(f) if int(r[key]) <= upto]


def write_rows(path: Path, fields: list[str], rows: list[dict]) -> None:
    """Rewrite a CSV log atomically (a crash leaves the previous complete file)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def claim(marker: Path, key: str, value: str, refusal: str) -> None:
    """Record ``value`` under ``key`` in the JSON file ``marker``, beside what it holds: what a
    run directory's work was made from (a sharing core, the digest of its model's weights), so
    that a later run on something else is refused instead of mixed with the work it resumes.
    A different recorded value is a ValueError: ``refusal``, then both values."""
    held = json.loads(marker.read_text()) if marker.is_file() else {}
    made = held.get(key)
    if made is None:
        write_json(marker, {**held, key: value})
    elif made != value:
        raise ValueError(f"{refusal} ({key}: {made!r} recorded, now {value!r})")
