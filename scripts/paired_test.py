"""Is one compressed file's test top-1 above another's by more than the test split's sampling
noise? Both files classify the same images, so the noise of their difference comes from the
images on which exactly one of them is right (a paired comparison, McNemar's test): this
script decodes each pair of ``.rlc`` files, classifies the split and reports both top-1, the
images only one gets right, the standard error of the difference and McNemar's exact p.

    python scripts/paired_test.py --pairs A.rlc:B.rlc [C.rlc:D.rlc ...] --out RESULTS.json
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from rlcompress.codec import load_compressed
from rlcompress.data import DataConfig, load_data
from rlcompress.engine.batches import split_loader
from rlcompress.engine.evaluate import top1_hits
from rlcompress.engine.runtime import set_threads, to_channels_last
from rlcompress.fileio import write_json


def correct(path: str, data: object, split: str, precision: str) -> torch.Tensor:
    """Per image of ``split``: does the decoded file's model classify it right? (Counted as
    ``evaluate_model`` counts the file's top-1.)"""
    model, _ = load_compressed(path)
    # as evaluate_model runs it: bf16 convolutions in another memory layout round differently
    to_channels_last(model)
    return top1_hits(model, split_loader(data, split), "cpu", precision)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """McNemar's exact two-sided p: twice the binomial(only_a + only_b, 1/2) tail at the
    smaller count (exact integers, so no scipy)."""
    n, low = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(low + 1)) / 2**n)


def paired(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Top-1 of each, the discordant counts, the difference (b - a) with its standard error
    (percentage points) and McNemar's exact two-sided p."""
    n = a.numel()
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    diff = (only_b - only_a) / n
    # variance of the mean of the per-image difference d in {-1, 0, 1}
    var = ((only_a + only_b) / n - diff**2) / n
    p = mcnemar_p(only_a, only_b)
    return {"images": n, "top1_a": round(100 * a.float().mean().item(), 2),
            "top1_b": round(100 * b.float().mean().item(), 2), "only_a_right": only_a,
            "only_b_right": only_b, "difference": round(100 * diff, 3),
            "difference_se": round(100 * math.sqrt(max(var, 0.0)), 3),
            "mcnemar_p": round(float(p), 4)}


def main(argv: list[str] | None = None) -> dict:
    """Compare every pair and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", nargs="+", required=True, help="A.rlc:B.rlc (difference B - A)")
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--precision", default="bf16", help="as the frontier measured its points")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--data-dir", default=DataConfig().data_dir)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    data = load_data(DataConfig(data_dir=args.data_dir), progress=False)
    cache: dict[str, torch.Tensor] = {}
    rows = []
    for pair in args.pairs:
        a, b = pair.split(":")
        for f in (a, b):
            if f not in cache:
                cache[f] = correct(f, data, args.split, args.precision)
        rows.append({"a": a, "b": b, **paired(cache[a], cache[b])})
    report = {"split": args.split, "precision": args.precision, "rows": rows}
    write_json(Path(args.out), report)
    return report


if __name__ == "__main__":
    for r in main()["rows"]:
        print(f"{Path(r['b']).name} - {Path(r['a']).name}: {r['difference']:+.2f} "
              f"+- {r['difference_se']:.2f} (only a {r['only_a_right']}, only b "
              f"{r['only_b_right']}, p {r['mcnemar_p']})")
