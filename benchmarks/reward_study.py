"""Does the search's reward predict the accuracy a policy ends with after fine-tuning?

For one trained (pruned) model and one tight budget, this draws N distinct policies within the
budget (the allocators' policies, then seeded random policies brought within budget by the
search's projection rule), scores each with several candidate reward signals on a fixed
validation subset, then clusters and fine-tunes each the way ``rlcompress share`` does
(trained quantization, distilled from the uncompressed model, E epochs) and measures its
validation top-1 on the whole validation split. It reports the Spearman rank correlation of
every signal with that final accuracy (the test split is never touched).

Signals (all on the same ``--val-images`` subset):

* ``top1_plain``: top-1 after plain k-means, no batch-norm re-estimation (the paper's reward);
* ``top1``: top-1 after the default clustering (Fisher-weighted, batch-norm re-estimated);
* ``neg_kl``: minus the KL divergence of those outputs from the uncompressed model's.
* ``ft_top1`` (with ``--ft-steps`` N > 0): top-1 after clustering and only N steps of the same
  distilled trained quantization (batch norm re-estimated after them), a candidate for
  re-scoring a search's best few policies.

Usage::

    python benchmarks/reward_study.py --model checkpoints/fpgm-resnet20/finetune/best.safetensors \\
        --target-ratio 24 --policies 20 --epochs 1

Rows are appended to ``results/ablations/reward_study_<name>.json`` as they finish (a rerun
skips finished policies); the summary and a scatter plot are rewritten at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np
import torch

from rlcompress.clustering import ShareConfig, clusterable_layers, freeze_qat
from rlcompress.clustering.quantize import quantize, sharing_spec
from rlcompress.clustering.sharing import ClusterCache
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import (
    TrainConfig,
    evaluate_model,
    fit,
    set_threads,
)
from rlcompress.fileio import save_figure, write_json
from rlcompress.models import load_checkpoint
from rlcompress.search import SearchConfig, make_budget
from rlcompress.search.allocators import ALLOCATORS, AllocContext
from rlcompress.search.evaluator import PolicyEvaluator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import after_short_ft, spearman  # noqa: E402

PLAIN = ShareConfig(method="lloyd", bn_images=0)
SIGNALS = ("top1_plain", "top1", "neg_kl", "ft_top1")


def draw_policies(ctx: AllocContext, n: int, seed: int) -> list[dict[str, int]]:
    """The allocators' policies, then seeded random whole-bit policies within the budget."""
    names, budget = ctx.names, ctx.budget
    out: list[list[int]] = []
    for name in ("uniform", "greedy", "hessian"):
        ks = ALLOCATORS[name](ctx)
        if ks not in out:
            out.append(ks)
    rng = np.random.default_rng(seed)
    opts = ctx.options()
    tries = 0
    while len(out) < n and tries < 100 * n:
        tries += 1
        ks = budget.project([int(rng.choice(opts)) for _ in names])
        if budget.total(ks) <= budget.limit and ks not in out:
            out.append(ks)
    return [dict(zip(names, ks, strict=True)) for ks in out[:n]]


def final_accuracy(model: torch.nn.Module, spec: dict, ks: dict[str, int], data: object,
                   args: argparse.Namespace, run: Path) -> float:
    """Cluster and fine-tune like ``rlcompress share``; validation top-1 of the result."""
    net, teacher = copy.deepcopy(model), copy.deepcopy(model).eval()
    quantize(net, ks, data, ShareConfig(bn_mode=args.bn_mode), trainable=True)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, distill=args.distill, progress=False,
                      threads=args.threads, select="last")
    fit(net, {**spec, **sharing_spec(net)}, data, cfg, run, resume=True, teacher=teacher)
    freeze_qat(net.eval())
    return evaluate_model(net, data, "val", "bf16")["top1"]


def short_ft_signal(model: torch.nn.Module, ks: dict[str, int], data: object,
                    args: argparse.Namespace, ev: PolicyEvaluator) -> float:
    """Top-1 on the subset after ``args.ft_steps`` steps of distilled trained quantization."""
    cfg = TrainConfig(epochs=1, lr=args.lr, distill=args.distill, progress=False,
                      threads=args.threads, warmup=0.0)
    return after_short_ft(model, copy.deepcopy(model).eval(), ks, data, args.ft_steps, cfg, ev,
                          ShareConfig(bn_mode=args.bn_mode))


