"""Re-export the MobileNetV2 example's file with batch norms as scale and shift, and measure both.

Usage: python scripts/compact_bn_mobilenetv2.py
Reads results/examples/mobilenetv2.rlc, writes results/examples/mobilenetv2-compact-bn.{rlc,json}
(file bytes of both, fp32 test top-1 of both).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

import rlcompress
from rlcompress.codec import save_compressed
from rlcompress.codec.format import _parse, _read_file
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import evaluate_model
from rlcompress.models.zoo import MobileNetV2

SRC = Path("results/examples/mobilenetv2.rlc")
DST = Path("results/examples/mobilenetv2-compact-bn.rlc")


def main() -> dict:
    """Re-export, evaluate both files on the test split, write the JSON."""
    torch.set_num_threads(1)
    model = rlcompress.load(SRC, model=MobileNetV2(width=0.35, last=640))
    _, _, manifest = _parse(_read_file(SRC, 1 << 30))
    save_compressed(model, manifest["spec"], DST, extra=manifest.get("extra", {}), compact_bn=True)
    compact = rlcompress.load(DST, model=MobileNetV2(width=0.35, last=640))
    data = load_data(DataConfig(), progress=False)
    out = {"file": str(DST), "bytes": DST.stat().st_size, "bytes_full_bn": SRC.stat().st_size,
           "test_top1_fp32": evaluate_model(compact, data, "test", "fp32")["top1"],
           "test_top1_fp32_full_bn": evaluate_model(model, data, "test", "fp32")["top1"],
           "command": "python scripts/compact_bn_mobilenetv2.py"}
    DST.with_suffix(".json").write_text(json.dumps(out, indent=1))
    print(out)
    return out


if __name__ == "__main__":
    main()
