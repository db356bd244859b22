"""How far does the final training alone move a frontier point? The noise floor of every
comparison of allocators, and the ceiling on any reward's rank correlation with the result.

Usage: python benchmarks/training_noise.py --repeat 16x-greedy-s0 [--seeds 10 11] [--threads 1]
       [--reproduce 24x-random-s0]

Each point named by ``--repeat`` (a committed record of ``rlcompress frontier`` under
``results/frontier/points/<name>/``) is trained again from the same baseline, with the same
policy and the same settings; only the training seed changes (data order, augmentation and
initial clustering of the pruning fine-tune and of the trained quantization). The run
directories are ``runs/training-noise/<name>/<point>/s<seed>/`` (a rerun resumes them; each
finished seed is saved at once). Points of the frontier whose searches found the very same
policy are repeats as well. From all repeats: the pooled within-policy standard deviation of
final validation and test top-1, the training noise. ``--reproduce`` trains a point again
with its own seed: it must give the frontier's numbers exactly (training is deterministic), or
the repeats would measure changes of the code since the frontier ran rather than noise.

Then the ceiling: for each budget of the frontier, the expected Spearman correlation between
a policy's true quality and one final training of it, which no reward can exceed in
expectation. Simulated: true qualities are the observed validation top-1 shrunk so that their
spread is the observed spread less the noise, and each draw adds the noise once. Pooled over
budgets as ``frontier_reward.py`` pools (each budget centred). Validation only; test top-1 is
reported, never used for a choice. Last, the frontier's verdicts
(``rlcompress.jobs.frontier.verdicts``) again, each retrained rival at its mean and standard
deviation over its trainings, a single-trained one at the measured test noise.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import frontier_args, frontier_data, frontier_records, policy_key  # noqa: E402

from rlcompress.data import DataConfig  # noqa: E402
from rlcompress.engine import set_threads  # noqa: E402
from rlcompress.fileio import write_json  # noqa: E402
from rlcompress.jobs.frontier import (  # noqa: E402
    config_from_record,
    prune_and_share,
    verdicts,
)

OWN = "own"  # the run key of a reproduction with the point's own seed


def same_policy_groups(points: dict[str, dict]) -> list[list[str]]:
    """Tags of points at one budget whose policies (k and rates) are identical and whose
    training seeds differ, in groups of two or more (training is deterministic: two points
    with one seed and one policy are one training, not a repeat)."""
    groups: dict[tuple, dict[int, str]] = defaultdict(dict)
    for tag, p in sorted(points.items()):
        groups[(p["budget_bytes"], policy_key(p))].setdefault(p["seed"], tag)
    return [list(by_seed.values()) for by_seed in groups.values() if len(by_seed) > 1]


def pooled_sd(groups: list[list[float]]) -> tuple[float | None, int]:
    """Pooled within-group standard deviation and its degrees of freedom."""
    dof = sum(len(g) - 1 for g in groups)
    if dof == 0:
        return None, 0
    ss = sum(float(np.sum((np.asarray(g) - np.mean(g)) ** 2)) for g in groups)
    return float(np.sqrt(ss / dof)), dof


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, axis=-1), axis=-1).astype(float)


def spearman_ceiling(budgets: list[list[float]], sigma: float, draws: int = 20000,
                     seed: int = 0) -> float | None:
    """Expected Spearman correlation between true quality and quality plus N(0, sigma) noise,
    over ``budgets`` (each a list of observed values, centred separately, then pooled); the
    true values are the observed ones shrunk to the observed variance less sigma squared.
    None under three values."""
    truth = []
    for values in budgets:
        v = np.asarray(values, dtype=float)
        dev = v - v.mean()
        var = float(v.var(ddof=1)) if len(v) > 1 else 0.0
        shrink = np.sqrt(max(var - sigma ** 2, 0.0) / var) if var > 0 else 0.0
        truth.append(dev * shrink)
    if sum(len(t) for t in truth) < 3:
        return None
    rng = np.random.default_rng(seed)
    noisy = [t + rng.normal(0.0, sigma, size=(draws, len(t))) for t in truth]
    noisy = np.concatenate([n - n.mean(axis=1, keepdims=True) for n in noisy], axis=1)
    q = _ranks(np.concatenate(truth)[None, :])
    r = _ranks(noisy)
    q, r = q - q.mean(axis=1, keepdims=True), r - r.mean(axis=1, keepdims=True)
    corr = (q * r).sum(axis=1) / np.sqrt((q * q).sum(axis=1) * (r * r).sum(axis=1) + 1e-300)
    return round(float(np.mean(corr)), 3)


def retrain(model: str, point: dict, seed: int, run: Path, data_cfg: DataConfig,
            threads: int) -> dict:
    """Train ``point``'s policy again from ``model`` with the frontier's settings and ``seed``;
    returns its sharing summary (test and validation top-1)."""
    cfg = config_from_record(point["key"], threads=threads, progress=False)
    return prune_and_share(model, run, run / "share", cfg, data_cfg, point["found"], seed)


def main(argv: list[str] | None = None) -> dict:
    """Retrain the named points, estimate the noise and the ceilings, write and return them."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    frontier_args(ap)
    ap.add_argument("--repeat", nargs="*", default=[], help="points to train again (tags)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[10, 11],
                    help="training seeds of the repeats (not the points' own)")
    ap.add_argument("--reproduce", nargs="*", default=[], help="points to train again with "
                    "their own seed, which must give their frontier numbers (tags)")
    ap.add_argument("--work", default="", help="run folder (default runs/training-noise/<name>)")
    ap.add_argument("--out", default="", help="default results/ablations/training_noise_<name>.json")
    ap.add_argument("--frontier", default="", help="the frontier's results, for verdicts with "
                    "the retrained rivals (default results/frontier/<name>.json)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    points = frontier_records(Path(args.points or f"results/frontier/points/{args.name}"),
                              args.mode, args.model)
    unknown = [t for t in [*args.repeat, *args.reproduce] if t not in points]
    if unknown:
        raise SystemExit(f"no finished point {unknown}; known: {sorted(points)}")
    out = Path(args.out or f"results/ablations/training_noise_{args.name}.json")
    saved = _saved(out)
    data_cfg = frontier_data(args)
    work = Path(args.work or f"runs/training-noise/{args.name}")
    own = [t for t in args.repeat if points[t]["seed"] in args.seeds]
    if own:  # before any training: a point's own seed would only repeat its frontier run
        raise SystemExit(f"--seeds includes the own training seed of {own}")
    # a reproduction first: its own seed must give its frontier numbers again, or the repeats
    # would measure changes of the code since, not the noise of training
    jobs = [(tag, points[tag]["seed"], f"{tag}/{OWN}") for tag in args.reproduce]
    jobs += [(tag, seed, f"{tag}/s{seed}") for tag in args.repeat for seed in args.seeds]
    for tag, seed, key in jobs:
        if key not in saved:
            t0 = time.perf_counter()
            s = retrain(args.model, points[tag], seed, work / key, data_cfg, args.threads)
            saved[key] = {"top1": s["top1"], "val_top1": s["val_top1"],
                          "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{key}: {s['top1']:.2f}% test, {s['val_top1']:.2f}% val "
                  f"(the frontier's: {points[tag]['top1']:.2f}%, "
                  f"{points[tag]['val_top1']:.2f}%)", file=sys.stderr, flush=True)
            saved = _save(out, args, points, saved, argv)
    report = _save(out, args, points, saved, argv, final=True)
    print(json.dumps({k: report[k] for k in ("noise", "ceiling")}, indent=1))
    return report


