"""The from-scratch baseline path: training on the train split alone, and its results record."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_scratch_training_and_its_record(image_tar: Path, tmp_path: Path):
    from rlcompress.cli import main

    run = tmp_path / "run"
    args = ["train", "--model", "resnet20", "--init", "scratch", "--epochs", "2",
            "--batch-size", "8", "--source", str(image_tar), "--data-dir", str(tmp_path / "d"),
            "--val-size", "3", "--out", str(run), "--quiet", "--threads", "1"]
    assert main(args) == 0
    spec = importlib.util.spec_from_file_location("scratch_baseline",
                                                  ROOT / "scripts" / "scratch_baseline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    results = tmp_path / "results"
    results.mkdir()
    (results / "resnet20.json").write_text(json.dumps({"model": "resnet20", "top1": 88.57}))
    rec = mod.main([str(run), "--results", str(results), "--train-images", "9"])
    for key in ("model", "init", "train_images", "top1", "top5", "val_top1", "epochs", "seconds",
                "command", "recipe"):
        assert key in rec, key
    assert rec["init"] == "scratch" and rec["train_images"] == 9 and rec["epochs"] == 2
    assert rec["command"].startswith("rlcompress train") and rec["recipe"]["epochs"] == 2
    # the previous fine-tuned record is kept beside the new one
    assert json.loads((results / "resnet20_finetuned.json").read_text())["top1"] == 88.57
    assert (results / "resnet20_metrics.csv").is_file() and (results / "resnet20_curve.png").is_file()


def test_the_baseline_command_trains_from_scratch_and_never_overwrites_the_clean_record(
        image_tar: Path, tmp_path: Path):
    from rlcompress.cli import main

    results = tmp_path / "results"
    common = ["--model", "resnet20", "--epochs", "1", "--batch-size", "8", "--source",
              str(image_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3", "--quiet",
              "--threads", "1", "--results", str(results)]
    assert main(["baseline", "--out", str(tmp_path / "s"), *common]) == 0
    clean = json.loads((results / "resnet20.json").read_text())
    assert clean["init"] == "scratch" and clean["train_images"] > 0
    assert clean["command"].startswith("rlcompress baseline") and clean["recipe"]["epochs"] == 1
    assert (results / "resnet20_metrics.csv").is_file() and (results / "resnet20_curve.png").is_file()
    start = str(tmp_path / "s" / "best.safetensors")
    assert main(["baseline", "--out", str(tmp_path / "f"), "--init", start, *common]) == 0
    tuned = json.loads((results / "resnet20_finetuned.json").read_text())
    assert tuned["init"] == start and tuned["run_dir"] == str(tmp_path / "f")
    assert json.loads((results / "resnet20.json").read_text()) == clean


def test_default_start_is_the_committed_clean_baseline(tmp_path: Path, monkeypatch):
    import inspect

    from rlcompress.jobs.train import resolve_model
    from rlcompress.models import load_checkpoint, save_checkpoint
    from rlcompress.paths import baseline_path
    from rlcompress.pipeline import PipelineConfig
    from rlcompress.pipeline.reproduce import reproduce

    assert PipelineConfig().init == "baseline" and PipelineConfig().baseline_epochs == 0
    assert inspect.signature(reproduce).parameters["init"].default == "baseline"
    path = baseline_path("resnet20")
    assert path.parts[-2:] == ("scratch-resnet20", "best.safetensors")
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary["init"] in ("scratch", None) and summary["test"]["top1"] > 80
    net, spec = resolve_model("resnet20", "baseline")
    ref, _ = load_checkpoint(path)
    for a, b in zip(net.state_dict().values(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # a training still in progress is refused with a way out, not used half-trained
    import rlcompress.paths as paths

    monkeypatch.setattr(paths, "checkout_roots", lambda: [tmp_path])
    save_checkpoint(net, spec, tmp_path / "checkpoints" / "scratch-resnet20", "best")
    with pytest.raises(FileNotFoundError, match="still in progress.*--init pretrained"):
        baseline_path("resnet20")
    with pytest.raises(FileNotFoundError, match="no committed clean baseline"):
        baseline_path("resnet44")


def test_compare_runs_summarises_arms_and_lists_missing(tmp_path: Path):
    spec = importlib.util.spec_from_file_location("compare_runs", ROOT / "scripts" / "compare_runs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    dirs = []
    for seed, top1 in enumerate((80.0, 82.0)):
        d = tmp_path / f"r{seed}"
        d.mkdir()
        (d / "pipeline.json").write_text(json.dumps({"seed": seed, "prune_rates": "0,0.5",
                                                     "prune_rate": 0.4}))
        (d / "report.json").write_text(json.dumps({
            "top1": top1, "file_bytes": 1000 + seed, "file_ratio": 16.0, "paper_ratio": 20.0,
            "search_val_top1": 70.0, "baseline_top1": 88.0, "rates": {"a": 0.5},
            "file": str(d / "m.rlc")}))
        (d / "m.rlc").write_bytes(b"rlc" * (seed + 1))
        (d / "share").mkdir()
        (d / "share" / "summary.json").write_text(json.dumps({"val_top1": top1 + 1}))
        dirs.append(str(d))
    rec = mod.main(["--name", "t", "--out", str(tmp_path / "out"),
                    "--arm", "joint=" + ",".join([*dirs, str(tmp_path / "unfinished")])])
    arm = rec["arms"]["joint"]
    assert arm["seeds"] == 2 and arm["top1"] == 81.0 and arm["missing"] == [str(tmp_path / "unfinished")]
    assert arm["top1_std"] == pytest.approx(1.414, abs=1e-3) and arm["top1_se"] == 1.0
    assert arm["val_top1"] == 82.0 and [r["val_top1"] for r in arm["runs"]] == [81.0, 83.0]
    assert (tmp_path / "out" / "t.md").read_text().count("| joint |") == 1
    assert [Path(r["file"]).read_bytes() for r in arm["runs"]] == [b"rlc", b"rlcrlc"]


def test_a_bare_model_name_defaults_to_the_clean_baseline(tmp_path: Path):
    from rlcompress.jobs.train import default_init

    assert default_init("resnet20", None) == "baseline"
    assert default_init("resnet20", "pretrained") == "pretrained"
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"")
    assert default_init(str(ckpt), None) is None and default_init(str(tmp_path), None) is None


def test_a_distilled_baseline_record_names_its_teacher_weights_and_temperature(tmp_path: Path):
    from rlcompress.jobs.train import baseline_record

    train = {"epochs": 3, "lr": 0.2, "distill": 0.5, "distill_temperature": 4.0, "threads": 1}
    (tmp_path / "config.json").write_text(json.dumps({"train": train, "teacher": "resnet32"}))
    summary = {"model": "resnet20", "epochs": 3, "best_epoch": 2, "seconds": 1.0,
               "test": {"top1": 90.0, "top5": 99.0}, "val": {"top1": 90.5}}
    recipe = baseline_record(tmp_path, summary)["recipe"]
    assert recipe["distill"] == 0.5 and recipe["distill_temperature"] == 4.0
    assert recipe["teacher"] == "checkpoints/scratch-resnet32/best.safetensors"
    (tmp_path / "config.json").write_text(json.dumps({"train": {**train, "distill": 0.0},
                                                      "teacher": None}))
    recipe = baseline_record(tmp_path, summary)["recipe"]
    assert "teacher" not in recipe and "distill_temperature" not in recipe


def test_the_headline_measures_a_frontier_against_the_baseline_it_started_from():
    spec = importlib.util.spec_from_file_location("headline_plot",
                                                  ROOT / "scripts" / "headline_plot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    old = mod.baseline_file("checkpoints/scratch-106ep-resnet20/best.safetensors", "resnet20")
    assert old == Path("results/baseline/resnet20_106ep.json")
    assert (ROOT / old).is_file()
    now = mod.baseline_file("/x/checkpoints/scratch-resnet32/best.safetensors", "resnet32")
    assert now == Path("results/baseline/resnet32.json")


def test_a_teacher_that_may_have_seen_the_validation_images_is_named(tmp_path: Path):
    from rlcompress.data import DataConfig
    from rlcompress.jobs.train import teacher_doubt

    def run(name: str, init: str, val_size: int = 5000) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(
            {"init": init, "data": {"val_size": val_size, "split_seed": 0}}))
        return str(tmp_path / name / "best.safetensors")

    data = DataConfig()
    assert teacher_doubt("resnet32", data) == ""  # the committed clean baseline
    assert teacher_doubt(run("clean", "scratch"), data) == ""
    assert "saw every original training image" in teacher_doubt(run("shared", "pretrained"), data)
    assert "another train/validation split" in teacher_doubt(run("other", "scratch", 1000), data)
    tuned = run("tuned", run("base", "pretrained"))
    assert "saw every original training image" in teacher_doubt(tuned, data)
    assert "no training record" in teacher_doubt(str(tmp_path / "x.safetensors"), data)
    assert "cannot check" in teacher_doubt(run("foreign", "resnet20.th"), data)


def test_training_from_a_teacher_that_saw_validation_warns(image_tar: Path, tmp_path: Path):
    from rlcompress.cli import main
    from rlcompress.models import build_model, model_spec, save_checkpoint

    spec = model_spec("resnet20", num_classes=3)
    net = build_model(spec)
    save_checkpoint(net, spec, tmp_path / "teacher", "best")
    (tmp_path / "teacher" / "config.json").write_text(json.dumps({"init": "pretrained"}))
    args = ["train", "--model", "resnet20", "--epochs", "1", "--batch-size", "8", "--source",
            str(image_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3", "--quiet",
            "--threads", "1", "--out", str(tmp_path / "run"), "--no-test",
            "--teacher", str(tmp_path / "teacher" / "best.safetensors"), "--distill", "0.5"]
    with pytest.warns(UserWarning, match="saw every original training image.*not be clean"):
        assert main(args) == 0
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["teacher"].endswith("best.safetensors") and config["train"]["distill"] == 0.5


def test_a_run_trained_without_test_is_measured_here_and_keeps_the_measurement(
        image_tar: Path, tmp_path: Path):
    from rlcompress.cli import main

    run, data = tmp_path / "run", ["--source", str(image_tar), "--data-dir", str(tmp_path / "d"),
                                   "--val-size", "3"]
    assert main(["train", "--model", "resnet20", "--epochs", "1", "--batch-size", "8", *data,
                 "--out", str(run), "--quiet", "--threads", "1", "--no-test"]) == 0
    assert "test" not in json.loads((run / "summary.json").read_text())
    spec = importlib.util.spec_from_file_location("scratch_baseline",
                                                  ROOT / "scripts" / "scratch_baseline.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rec = mod.main([str(run), "--results", str(tmp_path / "results"), *data])
    summary = json.loads((run / "summary.json").read_text())
    assert round(summary["test"]["top1"], 2) == rec["top1"] and summary["test"]["n"] == 12
    assert summary["test_measured_on"]
    # data other than the run's (its validation top-1 disagrees) is refused, not measured
    untested = {k: v for k, v in summary.items() if k not in ("test", "test_measured_on")}
    (run / "summary.json").write_text(json.dumps({**untested, "val": {"top1": 0.5}}))
    with pytest.raises(SystemExit, match="other data"):
        mod.main([str(run), "--results", str(tmp_path / "results"), *data])
