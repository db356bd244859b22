"""Did the pruned model before its fine-tune beat the fine-tune? For every point of a frontier
run that pruned (``runs/frontier/NAME/<ratio>x/<point>/prune/``): validation top-1 of the
pruned model before fine-tuning, after each fine-tuning epoch, the epoch the sharing started
from (0: the start) and the pruned model's test top-1.

    python scripts/prune_start.py runs/frontier/resnet32-8x-start \
        --out results/ablations/prune_start_resnet32_8x.json
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from rlcompress.fileio import write_json


def point_row(prune_dir: Path) -> dict:
    """One pruned point's start, its fine-tune's epochs and the choice made between them."""
    summary = json.loads((prune_dir / "summary.json").read_text())
    with open(prune_dir / "finetune" / "metrics.csv", newline="") as f:
        epochs = [float(r["val_top1"]) for r in csv.DictReader(f)]
    return {"point": f"{prune_dir.parent.parent.name}-{prune_dir.parent.name}",
            "val_before_finetune": summary["val_top1_before_finetune"],
            "val_per_epoch": epochs, "chosen_epoch": summary["best_epoch"],
            "val_chosen": summary["val_top1"], "test_chosen": summary["top1"],
            "weights_kept": summary["weights_kept"], "weights_dense": summary["weights_dense"]}


def main(argv: list[str] | None = None) -> dict:
    """Collect every pruned point of the run folder and write them."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a frontier run folder (rlcompress frontier --out)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    rows = [point_row(p) for p in sorted(Path(args.run).glob("*x/*/prune"))
            if (p / "summary.json").is_file()]
    report = {"run": args.run, "rows": rows}
    write_json(Path(args.out), report)
    return report


if __name__ == "__main__":
    for r in main()["rows"]:
        print(r["point"], r["val_before_finetune"], r["val_per_epoch"], r["chosen_epoch"])
