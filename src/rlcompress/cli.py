"""Command-line interface: a thin argparse layer over the library functions.

Options of the dataclass configs (``DataConfig``, ``TrainConfig``) are generated from their
fields, with help text taken from each class's ``Attributes:`` docstring, so the CLI and the
library cannot drift apart.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

from rlcompress import dist
from rlcompress.clustering import RULE_POLICIES, ShareConfig
from rlcompress.codec import CodecError, inspect_file
from rlcompress.data import DataConfig, DatasetError, describe, load_data
from rlcompress.engine import TrainConfig, pick_device
from rlcompress.jobs import MODES as PRUNE_MODES
from rlcompress.jobs import (
    baseline,
    evaluate_checkpoint,
    export,
    prune,
    search,
    search_resume,
    share,
    train,
)
from rlcompress.jobs.deploy import FORMATS as EXPORT_FORMATS
from rlcompress.jobs.deploy import export_deploy
from rlcompress.models import MODEL_SPECS, CheckpointError
from rlcompress.models.user import import_model
from rlcompress.pipeline.api import compress, compress_class
from rlcompress.pipeline.run import PipelineConfig
from rlcompress.pruning import CRITERIA, PruneConfig
from rlcompress.search import STRATEGIES, BudgetError, DDPGConfig, SearchConfig


def _field_help(cls: type) -> dict[str, str]:
    doc = cls.__doc__ or ""
    body = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    helps: dict[str, str] = {}
    for name, text in re.findall(r"^\s{8}(\w+): (.*?)(?=^\s{8}\w+: |\Z)", body, re.M | re.S):
        helps[name] = " ".join(text.split())
    return helps


def add_config_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                    defaults: dict[str, object] | None = None) -> None:
    """Add one ``--option`` per field of dataclass ``cls`` (bools get ``--no-`` forms).

    ``defaults`` overrides the dataclass defaults for this command, in the help text too (a
    later ``set_defaults`` would leave ``--help`` showing a value that is not used).
    """
    helps = _field_help(cls)
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        default = (defaults or {}).get(f.name, default)
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        # argparse %-formats help strings
        helptext = f"{helps.get(f.name, '')} (default: {default})".replace("%", "%%")
        if kind is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=default, help=helptext)
        elif typing.get_origin(kind) is tuple:
            inner = typing.get_args(kind)
            nargs = "+" if Ellipsis in inner else len(default)  # tuple[X, ...]: any number
            group.add_argument(flag, dest=f.name, type=inner[0], nargs=nargs,
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
                 _train_cfg(args), resume=args.resume, test=args.test, teacher=args.teacher))


def _cmd_evaluate(args: argparse.Namespace) -> None:
    _print(evaluate_checkpoint(args.model, args.init, args.split, config_from_args(DataConfig, args),
                               args.precision, args.limit, args.threads, progress=not args.quiet,
                               model_class=args.model_class, class_args=args.class_args))


def _cmd_baseline(args: argparse.Namespace) -> None:
    _print(baseline(args.model, args.out, args.results, args.init, config_from_args(DataConfig, args),
                    _train_cfg(args), resume=args.resume))


def _cmd_prune(args: argparse.Namespace) -> None:
    pcfg = PruneConfig(rate=args.rate, criterion=args.criterion, skip=args.skip or [],
                       soft=args.soft)
    _print(prune(args.model, args.out, pcfg, args.mode, config_from_args(DataConfig, args),
                 _train_cfg(args), resume=args.resume, results=args.results))


def _policy_arg(text: str) -> str | dict[str, int]:
    """A policy name, or a JSON file / JSON text mapping layer -> k."""
    if text.endswith(".json"):
        if not Path(text).is_file():
            raise ValueError(f"policy file {text} not found")
        with open(text) as f:
            obj = json.load(f)
        return obj.get("k", obj) if isinstance(obj, dict) else obj
    if text.lstrip().startswith("{"):
        return json.loads(text)
    return text


def _cmd_share(args: argparse.Namespace) -> None:
    _print(share(args.model, args.out, _policy_arg(args.policy), config_from_args(ShareConfig, args),
                 config_from_args(DataConfig, args), _train_cfg(args), args.encoding,
                 args.codebook_dtype, resume=args.resume, results=args.results,
                 compact_bn=args.compact_bn, teacher=args.teacher))


def _cmd_export(args: argparse.Namespace) -> None:
    if args.format == "rlc":
        _print(export(args.checkpoint, args.out, encoding=args.encoding,
                      codebook_dtype=args.codebook_dtype, compact_bn=args.compact_bn))
        return
    _print(export_deploy(args.checkpoint, args.out, args.format, tuple(args.image_size),
                         args.verify, config_from_args(DataConfig, args),
                         model_class=args.model_class, class_args=args.class_args,
                         input_shape=args.input_shape))


def _cmd_inspect(args: argparse.Namespace) -> None:
    model = import_model(args.model_class, args.class_args) if args.model_class else None
    info = inspect_file(args.file, model=model)
    if args.json:
        _print(info)
        return
    print(f"{'layer':22s} {'shape':>16s} {'k':>6s} {'bits':>4s} {'enc':>6s} {'weights':>8s} "
          f"{'entropy':>7s} {'bytes':>7s} {'bits/w':>6s}")
    for r in info["layers"]:
        shape = "x".join(map(str, r["shape"]))
        print(f"{r['name']:22s} {shape:>16s} {r['k']:6d} {r['bits']:4d} {r['encoding']:>6s} "
              f"{r['count']:8d} {r['entropy']:7.3f} {r['bytes']:7d} {r['bits_per_weight']:6.3f}")
    print(f"file {info['file_bytes']} bytes: indices+codebooks {info['index_and_codebook_bytes']}, "
          f"float parameters {info['float_bytes']}, {info['weights']} shared weights")


def _cmd_search(args: argparse.Namespace) -> None:
    cfg = config_from_args(SearchConfig, args)
    if args.quiet:
        cfg.progress = False
    if isinstance(args.resume, str):  # --resume RUN_DIR: everything else comes from the run
        summary = search_resume(args.resume, config_from_args(DataConfig, args), cfg.progress)
    elif args.model is None:
        raise ValueError("--model is required (or --resume RUN_DIR)")
    else:
        summary = search(args.model, args.out, cfg, config_from_args(ShareConfig, args),
                         config_from_args(DDPGConfig, args), config_from_args(DataConfig, args),
                         resume=args.resume, init=args.init)
    _print({k: summary[k] for k in ("strategy", "episodes", "best", "rules", "seconds")
            if k in summary})


def _cmd_frontier(args: argparse.Namespace) -> None:
    from rlcompress.jobs.frontier import FrontierConfig, frontier

    cfg = config_from_args(FrontierConfig, args)
    if args.quiet:
        cfg.progress = False
    result = frontier(args.model, args.out, cfg, config_from_args(DataConfig, args),
                      args.results, args.name, args.peers, args.peers_model, args.noise_sd)
    from rlcompress.jobs.frontier import markdown

    print(markdown(result["rows"]))


def _cmd_run(args: argparse.Namespace) -> None:
    from rlcompress.pipeline import PipelineConfig, format_report, run_pipeline
    from rlcompress.pipeline.run import saved_config

    cfg = config_from_args(PipelineConfig, args)
    out = _run_dir(args)
    saved = Path(out) / "pipeline.json"
    if args.resume:
        if not saved.is_file():
            raise FileNotFoundError(f"{saved}: not a pipeline run directory")
        cfg = PipelineConfig(**saved_config(saved))
    report = run_pipeline(cfg, out, config_from_args(DataConfig, args), progress=not args.quiet)
    print(format_report(report))
    print(f"report: {Path(out) / 'report.json'}")


def _run_dir(args: argparse.Namespace) -> str:
    """The run directory of ``rlcompress run``: the one resumed, or --out, or the default."""
    return args.resume or args.out or ("runs/pipeline-quick" if args.quick else "runs/pipeline")


def _cmd_reproduce(args: argparse.Namespace) -> None:
    from rlcompress.pipeline.reproduce import markdown_table, reproduce

    table = reproduce(args.model, args.out, args.results, args.baseline_dir, args.baseline_epochs,
                      args.prune_epochs, args.share_epochs, args.episodes, tuple(args.seeds),
                      args.target_ratio, config_from_args(DataConfig, args), args.threads,
                      progress=not args.quiet, only=tuple(args.rows) if args.rows else None,
                      distill=args.share_distill, init=args.init, core=args.core)
    print(markdown_table(table))


def _cmd_compress(args: argparse.Namespace) -> None:
    options = {k: getattr(args, k) for k in (
        "target_size", "target_ratio", "strategy", "prune_rate", "prune_rates", "prune_epochs",
        "episodes", "share_epochs", "distill", "lr", "val_images", "out", "seed", "precision",
        "threads", "compact_bn")}
    _print(compress_class(args.model, args.init, args.class_args, config_from_args(DataConfig, args),
                          protect=tuple(args.protect), progress=not args.quiet, **options))


def _class_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--class", dest="model_class", default=None, metavar="MODULE:CLASS",
                   help="for an .rlc of your own model: its class, as pkg.module:Class or "
                   "file.py:Class (the file holds weights and widths, not code)")
    p.add_argument("--class-args", default=None, metavar="JSON",
                   help='keyword arguments of that class, as JSON (e.g. \'{"num_classes": 10}\')')


def _lib_default(name: str) -> object:
    """``rlcompress.compress``'s own default: the command cannot drift from the library."""
    return inspect.signature(compress).parameters[name].default


