"""rlcompress's weight sharing against Apple's coremltools palettizers, side by side.

Same checkpoint, same bits per weight (every Conv2d and Linear, stem and classifier included),
same calibration images, same training loader, schedule and optimiser for fine-tuning; the
final models are measured in fp32 on the test split (validation beside it).

* post-training (epochs 0): rlcompress ``lloyd``, ``exact``, ``sensitive`` (each without
  batch-norm re-estimation) and ``default`` (sensitive + batch-norm re-estimation, what
  ``rlcompress share`` does); coremltools ``PostTrainingPalettizer`` and ``SKMPalettizer``
  (its Fisher pass on the same calibration images, cross-entropy loss).
* fine-tuned (epochs E): rlcompress ``qat`` (the default of ``share``: trained quantization
  with re-assignment, started from ``default``) and coremltools ``DKMPalettizer``, each at
  every learning rate in ``--lrs``; optionally rlcompress ``centroids`` (the paper's) and
  ``qat-kd<W>`` (distilled from the uncompressed model, ``--distill W``; DKM is never
  distilled, so those rows are marked apart); with ``--dkm-tau T`` also rlcompress ``dkm<T>``
  (and ``dkm<T>-kd<W>``): trained quantization through DKM-style soft assignment
  (``ShareConfig.dkm_tau``) instead of the hard straight-through forward of ``qat``.

Usage::

    python benchmarks/peers.py                       # ResNet-20 baseline + FPGM-pruned, 2/3/4 bits
    python benchmarks/peers.py --epochs 1 --lrs 0.01 0.001 --ft-bits 2 3

Rows go to ``results/bench/peers.json`` as they finish (a rerun skips finished rows, so an
interrupted run continues); ``results/bench/peers.png`` plots them. Needs the ``[peers]``
extra (coremltools); without it the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rlcompress.clustering import ShareConfig, clusterable_layers, freeze_qat
from rlcompress.clustering.quantize import quantize
from rlcompress.clustering.sharing import share_palettized
from rlcompress.codec import save_compressed
from rlcompress.data import DataConfig, ImageData, load_data
from rlcompress.engine import TrainConfig, calibration_batches, evaluate_model, set_threads
from rlcompress.engine.runtime import pick_device
from rlcompress.engine.train import _optimizer, _train_epoch, make_loaders
from rlcompress.fileio import write_json
from rlcompress.models import load_checkpoint, weights_digest
from rlcompress.selection import best_by_validation

CHECKPOINTS = {  # the clean baselines (trained on the train split only) are the default
    "resnet20": "checkpoints/scratch-resnet20/best.safetensors",
    "resnet20-fpgm": "checkpoints/fpgm-scratch-resnet20/finetune/best.safetensors",
    "resnet32": "checkpoints/scratch-resnet32/best.safetensors",
    # the ResNet-20 baseline before session 22 (results/bench/peers_clean_v2.json, where its
    # rows are named resnet20)
    "resnet20-106ep": "checkpoints/scratch-106ep-resnet20/best.safetensors",
    # the CPU-trained clean baseline of sessions 7-10 (results/bench/peers_clean.json)
    "resnet20-cpu160": "checkpoints/scratch-cpu160-resnet20/best.safetensors",
    # history: the shared checkpoint fine-tuned on this data (results/bench/peers.json)
    "resnet20-finetuned": "checkpoints/baseline-resnet20/best.safetensors",
    "resnet20-fpgm-finetuned": "checkpoints/fpgm-resnet20/finetune/best.safetensors",
}
OURS_PT = {
    "lloyd": ShareConfig(method="lloyd", bn_images=0),
    "exact": ShareConfig(method="exact", bn_images=0),
    "sensitive": ShareConfig(method="sensitive", bn_images=0),
    "default": ShareConfig(),
}


def have_coremltools() -> bool:
    """True when coremltools' torch palettizers import."""
    try:
        import coremltools.optimize.torch.palettization  # noqa: F401
    except Exception:  # a missing or broken install both mean "skip"
        return False
    return True


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    logging.getLogger("coremltools").setLevel(logging.ERROR)


