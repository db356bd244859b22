"""How much room a file budget leaves the allocators, and how close their frontier policies sit
to the corner of the joint space (every chain at its largest rate, one bit everywhere).

For each budget (file ratio R: limit = dense float32 bytes / R) of the joint frontier's space
(``--prune-rates``), the *floor* is the smallest file any policy can make: every prunable chain
at the largest rate, k = 2 in every layer, plus the fixed bytes (float parameters, header,
manifest). ``room`` = (limit - floor) / limit is the share of the budget an allocator can
actually allocate; where it is small every allocator is pushed into the same corner and no
allocation, learned or not, can differ much. The same is given for other spaces (pruned
channels' floats credited, session 25's default; a larger largest rate; batch norms stored as
scale and shift) to show what gives the search room. ``fixed`` is the space's fixed part (with
the credit, the chains' floats are in the layers' costs instead).

From the frontier's committed records (``results/frontier/points/<name>/``), each budget's
points: the share of chains at the largest rate, of layers at k = 2, and the spread of final
test top-1 among the non-uniform allocators.

Usage: python benchmarks/budget_room.py [--name resnet20 --model CKPT --mode dkm0.04]
       [--name resnet32 --model resnet32 --mode dkm0.04-bn]
No data, no training: seconds on one core. Writes results/ablations/budget_room_<name>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import frontier_records  # noqa: E402

from rlcompress.clustering.sharing import ShareConfig, clusterable_layers  # noqa: E402
from rlcompress.codec.sizes import reference_sizes  # noqa: E402
from rlcompress.fileio import write_json  # noqa: E402
from rlcompress.jobs.train import default_init, resolve_model  # noqa: E402
from rlcompress.paths import baseline_path  # noqa: E402
from rlcompress.search import SearchConfig  # noqa: E402
from rlcompress.search.budget import Budget  # noqa: E402
from rlcompress.search.joint import JointSpace, parse_rates  # noqa: E402
from rlcompress.search.runner import make_budget  # noqa: E402

FRONTIER_RATES = "0,0.1,0.2,0.3,0.4,0.5,0.6"
WIDE_RATES = FRONTIER_RATES + ",0.7,0.8"
SPACES = {  # name -> (prune rates, compact batch norm, pruned channels' floats credited)
    "frontier": (FRONTIER_RATES, False, False),
    "pruned floats credited": (FRONTIER_RATES, False, True),
    "rates to 0.8": (WIDE_RATES, False, False),
    "compact batch norm": (FRONTIER_RATES, True, False),
    "rates to 0.8, compact batch norm": (WIDE_RATES, True, False),
    "rates to 0.8, compact batch norm, credited": (WIDE_RATES, True, True),
}


def room(net: object, names: list[str], probe: Budget, limit: int, rates: str,
         compact_bn: bool, credit: bool) -> dict:
    """Limit, fixed bytes, floor (largest rates, k = 2 everywhere), the floor without pruning,
    and the share of the limit above the floor, for one budget and one space (``credit``: the
    budget charges pruned chains' floats for their kept channels only, session 25's default;
    the committed frontiers were searched without). ``probe``: a budget of the same batch-norm
    layout, whose fixed bytes were measured once; only its limit changes."""
    budget = dataclasses.replace(probe, limit=float(limit))
    space = JointSpace(net, names, budget, parse_rates(rates), credit_floats=credit,
                       compact_bn=compact_bn)
    floor = space.budget_for(space.max_rates()).min_total()
    whole = space.budget_for([0.0] * len(names)).min_total()
    return {"limit": int(budget.limit), "fixed": int(space.budget.fixed), "floor": int(floor),
            "floor_unpruned": int(whole), "room": round((budget.limit - floor) / budget.limit, 4)}


def corner(points: dict[str, dict], ratio: float, top_rate: float) -> dict:
    """How close one budget's frontier points sit to the corner, and how far apart they end."""
    mine = [p for p in points.values() if p["target_ratio"] == ratio]
    if not mine:
        return {}
    chains = [r for p in mine for r in p["rate"].values()]
    ks = [k for p in mine for k in p["k"].values()]
    others = [p["top1"] for p in mine if p["method"] != "uniform"]
    return {"points": len(mine), "chains_at_top_rate": round(
        sum(r >= top_rate for r in chains) / max(len(chains), 1), 3),
        "layers_at_k2": round(sum(k == 2 for k in ks) / max(len(ks), 1), 3),
        "non_uniform_points": len(others),
        "non_uniform_top1_spread": round(max(others) - min(others), 2) if others else None}


def measure(model: str, name: str, mode: str, ratios: list[float], points_dir: str) -> dict:
    """Every budget's room in every space, and the frontier's points beside it."""
    path = str(baseline_path(model)) if default_init(model, None) else model
    net, spec = resolve_model(path, None, 10, require_weights=True)
    net = net.eval()
    dense = reference_sizes(spec, net)["state_bytes"]
    names = list(clusterable_layers(net, ShareConfig().first, ShareConfig().last))
    folder = Path(points_dir or f"results/frontier/points/{name}")
    points = frontier_records(folder, mode, path) if folder.is_dir() else {}
    top_rate = max(parse_rates(FRONTIER_RATES))
    # the fixed bytes depend on the batch-norm layout only: one probe export for each
    probes = {c: make_budget(net, spec, names, SearchConfig(target_size=str(dense),
                                                            compact_bn=c), ShareConfig())
              for c in (False, True)}
    rows = []
    for r in ratios:
        limit = int(dense / r)
        row = {"file_ratio": r, "budget_bytes": limit,
               "spaces": {s: room(net, names, probes[v[1]], limit, *v)
                          for s, v in SPACES.items()},
               "frontier_points": corner(points, r, top_rate)}
        rows.append(row)
        print(f"{name} {r:g}x: {limit:,} bytes, fixed {row['spaces']['frontier']['fixed']:,}, "
              f"floor {row['spaces']['frontier']['floor']:,}, room "
              f"{row['spaces']['frontier']['room']:.0%} (credited: "
              f"{row['spaces']['pruned floats credited']['room']:.0%}; rates to 0.8, compact BN, "
              f"credited: {row['spaces']['rates to 0.8, compact batch norm, credited']['room']:.0%}"
              "); points "
              f"{row['frontier_points']}", flush=True)
    return {"model": path, "name": name, "mode": mode, "dense_bytes": dense,
            "spaces": {s: {"prune_rates": v[0], "compact_bn": v[1], "pruned_float_credit": v[2]}
                       for s, v in SPACES.items()},
            "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    """Measure one frontier's budgets and write the report."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="resnet20")
    ap.add_argument("--model", default="checkpoints/scratch-106ep-resnet20/best.safetensors",
                    help="the frontier's starting weights (a model name: its clean baseline)")
    ap.add_argument("--mode", default="dkm0.04", help="the frontier's training mode")
    ap.add_argument("--points", default="", help="records folder (default: "
                    "results/frontier/points/<name>)")
    ap.add_argument("--ratios", type=float, nargs="+", default=[8, 16, 24, 32, 40])
    ap.add_argument("--out", default="", help="default: results/ablations/budget_room_<name>"
                    ".json")
    args = ap.parse_args(argv)
    report = measure(args.model, args.name, args.mode, args.ratios, args.points)
    report["command"] = "python benchmarks/budget_room.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    write_json(Path(args.out or f"results/ablations/budget_room_{args.name}.json"), report)
    return report


if __name__ == "__main__":
    main()