def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="compress your own model class: prune, search, share, "
                       "write an .rlc file",
                       description="rlcompress.compress from the command line, for a model class "
                       "of your own: coupled-group FPGM pruning, the search for k per layer (and a "
                       "rate per chain with --prune-rates) under the budget, weight sharing with "
                       "fine-tuning, the .rlc file and a report. Resumes from --out.")
    p.add_argument("--model", required=True, metavar="MODULE:CLASS",
                   help="your model's class: pkg.module:Class or file.py:Class")
    p.add_argument("--class-args", default=None, metavar="JSON",
                   help='keyword arguments of the class, as JSON (e.g. \'{"num_classes": 10}\')')
    p.add_argument("--init", required=True,
                   help="its trained weights: .safetensors or a torch file (read weights-only)")
    p.add_argument("--out", default="runs/compress", help="output folder (resumable)")
    p.add_argument("--target-size", default=None, help="file budget, e.g. 48KB (or a ratio: 16x)")
    p.add_argument("--target-ratio", type=float, default=None, help="the paper's ratio instead")
    p.add_argument("--strategy", default=_lib_default("strategy"), choices=sorted(STRATEGIES),
                   help="how k (and, joint, the rates) are chosen")
    p.add_argument("--prune-rate", type=float, default=_lib_default("prune_rate"),
                   help="FPGM rate of every group")
    p.add_argument("--prune-rates", default=None,
                   help="joint search: the rates each chain may take, e.g. 0,0.2,0.4,0.6")
    p.add_argument("--protect", nargs="*", default=[], help="layers never pruned")
    p.add_argument("--prune-epochs", type=int, default=_lib_default("prune_epochs"),
                   help="fine-tuning epochs after pruning")
    p.add_argument("--episodes", type=int, default=_lib_default("episodes"),
                   help="search episodes (ddpg, random)")
    p.add_argument("--share-epochs", type=int, default=_lib_default("share_epochs"),
                   help="fine-tuning epochs after sharing")
    p.add_argument("--distill", type=float, default=_lib_default("distill"),
                   help="distillation weight from the pruned model while sharing (0: labels)")
    p.add_argument("--lr", type=float, default=_lib_default("lr"), help="fine-tuning learning rate")
    p.add_argument("--val-images", type=int, default=_lib_default("val_images"),
                   help="validation images per reward")
    p.add_argument("--seed", type=int, default=_lib_default("seed"), help="seed of every stage")
    p.add_argument("--precision", default=_lib_default("precision"),
                   choices=["bf16", "fp16", "fp32"], help="training and inference precision")
    p.add_argument("--threads", type=int, default=_lib_default("threads"),
                   help="CPU threads (0: one per core)")
    p.add_argument("--compact-bn", action="store_true",
                   help="store batch norms as inference scale and shift")
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_compress)


