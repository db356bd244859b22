"""Does a longer final training meet the accuracy targets, and does it keep or erase the
differences between allocators? Frontier points trained again with more epochs.

Usage: python benchmarks/long_training.py --train 16x-ddpg-s0 16x-greedy-s0 [--share-epochs 15]
       [--teacher checkpoints/scratch-resnet32/best.safetensors] [--threads 1]

Each point named by ``--train`` (a committed record of ``rlcompress frontier`` under
``results/frontier/points/<name>/``) is trained again from the same baseline with its own
policy, its own seed and the frontier's settings, except the trained quantization, which runs
``--share-epochs`` epochs instead of the frontier's (the pruning fine-tune is unchanged, so the
pruned model is the frontier's own), and with ``--teacher`` distils from that model (e.g. a
larger network trained on the same train split) instead of the unshared one; with
``--prune-select start-or-best`` the pruned model before its fine-tune competes (the
frontier's default since session 27; the ResNet-20 frontier pinned ``best``). Run folders
``runs/long-training/<name>/<variant>/<tag>/`` (variant ``e<N>[-select-<S>][-<teacher>]``) resume;
each finished point is saved at once to ``results/ablations/long_training_<name>.json``
(several processes may share it) and its file to
``results/ablations/files/long_training_<name>/<variant>/<tag>.rlc``. A point whose policy and
seed another point already trained reuses that training. The report gives each
point's test and validation top-1 short (the frontier's) and long, its loss against the
baseline's test top-1, and per budget and method the mean and standard deviation over seeds.
Choices inside the training (the best epoch) use validation images only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import frontier_args, frontier_data, frontier_records, policy_key  # noqa: E402

from rlcompress.engine import set_threads  # noqa: E402
from rlcompress.engine.train import SELECT  # noqa: E402
from rlcompress.fileio import write_json  # noqa: E402
from rlcompress.jobs.frontier import (  # noqa: E402
    FrontierConfig,
    config_from_record,
    prune_and_share,
)


def baseline_top1(model: str, given: float | None = None) -> float:
    """The baseline's test top-1: ``given``, else from the ``summary.json`` beside its weights
    (a training run's folder)."""
    if given is not None:
        return given
    summary = Path(model).parent / "summary.json"
    if not summary.is_file():
        raise SystemExit(f"{summary}: missing; give the baseline's test top-1 (--baseline-top1)")
    return float(json.loads(summary.read_text())["test"]["top1"])


def long_config(point: dict, args: argparse.Namespace) -> FrontierConfig:
    """The frontier settings ``point`` was trained with, but ``--share-epochs`` epochs of
    trained quantization and, where given, ``--prune-select``."""
    cfg = config_from_record(point["key"], threads=args.threads, progress=False)
    return replace(cfg, share_epochs=args.share_epochs,
                   prune_select=args.prune_select or cfg.prune_select)


def pruned_summary(run: Path) -> dict | None:
    """The pruned model a point's sharing started from: validation top-1 before and after its
    fine-tune, and the chosen one's validation and test top-1 (None: the point prunes
    nothing)."""
    path = run / "prune" / "summary.json"
    if not path.is_file():
        return None
    s = json.loads(path.read_text())
    return {k: s[k] for k in ("val_top1_before_finetune", "best_epoch", "val_top1", "top1")}


def summarise(rows: list[dict]) -> list[dict]:
    """Per (budget, method, epochs, teacher, pruned-model selection): mean and standard
    deviation of the long trainings' test and validation top-1 and loss, with the same points'
    short (frontier) means."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["target_ratio"], r["method"], r["share_epochs"], r.get("teacher") or "",
               r.get("prune_select") or "best")
        groups.setdefault(key, []).append(r)
    out = []
    for (ratio, method, epochs, teacher, select), rs in sorted(groups.items()):
        row = {"target_ratio": ratio, "method": method, "share_epochs": epochs,
               "teacher": teacher or None, "prune_select": select, "n": len(rs),
               "file_ratio": round(statistics.fmean(r["file_ratio"] for r in rs), 3)}
        for key in ("top1", "val_top1", "loss", "short_top1", "short_val_top1"):
            vals = [r[key] for r in rs]
            row[key] = round(statistics.fmean(vals), 2)
            row[f"{key}_std"] = round(statistics.stdev(vals), 2) if len(vals) > 1 else None
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> dict:
    """Train the named points longer, save each at once, write and return the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    frontier_args(ap)
    ap.add_argument("--train", nargs="+", required=True, help="points to train again (tags)")
    ap.add_argument("--share-epochs", type=int, default=15,
                    help="epochs of trained quantization (the frontier's: 5)")
    ap.add_argument("--baseline-top1", type=float, default=None, help="the baseline's test "
                    "top-1 (default: from summary.json beside --model)")
    ap.add_argument("--teacher", default=None, help="distil the trained quantization from this "
                    "model (a checkpoint or a model name, e.g. a larger network trained on the "
                    "same train split) instead of the unshared one")
    ap.add_argument("--prune-select", default=None, choices=SELECT,
                    help="which pruned model the sharing starts from (default: the frontier's "
                    "setting; start-or-best lets the pruned model before its fine-tune compete)")
    ap.add_argument("--work", default="", help="run folder (default runs/long-training/<name>)")
    ap.add_argument("--out", default="", help="default results/ablations/long_training_<name>.json")
    args = ap.parse_args(argv)
    if args.share_epochs < 1:
        raise SystemExit("--share-epochs must be at least 1")
    set_threads(args.threads)
    points = frontier_records(Path(args.points or f"results/frontier/points/{args.name}"),
                              args.mode, args.model)
    unknown = [t for t in args.train if t not in points]
    if unknown:
        raise SystemExit(f"no finished point {unknown}; known: {sorted(points)}")
    base = baseline_top1(args.model, args.baseline_top1)
    out = Path(args.out or f"results/ablations/long_training_{args.name}.json")
    label = variant(args.share_epochs, args.teacher, args.prune_select)
    files = out.parent / "files" / out.stem / label
    work = Path(args.work or f"runs/long-training/{args.name}") / label
    for tag in args.train:
        key, saved = f"{tag}/{label}", _saved(out)
        if key in saved:
            continue
        p = points[tag]
        twin = _twin(saved, points, tag, label)
        if twin:  # training is deterministic: the same policy and seed is the same training
            row = {**twin, "point": tag, "method": p["method"], "short_top1": p["top1"],
                   "short_val_top1": p["val_top1"], "same_training_as": twin["point"]}
            _save(out, {key: row}, base, args, argv)
            continue
        t0 = time.perf_counter()
        cfg = long_config(p, args)
        s = prune_and_share(args.model, work / tag, work / tag / "share", cfg, frontier_data(args),
                            p["found"], p["seed"], teacher=args.teacher)
        row_pruned = pruned_summary(work / tag)
        files.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / tag / "share" / "model.rlc", files / f"{tag}.rlc")
        row = {"point": tag, "method": p["method"], "seed": p["seed"],
               "k": p["found"]["best"]["k"], "rate": p["found"]["best"].get("rate", {}),
               "target_ratio": p["target_ratio"], "share_epochs": args.share_epochs,
               "teacher": args.teacher, "prune_select": cfg.prune_select,
               "file_bytes": s["file_bytes"], "file_ratio": s["file_ratio"],
               "top1": s["top1"], "val_top1": s["val_top1"], "loss": round(base - s["top1"], 2),
               "short_top1": p["top1"], "short_val_top1": p["val_top1"],
               "pruned": row_pruned,
               "file": str(files / f"{tag}.rlc"), "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{key}: {row['top1']:.2f}% test ({row['loss']:+.2f} below {base}), "
              f"{row['val_top1']:.2f}% val (frontier: {p['top1']:.2f}%, {p['val_top1']:.2f}%)",
              file=sys.stderr, flush=True)
        _save(out, {key: row}, base, args, argv)
    report = _save(out, {}, base, args, argv)
    print(json.dumps(report["summary"], indent=1))
    return report


