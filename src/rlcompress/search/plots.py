"""Plots of a search run: progress, the best policy per layer, and accuracy against size."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rlcompress.fileio import save_figure  # noqa: E402
from rlcompress.search.budget import Budget  # noqa: E402


def plot_search(run: Path, rows: list[dict], names: list[str], budget: Budget, rules: list[dict],
                best: dict) -> None:
    """Write ``progress.png``, ``best_policy.png`` and ``accuracy_vs_size.png`` into ``run``."""
    ep = [int(r["episode"]) for r in rows]
    acc = [float(r["val_top1"]) for r in rows]
    best_so_far = [max(acc[: i + 1]) for i in range(len(acc))]
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    ax[0].plot(ep, [float(r["reward"]) for r in rows], ".", ms=3)
    ax[0].set(xlabel="episode", ylabel="reward", title="reward per episode")
    ax[1].plot(ep, acc, ".", ms=3, alpha=0.5, label="episode")
    ax[1].plot(ep, best_so_far, "-", label="best so far")
    ax[1].set(xlabel="episode", ylabel="val top-1 (%)", title="validation accuracy")
    ax[1].legend()
    fig.tight_layout()
    save_figure(fig, run / "progress.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(11, 3.8))
    ks = [best["k"][n] for n in names]
    x = range(len(names))
    ax.bar(x, ks, color="tab:blue", label="k of the best policy")
    ax.set_yscale("log", base=2)
    ax.set_ylabel("k (log2)")
    ax2 = ax.twinx()
    ax2.plot(x, budget.kept, "o-", color="tab:orange", label="kept weights")
    ax2.set_ylabel("kept weights")
    ax.set_xticks(list(x), names, rotation=70, fontsize=7)
    ax.set_title("best policy per layer")
    fig.legend(loc="upper left")
    fig.tight_layout()
    save_figure(fig, run / "best_policy.png")
    plt.close(fig)

    unit = "kbit" if budget.kind == "paper" else "KB"
    scale = 1000.0
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter([float(r["cost"]) / scale for r in rows], acc, s=6, alpha=0.4, label="episodes")
    for r in rules:
        ax.scatter(float(r["cost"]) / scale, r["val_top1"], marker="x", s=50)
        ax.annotate(r["policy"], (float(r["cost"]) / scale, r["val_top1"]), fontsize=8)
    ax.scatter([best["cost"] / scale], [best["val_top1"]], marker="*", s=150, c="red", label="best")
    ax.axvline(budget.limit / scale, ls="--", c="gray", label="budget")
    ax.set(xlabel=f"size ({unit})", ylabel="val top-1 (%)", title="accuracy vs size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, run / "accuracy_vs_size.png")
    plt.close(fig)
