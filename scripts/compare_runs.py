"""Compare `rlcompress run` arms (e.g. joint search vs fixed-rate FPGM + k search) over seeds.

Usage::

    python scripts/compare_runs.py --name resnet20-16x \\
        --arm joint=runs/joint16/joint,runs/joint16/joint-s1,runs/joint16/joint-s2 \\
        --arm fixed=runs/joint16/fixed,runs/joint16/fixed-s1,runs/joint16/fixed-s2

Reads each run's ``report.json`` (test top-1 of the decoded file, its bytes and ratios),
``share/summary.json`` (validation top-1 after the final fine-tuning) and ``pipeline.json``
(settings), and writes ``results/joint/<name>.json`` and ``.md``: per arm the
per-seed rows, the mean, the sample standard deviation and the standard error of the mean;
every run's ``.rlc`` file is copied to ``results/joint/files/<name>/`` and its small records
(report, settings, timings, search log, allocations, pruning summary) to
``results/joint/runs/<name>/<run dir name>/``.
Unfinished runs are listed as missing, so partial results can be committed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from pathlib import Path

KEYS = ("top1", "file_bytes", "file_ratio", "paper_ratio", "search_val_top1")


def arm_record(dirs: list[str], files: Path | None = None, arm: str = "") -> dict:
    """Per-seed rows and summary statistics of one arm's run directories; with ``files``, each
    run's ``.rlc`` is copied there (``<arm>-s<seed>.rlc``) and the row names the copy."""
    rows, missing = [], []
    for d in dirs:
        report = Path(d) / "report.json"
        if not report.is_file():
            missing.append(d)
            continue
        r = json.loads(report.read_text())
        cfg = json.loads((Path(d) / "pipeline.json").read_text())
        shared = Path(d) / "share" / "summary.json"
        val = json.loads(shared.read_text()).get("val_top1") if shared.is_file() else None
        rows.append({"run": d, "seed": cfg["seed"], **{k: r[k] for k in KEYS}, "val_top1": val,
                     "baseline_top1": r["baseline_top1"], "rates": r.get("rates", {}),
                     "prune_rate": None if cfg.get("prune_rates") else cfg["prune_rate"],
                     "file": r["file"]})
        if files is not None:
            files.mkdir(parents=True, exist_ok=True)
            target = files / f"{arm}-s{cfg['seed']}.rlc"
            shutil.copyfile(r["file"], target)
            rows[-1]["file"] = str(target)
            copy_records(Path(d), files.parent.parent / "runs" / files.name / Path(d).name)
    out: dict = {"runs": rows, "missing": missing, "seeds": len(rows)}
    if rows:
        top = [r["top1"] for r in rows]
        out["top1"] = round(statistics.mean(top), 3)
        out["top1_std"] = round(statistics.stdev(top), 3) if len(top) > 1 else None
        out["top1_se"] = (round(out["top1_std"] / math.sqrt(len(top)), 3)
                          if out["top1_std"] is not None else None)
        vals = [r["val_top1"] for r in rows if r["val_top1"] is not None]
        out["val_top1"] = round(statistics.mean(vals), 3) if vals else None
        out["file_bytes"] = round(statistics.mean(r["file_bytes"] for r in rows))
        out["file_ratio"] = round(statistics.mean(r["file_ratio"] for r in rows), 2)
    return out


RECORDS = {"report.json": "report.json", "pipeline.json": "pipeline.json",
           "timings.json": "timings.json", "search/summary.json": "summary.json",
           "search/best_policy.json": "best_policy.json", "search/episodes.csv": "episodes.csv",
           "prune/summary.json": "prune_summary.json"}


def copy_records(run: Path, dest: Path) -> None:
    """The run's small records (report, settings, timings, search log and summary, allocations,
    pruning summary) into ``dest``, so a committed result can be inspected without the run."""
    dest.mkdir(parents=True, exist_ok=True)
    for src, name in RECORDS.items():
        if (run / src).is_file():
            shutil.copyfile(run / src, dest / name)
    for alloc in (run / "search").glob("allocation*.json"):
        shutil.copyfile(alloc, dest / alloc.name)


def markdown(name: str, arms: dict[str, dict]) -> str:
    """The comparison as a Markdown table."""
    lines = [f"# {name}", "", "| arm | seeds | test top-1 (mean) | std | s.e. | val top-1 (mean) | "
             "file bytes | file ratio | per seed (test) |", "|---|---|---|---|---|---|---|---|---|"]
    for arm, rec in arms.items():
        per = ", ".join(f"{r['top1']:.2f}" for r in rec["runs"])
        lines.append(f"| {arm} | {rec['seeds']} | {rec.get('top1', '')} | "
                     f"{rec.get('top1_std') or ''} | {rec.get('top1_se') or ''} | "
                     f"{rec.get('val_top1') or ''} | {rec.get('file_bytes', '')} | {rec.get('file_ratio', '')} | {per} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Write the comparison JSON and Markdown; returns the record."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--arm", action="append", required=True, metavar="NAME=DIR,DIR,...")
    ap.add_argument("--out", default="results/joint")
    args = ap.parse_args(argv)
    arms = {}
    for spec in args.arm:
        name, _, dirs = spec.partition("=")
        arms[name] = arm_record([d for d in dirs.split(",") if d],
                                Path(args.out) / "files" / args.name, name)
    record = {"name": args.name, "arms": arms}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1))
    (out / f"{args.name}.md").write_text(markdown(args.name, arms))
    print(markdown(args.name, arms))
    return record


if __name__ == "__main__":
    main()
