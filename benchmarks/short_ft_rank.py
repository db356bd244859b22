"""Can a cheap signal rank finished runs the way their full fine-tuning did?

For finished ``rlcompress run`` directories (one per arm, same baseline and budget), this
rebuilds each run's searched policy on the baseline (FPGM at its rates, then its k per layer)
and measures, on the whole validation split:

* ``pre``: top-1 right after clustering (batch norm re-estimated), what the search's reward sees;
* ``ft<N>``: top-1 after only N steps of the same distilled trained quantization (teacher: the
  uncompressed baseline; batch norm re-estimated after), for every N of ``--ft-steps``;

next to the run's own validation top-1 after its full fine-tuning (pruning + sharing epochs),
and the Spearman correlation of each signal with it. The test split is never read. Usage::

    python benchmarks/short_ft_rank.py --name resnet20-16x --ft-steps 50 200 \\
        --arm hessian=runs/joint16/hessian --arm greedy=runs/joint16/greedy ...

Rows are appended to ``results/ablations/short_ft_rank_<name>.json`` as arms finish (a rerun
skips finished arms).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rlcompress.clustering import ShareConfig
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import (
    TrainConfig,
    set_threads,
)
from rlcompress.fileio import write_json
from rlcompress.models import load_checkpoint
from rlcompress.search.evaluator import PolicyEvaluator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import after_short_ft, pruned, spearman  # noqa: E402


def arm_policy(run: Path) -> tuple[dict[str, int], dict[str, float], float]:
    """(k per layer, rate per chain, validation top-1 after the full fine-tuning) of a run."""
    best = json.loads((run / "search" / "best_policy.json").read_text())
    final = json.loads((run / "share" / "summary.json").read_text())
    return ({n: int(k) for n, k in best["k"].items()},
            {n: float(r) for n, r in best.get("rate", {}).items() if r > 0}, final["val_top1"])


def after_steps(net: torch.nn.Module, teacher: torch.nn.Module, ks: dict[str, int], data: object,
                steps: int, args: argparse.Namespace, ev: PolicyEvaluator) -> float:
    """Validation top-1 after ``steps`` steps of distilled trained quantization."""
    cfg = TrainConfig(epochs=1, lr=args.lr, distill=args.distill, progress=False,
                      threads=args.threads, warmup=0.0, seed=args.seed)
    return after_short_ft(net, teacher, ks, data, steps, cfg, ev)


def main(argv: list[str] | None = None) -> dict:
    """Measure every arm (resuming) and write the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="checkpoints/scratch-resnet20/best.safetensors")
    ap.add_argument("--arm", action="append", required=True, help="NAME=RUN_DIR")
    ap.add_argument("--ft-steps", type=int, nargs="+", default=[50, 200])
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--distill", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--name", required=True)
    ap.add_argument("--source", default="", help="dataset source (default: found as usual)")
    ap.add_argument("--data-dir", default="", help="dataset cache folder (default: data/)")
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--out", default="", help="results JSON (default: results/ablations/...)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out) if args.out else ROOT / "results" / "ablations" / f"short_ft_rank_{args.name}.json"
    dcfg = {"source": args.source, "val_size": args.val_size,
            **({"data_dir": args.data_dir} if args.data_dir else {})}
    data = load_data(DataConfig(**dcfg), progress=False)
    model, spec = load_checkpoint(args.model)
    model.eval()
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    done = {r["arm"] for r in rows}
    for item in args.arm:
        name, _, run = item.partition("=")
        if name in done:
            continue
        ks, rates, final = arm_policy(Path(run))
        net = pruned(model, spec, rates)
        ev = PolicyEvaluator(net, list(ks), data, 10**9, ShareConfig())
        row = {"arm": name, "run": run, "rates": rates, "k": ks, "final_val_top1": final,
               "pre": round(ev(ks), 2)}
        for n in args.ft_steps:
            row[f"ft{n}"] = round(after_steps(net, model, ks, data, n, args, ev), 2)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("k", "rates")}), flush=True)
        write_json(out, {"rows": rows})
    signals = ["pre", *(f"ft{n}" for n in args.ft_steps)]
    final = [r["final_val_top1"] for r in rows]
    summary = {"model": args.model, "ft_steps": args.ft_steps, "lr": args.lr,
               "spearman_with_final_val": {s: round(spearman([r[s] for r in rows], final), 3)
                                           for s in signals} if len(rows) > 2 else {},
               "distill": args.distill, "val_images": args.val_size,
               "command": "python benchmarks/short_ft_rank.py " + " ".join(argv or sys.argv[1:]),
               "rows": rows}
    write_json(out, summary)
    return summary


if __name__ == "__main__":
    main()
