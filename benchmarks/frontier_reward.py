"""Does the joint search's reward rank the frontier's finished points? Top-1 against KL.

Usage: python benchmarks/frontier_reward.py [--name resnet20] [--val-images 5000] [--threads 1]
       [--ft-steps 300]

Every finished point of ``rlcompress frontier`` (its committed records under
``results/frontier/points/<name>/``) is one policy (a pruning rate per chain, a k per layer)
with its validation top-1 after the frontier's pruning fine-tune and trained quantization. This
re-scores each policy the way the search does (the dense baseline, pruned filters masked, every
layer clustered, batch norm re-estimated on the frontier's reward images) on ``--val-images``
validation images, with two signals: top-1 (the search's reward) and the KL divergence of the
outputs from the uncompressed model's. Per budget and pooled over budgets (each budget's
values centred), it writes the Spearman correlation of each signal with the final validation
top-1 to ``results/ablations/frontier_reward_<name>.json``.

``--ft-steps N`` adds a third signal, a reward that includes some training: the baseline
physically pruned (FPGM) at the policy's rates, clustered at its k, trained for N steps of the
frontier's distilled DKM training (no pruning fine-tune before it), batch norm re-estimated,
then top-1 on the same validation images. It costs minutes per policy on 2 cores, so rows are
saved as they finish (``--out``'s ``.ft<N>.json`` companion) and a rerun skips them. With it, ``choose_by_training`` asks what
the learned policy would have reached had each seed kept the best of its own policy and the
allocations it was seeded with by this signal. Clean: validation images only,
never the test split; the policies were chosen before this measurement.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    after_short_ft,
    frontier_args,
    frontier_data,
    frontier_records,
    pruned,
    spearman,
)

from rlcompress.clustering.sharing import ClusterCache, ShareConfig, clusterable_layers  # noqa: E402
from rlcompress.data import load_data  # noqa: E402
from rlcompress.engine import TrainConfig, set_threads  # noqa: E402
from rlcompress.fileio import write_json  # noqa: E402
from rlcompress.jobs import resolve_model  # noqa: E402
from rlcompress.search import SearchConfig  # noqa: E402
from rlcompress.search.joint import JointEvaluator, JointSpace, parse_rates  # noqa: E402
from rlcompress.search.runner import _reward_share_cfg, make_budget  # noqa: E402


def points(folder: Path, mode: str, model: str) -> list[dict]:
    """Finished points trained from ``model``: method, seed, budget, final validation/test
    top-1, and the policy."""
    return [{**{k: p[k] for k in ("method", "seed", "target_ratio", "budget_bytes", "top1",
                                  "val_top1")},
             "k": p["found"]["best"]["k"], "rate": p["found"]["best"].get("rate", {}),
             "model_digest": p["key"]["model"], "search": p["key"]["search"],
             "train": p["key"]["train"]}
            for p in frontier_records(folder, mode, model).values()]


def _evaluator(model: torch.nn.Module, spec: dict, data: object, search: dict,
               n_val: int, cache: ClusterCache) -> JointEvaluator:
    """The search's reward evaluator for one budget, on ``n_val`` validation images."""
    cfg = SearchConfig(target_size=search["target_size"], prune_rates=search["prune_rates"],
                       reward_bn_images=search["reward_bn_images"], progress=False)
    share_cfg = ShareConfig()
    names = list(clusterable_layers(model, share_cfg.first, share_cfg.last))
    budget = make_budget(model, spec, names, cfg, share_cfg)
    space = JointSpace(model, names, budget, parse_rates(cfg.prune_rates))
    return JointEvaluator(space, model, names, data, n_val, _reward_share_cfg(share_cfg, cfg),
                          cache, cfg.precision)


def _centred(rows: list[dict], key: str) -> list[float]:
    by_budget = defaultdict(list)
    for r in rows:
        by_budget[r["budget_bytes"]].append(r[key])
    return [r[key] - float(np.mean(by_budget[r["budget_bytes"]])) for r in rows]


def _trained_rewards(rows: list[dict], model: torch.nn.Module, spec: dict, data: object,
                     evaluators: dict[int, JointEvaluator], args: argparse.Namespace,
                     partial: Path) -> None:
    """Set each row's ``reward_ft``: validation top-1 after ``args.ft_steps`` steps of
    distilled DKM training of the pruned, clustered baseline, at the DKM temperature of the
    point's own training (rows saved to ``partial``, reused only under the same settings)."""
    settings = {"mode": args.mode, "ft_steps": args.ft_steps, "ft_lr": args.ft_lr,
                "ft_distill": args.ft_distill, "val_images": args.val_images}
    saved = json.loads(partial.read_text()) if partial.is_file() else {}
    done = saved["rows"] if saved.get("settings") == settings else {}
    cfg = TrainConfig(epochs=1, lr=args.ft_lr, distill=args.ft_distill, progress=False,
                      threads=args.threads, warmup=0.0, seed=0)
    for r in rows:
        tag = f"{r['target_ratio']:g}x-{r['method']}-s{r['seed']}-{r['model_digest']}"
        if tag not in done:
            t0 = time.perf_counter()
            net = pruned(model, spec, r["rate"])
            done[tag] = round(after_short_ft(net, model, r["k"], data, args.ft_steps, cfg,
                                             evaluators[r["budget_bytes"]],
                                             ShareConfig(dkm_tau=r["train"]["share_dkm_tau"])), 3)
            write_json(partial, {"settings": settings, "rows": done})
            print(f"{tag}: {done[tag]:.2f}% after {args.ft_steps} steps "
                  f"({time.perf_counter() - t0:.0f} s); final val {r['val_top1']:.2f}%",
                  file=sys.stderr, flush=True)
        r["reward_ft"] = done[tag]


