"""Per-layer clustering time and squared error: our sorted Lloyd, the exact DP, scikit-learn.

Usage: python benchmarks/clustering.py [--models resnet20 resnet32] [--ks 16 64 256]
Writes results/bench/clustering.json (one row per model, layer, k, method) and prints totals.
Weights come from the shared pretrained checkpoints when present (else a fixed random init).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from rlcompress.clustering import clusterable_layers, exact_1d, lloyd_1d
from rlcompress.engine import set_threads
from rlcompress.models import build_model, load_pretrained
from rlcompress.paths import PRETRAINED_FILES, find_shared


def _sklearn(x: np.ndarray, k: int, seed: int = 0) -> tuple[float, float]:
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed).fit(x[:, None])
    return time.perf_counter() - t0, float(km.inertia_)


def _load(name: str):
    path = find_shared(PRETRAINED_FILES.get(name, ""))
    if path is not None:
        return load_pretrained(name, path)[0], str(path)
    torch.manual_seed(0)
    return build_model(name), "random init"


def main() -> None:
    """Run every (layer, k, method) and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--models", nargs="+", default=["resnet20", "resnet32"])
    ap.add_argument("--ks", nargs="+", type=int, default=[16, 64, 256])
    ap.add_argument("--out", default="results/bench/clustering.json")
    args = ap.parse_args()
    threads = set_threads(0)
    rows = []
    for name in args.models:
        model, source = _load(name)
        for layer, module in clusterable_layers(model).items():
            x = module.weight.detach().double().numpy().ravel()
            for k in args.ks:
                if k >= len(np.unique(x)):
                    continue
                for method in ("lloyd_kmeans++", "lloyd_linear", "exact", "sklearn"):
                    t0 = time.perf_counter()
                    if method == "exact":
                        sse = exact_1d(x, k).sse
                    elif method == "sklearn":
                        _, sse = _sklearn(x, k)
                    else:
                        sse = lloyd_1d(x, k, init=method.split("_")[1]).sse
                    rows.append({"model": name, "layer": layer, "weights": x.size, "k": k,
                                 "method": method, "seconds": round(time.perf_counter() - t0, 5),
                                 "sse": sse})
        print(f"{name}: {source}", flush=True)
    summary = {}
    for r in rows:
        key = f"{r['model']} k={r['k']} {r['method']}"
        s = summary.setdefault(key, {"seconds": 0.0, "sse": 0.0})
        s["seconds"] += r["seconds"]
        s["sse"] += r["sse"]
    for key, s in summary.items():
        model, k, _ = key.split(" ")
        best = summary[f"{model} {k} exact"]["sse"]
        s["sse_vs_exact"] = round(s["sse"] / best, 4)
        s["seconds"] = round(s["seconds"], 3)
        print(f"{key:32s} total {s['seconds']:8.3f} s   sse / optimal {s['sse_vs_exact']:.4f}")
    report = {"threads": threads, "torch": torch.__version__, "totals": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
