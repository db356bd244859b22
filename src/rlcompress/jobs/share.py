"""The ``rlcompress share`` job: apply a k policy, fine-tune centroids, export, measure.

Run directory::

    shared.safetensors/.json   the model right after clustering (spec lists the codebook sizes)
    finetune/                  centroid fine-tuning run (see rlcompress.engine.train)
    model.rlc                  the compressed file of the best fine-tuned epoch
    summary.json               accuracy of the decoded file, both ratios, per-layer k
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from torch import nn

from rlcompress.clustering.policies import resolve_policy
from rlcompress.clustering.qat import freeze_qat
from rlcompress.clustering.quantize import hard_bn_hook, quantize, sharing_spec
from rlcompress.clustering.sharing import (
    ShareConfig,
    clusterable_layers,
    shared_layers,
)
from rlcompress.codec import load_compressed, save_compressed, size_report
from rlcompress.data import DataConfig, ImageData, load_data
from rlcompress.engine import TrainConfig, evaluate_model, fit
from rlcompress.fileio import write_json
from rlcompress.jobs.train import load_teacher, resolve_model
from rlcompress.models import load_checkpoint, save_checkpoint
from rlcompress.rundir import open_run_dir


def export(
    model: str | nn.Module,
    out: str,
    spec: dict | None = None,
    encoding: str = "auto",
    codebook_dtype: str = "float32",
    extra: dict | None = None,
    compact_bn: bool = False,
) -> dict:
    """Write a shared model (or a shared checkpoint path) to an ``.rlc`` file; returns its sizes
    (``compact_bn``: batch norms as inference scale and shift, see ``save_compressed``)."""
    if isinstance(model, str):
        if Path(model).suffix == ".rlc":
            raise ValueError(f"{model} is already an .rlc file: --format onnx, onnx-dense or "
                             "coreml converts it for deployment")
        model, spec = load_checkpoint(model)
        freeze_qat(model)  # a checkpoint taken during trained quantization
    if spec is None:
        raise ValueError("export of an in-memory model needs its architecture spec")
    if not shared_layers(model):
        raise ValueError("the model has no shared layers: run `rlcompress share` first")
    arch = {k: v for k, v in spec.items() if k not in ("sharing", "qat")}
    save_compressed(model, arch, out, encoding, codebook_dtype, extra, compact_bn)
    return {"file": str(out), **size_report(model, arch, Path(out).stat().st_size)}


def evaluate_file(path: str | Path, data: ImageData, precision: str = "bf16",
                  device: str = "auto") -> dict:
    """Decode an ``.rlc`` file and measure it on the validation and test splits."""
    model, _ = load_compressed(path)
    return {
        "val": evaluate_model(model, data, "val", precision, device),
        "test": evaluate_model(model, data, "test", precision, device),
    }


def share(
    model: str,
    out: str = "runs/share",
    policy: str | dict[str, int] = "k16",
    share_cfg: ShareConfig | None = None,
    data: DataConfig | None = None,
    cfg: TrainConfig | None = None,
    encoding: str = "auto",
    codebook_dtype: str = "float32",
    resume: bool = False,
    results: str | None = None,
    compact_bn: bool = False,
    teacher: str | None = None,
) -> dict:
    """Cluster every layer with the policy's k, fine-tune (``cfg.epochs``; 0 for none: trained
    quantization or centroids only, as ``share_cfg.finetune`` says), export ``model.rlc`` and
    report the decoded file's accuracy and sizes. The fine-tuning distils (``cfg.distill``)
    from ``teacher`` (a checkpoint or a model name, e.g. a larger network) or, by default,
    from the unshared model."""
    scfg, data_cfg, cfg = share_cfg or ShareConfig(), data or DataConfig(), cfg or TrainConfig()
    if teacher and cfg.distill <= 0:
        raise ValueError("a teacher needs --distill > 0 (the weight of its soft labels)")
    run = open_run_dir(out, resume)
    dataset = load_data(data_cfg, progress=cfg.progress)
    t0 = time.perf_counter()
    timings = {}
    if (run / "shared.safetensors").is_file():
        net, spec = load_checkpoint(run / "shared.safetensors")
        ks = json.loads((run / "policy.json").read_text())
    else:
        net, spec = resolve_model(model, None, dataset.num_classes, require_weights=True)
        ks = resolve_policy(policy, clusterable_layers(net, scfg.first, scfg.last))
        timings = quantize(net, ks, dataset, scfg, trainable=cfg.epochs > 0)
        spec = {**spec, **sharing_spec(net)}
        save_checkpoint(net, spec, run, "shared")
        write_json((run / "policy.json"), ks)
    before = evaluate_model(net, dataset, "val", cfg.precision, cfg.device)
    best, kept_clustered = net, False
    if cfg.epochs > 0:
        extra = {"model": model, "policy": policy if isinstance(policy, str) else "custom",
                 "share": scfg.__dict__, "teacher": teacher, "argv": sys.argv}
        # the unshared model teaches its shared copy unless another teacher is given
        # (cfg.distill weighs it; 0 turns it off)
        unshared = resolve_model(model, None, dataset.num_classes)[0].eval()
        teacher_net = None
        if cfg.distill > 0:
            teacher_net = (load_teacher(teacher, data_cfg, dataset.num_classes) if teacher
                           else unshared)
        hook = hard_bn_hook(net, unshared, dataset, scfg, cfg.precision, cfg.device)
        tuned = fit(net, spec, dataset, cfg, run / "finetune", resume=resume,
                    extra_config=extra, teacher=teacher_net, eval_hooks=[hook] if hook else None)
        best, _ = load_checkpoint(run / "finetune" / "best.safetensors")
        if tuned["best_val_top1"] < before["top1"]:
            # fine-tuning never beat the clustered model on validation: keep that one, so that
            # sharing never hands back a model worse than before its fine-tuning
            best, _ = load_checkpoint(run / "shared.safetensors")
            kept_clustered = True
    freeze_qat(best)
    spec = {k: v for k, v in spec.items() if k != "qat"}
    label = policy if isinstance(policy, str) else "custom"
    sizes = export(best.eval(), str(run / "model.rlc"), spec, encoding, codebook_dtype,
                   extra={"policy": label, "k": ks}, compact_bn=compact_bn)
    scores = evaluate_file(run / "model.rlc", dataset, cfg.precision, cfg.device)
    summary = {
        "model": model, "policy": label, "k": ks,
        "top1": round(scores["test"]["top1"], 2), "top5": round(scores["test"]["top5"], 2),
        "val_top1": round(scores["val"]["top1"], 2),
        "val_top1_before_finetune": round(before["top1"], 2),
        "kept_clustered_model": kept_clustered,
        **sizes, "epochs": cfg.epochs, "lr": cfg.lr, "distill": cfg.distill, "teacher": teacher,
        "share": asdict(scfg),
        **timings,
        "seconds": round(time.perf_counter() - t0, 1), "run_dir": str(run),
        "command": "rlcompress " + " ".join(sys.argv[1:]),
    }
    write_json((run / "summary.json"), summary)
    if results:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        write_json(Path(results), summary)
    return summary
