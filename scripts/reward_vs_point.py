"""What each frontier point's search scored its policy at, against what the point measured:
the reward on the search's validation subset, the rescored value (all validation images, where
the search rescored), and the finished point's validation and test top-1. A search that picks
the best of many noisy rewards overrates its choice (the winner's curse); this shows by how much.

    python scripts/reward_vs_point.py runs/frontier/resnet20-posttrain --name resnet20-posttrain \
        --out results/ablations/posttrain_reward_vs_point_resnet20.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlcompress.fileio import write_json
from rlcompress.jobs.frontier import point_records
from rlcompress.search.allocators import ALLOCATORS
from rlcompress.search.runner import best_candidate


def rows(run: Path, records: Path, mode: str) -> list[dict]:
    """One row per point that has both a search summary and a finished record."""
    finished = point_records(records, mode, strict=True)
    out = []
    for summary in sorted(run.glob("*x/*/search/summary.json")):
        tag = f"{summary.parents[2].name}-{summary.parents[1].name}"
        if tag not in finished:
            continue
        saved, point = json.loads(summary.read_text()), finished[tag]["value"]
        best = saved["best"]
        rescored = best.get("val_top1_rescored", best["val_top1"])
        out.append({"point": tag, "reward": best["val_top1"], "rescored": rescored,
                    "val_top1": point["val_top1"], "top1": point["top1"],
                    "overrated": round(rescored - point["val_top1"], 2),
                    "chosen_episode": best.get("episode"),
                    "walk_start_episode": walk_start(saved, summary.parent / "config.json")})
    return out


def walk_start(summary: dict, config: Path) -> int | None:
    """The episode a refinement walk started from: the best re-scored policy among the
    search's own episodes (as ``run_search`` picks it; the walk's best, appended after them,
    does not count). A search's demonstrations are its first episodes. None without a walk
    or a re-scoring. A search that chose by KL (``choose_by``) ranked them by KL."""
    if not config.is_file():
        return None
    search = json.loads(config.read_text())["search"]
    if not search.get("refine") or not summary.get("rescored"):
        return None
    own = 1 if search["strategy"] in ALLOCATORS else search["episodes"]
    first = best_candidate([r for r in summary["rescored"] if r["episode"] <= own],
                           search.get("choose_by", "top1"))
    return first["episode"]


def main(argv: list[str] | None = None) -> dict:
    """Collect the rows and write them."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a frontier run folder")
    ap.add_argument("--name", required=True, help="the frontier's name (its records)")
    ap.add_argument("--mode", default="dkm0.04-bn", help="the records' training mode")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    report = {"run": args.run, "rows": rows(Path(args.run),
                                             Path("results/frontier/points") / args.name, args.mode)}
    write_json(Path(args.out), report)
    return report


if __name__ == "__main__":
    for r in main()["rows"]:
        print(r)
