from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import planted_data
from rlcompress.engine import TrainConfig, evaluate, fit, lr_at, make_loaders
from rlcompress.engine.train import budgeted_epochs
from rlcompress.models import build_model, load_checkpoint, resnet_spec

TINY = dict(batch_size=32, lr=0.05, progress=False, precision="fp32", threads=2, eval_batch_size=64)


def _model():
    torch.manual_seed(0)
    spec = resnet_spec(8, num_classes=4, widths=(8, 16, 32))
    return build_model(spec), spec


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _weights(run: Path, name: str = "last") -> dict:
    model, _ = load_checkpoint(run / f"{name}.safetensors")
    return model.state_dict()


def test_short_training_lowers_loss(tmp_path: Path):
    data = planted_data()
    model, spec = _model()
    before = evaluate(model, make_loaders(data, TrainConfig(**TINY))[1], precision="fp32")
    summary = fit(model, spec, data, TrainConfig(epochs=3, **TINY), tmp_path / "run")
    rows = (_rows(tmp_path / "run" / "metrics.csv"))
    assert len(rows) == 3 and summary["best_epoch"] >= 1
    assert float(rows[-1]["val_loss"]) < before["loss"]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert summary["best_val_top1"] > 50.0  # 4 classes: chance is 25%
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3


def test_same_seed_same_numbers(tmp_path: Path):
    data = planted_data()
    for name in ("a", "b"):
        model, spec = _model()
        fit(model, spec, data, TrainConfig(epochs=2, **TINY), tmp_path / name)
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (tmp_path / "a" / "metrics.csv").read_text() != ""
    ra = [r["val_loss"] for r in _rows(tmp_path / "a" / "metrics.csv")]
    rb = [r["val_loss"] for r in _rows(tmp_path / "b" / "metrics.csv")]
    assert ra == rb


class _Kill(Exception):
    pass


def _killed_at_step(data: object, cfg: TrainConfig, run: Path, step: int) -> None:
    """Train a fresh model into ``run``, killed (an exception) at global step ``step``."""
    steps = {"n": 0}

    def kill(_model: torch.nn.Module) -> None:
        steps["n"] += 1
        if steps["n"] == step:
            raise _Kill

    model, spec = _model()
    with pytest.raises(_Kill):
        fit(model, spec, data, cfg, run, step_hooks=[kill])


def test_resume_continues_where_it_stopped(tmp_path: Path):
    data = planted_data()
    cfg = TrainConfig(epochs=3, **TINY)
    model, spec = _model()
    fit(model, spec, data, cfg, tmp_path / "full")

    _killed_at_step(data, cfg, tmp_path / "cut", 2 * 8 + 3)  # 8 steps an epoch: in epoch 3
    rows = (_rows(tmp_path / "cut" / "metrics.csv"))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    with pytest.raises(FileExistsError):
        fit(*_model(), data, cfg, tmp_path / "cut")
    model, spec = _model()
    fit(model, spec, data, cfg, tmp_path / "cut", resume=True)
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    full = (_rows(tmp_path / "full" / "metrics.csv"))
    cut = (_rows(tmp_path / "cut" / "metrics.csv"))
    assert [r["val_top1"] for r in full] == [r["val_top1"] for r in cut]


def test_resume_refuses_other_training_settings(tmp_path: Path):
    data = planted_data()
    cfg = TrainConfig(epochs=1, **TINY)
    first = fit(*_model(), data, cfg, tmp_path / "run")
    for changed in (dict(lr=0.01), dict(epochs=2), dict(seed=1), dict(select="start-or-best")):
        with pytest.raises(ValueError, match=next(iter(changed))):
            fit(*_model(), data, replace(cfg, **changed), tmp_path / "run", resume=True)
    # threads, progress and a re-selection of the last epoch change nothing trained
    again = fit(*_model(), data, replace(cfg, threads=1, select="last"), tmp_path / "run",
                resume=True)
    assert again["best_val_top1"] == pytest.approx(first["best_val_top1"], abs=1e-3)