def variant(epochs: int, teacher: str | None = None, prune_select: str | None = None) -> str:
    """The name of a training variant's run and file folders: ``e15``, then
    ``-select-<prune_select>`` where it overrides the frontier's, then ``-<teacher's run folder
    or model name>`` with a teacher."""
    label = f"e{epochs}"
    if prune_select:
        label += f"-select-{prune_select}"
    if teacher:
        path = Path(teacher)
        label += f"-{path.parent.name if path.suffix == '.safetensors' else path.name}"
    return label


def _twin(saved: dict, points: dict[str, dict], tag: str, label: str) -> dict | None:
    """A saved row of variant ``label`` trained with ``tag``'s policy and seed (another
    method's point whose search found the same policy), or None."""
    for key, row in saved.items():
        if (key.split("/", 1)[1] == label and row["point"] in points
                and policy_key(points[row["point"]]) == policy_key(points[tag])
                and points[row["point"]]["seed"] == points[tag]["seed"]):
            return row
    return None


def _saved(out: Path) -> dict:
    """The points already trained and saved in ``out`` (by any process)."""
    return json.loads(out.read_text())["points"] if out.is_file() else {}


def _save(out: Path, new: dict, base: float, args: argparse.Namespace,
          argv: list[str] | None) -> dict:
    """Merge ``new`` into what ``out`` holds now (other processes may have added points),
    rewrite the summary and the commands (keeping fields it does not write, such as a note),
    and return the report."""
    old = json.loads(out.read_text()) if out.is_file() else {}
    merged = {**old.get("points", {}), **new}
    command = "python benchmarks/long_training.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    commands = [c for c in old.get("commands", []) if c != command] + [command]
    report = {**old, "baseline": args.model, "baseline_test_top1": base, "frontier": args.name,
              "summary": summarise(list(merged.values())), "points": merged,
              "commands": commands}
    write_json(out, report)
    return report


if __name__ == "__main__":
    main()
