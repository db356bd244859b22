"""How many training images the search's per-policy batch-norm re-estimation needs.

Seeded random whole-bit k policies on a (pruned) ResNet-20, each scored as the search scores
it (sensitive clustering, batch norm shifted by the change measured on N augmented training
images, top-1 on the fixed validation subset) for every N; each N is compared with the largest
(mean absolute difference of top-1, Spearman correlation of the ranking) and timed per policy.
Timings are only worth reading on an idle machine; the agreement figures hold on any.

Usage: python benchmarks/reward_bn_images.py [--model CKPT] [--images 128 256 512 2048]
    [--policies 12] [--val-images 2000] [--threads 1]
Writes results/bench/reward_bn_images.json (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np
from _common import spearman

from rlcompress.clustering import ShareConfig, clusterable_layers
from rlcompress.clustering.sharing import ClusterCache
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import set_threads
from rlcompress.fileio import write_json
from rlcompress.jobs import resolve_model
from rlcompress.search.evaluator import PolicyEvaluator


def main(argv: list[str] | None = None) -> dict:
    """Score the same policies with every count of re-estimation images; write the summary."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="checkpoints/fpgm-scratch-resnet20/finetune/best.safetensors")
    ap.add_argument("--images", nargs="+", type=int, default=[128, 256, 512, 2048])
    ap.add_argument("--policies", type=int, default=12)
    ap.add_argument("--ks", nargs="+", type=int, default=[4, 8, 16, 32])
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/bench/reward_bn_images.json")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    data = load_data(DataConfig(), progress=False)
    model, _ = resolve_model(args.model, None, data.num_classes)
    names = list(clusterable_layers(model))
    rng = np.random.default_rng(args.seed)
    policies = [{n: int(rng.choice(args.ks)) for n in names} for _ in range(args.policies)]
    cache = ClusterCache()  # the clustering is the same for every N: done once
    top1, seconds = {}, {}
    for n in sorted(args.images):
        cfg = dataclasses.replace(ShareConfig(), bn_images=n)
        ev = PolicyEvaluator(model, names, data, args.val_images, cfg, cache)
        top1[n] = [ev(p) for p in policies]
        seconds[n] = ev.seconds["bn"] / len(policies)
        print(f"{n} images: bn {seconds[n]:.3f} s/policy, top-1 {np.round(top1[n], 2).tolist()}",
              flush=True)
    ref = max(args.images)
    rows = [{"bn_images": n, "bn_seconds_per_policy": round(seconds[n], 3),
             "top1": top1[n],
             "mean_abs_diff_vs_largest": round(float(np.mean(np.abs(
                 np.array(top1[n]) - np.array(top1[ref])))), 3),
             "spearman_vs_largest": round(spearman(top1[n], top1[ref]), 3)}
            for n in sorted(args.images)]
    summary = {"model": args.model, "policies": policies, "val_images": args.val_images,
               "reference_images": ref, "rows": rows, "load_average": list(os.getloadavg()),
               "command": "python benchmarks/reward_bn_images.py "
               + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json(args.out, summary)
    return summary


if __name__ == "__main__":
    main()
