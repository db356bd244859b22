"""What each step of post-training sharing buys: method, importance, batch-norm re-estimation.

For every layer at 2**bits clusters (2, 3, 4 bits; stem and classifier included), validation
and test top-1 (bf16) of: unweighted Lloyd, exact, Fisher-weighted exact (``sensitive``), each
without and with batch-norm re-estimation; plus the unclustered model with its statistics
re-estimated on plain and on augmented training images (why augmentation matters).

Usage: python benchmarks/sharing_ablation.py [--model CHECKPOINT] [--threads N]
Writes results/bench/sharing_ablation.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from rlcompress.clustering import ShareConfig, clusterable_layers
from rlcompress.clustering.quantize import quantize
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import calibration_batches, evaluate_model, recalibrate_bn, set_threads
from rlcompress.fileio import write_json
from rlcompress.models import load_checkpoint


def _scores(net, data) -> dict:
    return {"val_top1": round(evaluate_model(net, data, "val")["top1"], 2),
            "top1": round(evaluate_model(net, data, "test")["top1"], 2)}


def main() -> None:
    """Run the ablation and write its JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="checkpoints/baseline-resnet20/best.safetensors")
    p.add_argument("--bits", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="results/bench/sharing_ablation.json")
    args = p.parse_args()
    set_threads(args.threads)
    data = load_data(DataConfig(), progress=False)
    base, _ = load_checkpoint(args.model)
    rows = [{"bits": 32, "method": "none", "bn": "original", **_scores(base, data)}]
    for augment in (False, True):
        net = copy.deepcopy(base)
        recalibrate_bn(net, calibration_batches(data, 2048, seed=1, augment=augment))
        rows.append({"bits": 32, "method": "none", "bn": "augmented" if augment else "plain",
                     **_scores(net, data)})
        print(json.dumps(rows[-1]), flush=True)
    layers = list(clusterable_layers(base))
    for bits in args.bits:
        for method in ("lloyd", "exact", "sensitive"):
            for bn in (0, 2048):
                net = copy.deepcopy(base)
                t0 = time.perf_counter()
                timing = quantize(net, {n: 2**bits for n in layers}, data,
                                  ShareConfig(method=method, bn_images=bn))
                rows.append({"bits": bits, "method": method, "bn": "augmented" if bn else "original",
                             "seconds": round(time.perf_counter() - t0, 2), **timing,
                             **_scores(net, data)})
                print(json.dumps(rows[-1]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, {"model": args.model, "rows": rows, "reward_cost": reward_cost(base, data)})


def reward_cost(model, data, calls: int = 6) -> list[dict]:
    """Seconds per search-reward call (2,000 validation images) with and without batch-norm
    re-estimation, after the clusterings are cached (what most episodes cost)."""
    from rlcompress.search import PolicyEvaluator

    names = list(clusterable_layers(model))
    out = []
    for bn in (0, 2048, 512):
        ev = PolicyEvaluator(model, names, data, 2000, ShareConfig(bn_images=bn))
        policies = [{n: 2 ** (2 + (i + j) % 3) for j, n in enumerate(names)} for i in range(3)]
        for pol in policies:  # fill the clustering cache
            ev(pol)
        seconds = dict(ev.seconds)
        t0 = time.perf_counter()
        for i in range(calls):
            ev(policies[i % 3])
        per_call = (time.perf_counter() - t0) / calls
        out.append({"bn_images": bn, "seconds_per_call": round(per_call, 3),
                    "bn_seconds_per_call": round((ev.seconds["bn"] - seconds["bn"]) / calls, 3),
                    "fisher_seconds_once": round(ev.seconds["fisher"], 2)})
        print(json.dumps(out[-1]), flush=True)
    return out


if __name__ == "__main__":
    main()
