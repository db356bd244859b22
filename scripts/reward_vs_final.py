"""How well does the search's reward predict the accuracy a policy ends with?

The search scores a policy by validation top-1 right after clustering, before any centroid
fine-tuning. For every shared row (and every seed of the searched rows) of the paper tables this
collects that number, validation top-1 after fine-tuning and test top-1 after fine-tuning, and
their Spearman rank correlations. Writes results/ablations/reward_vs_final.{json,png}.

Usage: python scripts/reward_vs_final.py [TABLE.json ...]
(default: every results/paper_tables/**/resnet*.json that records validation numbers)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _ranks(x: list[float]) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman rank correlation (ties broken by order; enough for a dozen points)."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def points(table: dict) -> list[dict]:
    """One point per shared row, and per seed of the searched rows."""
    out = []
    for row in table["rows"]:
        for r in row.get("per_seed", [row]):
            if "val_top1_before_finetune" not in r:
                continue
            name = row["policy"] + (f" s{r['seed']}" if "seed" in r else "")
            out.append({"row": name, "before": r["val_top1_before_finetune"],
                        "val_after": r["val_top1"], "test_after": r["top1"],
                        "paper_ratio": r["paper_ratio"]})
    return out


def main() -> None:
    """Collect the points of each table, correlate them, plot them."""
    paths = [Path(p) for p in sys.argv[1:]] or sorted(Path("results/paper_tables").rglob("resnet*.json"))
    doc, fig_rows = {}, []
    for path in paths:
        table = json.loads(path.read_text())
        if "rows" not in table:
            continue
        pts = points(table)
        if len(pts) < 3:
            continue
        name = f"{table['model']} distill={table.get('share_distill', 0.0)}"
        if table.get("core", "paper") != "paper":  # the same model and fine-tuning, other core
            name += f" core={table['core']}"
        b, v, t = ([p[k] for p in pts] for k in ("before", "val_after", "test_after"))
        doc[name] = {"table": str(path), "points": pts,
                     "spearman_before_vs_val_after": round(spearman(b, v), 3),
                     "spearman_before_vs_test_after": round(spearman(b, t), 3),
                     "spearman_val_after_vs_test_after": round(spearman(v, t), 3),
                     "before_range": [min(b), max(b)], "test_after_range": [min(t), max(t)]}
        fig_rows.append((name, pts))
    out = Path("results/ablations")
    out.mkdir(parents=True, exist_ok=True)
    (out / "reward_vs_final.json").write_text(json.dumps(doc, indent=1))
    fig, axes = plt.subplots(1, len(fig_rows), figsize=(5 * len(fig_rows), 4), squeeze=False)
    for ax, (name, pts) in zip(axes[0], fig_rows, strict=True):
        ax.scatter([p["before"] for p in pts], [p["test_after"] for p in pts])
        for p in pts:
            ax.annotate(p["row"], (p["before"], p["test_after"]), fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("val top-1 before fine-tuning (the reward)")
        ax.set_ylabel("test top-1 after fine-tuning")
    fig.tight_layout()
    fig.savefig(out / "reward_vs_final.png", dpi=120)
    for name, d in doc.items():
        print(f"{name}: spearman(reward, test after) {d['spearman_before_vs_test_after']:+.2f}, "
              f"(reward, val after) {d['spearman_before_vs_val_after']:+.2f}; reward spans "
              f"{d['before_range']}, test after {d['test_after_range']}")


if __name__ == "__main__":
    main()
