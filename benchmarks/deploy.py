"""Deployment files of one ``.rlc`` model: sizes, agreement with PyTorch, onnxruntime latency.

For the headline ResNet-20 k16 file of the paper table: the file as committed, the same model
re-encoded in the current ``.rlc`` format, the palettized ONNX file and the dense ONNX file;
top-1 of each ONNX file on the full test split next to the decoded model's, the largest
|logit difference| on 1,000 test images (fp32), and latency (median of repeated runs) at batch
1 and 256 for onnxruntime and PyTorch (fp32, same thread count); and the Core ML package's size,
its look-up tables checked bit for bit against the file (Core ML cannot run on Linux).

Usage: python benchmarks/deploy.py [--rlc FILE] [--threads N]
Writes results/bench/deploy.json (and the files to results/deploy/). Needs [onnx] and [coreml].
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from rlcompress.codec import load_compressed, save_compressed
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import set_threads
from rlcompress.fileio import write_json
from rlcompress.jobs.deploy import export_deploy, verify_onnx


def _latency(fn, x: torch.Tensor, repeats: int) -> float:
    fn(x)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return round(1000 * statistics.median(times), 3)


def main() -> None:
    """Export, verify, time; write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rlc", default="results/paper_tables/files/resnet20-k16.rlc")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out-dir", default="results/deploy")
    p.add_argument("--out", default="results/bench/deploy.json")
    args = p.parse_args()
    set_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, manifest = load_compressed(args.rlc)
    model.eval()
    current = out_dir / "resnet20-k16.rlc"
    save_compressed(model, manifest["spec"], current)
    data = load_data(DataConfig(), progress=False)
    rows = {"rlc_committed_bytes": Path(args.rlc).stat().st_size,
            "rlc_current_format_bytes": current.stat().st_size, "threads": args.threads,
            "torch": torch.__version__}
    from rlcompress.deploy import onnx_session, run_onnx

    for fmt in ("onnx", "onnx-dense"):
        path = out_dir / f"resnet20-k16-{fmt}.onnx"
        report = export_deploy(str(current), str(path), fmt)
        report |= verify_onnx(path, model, data)
        session = onnx_session(path, args.threads)
        for batch in (1, 256):
            x = torch.randn(batch, 3, 32, 32)
            report[f"onnxruntime_ms_b{batch}"] = _latency(lambda t, s=session: run_onnx(s, t), x,
                                                          50 if batch == 1 else 10)
        rows[fmt] = report
        print(json.dumps({fmt: report}), flush=True)
    package = out_dir / "resnet20-k16.mlpackage"
    if package.exists():
        shutil.rmtree(package)
    report = export_deploy(str(current), str(package), "coreml")
    rows["coreml"] = {k: v for k, v in report.items() if k != "layers"}
    rows["coreml"]["lut_bits"] = sorted({v["lut_bits"] for v in report["layers"].values()})
    print(json.dumps({"coreml": rows["coreml"]}), flush=True)
    with torch.no_grad():
        for batch in (1, 256):
            x = torch.randn(batch, 3, 32, 32)
            rows[f"torch_ms_b{batch}"] = _latency(model, x, 50 if batch == 1 else 10)
    write_json(Path(args.out), rows)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
