"""Batch-norm re-estimation after post-training sharing: replace the statistics by those of the
calibration images, or shift the uncompressed statistics by the change clustering causes.

Every Conv2d and Linear at 2, 3 and 4 bits (sensitive clustering, 2,048 augmented training
images), validation and test top-1 (bf16), for each checkpoint given.

Usage: python benchmarks/bn_mode.py [CHECKPOINT ...] [--threads N]
Writes results/bench/bn_mode.json (or --out).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

from rlcompress.clustering import ShareConfig, clusterable_layers
from rlcompress.clustering.quantize import quantize
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import evaluate_model, set_threads
from rlcompress.fileio import write_json
from rlcompress.models import load_checkpoint

DEFAULT = ["checkpoints/scratch-106ep-resnet20/best.safetensors",
           "checkpoints/scratch-cpu160-resnet20/best.safetensors"]


def main(argv: list[str] | None = None) -> list[dict]:
    """Measure both modes at every bit width for every checkpoint; write the rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--bits", nargs="+", type=int, default=[2, 3, 4])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/bench/bn_mode.json")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    data = load_data(DataConfig(), progress=False)
    rows = []
    for path in args.models:
        base, _ = load_checkpoint(path)
        layers = list(clusterable_layers(base))
        for bits in args.bits:
            for mode in ("replace", "shift"):
                net = copy.deepcopy(base)
                quantize(net, {n: 2**bits for n in layers}, data, ShareConfig(bn_mode=mode))
                rows.append({"model": path, "bits": bits, "bn_mode": mode,
                             "val_top1": round(evaluate_model(net, data, "val")["top1"], 2),
                             "top1": round(evaluate_model(net, data, "test")["top1"], 2)})
                print(json.dumps(rows[-1]), flush=True)
    write_json(Path(args.out), {"rows": rows, "threads": args.threads})
    return rows


if __name__ == "__main__":
    main()