def _ct_config(cls: type, bits: int, extra: dict | None = None):
    return cls.from_dict({"global_config": {"n_bits": bits, **(extra or {})}})


def ours_post(model: nn.Module, bits: int, data: ImageData, cfg: ShareConfig) -> nn.Module:
    """rlcompress post-training clustering of every layer at ``2**bits`` clusters."""
    net = copy.deepcopy(model)
    quantize(net, {n: 2**bits for n in clusterable_layers(net)}, data, cfg)
    return net


def _grouped(group_size: int) -> dict:
    return ({"granularity": "per_grouped_channel", "group_size": group_size}
            if group_size else {})


def coreml_ptp(model: nn.Module, bits: int, _data: ImageData, _n: int,
               group_size: int = 0) -> nn.Module:
    """coremltools PostTrainingPalettizer (k-means per tensor, or per block of ``group_size``
    output channels; it skips no layer by size)."""
    from coremltools.optimize.torch.palettization import (
        PostTrainingPalettizer,
        PostTrainingPalettizerConfig,
    )

    cfg = _ct_config(PostTrainingPalettizerConfig, bits, _grouped(group_size))
    return PostTrainingPalettizer(copy.deepcopy(model), cfg).compress()


def coreml_skm(model: nn.Module, bits: int, data: ImageData, n: int,
               group_size: int = 0) -> nn.Module:
    """coremltools SKMPalettizer: Fisher-weighted k-means on the same calibration images."""
    from coremltools.optimize.torch.palettization import SKMPalettizer, SKMPalettizerConfig

    cfg = SKMPalettizerConfig.from_dict({"global_config": {"n_bits": bits,
                                                           **_grouped(group_size)},
                                         "calibration_nsamples": n})
    samples = [(x[i : i + 1], y[i : i + 1]) for x, y in calibration_batches(data, n)
               for i in range(len(y))]

    def loss_fn(net: nn.Module, batch: tuple) -> torch.Tensor:
        return F.cross_entropy(net(batch[0]), batch[1])

    return SKMPalettizer(copy.deepcopy(model).float(), cfg).compress(dataloader=samples,
                                                                      loss_fn=loss_fn)


def finetune(model: nn.Module, data: ImageData, epochs: int, lr: float,
             hooks: list[Callable[[nn.Module], None]], teacher: nn.Module | None = None,
             distill: float = 0.0) -> None:
    """The loop both sides fine-tune with: rlcompress's loader, one-cycle schedule, SGD
    Nesterov, bf16 autocast (the same code ``rlcompress share`` trains with); optionally
    distilled from ``teacher``."""
    cfg = TrainConfig(epochs=epochs, lr=lr, progress=False, distill=distill,
                      seed=torch.initial_seed() % 2**31)
    loader, _ = make_loaders(data, cfg)
    device = pick_device("auto")
    model.to(device).to(memory_format=torch.channels_last)
    opt = _optimizer(model, cfg)
    total = epochs * len(loader)
    for epoch in range(1, epochs + 1):
        loader.set_epoch(epoch)
        _train_epoch(model, loader, opt, cfg, device, (epoch - 1) * len(loader), total, hooks,
                     f"epoch {epoch}", teacher)


def ours_qat(model: nn.Module, bits: int, data: ImageData, epochs: int, lr: float,
             finetune_mode: str = "qat", distill: float = 0.0, dkm_tau: float = 0.0) -> nn.Module:
    """rlcompress: default clustering, then trained quantization (hard, or DKM-style soft with
    ``dkm_tau`` > 0) or centroid training, optionally distilled from the uncompressed model."""
    net = copy.deepcopy(model)
    quantize(net, {n: 2**bits for n in clusterable_layers(net)}, data,
             ShareConfig(finetune=finetune_mode, dkm_tau=dkm_tau), trainable=True)
    teacher = copy.deepcopy(model).eval() if distill > 0 else None
    finetune(net, data, epochs, lr, [], teacher, distill)
    return freeze_qat(net.eval())