def _saved(out: Path, key: str = "retrained") -> dict | list:
    """The retrained runs (or another entry) already saved in ``out``."""
    empty: dict | list = {} if key == "retrained" else []
    return json.loads(out.read_text()).get(key, empty) if out.is_file() else empty


def _save(out: Path, args: argparse.Namespace, points: dict[str, dict], saved: dict,
          argv: list[str] | None, final: bool = False) -> dict:
    """Write the report with ``saved`` and what other processes saved meanwhile (several may
    retrain points of one frontier at once); returns the report (all runs) when ``final``,
    else the merged runs."""
    merged = {**_saved(out), **saved}
    command = "python benchmarks/training_noise.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    commands = [c for c in _saved(out, "commands") if c != command] + [command]
    report = {**_report(args, points, merged), "commands": commands}
    write_json(out, report)
    return report if final else merged


def _report(args: argparse.Namespace, points: dict[str, dict], saved: dict) -> dict:
    """Repeat groups (retrained points and same-policy frontier points), noise, ceilings."""
    repeats = {k: v for k, v in saved.items() if not k.endswith(f"/{OWN}")}
    groups = []
    for tag in sorted({k.split("/")[0] for k in repeats}):
        runs = [{"run": f"{tag} (frontier)", "top1": points[tag]["top1"],
                 "val_top1": points[tag]["val_top1"]}]
        runs += [{"run": k, **v} for k, v in sorted(repeats.items()) if k.split("/")[0] == tag]
        groups.append({"source": "retrained", "point": tag, "runs": runs})
    reproduced = [{"point": k.split("/")[0], **v,
                   "frontier_top1": points[k.split("/")[0]]["top1"],
                   "frontier_val_top1": points[k.split("/")[0]]["val_top1"],
                   "exact": (v["top1"], v["val_top1"]) == (points[k.split("/")[0]]["top1"],
                                                           points[k.split("/")[0]]["val_top1"])}
                  for k, v in sorted(saved.items()) if k.endswith(f"/{OWN}")]
    for tags in same_policy_groups(points):
        groups.append({"source": "same policy found by several searches", "point": tags[0],
                       "runs": [{"run": t, "top1": points[t]["top1"],
                                 "val_top1": points[t]["val_top1"]} for t in tags]})
    for g in groups:  # each group's own spread, to see whether the noise depends on budget
        g["sd"] = {key: round(float(np.std([r[key] for r in g["runs"]], ddof=1)), 3)
                   for key in ("val_top1", "top1")}
    noise = {}
    for key in ("val_top1", "top1"):
        sd, dof = pooled_sd([[r[key] for r in g["runs"]] for g in groups])
        noise[key] = {"sd": None if sd is None else round(sd, 3), "dof": dof}
    by_budget = defaultdict(list)
    for p in points.values():
        by_budget[p["target_ratio"]].append(p["val_top1"])
    sigma = noise["val_top1"]["sd"]
    ceiling = {} if sigma is None else {"per_budget": [{"target_ratio": r, "points": len(v),
                               "observed_sd": round(float(np.std(v, ddof=1)), 3),
                               "spearman_ceiling": spearman_ceiling([v], sigma)}
                              for r, v in sorted(by_budget.items()) if len(v) > 1],
               "pooled_budget_centred": spearman_ceiling(list(by_budget.values()), sigma)}
    return {"name": args.name, "model": args.model, "mode": args.mode, "groups": groups,
            "retrained": saved, "reproduced": reproduced, "noise": noise, "ceiling": ceiling,
            **_rival_verdicts(args, points, groups, noise["top1"]["sd"] or 0.0)}


def _rival_verdicts(args: argparse.Namespace, points: dict[str, dict], groups: list[dict],
                    noise_sd: float) -> dict:
    """The frontier's verdicts with each retrained point's row replaced by the mean and
    standard deviation over its trainings, so that a rival with repeats has its own standard
    error (and a single-seed one the measured ``noise_sd``)."""
    path = Path(args.frontier or f"results/frontier/{args.name}.json")
    if not path.is_file():
        return {}
    rows = copy.deepcopy(json.loads(path.read_text())["rows"])
    for g in (g for g in groups if g["source"] == "retrained"):
        p = points[g["point"]]
        for r in rows:
            if (r["method"], r["budget_bytes"]) == (p["method"], p["budget_bytes"]):
                tops = [run["top1"] for run in g["runs"]]
                r.update(top1=round(float(np.mean(tops)), 2),
                         top1_std=round(float(np.std(tops, ddof=1)), 2), seeds=len(tops),
                         val_top1=round(float(np.mean([run["val_top1"] for run in g["runs"]])), 2))
    return {"frontier": str(path), "noise_sd_test": noise_sd,
            "verdicts_with_retrained_rivals": verdicts(rows, noise_sd=noise_sd)}


if __name__ == "__main__":
    main()
