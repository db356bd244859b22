from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import rlcompress
from conftest import SMALL_ARGS, SMALL_SIZE

ROOT = Path(__file__).resolve().parents[1]


def _example():
    spec = importlib.util.spec_from_file_location("compress_vgg", ROOT / "examples" / "compress_vgg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _dense_checkpoint_and_data(tar: Path, tmp_path: Path) -> list[str]:
    """Save a seeded 3-class ResNet-20 as ``tmp_path/dense.safetensors``; the CLI's data args
    for the tiny image archive."""
    from rlcompress.models import build_model, model_spec, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "dense")
    return ["--source", str(tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3",
            *SMALL_ARGS]


def test_library_api_on_a_non_resnet(tmp_path: Path):
    report = _example().main(["--tiny", "--out", str(tmp_path / "vgg")])
    path = Path(report["file"])
    assert path.is_file() and report["file_bytes"] == path.stat().st_size
    assert report["file_bytes"] <= 12_000  # the budget given to compress()
    assert report["layers_kept_whole"] == {}  # every conv of the VGG could be shrunk
    saved = json.loads((tmp_path / "vgg" / "report.json").read_text())
    assert saved == report


def test_compress_refuses_ambiguous_budget():
    with pytest.raises(ValueError, match="exactly one"):
        rlcompress.compress(torch.nn.Conv2d(3, 3, 1), [], [], target_size="1KB", target_ratio=4.0)


def test_quick_shrinks_the_budgets_left_at_their_defaults_only():
    from rlcompress.pipeline.run import QUICK, PipelineConfig

    quick = PipelineConfig(quick=True).resolved()
    assert {k: getattr(quick, k) for k in QUICK} == QUICK
    assert quick.epoch_images < 45000 and quick.target_size == PipelineConfig().target_size
    # (a setting given at its default value cannot be told from one not given: quick's wins)
    mine = PipelineConfig(quick=True, share_epochs=2, epoch_images=20000).resolved()
    assert mine.share_epochs == 2 and mine.epoch_images == 20000 and mine.prune_epochs == 1
    assert mine.resolved() == mine  # a resumed run's saved settings resolve to themselves
    assert PipelineConfig(share_epochs=2).resolved() == PipelineConfig(share_epochs=2)


def test_run_refuses_an_unreadable_size_before_any_work(tmp_path: Path, capsys):
    from rlcompress.cli import main
    from rlcompress.pipeline.run import PipelineConfig

    with pytest.raises(ValueError, match="cannot read size"):
        PipelineConfig(target_size="-5")
    with pytest.raises(ValueError, match="above 1x"):
        PipelineConfig(target_size="0.5x")
    assert PipelineConfig(target_size="nonsense", target_ratio=13.35).target_ratio == 13.35
    # no data source is needed: it fails before loading any
    assert main(["run", "--model", "resnet20", "--target-size", "12 parsecs", "--data-dir",
                 str(tmp_path / "none"), "--no-download", "--out", str(tmp_path / "r")]) == 2
    assert "cannot read size" in capsys.readouterr().err and not (tmp_path / "r").exists()


def test_run_pipeline_end_to_end_and_resume(small_tar: Path, tmp_path: Path, capsys):
    from rlcompress.cli import main

    data = _dense_checkpoint_and_data(small_tar, tmp_path)
    out = tmp_path / "run"
    # the paper's mode and its DDPG agent (the default greedy allocator runs in the joint test)
    args = ["run", "--model", str(tmp_path / "dense.safetensors"), "--baseline-epochs", "0",
            "--prune-rates", "", "--prune-epochs", "1", "--strategy", "ddpg", "--episodes", "3",
            "--share-epochs", "1", "--val-images", "3", "--target-ratio", "10", "--out", str(out),
            "--quiet", *data]
    assert main(args) == 0
    assert "compressed test top-1" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["paper_ratio"] >= 10.0
    stages = report["seconds"]["stages"]
    assert set(stages) == {"baseline", "prune", "search", "share", "report"}
    assert report["seconds"]["total"]["wall_s"] == pytest.approx(
        sum(v["wall_s"] for v in stages.values()), abs=0.05)
    assert stages["prune"]["cpu_s"] > 0 and stages["share"]["wall_s"] > 0
    # the report's numbers are those of the files it names
    assert main(["evaluate", report["file"], "--quiet", *data]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(report["top1"], abs=0.01)
    assert Path(report["file"]).stat().st_size == report["file_bytes"]
    # resume: finished stages are skipped (their files are not rewritten)
    stamp = (out / "prune" / "summary.json").stat().st_mtime_ns
    assert main(["run", "--resume", str(out), "--quiet", *data]) == 0
    assert (out / "prune" / "summary.json").stat().st_mtime_ns == stamp
    assert json.loads((out / "report.json").read_text())["top1"] == report["top1"]


def test_reproduce_table_on_tiny_data(small_tar: Path, tmp_path: Path):
    from rlcompress.data import DataConfig
    from rlcompress.engine import TrainConfig
    from rlcompress.jobs import train
    from rlcompress.models import build_model, model_spec, save_checkpoint
    from rlcompress.pipeline.reproduce import reproduce

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "dense")
    data = DataConfig(source=str(small_tar), data_dir=str(tmp_path / "d"), val_size=3,
                      image_size=SMALL_SIZE)
    tiny = TrainConfig(epochs=1, batch_size=4, progress=False, precision="fp32")
    train(str(tmp_path / "dense.safetensors"), str(tmp_path / "base"), None, data, tiny)
    results = tmp_path / "results"
    kw = dict(prune_epochs=1, share_epochs=1, episodes=2, seeds=(0, 1), data=data, progress=False)
    part = reproduce("resnet20", str(tmp_path / "rep"), str(results), str(tmp_path / "base"),
                     only=("k16",), **kw)
    assert [r["policy"] for r in part["rows"]] == ["fpgm", "k16"] and not part["complete"]
    assert part["share_distill"] == 0.0
    with pytest.raises(ValueError, match="distill"):  # one table, one fine-tuning
        reproduce("resnet20", str(tmp_path / "rep"), str(results), str(tmp_path / "base"),
                  only=("k16",), **{**kw, "distill": 0.9})
    with pytest.raises(ValueError, match="unknown rows"):
        reproduce("resnet20", str(tmp_path / "rep"), str(results), str(tmp_path / "base"),
                  only=("k17",), **kw)
    table = reproduce("resnet20", str(tmp_path / "rep"), str(results), str(tmp_path / "base"), **kw)
    assert table["complete"]
    policies = [r["policy"] for r in table["rows"]]
    assert policies == ["fpgm", "/16", "/32", "/64", "k16", "k32", "k64", "random", "rl"]
    for r in [*table["rows"][1:7], *table["rows"][7]["per_seed"], *table["rows"][8]["per_seed"]]:
        assert Path(r["file"]).is_file() and Path(r["file"]).stat().st_size == r["file_bytes"]
    rl = table["rows"][-1]
    k16 = next(r for r in table["rows"] if r["policy"] == "k16")
    assert table["target_ratio"] == pytest.approx(k16["paper_ratio"], abs=1e-3)  # k16's size
    assert rl["seeds"] == [0, 1]
    assert all(s["paper_ratio"] >= k16["paper_ratio"] * 0.999 for s in rl["per_seed"])
    assert rl["top1"] == pytest.approx(sum(s["top1"] for s in rl["per_seed"]) / 2, abs=1e-3)
    for ext in ("json", "md", "png"):
        assert (results / f"resnet20.{ext}").is_file()
    assert "| k16 |" in (results / "resnet20.md").read_text()
    with pytest.raises(ValueError, match="core"):  # one run directory, one sharing core
        reproduce("resnet20", str(tmp_path / "rep"), str(results), str(tmp_path / "base"),
                  only=("k16",), core="new", **kw)
    # the new core: its own directory, the pruned model reused, rows trained with DKM
    new_dir = tmp_path / "rep-new"
    new_dir.mkdir()
    (new_dir / "prune").symlink_to(tmp_path / "rep" / "prune")
    new = reproduce("resnet20", str(new_dir), str(tmp_path / "res-new"), str(tmp_path / "base"),
                    only=("k16",), core="new", **kw)
    assert new["core"] == "new" and [r["policy"] for r in new["rows"]] == ["fpgm", "k16"]
    shared = json.loads((new_dir / "k16" / "finetune" / "config.json").read_text())
    assert shared["share"]["finetune"] == "qat" and shared["share"]["bn_images"] > 0
    # a retrained baseline under the same path: the tables built on the old one are refused
    torch.manual_seed(1)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path / "base", "best")
    with pytest.raises(ValueError, match="another baseline"):
        reproduce("resnet20", str(new_dir), str(tmp_path / "res-new"), str(tmp_path / "base"),
                  only=("k16",), core="new", **kw)


