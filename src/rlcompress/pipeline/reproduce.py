"""``rlcompress reproduce``: every row of the paper's tables, on the same data and FPGM model.

Rows: FPGM only, the rule policies /16, /32, /64, k16, k32, k64, random search and the learned
(DDPG) policy, the last two over several seeds (mean and spread). Every shared row gets the same
centroid fine-tuning budget. Each row's run directory resumes; finished rows are skipped.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from rlcompress.clustering.policies import RULE_POLICIES
from rlcompress.clustering.sharing import PAPER as PAPER_SHARE
from rlcompress.clustering.sharing import ShareConfig, clusterable_layers, kept_weight_count
from rlcompress.codec import float_state_bytes, layer_weight_count
from rlcompress.data import DataConfig
from rlcompress.engine import TrainConfig
from rlcompress.fileio import save_figure, write_json, write_text
from rlcompress.jobs import baseline, prune, search, share
from rlcompress.jobs.frontier import model_digest
from rlcompress.models import load_checkpoint
from rlcompress.paths import baseline_path
from rlcompress.pruning import PruneConfig
from rlcompress.rundir import claim
from rlcompress.search import DDPGConfig, SearchConfig

# The paper's own rows (PAPER.md): top-1, top-5, printed ratio (k32/k64 by the formula)
PAPER = {
    "resnet20": {"baseline": 92.20, "rows": {
        "fpgm": (90.62, 99.87, 1.67), "/16": (90.48, 99.77, 5.73), "/32": (89.41, 99.52, 6.25),
        "/64": (87.30, 99.52, 7.30), "k16": (88.89, 99.66, 13.35), "k32": (89.89, 99.79, 10.68),
        "k64": (90.29, 99.73, 8.90), "rl": (90.22, 99.75, 11.17)}},
    "resnet32": {"baseline": 92.63, "rows": {
        "fpgm": (91.91, 99.73, 1.67), "/16": (91.70, 99.73, 5.72), "/32": (90.99, 99.67, 6.42),
        "/64": (85.83, 99.26, 7.29), "k16": (89.67, 99.56, 13.35), "k32": (91.67, 99.77, 10.68),
        "k64": (91.87, 99.75, 8.90), "rl": (91.13, 99.72, 12.03)}},
}
ROWS = ("fpgm", *RULE_POLICIES, "random", "rl")
# the weight sharing of a table's rows and of its searches' rewards
CORES = {"paper": PAPER_SHARE, "new": ShareConfig()}
KEYS = ("top1", "top5", "paper_ratio", "file_ratio", "file_bytes")
# validation top-1 after and before centroid fine-tuning (the search's reward is measured before)
VAL_KEYS = ("val_top1", "val_top1_before_finetune")


def _summary(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fpgm_row(prune_dir: Path) -> dict:
    s = _summary(prune_dir / "summary.json")
    small, spec = load_checkpoint(prune_dir / "finetune" / "best.safetensors")
    origin = spec["origin"]
    return {"policy": "fpgm", "top1": s["top1"], "top5": s["top5"],
            "paper_ratio": round(origin["weights"] / layer_weight_count(small), 3),
            "paper_ratio_mask_count": s["paper_ratio"],
            "file_ratio": round(origin["state_bytes"] / float_state_bytes(small), 3),
            "file_bytes": float_state_bytes(small), "file": None}


def k16_ratio(pruned: str) -> float:
    """The paper ratio of k = 16 in every clusterable layer of the pruned model (exact)."""
    from rlcompress.search.runner import paper_ratio_of

    small, spec = load_checkpoint(pruned)
    kept = [kept_weight_count(m) for m in clusterable_layers(small).values()]
    return paper_ratio_of(kept, [16] * len(kept), spec["origin"]["weights"])


def _seed_row(policy: str, rows: list[dict]) -> dict:
    row = {"policy": policy, "seeds": [r["seed"] for r in rows], "per_seed": rows}
    for k in (*KEYS, *VAL_KEYS):
        vals = [float(r[k]) for r in rows]
        row[k] = round(statistics.mean(vals), 3)
        row[f"{k}_std"] = round(statistics.stdev(vals), 3) if len(vals) > 1 else 0.0
    row["file"] = rows[0]["file"]  # seed 0's; every seed's file is in per_seed
    return row


def reproduce(
    model: str = "resnet20",
    out: str | None = None,
    results: str = "results/paper_tables",
    baseline_dir: str | None = None,
    baseline_epochs: int = 0,
    prune_epochs: int = 30,
    share_epochs: int = 3,
    episodes: int = 200,
    seeds: tuple[int, ...] = (0, 1, 2),
    target_ratio: float = 0.0,
    data: DataConfig | None = None,
    threads: int = 0,
    progress: bool = True,
    only: tuple[str, ...] | None = None,
    distill: float = 0.0,
    init: str = "baseline",
    core: str = "paper",
) -> dict:
    """Run (or resume) every row and write ``results/paper_tables/<model>.{json,md,png}``.

    ``target_ratio`` is the searched rows' budget as a paper ratio; 0 means the k16 row's own
    ratio on the pruned model, so the learned policy is compared with k16 at equal size.
    ``only`` runs just those rows (e.g. ``("rl",)``, so that two processes can share the work);
    rows finished earlier are reported as well, and ``complete`` says whether all are there.
    ``distill`` > 0 fine-tunes every shared row's centroids with knowledge distillation from
    the pruned model (that weight on the teacher's soft labels; 0, the default: plain
    cross-entropy, as the paper; 0.9: this project's improvement, see the README). A run
    directory holds one table: rows finished with another ``distill`` raise ``ValueError``.

    The start is the committed clean baseline (``init="baseline"``: trained from scratch on the
    train split, so every validation reward is clean); ``init="pretrained"`` (or a weights
    path) with ``baseline_epochs`` > 0 fine-tunes that checkpoint first, as the first tables
    did (the shared checkpoints' training saw the validation images).

    ``core`` picks the weight sharing of every row and of the searches' rewards: ``paper``
    (unweighted Lloyd k-means, no batch-norm re-estimation, centroid fine-tuning: the paper's)
    or ``new`` (this project's default ``ShareConfig``: Fisher-weighted clustering, batch-norm
    re-estimation, DKM-style trained quantization). A run directory holds one core."""
    if core not in CORES:
        raise ValueError(f"core must be one of {sorted(CORES)}, got {core!r}")
    share_cfg = CORES[core]
    run = Path(out or f"runs/reproduce-{model}")
    _claim_core(run, core)
    files = Path(results) / "files"
    files.mkdir(parents=True, exist_ok=True)
    data = data or DataConfig()

    def tcfg(epochs: int, lr: float, **kw: object) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, threads=threads, progress=progress, **kw)

    if baseline_dir is None and init == "baseline" and baseline_epochs == 0:
        baseline_dir = str(baseline_path(model).parent)
    base = Path(baseline_dir or run / "baseline")
    if _summary(base / "summary.json") is None:
        if baseline_epochs == 0:
            raise ValueError(f"{base} holds no finished baseline: give --baseline-epochs N to "
                             f"fine-tune --init {init} first, or --baseline-dir RUN")
        baseline(model, str(base), str(base), init, data,
                 tcfg(baseline_epochs, 0.05, select="last"), resume=True)
    _claim_baseline(run, base / "best.safetensors")
    base_top1 = _summary(base / "summary.json")["test"]["top1"]
    if _summary(run / "prune" / "summary.json") is None:
        prune(str(base / "best.safetensors"), str(run / "prune"), PruneConfig(), "physical", data,
              tcfg(prune_epochs, 0.05), resume=True)
    pruned = str(run / "prune" / "finetune" / "best.safetensors")
    rows = [_fpgm_row(run / "prune")]

    def shared_row(policy: object, name: str, seed: int | None = None) -> dict:
        d = run / name
        s = _summary(d / "summary.json")
        if s is not None and s.get("distill", 0.0) != distill:
            raise ValueError(f"{d} was fine-tuned with distill={s.get('distill', 0.0)}, not "
                             f"{distill}: every row of a table shares one fine-tuning; use "
                             "another --out (and --results) or the same --share-distill")
        s = s or share(
            pruned, str(d), policy, share_cfg, data, tcfg(share_epochs, 0.01, distill=distill),
            resume=True)
        target = files / f"{model}-{name.replace('/', 'd')}.rlc"
        shutil.copyfile(d / "model.rlc", target)
        row = {k: s[k] for k in (*KEYS, *VAL_KEYS)} | {"file": str(target), "k": s["k"]}
        return row | ({"seed": seed} if seed is not None else {"policy": name})

    want = set(only or ROWS)
    unknown = want - set(ROWS)
    if unknown:
        raise ValueError(f"unknown rows {sorted(unknown)}; rows are {', '.join(ROWS)}")

    def finished(dirname: str) -> bool:
        return (run / dirname / "summary.json").is_file()

    # rows not asked for in this call are still reported if an earlier call finished them
    for p in RULE_POLICIES:
        if p in want or finished(p.replace("/", "d")):
            rows.append(shared_row(p, p.replace("/", "d")) | {"policy": p})
    if target_ratio <= 0:
        target_ratio = k16_ratio(pruned)
    for strategy, label in (("random", "random"), ("ddpg", "rl")):
        per_seed = []
        for seed in seeds:
            name = f"{label}-s{seed}"
            if finished(name):
                per_seed.append(shared_row(None, name, seed))
            elif label in want:
                cfg = SearchConfig(strategy=strategy, episodes=episodes, seed=seed,
                                   target_ratio=target_ratio, threads=threads, progress=progress)
                found = search(pruned, str(run / f"search-{name}"), cfg, share_cfg,
                               DDPGConfig(), data, resume=True)
                per_seed.append(shared_row(found["best"]["k"], name, seed))
        rows += [_seed_row(label, per_seed)] if per_seed else []
    done = {r["policy"] for r in rows}
    complete = done == set(ROWS) and all(len(r.get("seeds", seeds)) == len(seeds) for r in rows)
    table = {"model": model, "complete": complete, "baseline_top1": round(base_top1, 2),
             "target_ratio": round(target_ratio, 4),
             "share_epochs": share_epochs, "share_distill": distill, "core": core,
             "episodes": episodes, "rows": rows,
             "paper": PAPER.get(model)}
    write_json(Path(results, f"{model}.json"), table)
    write_text(Path(results, f"{model}.md"), markdown_table(table))
    plot_table(table, Path(results) / f"{model}.png")
    return table


def _claim_core(run: Path, core: str) -> None:
    """Record the run directory's sharing core; refuse a directory made with another one."""
    marker = run / "core.json"
    rows = [] if marker.is_file() else [d.name for d in run.glob("*")
                                        if (d / "model.rlc").is_file()]
    if rows and core != "paper":
        # rows from before the marker were all shared the paper's way (a linked pruned model
        # is no row: a second table may start from the first one's)
        raise ValueError(f"{run} holds rows shared the paper's way ({', '.join(sorted(rows))}): "
                         "use another --out")
    claim(marker, "core", core,
          f"{run} holds a table made with another core: use another --out (and --results)")


def _claim_baseline(run: Path, weights: Path) -> None:
    """Record the digest of the baseline's weights next to the core; refuse a directory whose
    rows were built on other weights (a retrained baseline would otherwise be mixed with the
    pruning and rows made from the old one)."""
    claim(run / "core.json", "baseline_digest", model_digest(str(weights)),
          f"{run} holds a table built on another baseline: use another --out (and --results)")


def markdown_table(table: dict) -> str:
    """Our rows next to the paper's, as a Markdown table (loss = change against the baseline)."""
    paper = table.get("paper") or {}
    prow, pbase = paper.get("rows", {}), paper.get("baseline", float("nan"))
    base = table["baseline_top1"]
    lines = [f"{table['model']}: baseline {base:.2f} (paper {pbase:.2f}); searched rows under a "
             f"paper ratio of {table['target_ratio']:.2f}x; {table.get('share_epochs')} "
             + ("trained-quantization epochs per row (this project's sharing core)"
                if table.get("core") == "new" else "centroid fine-tuning epochs per row")
             + (f" (distilled from the pruned model, weight {table['share_distill']})"
                if table.get("share_distill") else "") + ("" if table.get("complete", True) else
                                              "; INCOMPLETE: rows still missing"), "",
             "| policy | top-1 | change | top-5 | paper ratio | file ratio | file KB | "
             "paper top-1 | paper change | paper ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        p = prow.get(r["policy"])
        theirs = f"{p[0]:.2f} | {p[0] - pbase:+.2f} | {p[2]:.2f}x" if p else "- | - | -"
        spread = f" ± {r['top1_std']:.2f}" if "top1_std" in r else ""
        lines.append(f"| {r['policy']} | {r['top1']:.2f}{spread} | {r['top1'] - base:+.2f} | "
                     f"{r['top5']:.2f} | {r['paper_ratio']:.2f}x | {r['file_ratio']:.2f}x | "
                     f"{r['file_bytes'] / 1000:.1f} | {theirs} |")
    return "\n".join(lines) + "\n"


def plot_table(table: dict, path: Path) -> None:
    """Test accuracy against paper ratio (ours and the paper's) and against file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in table["rows"]:
        ax[0].errorbar(r["paper_ratio"], r["top1"], yerr=r.get("top1_std", 0), fmt="o")
        ax[0].annotate(r["policy"], (r["paper_ratio"], r["top1"]), fontsize=8)
        ax[1].errorbar(r["file_bytes"] / 1000, r["top1"], yerr=r.get("top1_std", 0), fmt="o")
        ax[1].annotate(r["policy"], (r["file_bytes"] / 1000, r["top1"]), fontsize=8)
    for name, (top1, _, ratio) in ((table.get("paper") or {}).get("rows", {})).items():
        ax[0].scatter(ratio, top1, marker="x", c="gray")
        ax[0].annotate(f"paper {name}", (ratio, top1), fontsize=7, color="gray")
    ax[0].set(xlabel="paper ratio (x)", ylabel="test top-1 (%)", title="ours (o) and paper (x)")
    ax[1].set(xlabel="file size (KB)", ylabel="test top-1 (%)", title="ours: real file sizes")
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
