"""Decoder robustness and the fixed size of .rlc files: format 1 vs format 2.

Usage: python benchmarks/codec_hostile.py [--cases 10000] [--memory-gb 3]

1. Header (fixed) bytes of real files: the committed ResNet-20 k16 file of the paper table
   (format 1) re-encoded as format 2, and a ResNet-56 at k16 (random weights: the header does
   not depend on them) in both formats.
2. The structure-aware fuzzer (``rlcompress.codec.fuzz``) over the re-encoded ResNet-20 file,
   in a subprocess whose address space is capped, so an allocation bomb would fail it.

Writes results/bench/codec_hostile.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from rlcompress.clustering import clusterable_layers, resolve_policy, share_model
from rlcompress.codec import inspect_file, load_compressed, save_compressed
from rlcompress.codec.fuzz import fuzz_in_subprocess
from rlcompress.models import build_model, model_spec

ROOT = Path(__file__).resolve().parents[1]
R20_V1 = ROOT / "results" / "paper_tables" / "files" / "resnet20-k16.rlc"


def header_sizes(tmp: Path) -> list[dict]:
    rows = []
    model, manifest = load_compressed(R20_V1)
    v2 = tmp / "resnet20-k16-v2.rlc"
    save_compressed(model, manifest["spec"], v2, extra=manifest["extra"])
    for fmt, path in ((1, R20_V1), (2, v2)):
        info = inspect_file(path)
        rows.append({"model": "resnet20 (FPGM, k16; paper table file)", "format": fmt,
                     "layers": len(info["layers"]), "file_bytes": info["file_bytes"],
                     "header_bytes": info["header_bytes"]})
    torch.manual_seed(0)
    r56 = build_model("resnet56").eval()
    share_model(r56, resolve_policy("k16", clusterable_layers(r56)))
    p = tmp / "r56.rlc"
    save_compressed(r56, model_spec("resnet56"), p)
    info = inspect_file(p)
    rows.append({"model": "resnet56 (unpruned, k16)", "format": 2, "layers": len(info["layers"]),
                 "file_bytes": info["file_bytes"], "header_bytes": info["header_bytes"]})
    for r in rows:
        r["limit_bytes"] = 2048 + 30 * r["layers"]
    return rows, v2


def run_fuzz(path: Path, cases: int, memory_gb: float) -> dict:
    t0 = time.perf_counter()
    out = fuzz_in_subprocess(path, cases, 0, (4, 3, 32, 32), int(memory_gb * (1 << 30)))
    if "died" not in out:
        out["seconds"] = round(time.perf_counter() - t0, 1)
        out["address_space_gb"] = memory_gb
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--memory-gb", type=float, default=3.0)
    ap.add_argument("--out", default=str(ROOT / "results" / "bench" / "codec_hostile.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        sizes, v2 = header_sizes(Path(tmp))
        fuzz = run_fuzz(v2, args.cases, args.memory_gb)
    result = {"command": "python benchmarks/codec_hostile.py " + " ".join(argv or sys.argv[1:]),
              "header_sizes": sizes, "fuzz": fuzz}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
