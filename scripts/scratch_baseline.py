"""Write the results of a finished from-scratch baseline training (issue: clean baselines).

Usage: python scripts/scratch_baseline.py RUN_DIR [--results results/baseline]

RUN_DIR is a ``rlcompress train --init scratch`` run directory with ``summary.json`` (the
training finished and measured its best epoch on validation and test; a run trained with
``--no-test``, as the device runs are, is measured on validation and test here). Writes
``<results>/<model>.json`` (model, init, train_images, top1, top5, val_top1, epochs,
best_epoch, seconds, command, recipe, machine), ``<model>_metrics.csv`` (the run's per-epoch log)
and ``<model>_curve.png`` (loss and validation top-1 per epoch). A previous fine-tuned baseline
record at ``<model>.json`` is kept as ``<model>_finetuned.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def record(run: Path, machine: str | None = None, command: str | None = None) -> dict:
    """The baseline record of a finished scratch run (``machine`` and ``command`` override what
    the run's config says, e.g. for a run made on the device machine by a script)."""
    summary = json.loads((run / "summary.json").read_text())
    if "test" not in summary:  # trained with --no-test (a device run on a reduced test split)
        summary |= measure_here(run / "best.safetensors")
    config = json.loads((run / "config.json").read_text())
    train = config["train"]
    argv = config.get("argv") or []
    return {
        "model": summary["model"], "init": "scratch",
        "train_images": None,  # filled by the caller from the data split
        "top1": round(summary["test"]["top1"], 2), "top5": round(summary["test"]["top5"], 2),
        "val_top1": round(summary["val"]["top1"], 2),
        "val_test_gap": round(summary["val"]["top1"] - summary["test"]["top1"], 2),
        "epochs": summary["epochs"], "best_epoch": summary["best_epoch"],
        "seconds": summary["seconds"],
        "command": command or ("rlcompress " + " ".join(argv[1:]) if argv else ""),
        "recipe": {k: train[k] for k in ("epochs", "batch_size", "lr", "schedule", "warmup",
                                         "momentum", "weight_decay", "label_smoothing", "seed",
                                         "augment", "precision", "select")
                   if k in train} | {k: train[k] for k in ("cutout", "time_budget") if train.get(k)},
        "machine": machine or f"{platform.machine()}, {train.get('threads') or 'all'} thread(s) "
                              "(2-core CPU)",
        "run_dir": str(run),
    }


def measure_here(weights: Path) -> dict:
    """Validation and test accuracy of ``weights`` measured on this machine (bf16, the shared
    data), as a run's summary holds them."""
    from rlcompress.jobs.train import evaluate_checkpoint

    return {split: evaluate_checkpoint(str(weights), split=split, progress=False)
            for split in ("val", "test")}


def plot_curve(rows: list[dict], path: Path, title: str) -> None:
    """Training/validation loss and top-1 per epoch."""
    ep = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    ax[0].plot(ep, [float(r["train_loss"]) for r in rows], label="train loss")
    ax[0].plot(ep, [float(r["val_loss"]) for r in rows], label="validation loss")
    ax[1].plot(ep, [float(r["train_top1"]) for r in rows], label="train top-1 (augmented)")
    ax[1].plot(ep, [float(r["val_top1"]) for r in rows], label="validation top-1")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    ax[1].set_ylim(40, 100)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """Write the record, the metrics copy and the curve."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--results", type=Path, default=Path("results/baseline"))
    ap.add_argument("--train-images", type=int, default=45000)
    ap.add_argument("--machine", help="where it trained (default: this machine)")
    ap.add_argument("--command", help="the command that trained it (default: from its config)")
    args = ap.parse_args(argv)
    if not (args.run / "summary.json").is_file():
        raise SystemExit(f"{args.run}: no summary.json, the training has not finished")
    rec = {**record(args.run, args.machine, args.command), "train_images": args.train_images}
    model = rec["model"]
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{model}.json"
    if out.is_file() and json.loads(out.read_text()).get("init") != "scratch":
        shutil.copyfile(out, args.results / f"{model}_finetuned.json")
    out.write_text(json.dumps(rec, indent=1))
    shutil.copyfile(args.run / "metrics.csv", args.results / f"{model}_metrics.csv")
    with open(args.run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    plot_curve(rows, args.results / f"{model}_curve.png",
               f"{model} from scratch: test {rec['top1']}%, validation {rec['val_top1']}%")
    print(json.dumps(rec, indent=1))
    return rec


if __name__ == "__main__":
    main()
