"""Speed of the k search on ResNet-20: episodes per second and seconds per phase.

Usage: python benchmarks/search_speed.py [--model CKPT] [--episodes 300] [--target-ratio 8]
Runs a real DDPG search into --run-dir (replaced if present), writes
results/bench/search_speed.json, and copies the search's summary, best policy and plots to
--artifacts. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from rlcompress.data import DataConfig, load_data
from rlcompress.jobs import resolve_model
from rlcompress.search import DDPGConfig, SearchConfig, run_search


def main() -> None:
    """Run the search once and write the timing report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="checkpoints/fpgm-scratch-resnet20/finetune/best.safetensors",
                    help="checkpoint to search on (default: the clean FPGM-pruned ResNet-20)")
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--target-ratio", type=float, default=8.0,
                    help="paper-ratio budget (8 = the k16 rule's ratio on an unpruned model)")
    ap.add_argument("--run-dir", default="runs/bench-search-speed")
    ap.add_argument("--artifacts", default="results/search/bench-resnet20")
    ap.add_argument("--val-images", type=int, default=2000)
    ap.add_argument("--reward-bn-images", type=int, default=SearchConfig.reward_bn_images,
                    help="batch-norm re-estimation images per reward (0: the sharing's 2048)")
    ap.add_argument("--prune-rates", default="", help="joint search (on a dense model)")
    ap.add_argument("--target-size", default="", help="file budget instead of --target-ratio")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", default="results/bench/search_speed.json")
    args = ap.parse_args()
    data = load_data(DataConfig(), progress=False)
    model, spec = resolve_model(args.model, None, data.num_classes)
    cfg = SearchConfig(episodes=args.episodes,
                       target_ratio=0.0 if args.target_size else args.target_ratio,
                       target_size=args.target_size, val_images=args.val_images, progress=True,
                       reward_bn_images=args.reward_bn_images, prune_rates=args.prune_rates,
                       threads=args.threads)
    run = Path(args.run_dir)
    shutil.rmtree(run, ignore_errors=True)
    # timings are only worth committing from an idle machine: record what else was running
    load = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    summary = run_search(model, spec, data, run, cfg, None, DDPGConfig())
    wall = time.perf_counter() - t0
    art = Path(args.artifacts)
    art.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json", "best_policy.json", "episodes.csv", "progress.png",
                 "best_policy.png", "accuracy_vs_size.png"):
        shutil.copyfile(run / name, art / name)
    report = {
        "model": args.model, "episodes": args.episodes, "target_ratio": cfg.target_ratio,
        "target_size": cfg.target_size, "prune_rates": cfg.prune_rates,
        "val_images": summary["val_images"], "reward_bn_images": cfg.reward_bn_images,
        "wall_seconds": round(wall, 1), "episodes_per_second": round(args.episodes / wall, 3),
        "phases_seconds": summary["seconds"],
        "target_seconds_300": 180, "met": wall * 300 / args.episodes <= 180,
        "note": "phases: cluster = k-means per (layer, k) incl. cache misses; evaluate = "
                "validation inference; bn = batch-norm re-estimation per policy; fisher = the "
                "one-off Fisher importances; agent = DDPG acting and updates; the rest is "
                "bookkeeping (CSV, agent state, plots) and the rule-policy and re-scoring "
                "evaluations at the end",
        "best_val_top1": summary["best"]["val_top1"], "best_paper_ratio": summary["best"]["paper_ratio"],
        "load_average_before": load, "command": "python " + " ".join(sys.argv),
        "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
