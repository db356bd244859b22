"""Command-line interface: a thin argparse layer over the library functions.

Options of the dataclass configs (``DataConfig``, ``TrainConfig``) are generated from their
fields, with help text taken from each class's ``Attributes:`` docstring, so the CLI and the
library cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import typing
from collections.abc import Callable

from rlcompress.data import DataConfig, DatasetError, describe, load_data
from rlcompress.engine import TrainConfig, baseline, evaluate_checkpoint, train
from rlcompress.models import MODEL_SPECS, CheckpointError
from rlcompress.pruning import CRITERIA, PruneConfig
from rlcompress.pruning.job import MODES as PRUNE_MODES
from rlcompress.pruning.job import prune


def _field_help(cls: type) -> dict[str, str]:
    doc = cls.__doc__ or ""
    body = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    helps: dict[str, str] = {}
    for name, text in re.findall(r"^\s{8}(\w+): (.*?)(?=^\s{8}\w+: |\Z)", body, re.M | re.S):
        helps[name] = " ".join(text.split())
    return helps


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one ``--option`` per field of dataclass ``cls`` (bools get ``--no-`` forms)."""
    helps = _field_help(cls)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        helptext = f"{helps.get(f.name, '')} (default: {default})"
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=default, help=helptext)
        elif typing.get_origin(kind) is tuple:
            inner = typing.get_args(kind)[0]
            group.add_argument(flag, dest=f.name, type=inner, nargs=len(default),
                               default=default, help=helptext)
        else:
            group.add_argument(flag, dest=f.name, type=kind, default=default, help=helptext)


def config_from_args(cls: type, args: argparse.Namespace) -> typing.Any:
    """Build dataclass ``cls`` from the parsed options that ``add_config_args`` added."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    for f in dataclasses.fields(cls):
        if f.name in values and isinstance(values[f.name], list):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


def _print(obj: dict) -> None:
    print(json.dumps(obj, indent=1, default=str))


def _cmd_data(args: argparse.Namespace) -> None:
    data_cfg = config_from_args(DataConfig, args)
    _print(describe(load_data(data_cfg, progress=not args.quiet)))


def _train_cfg(args: argparse.Namespace) -> TrainConfig:
    cfg = config_from_args(TrainConfig, args)
    if args.quiet:
        cfg.progress = False
    return cfg


def _cmd_train(args: argparse.Namespace) -> None:
    _print(train(args.model, args.out, args.init, config_from_args(DataConfig, args),
                 _train_cfg(args), resume=args.resume, test=args.test))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    _print(evaluate_checkpoint(args.model, args.init, args.split, config_from_args(DataConfig, args),
                               args.precision, args.limit, args.threads, progress=not args.quiet))


def _cmd_baseline(args: argparse.Namespace) -> None:
    _print(baseline(args.model, args.out, args.results, args.init, config_from_args(DataConfig, args),
                    _train_cfg(args), resume=args.resume))


def _cmd_prune(args: argparse.Namespace) -> None:
    pcfg = PruneConfig(rate=args.rate, criterion=args.criterion, skip=args.skip or [],
                       soft=args.soft)
    _print(prune(args.model, args.out, pcfg, args.mode, config_from_args(DataConfig, args),
                 _train_cfg(args), resume=args.resume, results=args.results))


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars (for CI and logs)")


def build_parser() -> argparse.ArgumentParser:
    """The ``rlcompress`` argument parser with all subcommands."""
    models = ", ".join(sorted(MODEL_SPECS))
    parser = argparse.ArgumentParser(
        prog="rlcompress",
        description="Compress trained PyTorch CNNs: FPGM pruning, RL-chosen weight sharing, "
        "compressed model files.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do")

    data = sub.add_parser("data", help="prepare or describe the dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION",
                                   help="prepare: decode and cache; info: describe")
    for name, text in [("prepare", "find/download, decode and cache the dataset, print its splits"),
                       ("info", "print the dataset's splits and class counts")]:
        p = data_sub.add_parser(name, help=text, description=text)
        add_config_args(p, DataConfig)
        _common(p)
        p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", help="train or fine-tune a model (resumable run directory)",
                       description="Train or fine-tune a model; the best epoch on the validation "
                       "split is kept and evaluated on the test split at the end.")
    p.add_argument("--model", default="resnet20",
                   help=f"registered model ({models}) or a checkpoint X.safetensors with X.json")
    p.add_argument("--init", default=None,
                   help="weights to start from: a checkpoint path, or 'pretrained' for the shared one")
    p.add_argument("--out", default="runs/train", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--test", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate the selected checkpoint on the test split at the end")
    add_config_args(p, TrainConfig)
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a split",
                       description="Top-1/top-5 accuracy and loss of a model on one split.")
    p.add_argument("model", help=f"checkpoint X.safetensors (with X.json) or a model name ({models})")
    p.add_argument("--init", default=None, help="with a model name: weights path or 'pretrained'")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to use")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"],
                   help="inference precision")
    p.add_argument("--limit", type=int, default=0, help="evaluate a fixed random subset of N images")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("prune", help="filter-prune a trained model (FPGM by default) and fine-tune",
                       description="Prune filters of every conv layer by a criterion, fine-tune, "
                       "and report accuracy, sizes, FLOPs and latency.")
    p.add_argument("--model", required=True,
                   help=f"checkpoint X.safetensors (with X.json) or a model name ({models})")
    p.add_argument("--out", default="runs/prune", help="run directory")
    p.add_argument("--rate", type=float, default=0.4,
                   help="fraction of filters pruned per conv layer; round(rate*n) filters go")
    p.add_argument("--criterion", default="fpgm", choices=sorted(CRITERIA),
                   help="filter importance: fpgm (geometric median), l1 or l2 norm")
    p.add_argument("--mode", default="physical", choices=PRUNE_MODES,
                   help="physical: remove channels for real (smaller, faster model); "
                   "mask: keep the shape and zero pruned filters (the paper's soft pruning)")
    p.add_argument("--soft", action="store_true",
                   help="mask mode: recompute the masks every epoch, as FPGM does")
    p.add_argument("--skip", nargs="*", default=[], help="conv layer names to leave whole")
    p.add_argument("--results", default=None, help="also write the summary JSON to this path")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_config_args(p, TrainConfig)
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_prune)

    for name, text in [
        ("baseline", "fine-tune a pretrained model and write results/baseline/<model>.json"),
        ("run", "the main job; for now: prepare CIFAR-10 and fine-tune the ResNet-20 baseline"),
    ]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--model", default="resnet20", help=f"registered model ({models})")
        p.add_argument("--init", default="pretrained",
                       help="weights to start from: 'pretrained' (shared checkpoint) or a path")
        p.add_argument("--out", default=None, help="run directory (default runs/baseline-MODEL)")
        p.add_argument("--results", default="results/baseline", help="where the JSON result goes")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run")
        add_config_args(p, TrainConfig)
        add_config_args(p, DataConfig)
        _common(p)
        p.set_defaults(func=_cmd_baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rlcompress`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except (DatasetError, CheckpointError, FileNotFoundError, FileExistsError, ValueError) as exc:
        print(f"rlcompress: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlcompress: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