def test_impossible_budget_fails_before_any_training(small_tar: Path, tmp_path: Path, capsys):
    from rlcompress.cli import main

    data = _dense_checkpoint_and_data(small_tar, tmp_path)
    out = tmp_path / "run"
    args = ["run", "--model", str(tmp_path / "dense.safetensors"), "--baseline-epochs", "0",
            "--target-ratio", "500", "--out", str(out), "--quiet", *data]
    assert main(args) == 2
    assert "budget" in capsys.readouterr().err
    # nothing claims the folder, so the corrected command is not refused as "other settings"
    assert not out.exists()


def test_compress_checks_budget_before_fine_tuning(planted, tmp_path: Path):
    from rlcompress.search import BudgetError

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(4))
    model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(BudgetError):
        rlcompress.compress(model, data=planted, target_size="50B", out=tmp_path / "c",
                            progress=False)
    assert not (tmp_path / "c").exists()  # nor claimed: a corrected budget is not refused


def test_library_api_on_a_mobilenetv2(tmp_path: Path):
    """Depthwise convs and identity adds: every conv shrinks, the file meets the budget."""
    spec = importlib.util.spec_from_file_location(
        "compress_mobilenetv2", ROOT / "examples" / "compress_mobilenetv2.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    report = mod.main(["--tiny", "--out", str(tmp_path / "mbv2")])
    groups = report["pruning_groups"]
    assert groups["convs_shrunk"] >= 0.8 * groups["convs"]
    assert report["layers_kept_whole"] == {}
    assert report["file_bytes"] <= 16_000


def test_library_api_on_a_conv1d_signal_classifier(tmp_path: Path):
    """The 1-D example: every conv shrinks and is clustered, the file meets the budget, reloads
    bit-exact (the example asserts it) and runs in onnxruntime like the decoded model."""
    spec = importlib.util.spec_from_file_location(
        "compress_signal1d", ROOT / "examples" / "compress_signal1d.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    report = mod.main(["--tiny", "--out", str(tmp_path / "sig")])
    assert report["layers_kept_whole"] == {} and report["file_bytes"] <= 3000
    assert set(report["policy"]) == {f"features.{i}" for i in range(0, 15, 3)} | {"fc"}
    assert "skipped" in report["onnx"] or report["onnx"]["max_logit_diff"] < 1e-4


def test_run_pipeline_joint_mode_prunes_at_the_searched_rates(small_tar: Path, tmp_path: Path, capsys):
    """Joint mode: the search runs on the dense model, a budget below the dense model's smallest
    file forces pruning, and the file made at the searched rates meets it."""
    from rlcompress.cli import main
    from rlcompress.codec import load_compressed

    data = _dense_checkpoint_and_data(small_tar, tmp_path)
    out = tmp_path / "run"
    args = ["run", "--model", str(tmp_path / "dense.safetensors"), "--prune-rates", "0.25,0.5",
            "--prune-epochs", "1", "--episodes", "3", "--share-epochs", "1", "--val-images", "3",
            "--target-ratio", "0", "--target-size", "40KB", "--out", str(out), "--quiet", *data]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["file_bytes"] <= 40000 and any(r > 0 for r in report["rates"].values())
    net, manifest = load_compressed(report["file"])
    mids = [b["mid"] for b in manifest["spec"]["blocks"]]
    widths = [b["out"] for b in manifest["spec"]["blocks"]]
    for (name, rate), mid, width in zip(report["rates"].items(), mids, widths, strict=True):
        assert name.endswith("conv1") and mid == width - int(rate * width + 0.5)


def test_joint_run_that_prunes_nothing_skips_the_pruning_stage(small_tar: Path, tmp_path: Path):
    from rlcompress.cli import main
    from rlcompress.codec import load_compressed

    data = _dense_checkpoint_and_data(small_tar, tmp_path)
    out = tmp_path / "run"
    # a generous budget: the uniform allocator keeps every chain whole
    args = ["run", "--model", str(tmp_path / "dense.safetensors"), "--prune-rates", "0,0.5",
            "--prune-epochs", "1", "--strategy", "uniform", "--share-epochs", "1",
            "--val-images", "3", "--target-ratio", "0", "--target-size", "400KB",
            "--out", str(out), "--quiet", *data]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert not any(report["rates"].values()) and not (out / "prune").exists()
    assert report["file_bytes"] <= 400000
    net, manifest = load_compressed(report["file"])
    assert [b["mid"] for b in manifest["spec"]["blocks"]] == [b["out"] for b in manifest["spec"]["blocks"]]


def test_resuming_a_run_saved_before_the_joint_search_keeps_its_mode(tmp_path: Path):
    from rlcompress.pipeline import PipelineConfig, run_pipeline
    from rlcompress.pipeline.run import saved_config

    old = {k: v for k, v in dataclasses.asdict(PipelineConfig(prune_rates="")).items()
           if k != "prune_rates"}
    (tmp_path / "pipeline.json").write_text(json.dumps(old))
    cfg = PipelineConfig(**saved_config(tmp_path / "pipeline.json"))  # what --resume builds
    assert cfg.prune_rates == "" and dataclasses.asdict(cfg) == saved_config(tmp_path / "pipeline.json")
    # the joint default is "other settings" for that directory, not a silent switch of mode
    with pytest.raises(FileExistsError, match="other settings"):
        run_pipeline(PipelineConfig(**{**old, "prune_rates": "0,0.5"}), str(tmp_path), progress=False)