def coreml_dkm(model: nn.Module, bits: int, data: ImageData, epochs: int, lr: float) -> nn.Module:
    """coremltools DKMPalettizer (differentiable k-means), every layer included."""
    from coremltools.optimize.torch.palettization import DKMPalettizer, DKMPalettizerConfig

    pal = DKMPalettizer(copy.deepcopy(model), _ct_config(DKMPalettizerConfig, bits,
                                                         {"weight_threshold": 0}))
    net = pal.prepare()
    finetune(net, data, epochs, lr, [lambda _m: pal.step()])
    return pal.finalize().eval()


def _measure(net: nn.Module, data: ImageData) -> dict:
    return {"top1": round(evaluate_model(net, data, "test", "fp32")["top1"], 2),
            "val_top1": round(evaluate_model(net, data, "val", "fp32")["top1"], 2)}


def _jobs(args: argparse.Namespace) -> list[tuple[dict, Callable[[nn.Module, ImageData], nn.Module]]]:
    jobs = []
    t = args.dkm_tau
    for bits in args.bits:
        for name, scfg in OURS_PT.items():
            jobs.append(({"tool": "rlcompress", "method": name, "bits": bits, "epochs": 0, "lr": 0},
                         lambda m, d, b=bits, c=scfg: ours_post(m, b, d, c)))
        for name, fn in (("PostTrainingPalettizer", coreml_ptp), ("SKMPalettizer", coreml_skm)):
            jobs.append(({"tool": "coremltools", "method": name, "bits": bits, "epochs": 0, "lr": 0},
                         lambda m, d, b=bits, f=fn: f(m, b, d, args.calibration)))
        if args.group_size:  # one codebook per block of output channels, both tools
            g = args.group_size
            jobs.append(({"tool": "rlcompress", "method": f"default-g{g}", "bits": bits,
                          "epochs": 0, "lr": 0},
                         lambda m, d, b=bits, g=g: ours_post(m, b, d, ShareConfig(group_size=g))))
            for name, fn in (("PostTrainingPalettizer", coreml_ptp), ("SKMPalettizer", coreml_skm)):
                jobs.append(({"tool": "coremltools", "method": f"{name}-g{g}", "bits": bits,
                              "epochs": 0, "lr": 0},
                             lambda m, d, b=bits, f=fn, g=g: f(m, b, d, args.calibration, g)))
    for lr in args.lrs:  # every bit width at the first rate before trying the next
        for bits in args.ft_bits:
            key = {"bits": bits, "epochs": args.epochs, "lr": lr}
            jobs.append(({"tool": "rlcompress", "method": "qat", **key},
                         lambda m, d, b=bits, r=lr: ours_qat(m, b, d, args.epochs, r)))
            jobs.append(({"tool": "coremltools", "method": "DKMPalettizer", **key},
                         lambda m, d, b=bits, r=lr: coreml_dkm(m, b, d, args.epochs, r)))
            if args.distill > 0:
                jobs.append(({"tool": "rlcompress", "method": f"qat-kd{args.distill:g}", **key},
                             lambda m, d, b=bits, r=lr: ours_qat(m, b, d, args.epochs, r,
                                                                 distill=args.distill)))
            if args.dkm_tau > 0:
                jobs.append(({"tool": "rlcompress", "method": f"dkm{t:g}", **key},
                             lambda m, d, b=bits, r=lr: ours_qat(m, b, d, args.epochs, r,
                                                                 dkm_tau=t)))
                if args.distill > 0:
                    jobs.append(({"tool": "rlcompress", "method": f"dkm{t:g}-kd{args.distill:g}",
                                  **key},
                                 lambda m, d, b=bits, r=lr: ours_qat(m, b, d, args.epochs, r,
                                                                     distill=args.distill,
                                                                     dkm_tau=t)))
            if args.centroids:
                jobs.append(({"tool": "rlcompress", "method": "centroids", **key},
                             lambda m, d, b=bits, r=lr: ours_qat(m, b, d, args.epochs, r,
                                                                 "centroids")))
    return jobs


