"""Bring frontier points made on another machine into this repository, measured again here.

Usage: python scripts/remeasure_points.py FOLDER NAME [--results results/frontier-gpu]
       [--source S] [--data-dir D] [--val-size N]

FOLDER is a frontier results folder from elsewhere (``scripts/gpu_frontier.sh`` brings back
``results/frontier-gpu``), holding ``points/NAME/*.json`` records and ``files/NAME/*.rlc``. The
device machine's copy of the data keeps only 10 test images per class, so each point's file is
decoded and measured here on the full validation and test splits; the record keeps the other
machine's figures as ``top1_device`` / ``val_top1_device``. Records whose file is missing or
does not decode (a call cut off while copying) are skipped and listed. Search records are
copied as they are.
Afterwards ``rlcompress frontier ... --collect-only`` (``bash scripts/gpu_frontier.sh --collect
NAME``) builds the tables from the records alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rlcompress.cli import add_config_args, config_from_args
from rlcompress.codec.format import CodecError
from rlcompress.data import DataConfig, load_data
from rlcompress.fileio import write_json
from rlcompress.jobs.share import evaluate_file


def remeasure(folder: Path, name: str, results: Path, data_cfg: DataConfig) -> dict:
    """Copy ``folder``'s records and files of frontier ``name`` into ``results``, each point
    measured again on this machine's data; returns what was done."""
    data = load_data(data_cfg, progress=False)
    src_points, src_files = folder / "points" / name, folder / "files" / name
    dst_points, dst_files = results / "points" / name, results / "files" / name
    dst_points.mkdir(parents=True, exist_ok=True)
    dst_files.mkdir(parents=True, exist_ok=True)
    done, skipped = [], []
    for record in sorted(src_points.glob("*.json")):
        saved = json.loads(record.read_text())
        if record.name.endswith(".search.json"):
            shutil.copyfile(record, dst_points / record.name)
            continue
        row = saved["value"]
        rlc = src_files / Path(row["file"]).name
        if not rlc.is_file():
            skipped.append(record.name)
            continue
        try:  # a file copied back while it was being written does not decode
            scores = evaluate_file(rlc, data)
        except CodecError:
            skipped.append(record.name)
            continue
        kept = dst_files / rlc.name
        shutil.copyfile(rlc, kept)
        row |= {"top1_device": row["top1"], "val_top1_device": row["val_top1"],
                "top1": round(scores["test"]["top1"], 2),
                "val_top1": round(scores["val"]["top1"], 2), "file": str(kept)}
        write_json(dst_points / record.name, {"key": saved["key"], "value": row})
        done.append({"point": record.stem, "top1": row["top1"], "val_top1": row["val_top1"],
                     "val_top1_device": row["val_top1_device"]})
    return {"remeasured": done, "skipped": skipped, "test_images": len(data.test)}


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point; returns the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("name")
    ap.add_argument("--results", type=Path, default=Path("results/frontier-gpu"))
    add_config_args(ap, DataConfig)
    args = ap.parse_args(argv)
    report = remeasure(args.folder, args.name, args.results, config_from_args(DataConfig, args))
    for p in report["remeasured"]:
        print(f"{p['point']}: test {p['top1']:.2f}, val {p['val_top1']:.2f} "
              f"(there: val {p['val_top1_device']:.2f})")
    if report["skipped"]:
        print("skipped (no file):", ", ".join(report["skipped"]))
    return report


if __name__ == "__main__":
    main()
