"""Batch norm after DKM trained quantization: the trained statistics against re-estimated ones.

DKM's training forward uses soft weights, so the running statistics a fine-tuning epoch leaves
describe activations of weights that evaluation (and the file) never uses. For frontier points
trained without re-estimation (``share-dkm<tau>/``, ``--no-share-dkm-bn``), this loads the
selected fine-tuning checkpoint and scores it on the validation split three ways: as trained,
with batch norm re-estimated on training images (``replace``), and shifted by the change
measured against the uncompressed model (``shift``, the default of ``ShareConfig.bn_mode``).
What ``ShareConfig.dkm_bn`` does after every epoch is keep the better of the first and third.

    python benchmarks/dkm_bn.py runs/frontier/resnet32/32x/uniform-s0 \
        runs/frontier/resnet20/40x/uniform-s0 --out results/ablations/dkm_bn.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from rlcompress.clustering import ShareConfig
from rlcompress.clustering.quantize import bn_calibration
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import evaluate_model, recalibrate_bn
from rlcompress.fileio import write_json
from rlcompress.jobs.train import resolve_model
from rlcompress.models import load_checkpoint


def start_model(point: Path) -> str:
    """The model a point's sharing started from: its pruned fine-tune, else the frontier's."""
    pruned = point / "prune" / "finetune" / "best.safetensors"
    if pruned.is_file():
        return str(pruned)
    config = json.loads(next(point.glob("share-*/finetune/config.json")).read_text())
    return config["model"]


def score(point: Path, mode: str, data: object, cfg: ShareConfig) -> dict:
    """Validation top-1 of a point's selected checkpoint with each batch-norm choice."""
    ckpt = point / f"share-{mode}" / "finetune" / "best.safetensors"
    start = start_model(point)
    # cfg's shift mode: the reference for the shifted row (the replaced row passes none)
    batches, reference = bn_calibration(resolve_model(start, None, data.num_classes)[0].eval(),
                                        data, cfg, "bf16")
    row = {"point": str(point), "start": start}
    for name, ref in (("trained", None), ("replace", None), ("shift", reference)):
        net, _ = load_checkpoint(ckpt)
        if name != "trained":
            recalibrate_bn(net, batches, precision="bf16", reference=ref)
        row[f"val_{name}"] = round(evaluate_model(net, data, "val", "bf16", "cpu")["top1"], 2)
    row["kept"] = "shift" if row["val_shift"] > row["val_trained"] else "trained"
    return row


def main(argv: list[str] | None = None) -> dict:
    """Score every point given, print and write the rows."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("points", nargs="+", type=Path, help="frontier point run folders")
    ap.add_argument("--mode", default="dkm0.04", help="the share folder's mode")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="results/ablations/dkm_bn.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_data(DataConfig(), progress=False)
    cfg = ShareConfig()
    rows = []
    for point in args.points:
        rows.append(score(point, args.mode, data, cfg))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    report = {"command": "python benchmarks/dkm_bn.py " + " ".join(sys.argv[1:] if argv is None
                                                                     else argv),
              "bn_images": cfg.bn_images, "rows": rows}
    write_json(Path(args.out), report)
    return report


if __name__ == "__main__":
    main()
