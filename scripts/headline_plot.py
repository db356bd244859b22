"""The README's headline figure: the accuracy-size frontier of the clean ResNet-20, with the
peers and the paper's own points.

    python scripts/headline_plot.py      # -> results/headline.png and results/headline.json

Left: test top-1 against real file bytes, one line per allocation method of
``results/frontier/<name>.json`` (``rlcompress frontier``; the ``.partial`` file while the
frontier is unfinished), DDPG as the mean over its seeds with their standard deviation, and
coremltools' points from the same file (the peers benchmark at the frontier's budgets). Every
point is a committed ``.rlc`` file. Right: points of top-1 lost against the paper's
compression ratio (32-bit weights / stored weight bits), ours against our float baseline, the
paper's rows (``rlcompress.pipeline.reproduce.PAPER``) against its own 92.20% baseline on
lossless CIFAR-10: the only axis on which the two can be set side by side.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from rlcompress.fileio import save_figure, write_json
from rlcompress.pipeline.reproduce import PAPER

PEER = "coremltools"


def frontier_file(candidates: list[str]) -> Path | None:
    """The first frontier file that exists (the finished one before the partial one)."""
    return next((Path(c) for c in candidates if Path(c).is_file()), None)


def frontier_lines(path: Path) -> dict[str, list[dict]]:
    """The frontier's rows by method, each method's rows by growing file size."""
    lines: dict[str, list[dict]] = defaultdict(list)
    for r in json.loads(path.read_text())["rows"]:
        lines[r["method"]].append(r)
    return {m: sorted(rs, key=lambda r: r["file_bytes"]) for m, rs in sorted(lines.items())}


def paper_points(model: str) -> list[dict]:
    """The paper's rows: label, paper ratio and top-1 lost against its own baseline."""
    table = PAPER[model]
    return [{"label": name, "paper_ratio": ratio, "top1": top1,
             "lost": round(table["baseline"] - top1, 2)}
            for name, (top1, _top5, ratio) in table["rows"].items()]


def baseline_file(frontier_model: str, model: str) -> Path:
    """The baseline record of the checkpoint a frontier started from: ``checkpoints/scratch-
    <model>/`` is ``results/baseline/<model>.json``, an earlier baseline kept as
    ``checkpoints/scratch-<tag>-<model>/`` is ``<model>_<tag>.json`` (a frontier built on it
    must not be measured against the current baseline)."""
    folder = Path(frontier_model).parent.name
    tag = folder.removeprefix("scratch-").removesuffix(model).strip("-")
    return Path("results/baseline") / (f"{model}_{tag}.json" if tag else f"{model}.json")


def main(argv: list[str] | None = None) -> dict:
    """Collect the points, draw the figure, write both files."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--frontier", nargs="*", default=None,
                    help="frontier files, first existing wins (default: the model's finished, "
                         "then partial file)")
    ap.add_argument("--baseline", default=None,
                    help="default: the record of the frontier's start (see baseline_file)")
    ap.add_argument("--out", default="results/headline")
    args = ap.parse_args(argv)
    sources = args.frontier or [f"results/frontier/{args.model}.json",
                                f"results/frontier/{args.model}.partial.json"]
    path = frontier_file(sources)
    if path is None:
        raise SystemExit(f"no frontier file among {sources}: run `rlcompress frontier` first")
    start = json.loads(path.read_text())["model"]
    base = json.loads(Path(args.baseline or baseline_file(start, args.model)).read_text())["top1"]
    lines = frontier_lines(path)
    paper = paper_points(args.model)
    report = {"model": args.model, "frontier": str(path), "baseline_top1": base,
              "paper_baseline_top1": PAPER[args.model]["baseline"], "lines": lines, "paper": paper}
    write_json(Path(args.out).with_suffix(".json"), report)
    _plot(lines, paper, base, args.model, path, Path(args.out).with_suffix(".png"))
    return report


def _plot(lines: dict[str, list[dict]], paper: list[dict], base: float, model: str,
          source: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    ours = [r["top1"] for m, rs in lines.items() if not m.startswith(PEER) for r in rs]
    floor = min(ours) - 4 if ours else 0
    left.axhline(base, color="grey", ls="--", lw=1, label=f"float32 baseline {base:.2f}%")
    below = []
    for method, rows in lines.items():
        peer = method.startswith(PEER)
        style = {"ls": ":" if peer else "-", "marker": "^" if peer else "o", "ms": 5, "capsize": 3}
        label = method + (" (mean, std over seeds)" if any(r["seeds"] > 1 for r in rows) else "")
        left.errorbar([r["file_bytes"] / 1000 for r in rows], [r["top1"] for r in rows],
                      yerr=[r["top1_std"] for r in rows], label=label, **style)
        below += [f"{method} {r['file_bytes'] / 1000:.0f} KB: {r['top1']:.1f}%"
                  for r in rows if r["top1"] < floor]
        right.plot([r["paper_ratio"] for r in rows], [base - r["top1"] for r in rows],
                   label=method, **{k: v for k, v in style.items() if k != "capsize"})
    if below:
        left.text(0.99, 0.02, "below the axis:\n" + "\n".join(below), transform=left.transAxes,
                  ha="right", va="bottom", fontsize=6, color="dimgrey")
    # the frontier's lines rise from the lower left: the legend goes in the empty middle
    left.set(ylim=(floor, base + 1), xlabel="file size (KB)", ylabel="test top-1 (%)",
             title=f"{model}, CIFAR-10: accuracy vs real file size")
    left.legend(fontsize=6.5, loc="lower left", bbox_to_anchor=(0.3, 0.1))
    pb = PAPER[model]["baseline"]
    right.plot([p["paper_ratio"] for p in paper], [p["lost"] for p in paper], "k*", ms=9,
               ls="none", label=f"the paper's rows (vs its {pb:.2f}% baseline)")
    for p in paper:
        right.annotate(p["label"], (p["paper_ratio"], p["lost"]), fontsize=7,
                       xytext=(3, 3), textcoords="offset points")
    lost = [base - r for r in ours] + [p["lost"] for p in paper]
    right.set(ylim=(-0.5, max(lost) + 1), xscale="log",
              xlabel="paper ratio (32-bit weights / stored bits, log scale)",
              ylabel="top-1 lost (points)", title="points lost vs compression ratio")
    right.set_xticks([1, 2, 5, 10, 20, 50, 100], labels=["1", "2", "5", "10", "20", "50", "100"])
    right.minorticks_off()
    right.legend(fontsize=6.5, loc="upper left")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle(f"source: {source}", fontsize=7, y=0.01, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    save_figure(fig, out)
    plt.close(fig)


if __name__ == "__main__":
    main()
