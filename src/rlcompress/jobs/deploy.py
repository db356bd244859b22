"""The ``rlcompress export --format onnx|onnx-dense|coreml`` job: an ``.rlc`` (or shared
checkpoint) as an ONNX file, verified against the decoded model with onnxruntime, or as a Core ML
package whose look-up tables are verified to reproduce the ``.rlc``'s weights exactly."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from rlcompress.clustering.qat import freeze_qat
from rlcompress.data import DataConfig, ImageData, load_data
from rlcompress.deploy import export_coreml, export_onnx, onnx_session, run_onnx
from rlcompress.engine import split_loader
from rlcompress.jobs.train import resolve_model

FORMATS = ("rlc", "onnx", "onnx-dense", "coreml")


@torch.no_grad()
def verify_onnx(path: str | Path, model: torch.nn.Module, data: ImageData,
                logit_images: int = 1000) -> dict:
    """Top-1 of the ONNX file and of the PyTorch model on the whole test split, and the
    largest absolute logit difference on its first ``logit_images`` images (fp32)."""
    session = onnx_session(path)
    model = model.float().eval()
    correct = {"onnx": 0, "torch": 0}
    worst, seen = 0.0, 0
    for x, y in split_loader(data, "test", 250):
        x = x.contiguous()
        a, b = run_onnx(session, x), model(x)
        correct["onnx"] += int((a.argmax(1) == y).sum())
        correct["torch"] += int((b.argmax(1) == y).sum())
        if seen < logit_images:
            n = min(len(y), logit_images - seen)
            worst = max(worst, float((a[:n] - b[:n]).abs().max()))
        seen += len(y)
    return {"onnx_top1": round(100 * correct["onnx"] / seen, 2),
            "torch_top1": round(100 * correct["torch"] / seen, 2),
            "max_logit_diff": worst, "logit_images": min(seen, logit_images), "test_images": seen}


def _in_channels(model: nn.Module, spec: dict) -> int:
    if "in_channels" in spec:
        return int(spec["in_channels"])
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3  # a user model: its first conv's


def export_deploy(source: str, out: str, fmt: str = "onnx", image_size: tuple[int, int] = (32, 32),
                  verify: bool = False, data: DataConfig | None = None,
                  model_class: str | None = None, class_args: str | dict | None = None,
                  input_shape: tuple[int, ...] | None = None) -> dict:
    """Export an ``.rlc`` file or a shared checkpoint as ONNX (``onnx``: palettized;
    ``onnx-dense``: float weights; with ``verify``, compared with the decoded model on the test
    split) or as a Core ML package (``coreml``: always verified layer by layer). A user model's
    ``.rlc`` needs its ``model_class`` (``file.py:Class``, built with ``class_args``);
    ``input_shape`` (without the batch) replaces (channels, *image_size) for other inputs, e.g.
    (2, 128) for a Conv1d model on 2-channel signals."""
    if fmt not in FORMATS[1:]:
        raise ValueError(f"format must be one of {FORMATS[1:]} here, got {fmt!r}")
    model, spec = resolve_model(source, model_class=model_class, class_args=class_args)
    freeze_qat(model)
    shape = tuple(input_shape) if input_shape else (_in_channels(model, spec), *image_size)
    t0 = time.perf_counter()
    if fmt == "coreml":
        report = export_coreml(model, out, shape)
    else:
        report = export_onnx(model, out, shape, palettized=fmt == "onnx")
    report |= {"source": source, "source_bytes": Path(source).stat().st_size,
               "seconds": round(time.perf_counter() - t0, 2)}
    report["size_vs_source"] = round(report["bytes"] / report["source_bytes"], 3)
    if verify and fmt != "coreml":
        report |= verify_onnx(out, model, load_data(data or DataConfig(), progress=False))
    return report