def plot(rows: list[dict], summary: dict, path: Path) -> None:
    """Scatter of every signal against the final validation top-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signals = [s for s in SIGNALS if s in summary["spearman"]]
    fig, axes = plt.subplots(1, len(signals), figsize=(4 * len(signals), 3.6))
    final = [r["final_val_top1"] for r in rows]
    for ax, sig in zip(axes, signals, strict=True):
        ax.scatter([r[sig] for r in rows], final, s=14)
        ax.set(xlabel=sig, ylabel="val top-1 after fine-tuning (%)",
               title=f"Spearman {summary['spearman'][sig]:+.2f}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Run (or continue) the study and write its JSON and plot."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="a trained (pruned) checkpoint .safetensors")
    ap.add_argument("--target-ratio", type=float, default=0.0)
    ap.add_argument("--target-size", default="")
    ap.add_argument("--policies", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per policy")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--distill", type=float, default=0.5)
    ap.add_argument("--val-images", type=int, default=2000, help="subset the signals use")
    ap.add_argument("--ft-steps", type=int, default=0,
                    help="also the ft_top1 signal: top-1 after this many fine-tuning steps")
    ap.add_argument("--k-max", type=int, default=256, help="largest k a policy may use")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bn-mode", default="shift", choices=("shift", "replace"),
                    help="batch-norm re-estimation (ShareConfig.bn_mode; studies begun before "
                         "session 11 used replace)")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--name", default="", help="results name (default: the model's folder)")
    ap.add_argument("--runs", default="runs/reward_study")
    ap.add_argument("--source", default="", help="dataset source (default: found as usual)")
    ap.add_argument("--data-dir", default="", help="dataset cache folder (default: data/)")
    ap.add_argument("--val-size", type=int, default=5000)
    ap.add_argument("--out", default="", help="results JSON (default: results/ablations/...)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    name = args.name or Path(args.model).parent.name
    out = Path(args.out) if args.out else ROOT / "results" / "ablations" / f"reward_study_{name}.json"
    dcfg = {"source": args.source, "val_size": args.val_size,
            **({"data_dir": args.data_dir} if args.data_dir else {})}
    data = load_data(DataConfig(**dcfg), progress=False)
    model, spec = load_checkpoint(args.model)
    model.eval()
    names = list(clusterable_layers(model))
    scfg = SearchConfig(target_ratio=args.target_ratio, target_size=args.target_size,
                        val_images=args.val_images, progress=False, k_max=args.k_max)
    share_cfg = ShareConfig(bn_mode=args.bn_mode)
    budget = make_budget(model, spec, names, scfg, share_cfg)
    budget.check()
    cache = ClusterCache()
    default = PolicyEvaluator(model, names, data, args.val_images, share_cfg, cache)
    plain = PolicyEvaluator(model, names, data, args.val_images, PLAIN, cache)
    policies = draw_policies(AllocContext(model, names, budget, data, default, args.seed),
                             args.policies, args.seed)
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    done = {json.dumps(r["k"], sort_keys=True) for r in rows}
    for i, ks in enumerate(policies):
        if json.dumps(ks, sort_keys=True) in done:
            continue
        scores = default.scores(ks)
        row = {"policy": i, "k": ks, "cost": budget.total([ks[n] for n in names]),
               "top1_plain": plain(ks), "top1": scores["top1"], "neg_kl": -scores["kl"],
               **({"ft_top1": short_ft_signal(model, ks, data, args, default)}
                  if args.ft_steps else {}),
               "final_val_top1": final_accuracy(model, spec, ks, data, args,
                                                Path(args.runs) / name / f"p{i:03d}")}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "k"}), flush=True)
        write_json(out, {"rows": rows})
    final = [r["final_val_top1"] for r in rows]
    summary = {
        "model": args.model, "budget": {"kind": budget.kind, "limit": budget.limit},
        "policies": len(rows), "epochs": args.epochs, "lr": args.lr, "distill": args.distill,
        "ft_steps": args.ft_steps, "bn_mode": args.bn_mode,
        "val_images": args.val_images,
        "spearman": {s: round(spearman([r[s] for r in rows], final), 3) for s in SIGNALS
                     if all(s in r for r in rows)} if len(rows) > 2 else {},
        "command": "python benchmarks/reward_study.py " + " ".join(argv or sys.argv[1:]),
        "rows": rows,
    }
    write_json(out, summary)
    if len(rows) > 2:
        plot(rows, summary, out.with_suffix(".png"))
    print(json.dumps(summary["spearman"]))
    return summary


if __name__ == "__main__":
    main()
