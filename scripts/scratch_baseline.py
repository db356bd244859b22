"""Write the results of a finished from-scratch baseline training (issue: clean baselines).

Usage: python scripts/scratch_baseline.py RUN_DIR [--results results/baseline]
       [--machine TEXT] [--command TEXT] [--source S --data-dir D --val-size N]

RUN_DIR is a ``rlcompress train --init scratch`` run directory with ``summary.json`` (the
training finished and measured its best epoch on validation and test; a run trained with
``--no-test``, as the device runs are, is measured on validation and test here, and the
test top-1 joins its ``summary.json``). Writes
``<results>/<model>.json`` (model, init, train_images, top1, top5, val_top1, epochs,
best_epoch, seconds, command, recipe, machine), ``<model>_metrics.csv`` (the run's per-epoch log)
and ``<model>_curve.png`` (loss and validation top-1 per epoch). A previous fine-tuned baseline
record at ``<model>.json`` is kept as ``<model>_finetuned.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

from rlcompress.cli import add_config_args, config_from_args
from rlcompress.data import DataConfig
from rlcompress.fileio import write_json
from rlcompress.jobs.train import baseline_record, write_baseline


def record(run: Path, machine: str | None = None, command: str | None = None,
           data: DataConfig | None = None) -> dict:
    """The baseline record of a finished scratch run (``machine`` and ``command`` override what
    the run's config says, e.g. for a run made on the device machine by a script).

    A run trained with ``--no-test`` (a device run on a reduced test split) is measured here on
    ``data``'s validation and test splits; its validation top-1 must agree with the training's,
    else the data is not the data it trained on, and the measurement joins its ``summary.json``
    so the run folder keeps it."""
    path = run / "summary.json"
    summary = json.loads(path.read_text())
    if "test" not in summary:
        here = measure_here(run / "best.safetensors", data)
        if abs(here["val"]["top1"] - summary["val"]["top1"]) > 0.1:
            raise SystemExit(f"{run}: validation top-1 {here['val']['top1']:.2f} here, "
                             f"{summary['val']['top1']:.2f} in training: other data?")
        summary |= {"test": here["test"], "test_measured_on": platform.node() or "this machine"}
        write_json(path, summary)
    return {**baseline_record(run, summary, machine, command), "init": "scratch"}


def measure_here(weights: Path, data: DataConfig | None = None) -> dict:
    """Validation and test accuracy of ``weights`` measured on this machine (bf16; by default
    the shared data), as a run's summary holds them."""
    from rlcompress.jobs.train import evaluate_checkpoint

    return {split: evaluate_checkpoint(str(weights), split=split, data=data, progress=False)
            for split in ("val", "test")}


def main(argv: list[str] | None = None) -> dict:
    """Write the record, the metrics copy and the curve."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--results", type=Path, default=Path("results/baseline"))
    ap.add_argument("--train-images", type=int, default=45000)
    ap.add_argument("--machine", help="where it trained (default: this machine)")
    ap.add_argument("--command", help="the command that trained it (default: from its config)")
    add_config_args(ap, DataConfig)  # the data a --no-test run is measured on
    args = ap.parse_args(argv)
    if not (args.run / "summary.json").is_file():
        raise SystemExit(f"{args.run}: no summary.json, the training has not finished")
    data = config_from_args(DataConfig, args)
    rec = {**record(args.run, args.machine, args.command, data),
           "train_images": args.train_images}
    model = rec["model"]
    out = args.results / f"{model}.json"
    if out.is_file() and json.loads(out.read_text()).get("init") != "scratch":
        shutil.copyfile(out, args.results / f"{model}_finetuned.json")
    write_baseline(rec, args.run, args.results, model)
    print(json.dumps(rec, indent=1))
    return rec


if __name__ == "__main__":
    main()
