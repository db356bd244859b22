"""Sum the measured seconds of a reproduction's stages (fine-tuning epochs from metrics.csv,
searches from their summaries) into results/paper_tables/<model>-times.json.

Usage: python scripts/reproduce_times.py resnet20 [RUN_DIR [RESULTS_DIR]]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path


def main() -> None:
    """Write the per-stage seconds of one reproduction run directory."""
    model = sys.argv[1]
    run = Path(sys.argv[2] if len(sys.argv) > 2 else f"runs/reproduce-{model}")
    out: dict[str, float] = {}
    for d in sorted(run.iterdir()):
        metrics = d / "finetune" / "metrics.csv"
        if metrics.is_file():
            with open(metrics) as f:
                out[f"{d.name} fine-tuning"] = round(sum(float(r["seconds"]) for r in csv.DictReader(f)), 1)
        summary = d / "summary.json"
        if d.name.startswith("search-") and summary.is_file():
            out[d.name] = json.loads(summary.read_text())["seconds"]["total_this_session"]
    total = round(sum(out.values()), 1)
    doc = {"model": model, "run_dir": str(run), "seconds": out, "total_seconds": total,
           "note": "wall-clock seconds of each stage as measured inside it, one thread each, with "
                   "2-4 other runs sharing the machine's 2 cores (so several times an idle run's)"}
    path = Path(sys.argv[3] if len(sys.argv) > 3 else "results/paper_tables") / f"{model}-times.json"
    path.write_text(json.dumps(doc, indent=1))
    print(f"{path}: {total / 3600:.2f} hours summed over stages")


if __name__ == "__main__":
    main()
