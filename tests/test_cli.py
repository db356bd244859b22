from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlcompress.cli import build_parser, main
from rlcompress.models import build_model, model_spec, save_checkpoint

SUBCOMMANDS = [["data", "prepare"], ["data", "info"], ["train"], ["evaluate"], ["baseline"], ["run"], ["prune"], ["share"], ["export"], ["inspect"], ["search"], ["reproduce"], ["compress"]]


@pytest.mark.parametrize("cmd", SUBCOMMANDS, ids=" ".join)
def test_help_explains_every_option(cmd, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*cmd, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: rlcompress" in out
    # every option carries an explanation, not just its name
    parser_opts = [line for line in out.splitlines() if line.strip().startswith("--")]
    assert parser_opts


def test_python_dash_m():
    res = subprocess.run([sys.executable, "-m", "rlcompress", "--help"], capture_output=True,
                         text=True, check=True)
    assert "train" in res.stdout and "evaluate" in res.stdout


def _check_help(parser, path):
    for action in parser._actions:
        if action.dest != "help" and not (isinstance(action.help, str) and action.help.strip()):
            pytest.fail(f"{path} {action.dest} has no help")
        choices = getattr(action, "choices", None)
        for name, sub in (choices.items() if isinstance(choices, dict) else []):
            if hasattr(sub, "_actions"):
                _check_help(sub, f"{path} {name}")


def test_every_option_has_help():
    _check_help(build_parser(), "rlcompress")


def test_data_info_train_evaluate_on_tiny_data(image_tar: Path, tmp_path: Path, capsys):
    common = ["--source", str(image_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3",
              "--quiet"]
    assert main(["data", "info", *common]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["train"] == 9 and info["val"] == 3 and info["test"] == 12
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--epochs", "1", "--batch-size", "4",
                 "--out", str(out), "--precision", "fp32", *common]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["epochs"] == 1 and "top1" in summary["test"]
    assert "epoch 1/1  loss" in captured.err  # --quiet: no bars, one line per epoch
    assert main(["evaluate", str(out / "best.safetensors"), "--split", "test", *common]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 12
    # the training run's test number and a fresh evaluation of its file agree
    assert res["top1"] == pytest.approx(summary["test"]["top1"])


def test_train_distils_from_a_teacher_checkpoint(tmp_path: Path, capsys):
    common = [*_data_args(tmp_path), "--batch-size", "8", "--quiet", "--no-test",
              "--precision", "fp32", "--epochs", "1"]
    teacher = tmp_path / "teacher"
    assert main(["train", "--model", "resnet20", "--out", str(teacher), *common]) == 0
    capsys.readouterr()
    out = tmp_path / "student"
    assert main(["train", "--model", "resnet20", "--out", str(out), *common,
                 "--teacher", str(teacher / "best.safetensors"), "--distill", "0.5"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["teacher"] == str(teacher / "best.safetensors")
    assert config["train"]["distill"] == 0.5
    # a teacher without a weight, or a weight without a teacher, is a one-line error
    assert "needs both a teacher" in _error(
        ["train", "--model", "resnet20", "--out", str(tmp_path / "x"), *common, "--distill", "0.5"],
        capsys)
    assert "needs both a teacher" in _error(
        ["train", "--model", "resnet20", "--out", str(tmp_path / "y"), *common,
         "--teacher", str(teacher / "best.safetensors")], capsys)


def test_errors_are_reported_not_raised(tmp_path: Path, capsys):
    code = main(["data", "info", "--source", str(tmp_path / "missing"), "--quiet"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def _error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("rlcompress: error: "), err
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("argv,expect", [
    (["train", "--epochs", "-3", "--out", "{tmp}/t"], "epochs must be a finite number >= 0"),
    (["search", "--model", "resnet20", "--episodes", "-1", "--out", "{tmp}/s"], "episodes"),
    (["prune", "--model", "resnet44", "--out", "{tmp}/p", "--epochs", "0"], "without weights"),
    (["prune", "--model", "{tmp}/weights.th", "--out", "{tmp}/p"], "--init"),
    (["evaluate", "{tmp}/notes.rlc"], "notes.rlc: not an .rlc file"),
    (["inspect", "{tmp}"], "not a regular file"),
    (["evaluate", "{tmp}/m.safetensors", "--class", "nets.py:Net"], "--class names the class of a compressed file"),
    (["export", "{tmp}/notes.rlc", "--out", "{tmp}/x.rlc"], "already an .rlc file"),
    (["share", "--model", "{tmp}/m.safetensors", "--policy", "{tmp}/none.json"], "not found"),
    (["share", "--model", "{tmp}/m.safetensors", "--policy", "k1", "--epochs", "0", "--out",
      "{tmp}/s"], "k must be in [2, 65536]"),
])
def test_bad_input_is_a_one_line_error(argv, expect, tmp_path: Path, capsys):
    (tmp_path / "notes.rlc").write_text("just text\n" * 10)
    (tmp_path / "weights.th").write_bytes(b"not read")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] in ("train", "prune", "search", "share"):
        argv += _data_args(tmp_path)
    if argv[0] == "share":
        save_checkpoint(build_model("resnet20", num_classes=3),
                        model_spec("resnet20", num_classes=3), tmp_path, "m")
    assert expect in _error(argv, capsys)


def _data_args(tmp: Path) -> list[str]:
    from conftest import write_image_tree

    tree = tmp / "tree"
    if not tree.is_dir():
        write_image_tree(tree, per_class=6)
    return ["--source", str(tree), "--data-dir", str(tmp / "data"), "--val-size", "8"]


@pytest.mark.parametrize("command", ["evaluate", "prune", "search"])
def test_a_model_of_another_class_count_is_a_one_line_error(command: str, tmp_path: Path, capsys):
    save_checkpoint(build_model("resnet20", num_classes=5), model_spec("resnet20", num_classes=5),
                    tmp_path, "m")
    argv = [command, "--model", str(tmp_path / "m.safetensors")] if command != "evaluate" else \
        [command, str(tmp_path / "m.safetensors")]
    argv += ["--out", str(tmp_path / "o")] if command != "evaluate" else []
    assert "classifies 5 classes, the data has 3" in _error(argv + _data_args(tmp_path), capsys)


def test_tampered_state_is_a_one_line_error(tmp_path: Path, capsys):
    out = tmp_path / "run"
    common = [*_data_args(tmp_path), "--batch-size", "8", "--no-progress", "--no-test"]
    assert main(["train", "--model", "resnet20", "--out", str(out), *common, "--epochs", "1"]) == 0
    (out / "summary.json").unlink()  # as if killed before the end
    (out / "state.pt").write_bytes(b"\x80\x04garbage that is not a torch file")
    msg = _error(["train", "--model", "resnet20", "--out", str(out), "--resume", *common,
                  "--epochs", "1"], capsys)
    assert "state.pt: cannot resume" in msg
    # resuming with another epoch count is refused before the state is read
    msg = _error(["train", "--model", "resnet20", "--out", str(out), "--resume", *common,
                  "--epochs", "2"], capsys)
    assert "trained with other settings (epochs 1 -> 2)" in msg


def test_help_defaults_are_the_defaults_used():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a.choices, dict))
    for name, p in sub.choices.items():
        for action in p._actions:
            if action.dest in p._defaults and action.dest != "func" and action.help:
                assert f"(default: {p._defaults[action.dest]})" in action.help, (name, action.dest)
            m = action.help and "(default: " in action.help
            if m and action.dest not in p._defaults and action.default is not None:
                assert f"(default: {action.default})" in action.help or isinstance(
                    action.default, (tuple, list)), (name, action.dest)


@pytest.mark.parametrize("argv,hint", [
    (["run", "--quick"], "`rlcompress run --resume runs/pipeline-quick`"),
    (["run", "--out", "r1"], "`rlcompress run --resume r1`"),
    (["frontier", "--model", "resnet20"], "rerun the same command"),
    (["compress", "--model", "nets.py:Net", "--init", "w.pt"], "rerun the same command"),
    (["train", "--out", "t"], "rerun with --resume"),
    (["evaluate", "x.rlc"], ""),
])
def test_an_interrupt_says_how_that_command_continues(argv, hint):
    from rlcompress.cli import _resume_hint

    text = _resume_hint(build_parser().parse_args(argv))
    assert (hint in text) if hint else text == ""


NETS = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.c2, self.b2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        return self.fc(torch.relu(self.b2(self.c2(x))).mean((2, 3)))
'''


def test_compress_a_user_class_from_the_command_line(tmp_path: Path, capsys):
    import torch

    (tmp_path / "nets.py").write_text(NETS)
    ref, args = f"{tmp_path / 'nets.py'}:Net", '{"num_classes": 3, "width": 16}'
    from rlcompress.models.user import import_model

    torch.manual_seed(0)
    torch.save(import_model(ref, args).state_dict(), tmp_path / "w.pt")
    out, data = tmp_path / "c", _data_args(tmp_path)
    argv = ["compress", "--model", ref, "--class-args", args, "--init", str(tmp_path / "w.pt"),
            "--out", str(out), "--target-size", "4000", "--strategy", "greedy", "--prune-epochs",
            "0", "--share-epochs", "0", "--val-images", "8", "--precision", "fp32", "--threads",
            "1", "--quiet", *data]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["file_bytes"] <= 4000 and (out / "model.rlc").is_file()
    rlc = str(out / "model.rlc")
    assert main(["inspect", rlc, "--class", ref, "--class-args", args, "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in table["layers"]} == set(report["policy"])
    assert main(["evaluate", rlc, "--class", ref, "--class-args", args, "--precision", "fp32",
                 "--quiet", *data]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(report["test_top1"], abs=0.01)
    assert "--class nets.py:MyNet" in _error(["inspect", rlc], capsys)
    if importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime"):
        assert main(["export", rlc, "--class", ref, "--class-args", args, "--format", "onnx",
                     "--out", str(tmp_path / "m.onnx")]) == 0
        assert json.loads(capsys.readouterr().out)["index_bits"].keys() == report["policy"].keys()
    assert "no such Python file" in _error([*argv[:2], "nope.py:Net", *argv[3:]], capsys)
    assert "has no 'Nope'" in _error([*argv[:2], f"{ref[:-4]}:Nope", *argv[3:]], capsys)
    assert "--class-args must be a JSON object" in _error([*argv[:4], "{width", *argv[5:]], capsys)
    assert "unexpected keyword" in _error([*argv[:4], '{"depth": 3}', *argv[5:]], capsys)
    assert "trained weights" in _error([*argv[:6], "scratch", *argv[7:]], capsys)
