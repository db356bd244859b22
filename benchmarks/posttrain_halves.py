"""Which post-training signal picks policies that hold up on images it did not see?

The post-training walk climbs validation top-1 and gains on test much less than on validation
(session 29), so the choice overfits its images. This splits the validation split in two
halves A and B (alternate 500-image batches), scores the policies a frontier's walks evaluated
on both, exactly as a finished point validates (batch norm re-estimated on 2,048 images in
float32, model unfolded), and asks how well each signal on A (top-1, the KL divergence from
the float model) ranks top-1 on B, and the other way round. The test split is not used.

    python benchmarks/posttrain_halves.py --runs runs/frontier/resnet20-posttrain-fr \
        runs/frontier/resnet20-posttrain-sil --ratio 16x --policies 60 \
        --out results/ablations/posttrain_halves_resnet20_16x.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import spearman  # noqa: E402

from rlcompress.clustering import ShareConfig, clusterable_layers  # noqa: E402
from rlcompress.clustering.sharing import ClusterCache  # noqa: E402
from rlcompress.data import DataConfig, load_data  # noqa: E402
from rlcompress.engine.bn import recalibrate_bn  # noqa: E402
from rlcompress.engine.evaluate import ranked  # noqa: E402
from rlcompress.engine.runtime import set_threads  # noqa: E402
from rlcompress.fileio import write_json  # noqa: E402
from rlcompress.models import load_checkpoint  # noqa: E402
from rlcompress.search.evaluator import PolicyEvaluator  # noqa: E402


def walk_policies(runs: list[Path], ratio: str, n: int, seed: int) -> list[list[int]]:
    """Distinct k vectors the walks of ``runs`` at ``ratio`` evaluated (every neighbour tried,
    accepted or not), ``n`` of them drawn with ``seed``."""
    seen: dict[str, list[int]] = {}
    for run in runs:
        for log in sorted(run.glob(f"{ratio}/*/search/episodes.csv")):
            config = json.loads((log.parent / "config.json").read_text())["search"]
            own = config["episodes"] if config["strategy"] in ("ddpg", "random") else 1
            with open(log) as f:
                for row in csv.DictReader(f):
                    if int(row["episode"]) > own:  # the walk's rows
                        seen.setdefault(row["ks"], [int(k) for k in row["ks"].split(";")])
    keys = sorted(seen)
    pick = np.random.default_rng(seed).permutation(len(keys))[:n]
    return [seen[keys[i]] for i in sorted(pick)]


@torch.inference_mode()
def half_scores(ev: PolicyEvaluator, policy: dict[str, int]) -> dict[str, float]:
    """Top-1 (%) and mean KL from the float model on each half of ``ev``'s images."""
    ref = ev.reference()
    ev.load_policy(policy)
    with torch.inference_mode(False), torch.no_grad():
        recalibrate_bn(ev.model, ev.bn_batches, precision="fp32", reference=ev.bn_reference)
    out = {"top1_A": 0.0, "top1_B": 0.0, "kl_A": 0.0, "kl_B": 0.0}
    count = {"A": 0, "B": 0}
    for b, (x, y) in enumerate(ev.inputs):
        half = "AB"[b % 2]
        logits, top = ranked(ev.model, x, torch.device("cpu"), ev.precision)
        out[f"top1_{half}"] += float((top[:, 0] == y).sum())
        out[f"kl_{half}"] += F.kl_div(F.log_softmax(logits.float(), 1), ref[b], log_target=True,
                                      reduction="sum").item()
        count[half] += len(y)
    return {k: round((100.0 if k.startswith("top1") else 1.0) * v / count[k[-1]], 5)
            for k, v in out.items()}


def judge(rows: list[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Spearman of each signal on one half against top-1 on the other, the top-1 on the
    other half of the policy each signal picks (against the best there), and a bootstrap
    over the policies of KL's Spearman minus top-1's (mean, 95% interval, share above 0)."""
    out = {}
    rng = np.random.default_rng(seed)
    for a, b in (("A", "B"), ("B", "A")):
        target = [r[f"top1_{b}"] for r in rows]
        t, x, k = (np.array([r[f] for r in rows]) for f in (f"top1_{b}", f"top1_{a}", f"kl_{a}"))
        diffs = []
        for _ in range(resamples):
            i = rng.integers(0, len(rows), len(rows))
            diffs.append(spearman(list(-k[i]), list(t[i])) - spearman(list(x[i]), list(t[i])))
        out[f"kl_minus_top1_{a}->top1_{b}"] = {
            "mean": round(float(np.mean(diffs)), 3),
            "ci95": [round(float(v), 3) for v in np.percentile(diffs, [2.5, 97.5])],
            "share_above_0": round(float(np.mean(np.array(diffs) > 0)), 4)}
        for signal, values in ((f"top1_{a}", [r[f"top1_{a}"] for r in rows]),
                               (f"neg_kl_{a}", [-r[f"kl_{a}"] for r in rows])):
            chosen = rows[int(np.argmax(values))]
            out[f"{signal}->top1_{b}"] = {
                "spearman": round(spearman(values, target), 3),
                "picked_top1": chosen[f"top1_{b}"], "best_top1": max(target),
                "mean_top1": round(float(np.mean(target)), 3)}
    return out


def main(argv: list[str] | None = None) -> dict:
    """Score the policies (resumable: rows already in ``--out`` are kept) and judge."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="frontier run folders")
    ap.add_argument("--ratio", required=True, help="the budget folder, e.g. 16x")
    ap.add_argument("--model", default="checkpoints/scratch-resnet20/best.safetensors")
    ap.add_argument("--policies", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.is_file() else []
    done = {tuple(r["ks"]) for r in rows}
    model, _ = load_checkpoint(args.model)
    data = load_data(DataConfig(), progress=False)
    names = list(clusterable_layers(model.eval()))
    ev = PolicyEvaluator(model, names, data, 10**9, ShareConfig(), ClusterCache(),
                         batch_size=500, exact=True)
    for ks in walk_policies([Path(r) for r in args.runs], args.ratio, args.policies, args.seed):
        if tuple(ks) in done:
            continue
        rows.append({"ks": ks, **half_scores(ev, dict(zip(names, ks, strict=True)))})
        print(json.dumps(rows[-1]), flush=True)
        write_json(out, {"rows": rows})
    report = {"command": "python benchmarks/posttrain_halves.py " + " ".join(argv or sys.argv[1:]),
              "images_per_half": ev.n // 2, "policies": len(rows), "judge": judge(rows),
              "rows": rows}
    write_json(out, report)
    return report


if __name__ == "__main__":
    print(json.dumps(main()["judge"], indent=1))
