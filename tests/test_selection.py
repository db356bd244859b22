"""Validation-split model selection shared by the tables, the frontier and the plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlcompress.jobs.frontier import peer_points
from rlcompress.selection import best_by_validation


def _row(method: str, bits: int, lr: float, val: float, test: float) -> dict:
    return {"tool": "coremltools", "model": "resnet20", "method": method, "bits": bits,
            "epochs": 1, "lr": lr, "val_top1": val, "top1": test, "file_bytes": 1000 * bits,
            "file": f"{method}{bits}-{lr}.rlc"}


def test_best_by_validation_picks_the_highest_validation_row_per_key() -> None:
    rows = [_row("dkm", 2, 0.01, 80.0, 70.0), _row("dkm", 2, 0.001, 81.0, 60.0),
            _row("dkm", 3, 0.01, 85.0, 84.0)]
    best = best_by_validation(rows, lambda r: (r["method"], r["bits"]))
    # the test split never selects: the lower-test row wins on validation
    assert best[("dkm", 2)]["lr"] == 0.001
    assert best[("dkm", 3)]["top1"] == 84.0
    assert best_by_validation([], lambda r: r["bits"]) == {}


def test_peer_points_are_the_validation_best_rows(tmp_path: Path) -> None:
    path = tmp_path / "peers.json"
    path.write_text(json.dumps({"rows": [_row("dkm", 2, 0.01, 80.0, 70.0),
                                         _row("dkm", 2, 0.001, 81.0, 60.0)]}))
    (point,) = peer_points(str(path), "resnet20", dense=64000)
    assert point["top1"] == 60.0 and point["file_bytes"] == 2000
    assert point["file_ratio"] == 32.0 and point["method"] == "coremltools-dkm-1ep"
    with pytest.raises(ValueError, match="no coremltools rows"):
        peer_points(str(path), "resnet32", dense=64000)
