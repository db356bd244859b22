"""Print the README's result tables from the files under results/ (so every number has a file).

Usage: python scripts/results_md.py
"""

from __future__ import annotations

import json
from pathlib import Path

R = Path("results")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def baselines() -> str:
    rows = ["| model | test top-1 | test top-5 | val top-1 | epochs | CPU minutes | command |",
            "|---|---|---|---|---|---|---|"]
    for m in ("resnet20", "resnet32"):
        r = _load(R / "baseline" / f"{m}.json")
        if r:
            rows.append(f"| {m} | {r['top1']:.2f} | {r['top5']:.2f} | {r['val_top1']:.2f} | "
                        f"{r['epochs']} | {r['seconds'] / 60:.0f} | `{r['command']}` |")
    return "\n".join(rows)


def fpgm() -> str:
    rows = ["| model | test top-1 | (baseline) | paper ratio (mask count) | params | FLOPs | "
            "latency b1 / b256 ms (pruned vs dense) | epochs | CPU minutes |",
            "|---|---|---|---|---|---|---|---|---|"]
    for m in ("resnet20", "resnet32"):
        r, b = _load(R / "fpgm" / f"{m}.json"), _load(R / "baseline" / f"{m}.json")
        if r:
            lat = r["latency_ms"]
            rows.append(
                f"| {m} | {r['top1']:.2f} | {b['top1'] if b else float('nan'):.2f} | "
                f"{r['paper_ratio']:.3f}x | {r['params']:,} / {r['params_dense']:,} | "
                f"{r['flops'] / 1e6:.1f}M / {r['flops_dense'] / 1e6:.1f}M | "
                f"{lat['pruned']['batch1']:.2f} / {lat['pruned']['batch256']:.0f} vs "
                f"{lat['dense']['batch1']:.2f} / {lat['dense']['batch256']:.0f} | {r['epochs']} | "
                f"{r['seconds'] / 60:.0f} |")
    return "\n".join(rows)


def codec() -> str:
    r = _load(R / "bench" / "codec_resnet20.json")
    if not r:
        return ""
    rows = ["| policy | packed KB | auto (packed/ANS) KB | stored bits/weight | paper ratio | "
            "file ratio |", "|---|---|---|---|---|---|"]
    by = {(x["policy"], x["encoding"]): x for x in r["rows"]}
    for p in dict.fromkeys(x["policy"] for x in r["rows"]):
        a, pk = by[(p, "auto")], by[(p, "packed")]
        rows.append(f"| {p} | {pk['file_bytes'] / 1000:.1f} | {a['file_bytes'] / 1000:.1f} | "
                    f"{a['stored_bits_per_weight']:.2f} | {a['paper_ratio']:.2f}x | "
                    f"{a['file_ratio']:.2f}x |")
    return "\n".join(rows)


def clustering() -> str:
    r = _load(R / "bench" / "clustering.json")
    if not r:
        return ""
    rows = ["| model, k | sorted Lloyd (k-means++) | sorted Lloyd (linear) | exact DP | scikit-learn |",
            "|---|---|---|---|---|"]
    t = r["totals"]
    for m in ("resnet20", "resnet32"):
        for k in (16, 64, 256):
            cells = []
            for meth in ("lloyd_kmeans++", "lloyd_linear", "exact", "sklearn"):
                s = t.get(f"{m} k={k} {meth}")
                cells.append(f"{s['seconds']:.2f} s, {s['sse_vs_exact']:.3f}" if s else "-")
            rows.append(f"| {m}, {k} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def paper_tables() -> str:
    parts = []
    for m in ("resnet20", "resnet32"):
        md = R / "paper_tables" / f"{m}.md"
        if md.is_file():
            parts.append(md.read_text())
    return "\n".join(parts)


def main() -> None:
    """Print every table."""
    for title, fn in (("Paper tables", paper_tables), ("Baselines", baselines), ("FPGM", fpgm), ("Codec (ResNet-20)", codec),
                      ("Clustering (whole network: seconds, squared error / optimal)", clustering)):
        print(f"### {title}\n\n{fn()}\n")


if __name__ == "__main__":
    main()
