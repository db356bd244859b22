"""The same searched policies trained two ways: for every point record of frontier ``--new``
that frontier ``--base`` also holds (same budget, allocator and seed), both results, the
training settings that differ, and the mean change of test and validation top-1.

    python scripts/compare_points.py --base resnet32 --new resnet32-plr01 \
        --out results/ablations/prune_lr_resnet32.json
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import asdict
from pathlib import Path

from rlcompress.fileio import write_json
from rlcompress.jobs.frontier import config_from_record, point_records


def changed_settings(base: dict, new: dict) -> dict:
    """The frontier settings the two records were trained with that differ (a setting a key
    omits counts at the value it had when the record was written): name -> [base, new]."""
    a, b = (asdict(config_from_record(r["key"])) for r in (base, new))
    return {k: [a[k], b[k]] for k in sorted(a) if a[k] != b[k]}


def compare(base_dir: Path, new_dir: Path, mode: str) -> dict:
    """Pair the records of two frontiers trained in ``mode`` and summarise the change."""
    base, new = (point_records(d, mode, strict=True) for d in (base_dir, new_dir))
    rows = []
    for tag in sorted(set(base) & set(new)):
        b, n = base[tag]["value"], new[tag]["value"]
        if base[tag]["key"]["search"] != new[tag]["key"]["search"]:
            raise ValueError(f"{tag}: the two records come from different searches")
        rows.append({"point": tag, "changed": changed_settings(base[tag], new[tag]),
                     "test_base": b["top1"], "test_new": n["top1"],
                     "val_base": b["val_top1"], "val_new": n["val_top1"],
                     "file_bytes_base": b["file_bytes"], "file_bytes_new": n["file_bytes"],
                     "test_change": round(n["top1"] - b["top1"], 2),
                     "val_change": round(n["val_top1"] - b["val_top1"], 2)})
    summary = {}
    for split in ("test", "val"):
        changes = [r[f"{split}_change"] for r in rows]
        if changes:
            summary[f"mean_{split}_change"] = round(statistics.fmean(changes), 3)
            summary[f"{split}_changes_positive"] = sum(c > 0 for c in changes)
    return {"base": str(base_dir), "new": str(new_dir), "points": len(rows), **summary,
            "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    """Compare and write the report."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="frontier name (results/frontier/points/NAME)")
    ap.add_argument("--new", required=True)
    ap.add_argument("--points", default="results/frontier/points")
    ap.add_argument("--mode", default="dkm0.04-bn", help="the records' training mode")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    report = compare(Path(args.points) / args.base, Path(args.points) / args.new, args.mode)
    write_json(Path(args.out), report)
    return report


if __name__ == "__main__":
    rep = main()
    for r in rep["rows"]:
        print(f"{r['point']}: test {r['test_base']} -> {r['test_new']}, "
              f"val {r['val_base']} -> {r['val_new']}  {r['changed']}")
    print({k: v for k, v in rep.items() if k != "rows"})