def choose_by_training(rows: list[dict], learned: str = "ddpg") -> list[dict]:
    """What if each learned seed had kept, of its own final policy and the allocations it was
    seeded with (the search's ``allocator_demos``), the one with the best ``reward_ft``? Per
    budget: the chosen points' mean final test / validation top-1 next to the learned policy's
    and the best demonstration's. The choice reads validation images only."""
    out = []
    for budget in sorted({r["budget_bytes"] for r in rows}):
        here = [r for r in rows if r["budget_bytes"] == budget]
        seeds = [r for r in here if r["method"] == learned]
        if not seeds:
            continue
        demos = set(seeds[0]["search"].get("allocator_demos", "").split(",")) - {""}
        shown = [r for r in here if r["method"] in demos and r["seed"] == 0]
        picks = [max([own, *shown], key=lambda r: r["reward_ft"]) for own in seeds]
        best = max(shown, key=lambda r: r["top1"]) if shown else None
        out.append({"target_ratio": seeds[0]["target_ratio"], "budget_bytes": budget,
                    "picked": [f"{p['method']}-s{p['seed']}" for p in picks],
                    "top1": round(float(np.mean([p["top1"] for p in picks])), 3),
                    "val_top1": round(float(np.mean([p["val_top1"] for p in picks])), 3),
                    f"{learned}_top1": round(float(np.mean([r["top1"] for r in seeds])), 3),
                    f"{learned}_val_top1": round(float(np.mean([r["val_top1"] for r in seeds])), 3),
                    **({"best_demo": best["method"], "best_demo_top1": best["top1"],
                        "best_demo_val_top1": best["val_top1"]} if best else {})})
    return out


def _rank(a: list[float], b: list[float]) -> float | None:
    """Spearman correlation, or None under three points (undefined, not JSON's NaN)."""
    return round(spearman(a, b), 3) if len(a) >= 3 else None


def main(argv: list[str] | None = None) -> dict:
    """Score every finished point with each signal, write and return the correlations."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    frontier_args(ap)
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--out", default=None)
    ap.add_argument("--ft-steps", type=int, default=0,
                    help="also score each policy after this many steps of DKM training (0: no)")
    ap.add_argument("--ft-lr", type=float, default=0.01, help="peak lr of those steps")
    ap.add_argument("--ft-distill", type=float, default=0.5, help="their distillation weight")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    rows = points(Path(args.points or f"results/frontier/points/{args.name}"), args.mode,
                  args.model)
    if not rows:
        raise SystemExit(f"no finished point of {args.name} starts from {args.model}")
    data = load_data(frontier_data(args), progress=False)
    model, spec = resolve_model(args.model, None, data.num_classes)
    cache = ClusterCache()
    evaluators: dict[int, JointEvaluator] = {}
    for r in rows:
        if r["budget_bytes"] not in evaluators:
            evaluators[r["budget_bytes"]] = _evaluator(model, spec, data, r["search"],
                                                      args.val_images, cache)
        ev = evaluators[r["budget_bytes"]]
        scores = ev.joint_scores(r["k"], r["rate"], kl=True)
        r["reward_top1"], r["reward_kl"] = round(scores["top1"], 3), round(scores["kl"], 5)
        print(f"{r['target_ratio']:g}x {r['method']} s{r['seed']}: reward top-1 "
              f"{r['reward_top1']:.2f}%, KL {r['reward_kl']:.4f}; final val {r['val_top1']:.2f}%",
              file=sys.stderr)
    signals = {"top1": ("reward_top1", 1), "minus_kl": ("reward_kl", -1)}
    out = Path(args.out or f"results/ablations/frontier_reward_{args.name}.json")
    if args.ft_steps:
        _trained_rewards(rows, model, spec, data, evaluators, args,
                         out.with_name(f"{out.stem}.ft{args.ft_steps}.json"))
        signals[f"ft{args.ft_steps}"] = ("reward_ft", 1)
    by_budget = defaultdict(list)
    for r in rows:
        by_budget[r["budget_bytes"]].append(r)
    per_budget = [{"target_ratio": rs[0]["target_ratio"], "budget_bytes": b, "points": len(rs),
                   **{f"spearman_{s}": _rank([sign * r[key] for r in rs],
                                             [r["val_top1"] for r in rs])
                      for s, (key, sign) in signals.items()}}
                  for b, rs in sorted(by_budget.items())]
    final = _centred(rows, "val_top1")
    pooled = {"points": len(rows),
              **{f"spearman_{s}": _rank([sign * v for v in _centred(rows, key)], final)
                 for s, (key, sign) in signals.items()}}
    report = {"name": args.name, "model": args.model, "val_images": args.val_images,
              **({"ft_steps": args.ft_steps, "ft_lr": args.ft_lr, "ft_distill": args.ft_distill,
                  "choose_by_training": choose_by_training(rows)} if args.ft_steps else {}),
              "per_budget": per_budget, "pooled_budget_centred": pooled,
              "rows": [{k: v for k, v in r.items() if k not in ("k", "rate", "search", "train")}
                       for r in rows],
              "command": "python benchmarks/frontier_reward.py " + " ".join(argv or sys.argv[1:])}
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, report)
    print(json.dumps({"per_budget": per_budget, "pooled": pooled}, indent=1))
    return report


if __name__ == "__main__":
    main()
