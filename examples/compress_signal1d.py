"""Compress a 1-D signal classifier (telemetry, vibration, audio) with the library API.

    python examples/compress_signal1d.py            # train, compress to 12 KB, export
    python examples/compress_signal1d.py --tiny     # seconds, tiny budgets (the test)

The data are generated here (so the example needs no download): six kinds of two-channel
waveform (sine, square, sawtooth, chirp, damped burst, noise with a drift), each with a random
frequency, phase, amplitude and noise level. The network is a plain user-defined nn.Module of
Conv1d layers trained with an ordinary loop; rlcompress only sees the model and the loaders.
Writes ``results/examples/signal1d.json`` and the ``.rlc`` file beside it (not with --tiny).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import rlcompress

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compress_vgg import train  # noqa: E402 - the same plain training loop as the VGG example

KINDS = ("sine", "square", "sawtooth", "chirp", "burst", "drift")


class SignalNet(nn.Module):
    """Strided conv-bn-relu blocks over time, global average pooling, one linear classifier."""

    def __init__(self, channels: int = 2, num_classes: int = len(KINDS), width: int = 32) -> None:
        super().__init__()
        w = width
        layers, c_in = [], channels
        for c_out, k, s in ((w, 7, 2), (w, 5, 1), (2 * w, 5, 2), (2 * w, 3, 1), (4 * w, 3, 2)):
            layers += [nn.Conv1d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm1d(c_out),
                       nn.ReLU()]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(2))


def waveforms(n: int, length: int, seed: int) -> TensorDataset:
    """``n`` two-channel signals of ``length`` samples, classes in turn, normalised per signal."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, length)
    y = torch.arange(n) % len(KINDS)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, 1, 1, generator=g)

    freq, phase, amp = u(3, 12), u(0, 2 * math.pi), u(0.5, 1.5)
    quarter = torch.tensor([0.0, math.pi / 2]).view(1, 2, 1)  # the second channel lags
    arg = 2 * math.pi * freq * t + phase + quarter
    shapes = torch.stack([
        torch.sin(arg),
        torch.sign(torch.sin(arg)),
        2 * torch.remainder(arg / (2 * math.pi), 1.0) - 1,
        torch.sin(2 * math.pi * freq * t * (1 + 2 * t) + phase + quarter),
        torch.sin(arg) * torch.exp(-6 * torch.remainder(t * freq / 3, 1.0)),
        torch.cumsum(torch.randn(n, 2, length, generator=g), 2) / math.sqrt(length),
    ], 1)
    x = amp * shapes[torch.arange(n), y] + u(0.2, 0.8) * torch.randn(n, 2, length, generator=g)
    x = (x - x.mean(2, keepdim=True)) / x.std(2, keepdim=True).clamp(min=1e-6)
    return TensorDataset(x.float(), y)


def loaders(tiny: bool) -> tuple[DataLoader, DataLoader, DataLoader]:
    """Train / validation / test loaders over independent draws."""
    n, length = (240, 64) if tiny else (6000, 256)
    return (DataLoader(waveforms(n, length, 0), 64, shuffle=True, drop_last=True),
            DataLoader(waveforms(n // 4, length, 1), 250),
            DataLoader(waveforms(n // 4, length, 2), 250))


def export(model: nn.Module, path: Path, shape: tuple[int, int], x: torch.Tensor) -> dict:
    """The palettized ONNX file and its largest logit difference from PyTorch (needs the
    [onnx] extra; skipped without it)."""
    try:
        from rlcompress.deploy import export_onnx, onnx_session, run_onnx

        out = export_onnx(model, path, shape)
    except ImportError as exc:
        return {"skipped": str(exc)}
    diff = (run_onnx(onnx_session(out["file"]), x) - model(x)).abs().max()
    return {"file": str(path), "bytes": out["bytes"], "max_logit_diff": float(diff)}


def export_mlpackage(model: nn.Module, path: Path, shape: tuple[int, int]) -> dict:
    """The Core ML package, each look-up table checked against the file's weights (needs the
    [coreml] extra; skipped without it)."""
    try:
        from rlcompress.deploy import export_coreml

        out = export_coreml(model, path, shape)
    except ImportError as exc:
        return {"skipped": str(exc)}
    return {"file": str(path), "bytes": out["bytes"], "verified_layers": out["verified_layers"]}


def main(argv: list[str] | None = None) -> dict:
    """Train the network, compress it, reload and export the file, and print the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="small data and tiny budgets")
    ap.add_argument("--epochs", type=int, default=8, help="training epochs of the network")
    ap.add_argument("--target-size", default="12KB", help="size budget of the compressed file")
    ap.add_argument("--strategy", default="greedy", help="how k (per layer) is chosen")
    ap.add_argument("--out", default="runs/example-signal1d", help="run directory")
    ap.add_argument("--results", default="results/examples", help="where the record goes")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    tr, va, te = loaders(args.tiny)
    width = 8 if args.tiny else 32
    model = SignalNet(width=width)
    t0 = time.perf_counter()
    train(model, tr, 2 if args.tiny else args.epochs)
    trained_s = time.perf_counter() - t0
    small = dict(prune_epochs=1, share_epochs=1, val_images=60, progress=False,
                 precision="fp32") if args.tiny else dict(prune_epochs=3, share_epochs=3)
    t0 = time.perf_counter()
    compressed, report = rlcompress.compress(
        model, tr, va, te, target_size="3KB" if args.tiny else args.target_size,
        strategy=args.strategy, out=args.out, **small)
    again = rlcompress.load(report["file"], model=SignalNet(width=width)).eval()
    x = next(iter(te))[0][:64]
    assert torch.equal(again(x), compressed.eval()(x))
    shape = tuple(x.shape[1:])
    record = {"command": "python examples/compress_signal1d.py" + (" --tiny" if args.tiny else ""),
              "float_bytes": 4 * sum(p.numel() for p in model.parameters()),
              "train_seconds": round(trained_s, 1),
              "compress_seconds": round(time.perf_counter() - t0, 1),
              "threads": torch.get_num_threads(), **report,
              "onnx": export(again, Path(args.out) / "model.onnx", shape, x),
              "coreml": export_mlpackage(again, Path(args.out) / "model.mlpackage", shape)}
    if not args.tiny:
        res = Path(args.results)
        res.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(report["file"], res / "signal1d.rlc")
        (res / "signal1d.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
