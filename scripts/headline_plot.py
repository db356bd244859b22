"""The README's headline figure: test top-1 against file size on the clean ResNet-20, every
measured point that has a real file behind it.

    python scripts/headline_plot.py      # -> results/headline.png and results/headline.json

Sources (each optional; what exists is drawn): the arms of ``results/joint/<name>.json``
(``scripts/compare_runs.py``: mean +- standard error over seeds), the rows of
``results/frontier/<name>.json`` (``rlcompress frontier``), and the fine-tuned rows of the peers
benchmark ``results/bench/peers_clean.json`` (run with ``--rlc``; per tool, method and bits the
learning rate with the best validation top-1). The baseline is a horizontal line.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from rlcompress.fileio import save_figure, write_json
from rlcompress.selection import best_by_validation


def joint_points(path: Path) -> list[dict]:
    """Mean +- standard error of every arm of a compare_runs file."""
    out = []
    for arm, rec in json.loads(path.read_text())["arms"].items():
        runs = rec["runs"]
        if not runs:
            continue
        tops = [r["top1"] for r in runs]
        se = statistics.stdev(tops) / math.sqrt(len(tops)) if len(tops) > 1 else 0.0
        out.append({"source": str(path), "label": f"{arm} ({path.stem})", "group": "runs",
                    "kb": statistics.fmean(r["file_bytes"] for r in runs) / 1000,
                    "top1": statistics.fmean(tops), "err": se, "n": len(tops)})
    return out


def frontier_points(path: Path) -> list[dict]:
    """Every (method, budget) row of a frontier file, error bar = std over seeds."""
    return [{"source": str(path), "label": r["method"], "group": "frontier",
             "kb": r["file_bytes"] / 1000, "top1": r["top1"], "err": r["top1_std"],
             "n": r["seeds"]} for r in json.loads(path.read_text())["rows"]]


def peer_points(path: Path, model: str) -> list[dict]:
    """Fine-tuned rows with files: per (tool, method, bits, epochs) the best validation lr."""
    rows = json.loads(path.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    rows = [r for r in rows if r["model"] == model and r.get("epochs") and r.get("file_bytes")]
    best = best_by_validation(rows, lambda r: (r["tool"], r["method"], r["bits"], r["epochs"]))
    return [{"source": str(path), "label": f"{t} {m} {b}-bit, {e} ep", "group": "peers",
             "kb": r["file_bytes"] / 1000, "top1": r["top1"], "err": 0.0, "n": 1}
            for (t, m, b, e), r in sorted(best.items())]


def main(argv: list[str] | None = None) -> list[dict]:
    """Collect the points, draw the figure, write both files."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--joint", nargs="*", default=["results/joint/resnet20-16x.json"])
    ap.add_argument("--frontier", nargs="*", default=["results/frontier/resnet20.json"])
    ap.add_argument("--peers", default="results/bench/peers_clean.json")
    ap.add_argument("--peers-model", default="resnet20")
    ap.add_argument("--baseline", default="results/baseline/resnet20.json")
    ap.add_argument("--out", default="results/headline")
    args = ap.parse_args(argv)
    points: list[dict] = []
    for p in map(Path, args.joint):
        points += joint_points(p) if p.is_file() else []
    for p in map(Path, args.frontier):
        points += frontier_points(p) if p.is_file() else []
    if Path(args.peers).is_file():
        points += peer_points(Path(args.peers), args.peers_model)
    base = json.loads(Path(args.baseline).read_text())["top1"]
    write_json(Path(args.out).with_suffix(".json"), {"baseline_top1": base, "points": points})
    _plot(points, base, Path(args.out).with_suffix(".png"))
    return points


def _plot(points: list[dict], base: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    ax.axhline(base, color="grey", ls="--", lw=1, label=f"float32 baseline {base:.2f}%")
    markers = {"runs": "o", "frontier": "s", "peers": "^"}
    for p in points:
        ax.errorbar(p["kb"], p["top1"], yerr=p["err"] or None, marker=markers[p["group"]],
                    ms=6, capsize=3, ls="none", label=p["label"])
    ax.set(xlabel="file size (KB)", ylabel="test top-1 (%)",
           title="ResNet-20 (clean baseline), CIFAR-10: accuracy vs real file size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    main()