def test_epoch_images_trains_the_first_batches_of_each_epoch_and_resumes_exactly(tmp_path: Path):
    data = planted_data()  # 256 training images: 8 batches of 32 per whole epoch
    cfg = TrainConfig(epochs=3, epoch_images=96, **TINY)
    seen: list[int] = []
    model, spec = _model()
    fit(model, spec, data, cfg, tmp_path / "full", step_hooks=[lambda _m: seen.append(1)])
    assert len(seen) == 3 * 3  # 96 images = 3 batches per epoch, over 3 epochs
    rows = _rows(tmp_path / "full" / "metrics.csv")
    # the schedule spans the 9 steps taken, not the 24 of whole epochs
    assert float(rows[-1]["lr"]) == pytest.approx(lr_at(8, 9, cfg), abs=1e-6)
    assert abs(lr_at(8, 9, cfg) - lr_at(8, 24, cfg)) > 1e-3
    # each epoch draws its own order: epoch 2 does not repeat epoch 1's first batches
    train, _ = make_loaders(data, cfg)
    firsts = []
    for epoch in (1, 2):
        train.set_epoch(epoch)
        firsts.append(next(iter(train))[1])
    assert not torch.equal(firsts[0], firsts[1])
    # killed in epoch 2 and resumed: the same weights as the uninterrupted run
    _killed_at_step(data, cfg, tmp_path / "cut", 3 + 2)
    model, spec = _model()
    fit(model, spec, data, cfg, tmp_path / "cut", resume=True)
    wa, wb = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    with pytest.raises(ValueError):
        TrainConfig(epoch_images=-1)


def test_budgeted_epochs_fill_the_budget_within_bounds():
    cfg = TrainConfig(epochs=100, time_budget=100.0)
    assert budgeted_epochs(cfg, 2, elapsed=10.0, epoch_seconds=5.0) == 20  # 2 + 90 // 5
    assert budgeted_epochs(cfg, 2, elapsed=150.0, epoch_seconds=5.0) == 2  # over: stop now
    assert budgeted_epochs(replace(cfg, time_budget=1e6), 2, 10.0, 5.0) == 100  # the most


def test_time_budget_fixes_epochs_and_resume_keeps_them(tmp_path: Path):
    data = planted_data()
    # a budget already spent by the second epoch: the run ends there, whatever epochs allows
    cfg = TrainConfig(epochs=6, time_budget=1e-3, **TINY)
    summary = fit(*_model(), data, cfg, tmp_path / "run")
    assert summary["epochs"] == 2
    assert [r["epoch"] for r in _rows(tmp_path / "run" / "metrics.csv")] == ["1", "2"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["epochs"] == 2
    again = fit(*_model(), data, cfg, tmp_path / "run", resume=True)
    assert again["epochs"] == 2
    assert len(_rows(tmp_path / "run" / "metrics.csv")) == 2


def test_lr_schedules():
    cfg = TrainConfig(lr=0.1, warmup=0.1)
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert max(lrs) == pytest.approx(0.1, rel=1e-6) and lrs.index(max(lrs)) == 10
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] < 0.001
    cos = TrainConfig(lr=0.1, warmup=0.0, schedule="cosine")
    assert lr_at(0, 100, cos) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        lr_at(50, 100, TrainConfig(schedule="step"))


def test_top1_hits_count_what_evaluate_counts():
    from rlcompress.engine.evaluate import top1_hits

    data = planted_data()
    model, _ = _model()
    for precision in ("fp32", "bf16"):
        batches = make_loaders(data, TrainConfig(epochs=1, **TINY), torch.device("cpu"))[1]
        hits = top1_hits(model, batches, "cpu", precision)
        assert hits.dtype == torch.bool and hits.numel() == len(data.val)
        top1 = evaluate(model, batches, "cpu", precision)["top1"]
        assert 100 * hits.float().mean().item() == pytest.approx(top1)


def test_bf16_training_runs(tmp_path: Path):
    data = planted_data(n_train=64, n_val=32)
    model, spec = _model()
    cfg = TrainConfig(epochs=1, **{**TINY, "precision": "bf16"})
    summary = fit(model, spec, data, cfg, tmp_path / "bf16")
    assert summary["epochs"] == 1 and (tmp_path / "bf16" / "best.safetensors").is_file()


def test_select_last_epoch(tmp_path: Path):
    data = planted_data()
    model, spec = _model()
    summary = fit(model, spec, data, TrainConfig(epochs=2, select="last", **TINY), tmp_path / "r")
    assert summary["best_epoch"] == 2
    best, last = _weights(tmp_path / "r", "best"), _weights(tmp_path / "r", "last")
    assert all(torch.equal(best[k], last[k]) for k in best)
    with pytest.raises(ValueError, match="select"):
        fit(*_model(), data, TrainConfig(epochs=1, select="worst", **TINY), tmp_path / "x")