def _codec_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoding", default="auto", choices=["auto", "packed", "ans"],
                   help="index coding: packed bits, ANS entropy coding, or the smaller per layer")
    p.add_argument("--codebook-dtype", default="float32", choices=["float32", "float16"],
                   help="codebook precision in the file")
    p.add_argument("--compact-bn", action="store_true",
                   help="store each batch norm as its inference scale and shift (half the "
                   "bytes; the decoded model is for inference, not further training)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (for CI and logs): each training epoch is reported in "
                   "one line on stderr instead")


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
    p.add_argument("--init", default="scratch",
                   help="weights to start from: 'scratch' (random init; trains on the train split "
                   "only, so validation stays clean), a weights file (e.g. akamaster's .th), or "
                   "'pretrained' for the shared checkpoint (default: scratch)")
    p.add_argument("--out", default="runs/train", help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--test", action=argparse.BooleanOptionalAction, default=True,
                   help="evaluate the selected checkpoint on the test split at the end")
    p.add_argument("--teacher", default=None,
                   help="distil from this model (a checkpoint X.safetensors, or a model name for "
                   "its committed clean baseline) with weight --distill; validation stays clean "
                   "only if the teacher never trained on it (the training record beside its "
                   "weights is checked; a warning says why where it may have)")
    add_config_args(p, TrainConfig)
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a split",
                       description="Top-1/top-5 accuracy and loss of a model on one split.")
    p.add_argument("model", help=f"compressed file X.rlc, checkpoint X.safetensors (with X.json) "
                   f"or a model name ({models})")
    p.add_argument("--init", default=None, help="with a model name: 'baseline' (committed clean checkpoint), 'pretrained' or a weights path")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to use")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"],
                   help="inference precision")
    p.add_argument("--limit", type=int, default=0, help="evaluate a fixed random subset of N images")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    _class_args(p)
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

    p = sub.add_parser("share", help="weight-share a model with a k policy, fine-tune, export",
                       description="Cluster every conv/linear layer into its policy's k clusters "
                       "(Fisher-weighted by default), re-estimate batch norm, fine-tune (trained "
                       "quantization by default), write model.rlc and report accuracy and ratios.")
    p.add_argument("--model", required=True,
                   help=f"checkpoint X.safetensors (e.g. a pruned run's finetune/best.safetensors) "
                   f"or a model name ({models})")
    p.add_argument("--policy", default="k16",
                   help=f"rule ({', '.join(RULE_POLICIES)}; any k<N> or /<N>), or a JSON file or "
                   "text mapping layer -> k (e.g. a search's best_policy.json)")
    p.add_argument("--out", default="runs/share", help="run directory")
    _codec_args(p)
    p.add_argument("--results", default=None, help="also write the summary JSON to this path")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--teacher", default=None,
                   help="distil the fine-tuning from this model (a checkpoint X.safetensors, or "
                   "a model name for its committed clean baseline; e.g. a larger network) "
                   "instead of the unshared model, with weight --distill")
    add_config_args(p, ShareConfig)
    add_config_args(p, TrainConfig, defaults={"epochs": 5, "lr": 0.01})
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_share)

    p = sub.add_parser("export", help="write a shared model as .rlc, or an .rlc as ONNX",
                       description="Encode a weight-shared checkpoint (X.safetensors + X.json with "
                       "'sharing') as an .rlc file (--format rlc), or an .rlc file / shared "
                       "checkpoint as ONNX: palettized (--format onnx: codebooks and bit-packed "
                       "indices in the graph) or dense float weights (--format onnx-dense), or as "
                       "a Core ML package with exactly the file's look-up tables (--format coreml, "
                       "an .mlpackage directory). Needs the [onnx] / [coreml] extra.")
    p.add_argument("checkpoint", help="shared checkpoint (e.g. runs/share/finetune/best.safetensors)"
                   " or, for ONNX, an .rlc file")
    p.add_argument("--out", required=True, help="the file to write")
    p.add_argument("--format", default="rlc", choices=EXPORT_FORMATS, help="output format")
    p.add_argument("--image-size", type=int, nargs=2, default=[32, 32],
                   help="input height and width of the ONNX graph (the batch is dynamic)")
    p.add_argument("--verify", action="store_true",
                   help="run the ONNX file with onnxruntime on the test split against PyTorch")
    p.add_argument("--input-shape", type=int, nargs="+", default=None, metavar="N",
                   help="the model's input without the batch, for inputs other than images "
                   "(e.g. 2 128: a Conv1d model on 2-channel signals); replaces --image-size")
    _codec_args(p)
    _class_args(p)
    add_config_args(p, DataConfig, skip=("image_size",))
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("inspect", help="per-layer table of an .rlc file",
                       description="Verify an .rlc file and print, per layer: k, bits, coding, "
                       "stored bytes, index entropy and bits per weight.")
    p.add_argument("file", help="the .rlc file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _class_args(p)
    p.set_defaults(func=_cmd_inspect)
    _add_compress(sub)

    p = sub.add_parser("search", help="search k per layer under a size budget (DDPG, random "
                       "search or a one-shot allocator)",
                       description="Learn the number of clusters k of every layer under a budget "
                       "(--target-ratio or --target-size), scoring each policy on a fixed "
                       "validation subset. Writes episodes.csv, best_policy.json, plots.")
    p.add_argument("--model", default=None,
                   help="checkpoint X.safetensors, a prune run directory, or a model name")
    p.add_argument("--init", default=None,
                   help="with a model name: 'baseline' (the committed clean checkpoint; the "
                   "default), 'pretrained' (the shared checkpoint) or a weights path")
    p.add_argument("--out", default="runs/search", help="run directory")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                   help="continue a search: --resume RUN_DIR (its saved settings), or --resume "
                   "with --model/--out")
    add_config_args(p, SearchConfig)
    p.set_defaults(strategy="ddpg")
    for action in p._actions:
        if action.dest == "strategy":
            action.choices = sorted(STRATEGIES)
    add_config_args(p, DDPGConfig)
    add_config_args(p, ShareConfig)
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("frontier", help="test top-1 against file bytes for several budgets "
                       "and every allocation strategy",
                       description="For each file ratio, search a policy with every strategy "
                       "(searched ones over several seeds), share and fine-tune it, keep the .rlc "
                       "file; write results/frontier/<name>.json/.md/.png. Resumes point by point.")
    p.add_argument("--model", required=True,
                   help="a checkpoint X.safetensors (k only: usually pruned; with --prune-rates: "
                   "dense), or a model name for its committed clean baseline")
    p.add_argument("--out", default="runs/frontier", help="run directory")
    p.add_argument("--results", default="results/frontier", help="results folder")
    p.add_argument("--name", default="", help="results name; empty: taken from the model path")
    p.add_argument("--peers", default="", help="a benchmarks/peers.py results file (run with "
                   "--rlc): its coremltools points join the frontier")
    p.add_argument("--peers-model", default="resnet20",
                   help="which model's rows of --peers to use (e.g. resnet20-fpgm)")
    p.add_argument("--noise-sd", type=float, default=0.0,
                   help="test top-1 spread of one training of one policy "
                   "(benchmarks/training_noise.py): a single-seed rival's standard error in the "
                   "verdicts' stricter rule (0: unknown)")
    from rlcompress.jobs.frontier import FrontierConfig

    add_config_args(p, FrontierConfig)
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_frontier)

    p = sub.add_parser("run", help="the whole method: trained model -> compressed .rlc file",
                       description="From the clean baseline: search a pruning rate per channel "
                       "chain and k per layer under the budget (DDPG, joint), prune (FPGM) at those "
                       "rates and fine-tune, share weights with trained quantization, export and "
                       "evaluate the file. With no options: ResNet-20 on CIFAR-10 at 1/16 of the "
                       "dense float32 file. The paper's mode: --prune-rates '' --prune-rate 0.4 "
                       "--target-ratio 13.35. Each stage is skipped when done; --resume RUN_DIR "
                       "continues.")
    p.add_argument("--out", default=None,
                   help="run directory (default: runs/pipeline, or runs/pipeline-quick with --quick)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR with its saved settings")
    add_config_args(p, PipelineConfig)
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("reproduce", help="every row of the paper's tables on the same data",
                       description="Baseline, FPGM, the six rule policies, random search and the "
                       "learned policy (several seeds) with the same fine-tuning budget; writes "
                       "results/paper_tables/<model>.json, .md and .png.")
    p.add_argument("--model", default="resnet20", choices=["resnet20", "resnet32"],
                   help="which of the paper's networks")
    p.add_argument("--out", default=None, help="run directory (default runs/reproduce-MODEL)")
    p.add_argument("--results", default="results/paper_tables", help="where tables and files go")
    p.add_argument("--baseline-dir", default=None,
                   help="an existing baseline run (e.g. runs/baseline-resnet20) to start from")
    p.add_argument("--init", default="baseline",
                   help="start: 'baseline' (the committed clean from-scratch checkpoint, default), "
                   "'pretrained' (the shared checkpoint; needs --baseline-epochs) or a path")
    p.add_argument("--baseline-epochs", type=int, default=0,
                   help="fine-tune --init for this many epochs first (0: use it as is)")
    p.add_argument("--prune-epochs", type=int, default=30, help="fine-tuning epochs after FPGM")
    p.add_argument("--share-epochs", type=int, default=3,
                   help="centroid fine-tuning epochs, the same for every row")
    p.add_argument("--share-distill", type=float, default=0.0,
                   help="weight of knowledge distillation from the pruned model during centroid "
                   "fine-tuning, the same for every row (0: plain cross-entropy, as the paper; "
                   "results/paper_tables/distill/ used 0.9 with --out runs/reproduce-<model>-kd)")
    p.add_argument("--core", default="paper", choices=["paper", "new"],
                   help="weight sharing of every row and search reward: 'paper' (Lloyd k-means, "
                   "centroid fine-tuning) or 'new' (Fisher-weighted clustering, batch-norm "
                   "re-estimation, DKM-style trained quantization); one per run directory")
    p.add_argument("--episodes", type=int, default=200, help="search episodes per seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds of the random and learned rows")
    p.add_argument("--target-ratio", type=float, default=0.0,
                   help="budget of the searched rows as the paper's ratio; 0 (default): the k16 "
                   "row's ratio on the same pruned model, i.e. the learned policy at k16's size")
    p.add_argument("--rows", nargs="+", default=None, metavar="ROW",
                   help="run only these rows (fpgm /16 /32 /64 k16 k32 k64 random rl), e.g. to "
                   "share the work between processes; finished rows are always reported")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: one per core)")
    add_config_args(p, DataConfig)
    _common(p)
    p.set_defaults(func=_cmd_reproduce)

    for name, text in [
        ("baseline", "train a baseline and write results/baseline/<model>.json (from scratch on "
                     "the train split; from --init weights: <model>_finetuned.json)"),
    ]:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--model", default="resnet20", help=f"registered model ({models})")
        p.add_argument("--init", default="scratch",
                       help="weights to start from: 'scratch' (default), 'pretrained' (shared "
                       "checkpoint, whose training saw the validation images) or a path")
        p.add_argument("--out", default=None, help="run directory (default runs/baseline-MODEL)")
        p.add_argument("--results", default="results/baseline", help="where the JSON result goes")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run")
        add_config_args(p, TrainConfig)
        add_config_args(p, DataConfig)
        _common(p)
        p.set_defaults(func=_cmd_baseline)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rlcompress`` command; returns the exit status.

    Under torchrun every rank runs the command; only rank 0 prints to stdout (and writes
    files), errors name the rank that raised them.
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        _log_to_stderr()
    func: Callable[[argparse.Namespace], None] = args.func
    where = f"[rank {dist.rank()}] " if dist.world_size() > 1 else ""
    try:
        dist.init(pick_device(getattr(args, "device", "auto")))
        with _quiet_unless_main(), _recorded_argv(argv):
            func(args)
    except (DatasetError, CheckpointError, CodecError, BudgetError, FileNotFoundError,
            FileExistsError, ValueError, KeyError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"rlcompress: {where}error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlcompress: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    return 0


def _resume_hint(args: argparse.Namespace) -> str:
    """How the interrupted command continues (each resumes its own way, some not at all)."""
    if args.command in ("frontier", "reproduce", "compress"):
        return "; rerun the same command to continue"
    if args.command == "run":
        return f"; rerun the same command, or `rlcompress run --resume {_run_dir(args)}`, to continue"
    return "; rerun with --resume to continue" if hasattr(args, "resume") else ""


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a line is written (not when the handler was
    made), so a replaced stderr (a test's capture, a redirect) is followed."""

    @property
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _log_to_stderr() -> None:
    """Without progress bars, the library's progress lines (one per training epoch) go to
    stderr, so a long job run with ``--quiet`` in the background still shows where it is."""
    logger = logging.getLogger("rlcompress")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@contextlib.contextmanager
def _recorded_argv(argv: list[str] | None) -> Iterator[None]:
    # jobs record ``sys.argv`` as the command that produced a result: when called as
    # ``main([...])`` (tests, scripts), that must be this command, not the caller's
    if argv is None:
        yield
        return
    saved = sys.argv
    sys.argv = ["rlcompress", *argv]
    try:
        yield
    finally:
        sys.argv = saved


@contextlib.contextmanager
def _quiet_unless_main() -> Iterator[None]:
    if dist.is_main():
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


if __name__ == "__main__":
    raise SystemExit(main())
