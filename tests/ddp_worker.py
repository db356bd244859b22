"""Run under ``torchrun`` by tests/test_distributed.py (not a test module itself).

Usage: ``torchrun --standalone --nproc_per_node N tests/ddp_worker.py SCENARIO OUT``

* ``train``: a full run, then the same run cut after epoch 1 and resumed, then evaluation of
  the test split through the package's loaders and through a user's DataLoader; rank 0 writes
  ``OUT/result.json``; every rank writes ``OUT/rank.json`` (only rank 0's may land).
* ``compress``: ``examples/compress_vgg.py --tiny`` (prune, search, share, fine-tunes, export
  through ``rlcompress.compress``) into ``OUT/vgg``.
* ``fail``: rank 1 raises while rank 0 waits in a collective.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from conftest import planted_data
from rlcompress import dist
from rlcompress.data.loaders import LoaderData
from rlcompress.engine import TrainConfig, evaluate_model, fit, pick_device
from rlcompress.fileio import write_json
from rlcompress.models import build_model, resnet_spec

CFG = dict(epochs=2, batch_size=32, lr=0.05, progress=False, precision="fp32", threads=1,
           eval_batch_size=25)


class Cut(Exception):
    """Stands for a kill between epochs."""


def model() -> tuple[torch.nn.Module, dict]:
    """The tiny ResNet of the tests, seeded."""
    torch.manual_seed(0)
    spec = resnet_spec(8, num_classes=4, widths=(8, 16, 32))
    return build_model(spec), spec


def user_loaders(data) -> LoaderData:  # noqa: ANN001
    """The planted data's splits as a user's plain DataLoaders (normalised float batches)."""
    def loader(split, batch):  # noqa: ANN001, ANN202
        x = (split.images.permute(0, 3, 1, 2).float() / 255 - 0.5) / 0.25
        return DataLoader(TensorDataset(x, split.labels), batch_size=batch)
    return LoaderData(loader(data.train, 32), loader(data.val, 25), loader(data.test, 25))


def train(out: Path) -> None:
    """Full run, cut-and-resumed run, evaluations; results written by rank 0."""
    data = planted_data()
    cfg = TrainConfig(**CFG)
    net, spec = model()
    full = fit(net, spec, data, cfg, out / "full")

    def cut(_m: torch.nn.Module, epoch: int) -> None:
        if epoch == 2:
            raise Cut
    net, spec = model()
    with contextlib.suppress(Cut):
        fit(net, spec, data, cfg, out / "cut", epoch_hooks=[cut])
    net, spec = model()
    fit(net, spec, data, cfg, out / "cut", resume=True)
    result = {
        "world_size": dist.world_size(), "summary": full,
        "test": evaluate_model(net, data, "test", "fp32"),
        "test_user_loader": evaluate_model(net, user_loaders(data), "test", "fp32"),
    }
    write_json(out / "result.json", result)
    write_json(out / "rank.json", {"rank": dist.rank()})


def fail() -> None:
    """Rank 1 dies while rank 0 waits for it."""
    dist.init(pick_device("cpu"))
    if dist.rank() == 1:
        raise RuntimeError("rank 1 failed on purpose")
    dist.barrier()


def compress(out: Path) -> None:
    """The library API's whole flow on a user's network, data-parallel."""
    spec = importlib.util.spec_from_file_location(
        "compress_vgg", Path(__file__).resolve().parents[1] / "examples" / "compress_vgg.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main(["--tiny", "--out", str(out / "vgg")])
    write_json(out / "rank.json", {"rank": dist.rank()})


if __name__ == "__main__":
    scenario, out = sys.argv[1], Path(sys.argv[2])
    {"train": train, "compress": compress, "fail": lambda _out: fail()}[scenario](out)
