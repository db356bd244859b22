from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

import rlcompress

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("compress_vgg", ROOT / "examples" / "compress_vgg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_library_api_on_a_non_resnet(tmp_path: Path):
    report = _example().main(["--tiny", "--out", str(tmp_path / "vgg")])
    path = Path(report["file"])
    assert path.is_file() and report["file_bytes"] == path.stat().st_size
    assert report["file_bytes"] <= 12_000  # the budget given to compress()
    assert report["layers_kept_whole"] == {}  # every conv of the VGG could be shrunk
    saved = json.loads((tmp_path / "vgg" / "report.json").read_text())
    assert saved == report


def test_compress_refuses_ambiguous_budget():
    with pytest.raises(ValueError, match="exactly one"):
        rlcompress.compress(torch.nn.Conv2d(3, 3, 1), [], [], target_size="1KB", target_ratio=4.0)