def write_rlc(net: nn.Module, spec: dict, path: Path) -> int:
    """The final model as an ``.rlc`` file (a peer's palettized layers become shared layers
    with exactly their values); returns the file's bytes."""
    net = copy.deepcopy(net).float().eval()
    for module in net.modules():  # coremltools' bookkeeping buffers are not part of the network
        for name in [n for n in module._buffers if n.startswith("_COREML_")]:
            del module._buffers[name]
    share_palettized(net)
    arch = {k: v for k, v in spec.items() if k not in ("sharing", "qat")}
    save_compressed(net, arch, path)
    return path.stat().st_size


def run(models: dict[str, nn.Module], data: ImageData, args: argparse.Namespace,
        out: Path | None = None, specs: dict[str, dict] | None = None) -> list[dict]:
    """Every job on every model; rows already in ``out`` are kept and not rerun. With
    ``args.rlc`` (and the models' ``specs``) every final model is also written as an ``.rlc``
    file next to ``out`` and its bytes recorded."""
    rows = json.loads(out.read_text()) if out is not None and out.is_file() else []
    digests = {label: weights_digest(model) for label, model in models.items()}
    for r in rows:  # a retrained baseline under the same label must not inherit old rows
        if r["model"] in digests and r.get("weights", digests[r["model"]]) != digests[r["model"]]:
            raise ValueError(f"{out} holds {r['model']} rows of other weights ({r['weights']}, "
                             f"now {digests[r['model']]}): write to another --out")
    done = {(r["model"], r["tool"], r["method"], r["bits"], r["epochs"], r["lr"], r.get("seed", 0))
            for r in rows}
    for label, model in models.items():
        for meta, job in _jobs(args):
            meta = {**meta, "seed": args.seed}
            key = (label, meta["tool"], meta["method"], meta["bits"], meta["epochs"], meta["lr"],
                   args.seed)
            if key in done:
                continue
            # the seed sets DKM's and the loader's randomness (batch order, augmentation)
            torch.manual_seed(args.seed)
            t0 = time.perf_counter()
            net = job(model, data)
            row = {"model": label, "weights": digests[label], **meta,
                   "seconds": round(time.perf_counter() - t0, 1),
                   **_measure(net, data)}
            if args.rlc and specs and out is not None:
                name = "-".join(str(v) for v in key).replace("/", "_") + ".rlc"
                path = out.parent / f"{out.stem}_files" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                row |= {"file": str(path), "file_bytes": write_rlc(net, specs[label], path)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out is not None:
                write_json(out, rows)
    return rows


def plot(rows: list[dict], path: Path) -> None:
    """Test top-1 against bits, one panel per (model, epochs); fine-tuned points at the
    learning rate with the best validation top-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["model"], r["epochs"]) for r in rows})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (model, epochs) in zip(axes[0], panels, strict=True):
        sel = [r for r in rows if r["model"] == model and r["epochs"] == epochs]
        for tool, method in sorted({(r["tool"], r["method"]) for r in sel}):
            pts = best_by_validation([r for r in sel if (r["tool"], r["method"]) == (tool, method)],
                                     lambda r: r["bits"])
            bits = sorted(pts)
            ax.plot(bits, [pts[b]["top1"] for b in bits], "o-" if tool == "rlcompress" else "s--",
                    label=f"{tool} {method}")
        ax.set(title=f"{model}, {epochs} fine-tuning epochs", xlabel="bits per weight",
               ylabel="test top-1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _over_seeds(rows: list[dict]) -> list[dict]:
    """One row per setting: test and validation top-1 averaged over its seeds, with the
    standard error of the test mean (``top1_se``) and the number of seeds (``n``)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        key = (r["model"], r["epochs"], r["tool"], r["method"], r["bits"], r["lr"])
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        tops = [m["top1"] for m in members]
        mean = sum(tops) / len(tops)
        var = sum((t - mean) ** 2 for t in tops) / (len(tops) - 1) if len(tops) > 1 else 0.0
        out.append({**members[0], "top1": round(mean, 2), "n": len(tops),
                    "top1_se": round((var / len(tops)) ** 0.5, 2),
                    "val_top1": round(sum(m["val_top1"] for m in members) / len(members), 2)})
    return out


def table(rows: list[dict]) -> str:
    """Markdown: test top-1 per (model, method) and bits; fine-tuned rows at the learning rate
    with the best validation top-1 (the test split never selects anything), averaged over
    seeds (mean +- standard error, n) where several were run."""
    best = best_by_validation(_over_seeds(rows),
                              lambda r: (r["model"], r["epochs"], r["tool"], r["method"], r["bits"]))
    bits = sorted({r["bits"] for r in rows})
    lines = ["| model | epochs | tool | method | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---|---|---|---|" + "---|" * len(bits)]
    for model, epochs, tool, method in sorted({k[:4] for k in best}, key=lambda k: (k[0], k[1])):
        cells = []
        for b in bits:
            r = best.get((model, epochs, tool, method, b))
            se = f" +- {r['top1_se']:.2f}, n={r['n']}" if r is not None and r["n"] > 1 else ""
            cells.append("-" if r is None else
                         f"{r['top1']:.2f}{se}" + (f" (lr {r['lr']:g})" if epochs else ""))
        lines.append(f"| {model} | {epochs} | {tool} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet20", "resnet20-fpgm"],
                   choices=list(CHECKPOINTS))
    p.add_argument("--bits", nargs="+", type=int, default=[2, 3, 4])
    p.add_argument("--ft-bits", nargs="*", type=int, default=[2, 3])
    p.add_argument("--ft-models", nargs="*", default=["resnet20"],
                   help="models that get the fine-tuning rows (they take most of the time)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lrs", nargs="+", type=float, default=[0.01, 0.001])
    p.add_argument("--centroids", action="store_true", help="also the paper's centroid training")
    p.add_argument("--distill", type=float, default=0.0,
                   help="also rlcompress qat distilled from the uncompressed model at this weight")
    p.add_argument("--dkm-tau", type=float, default=0.0,
                   help="also rlcompress qat through DKM-style soft assignment at this temperature")
    p.add_argument("--calibration", type=int, default=1024, help="calibration images (Fisher)")
    p.add_argument("--rlc", action="store_true",
                   help="also write every final model as an .rlc file and record its bytes")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the fine-tuning runs (rows of several seeds are averaged)")
    p.add_argument("--group-size", type=int, default=0,
                   help="also per-grouped-channel codebooks of this many output channels (both tools)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default="results/bench/peers_clean.json",
                   help="results JSON (results/bench/peers.json holds the fine-tuned-checkpoint "
                   "history run with --models resnet20-finetuned resnet20-fpgm-finetuned)")
    p.add_argument("--table", action="store_true",
                   help="print the Markdown table of --out and redraw its plot; run nothing")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = parse(argv)
    if args.table:
        rows = json.loads(Path(args.out).read_text())
        print(table(rows))
        plot(rows, Path(args.out).with_suffix(".png"))
        return 0
    if not have_coremltools():
        print("coremltools is not installed: pip install 'rlcompress[peers]'; nothing to compare")
        return 0
    _quiet()
    set_threads(args.threads)
    data = load_data(DataConfig(), progress=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        model, spec = load_checkpoint(CHECKPOINTS[name])
        sub = argparse.Namespace(**{**vars(args), "ft_bits": args.ft_bits if name in args.ft_models else []})
        rows = run({name: model.eval()}, data, sub, out, {name: spec})
    plot(rows, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
