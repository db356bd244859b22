"""Time the default ``rlcompress run`` (or ``--quick``) end to end, stage by stage.

    python benchmarks/pipeline_time.py --quick     # -> results/pipeline/quick.json, quick.rlc
    python benchmarks/pipeline_time.py             # -> results/pipeline/default.json, default.rlc
    python benchmarks/pipeline_time.py --quick --epoch-images 0
        # --quick with whole fine-tuning epochs, as before session 24 -> quick-epoch-images-0.*

Runs the pipeline with its defaults from the committed clean baseline in a fresh run directory
and writes the report, wall and CPU seconds per stage (CPU: every thread of this process), the
machine's load average before the start (timings are only worth committing when it is near
zero) and the decoded file's test top-1. Issue #13's targets: at most 30 minutes for the
default, 5 for ``--quick``, on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from rlcompress.data import DataConfig, load_data
from rlcompress.fileio import write_json
from rlcompress.jobs.share import evaluate_file
from rlcompress.pipeline.run import QUICK, PipelineConfig, run_pipeline


def _equivalent(cfg: PipelineConfig, quick: bool) -> str:
    """The ``rlcompress run`` command that runs ``cfg``: quick's settings spelled out where
    ``--epoch-images`` replaced quick itself."""
    if cfg.quick or not quick:
        return f"rlcompress run{' --quick' if quick else ''}"
    return "rlcompress run" + "".join(f" --{k.replace('_', '-')} {getattr(cfg, k)}" for k in QUICK)


def main(argv: list[str] | None = None) -> dict:
    """Run and time the pipeline; returns what it writes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="time `rlcompress run --quick`")
    ap.add_argument("--epoch-images", type=int, default=None,
                    help="with --quick: training images per fine-tuning epoch instead of "
                         "quick's own (0: whole epochs)")
    ap.add_argument("--run-dir", default="", help="default runs/bench-pipeline-<name>")
    ap.add_argument("--results", default="results/pipeline")
    ap.add_argument("--resume", action="store_true",
                    help="continue an interrupted run (its timings accumulate) instead of "
                         "starting afresh")
    args = ap.parse_args(argv)
    name = "quick" if args.quick else "default"
    cfg = PipelineConfig(quick=args.quick)
    if args.epoch_images is not None:
        if not args.quick:
            ap.error("--epoch-images goes with --quick")
        # quick's settings with another epoch length (no longer "quick": resolved() would
        # put quick's own back)
        cfg = replace(cfg.resolved(), quick=False, epoch_images=args.epoch_images)
        name = f"quick-epoch-images-{args.epoch_images}"
    run = Path(args.run_dir or f"runs/bench-pipeline-{name}")
    if run.exists() and not args.resume:
        shutil.rmtree(run)
    load = os.getloadavg()
    w0, c0 = time.perf_counter(), time.process_time()
    report = run_pipeline(cfg, str(run), DataConfig(), progress=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    kept = out / f"{name}.rlc"
    shutil.copyfile(report["file"], kept)
    decoded = evaluate_file(kept, load_data(DataConfig(), progress=False))["test"]["top1"]
    result = {
        "command": "python benchmarks/pipeline_time.py"
                   + "".join(f" {a}" for a in (sys.argv[1:] if argv is None else argv)),
        "equivalent": _equivalent(cfg, args.quick),
        "wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "stages": report["seconds"],
        "load_average_before": [round(x, 2) for x in load],
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine(),
                    "torch": torch.__version__},
        "decoded_test_top1": round(decoded, 2), "report": {**report, "file": str(kept)},
    }
    write_json(out / f"{name}.json", result)
    print(f"{name}: {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU; test top-1 "
          f"{report['top1']:.2f}% (baseline {report['baseline_top1']:.2f}%), "
          f"{report['file_bytes'] / 1000:.1f} KB", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