def test_select_start_or_best_keeps_a_start_that_training_only_worsens(tmp_path: Path):
    data = planted_data()
    model, spec = _model()
    fit(model, spec, data, TrainConfig(epochs=3, **TINY), tmp_path / "good")
    start = {k: v.clone() for k, v in model.state_dict().items()}
    # a learning rate far too high: every epoch ends below the start
    wreck = TrainConfig(epochs=1, select="start-or-best", **{**TINY, "lr": 50.0})
    summary = fit(model, spec, data, wreck, tmp_path / "wreck")
    assert summary["best_epoch"] == 0
    best = _weights(tmp_path / "wreck", "best")
    assert all(torch.equal(best[k], start[k]) for k in best)
    # from random weights the first epoch wins as with ``best``
    fresh = fit(*_model(), data, TrainConfig(epochs=2, select="start-or-best", **TINY),
                tmp_path / "fresh")
    assert fresh["best_epoch"] >= 1


def test_distill_loss_terms():
    from rlcompress.engine.train import distill_loss

    torch.manual_seed(0)
    logits, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    plain = TrainConfig(distill=0.0)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert torch.allclose(distill_loss(logits, y, logits * 3, plain), ce)
    pure = TrainConfig(distill=1.0, distill_temperature=2.0)
    # a student equal to its teacher has nothing left to learn from it
    assert distill_loss(logits, y, logits.clone(), pure).item() == pytest.approx(0.0, abs=1e-6)
    assert distill_loss(logits, y, -logits, pure).item() > 0.1


def test_distillation_pulls_student_to_teacher(tmp_path: Path):
    data = planted_data()
    teacher, spec = _model()
    fit(teacher, spec, data, TrainConfig(epochs=2, **TINY), tmp_path / "t")
    teacher.eval()
    loader = make_loaders(data, TrainConfig(**TINY))[1]

    def gap(student: torch.nn.Module) -> float:
        student.eval()
        with torch.no_grad():
            return sum(float((student(x).softmax(1) - teacher(x).softmax(1)).abs().sum())
                       for x, _ in loader)

    with pytest.raises(ValueError, match="teacher"):
        fit(*_model(), data, TrainConfig(epochs=1, distill=1.0, **TINY), tmp_path / "none")
    gaps = {}
    # the same student, trained on labels or on the teacher (a temperature that shows its
    # soft labels: at 1 this confident teacher's labels are nearly the hard ones)
    for weight in (0.0, 1.0):
        torch.manual_seed(1)
        student = build_model(spec)
        cfg = TrainConfig(epochs=1, distill=weight, distill_temperature=4.0,
                          **{**TINY, "lr": 0.02})
        fit(student, spec, data, cfg, tmp_path / f"s{weight}", teacher=teacher)
        gaps[weight] = gap(student)
    assert gaps[1.0] < 0.75 * gaps[0.0]


def test_short_finetune_takes_exactly_n_steps_and_is_seeded():
    from rlcompress.engine import short_finetune

    data = planted_data(n_train=64, n_val=16, size=16)
    cfg = TrainConfig(epochs=1, batch_size=8, lr=0.05, precision="fp32", progress=False,
                      channels_last=False)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_model(resnet_spec(8, num_classes=4, widths=(4, 8, 16)))
        steps = []
        short_finetune(model, data, cfg, 3, hooks=[lambda m, steps=steps: steps.append(1)])
        assert len(steps) == 3 and not model.training
        runs.append(model.state_dict())
    for a, b in zip(runs[0].values(), runs[1].values(), strict=True):
        assert torch.equal(a, b)


def test_compiled_training_follows_eager(tmp_path: Path):
    data = planted_data(n_train=128, n_val=32)
    eager = fit(*_model(), data, TrainConfig(epochs=1, **TINY), tmp_path / "eager")
    compiled = fit(*_model(), data, TrainConfig(epochs=1, compile=True, **TINY), tmp_path / "c")
    # the same batches and steps; inductor's fused kernels round differently
    assert abs(eager["best_val_top1"] - compiled["best_val_top1"]) <= 100 / 32 * 2
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "c")
    assert a.keys() == b.keys()
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], atol=2e-3, rtol=1e-2), k


def test_compile_failure_falls_back_to_eager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def broken(module, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    data = planted_data(n_train=128, n_val=32)
    with pytest.warns(UserWarning, match="training eagerly"):
        fit(*_model(), data, TrainConfig(epochs=1, compile=True, **TINY), tmp_path / "c")
    fit(*_model(), data, TrainConfig(epochs=1, **TINY), tmp_path / "eager")
    a, b = _weights(tmp_path / "eager"), _weights(tmp_path / "c")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="compile_mode"):
        TrainConfig(compile_mode="fastest")
