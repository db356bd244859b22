"""``rlcompress run``: trained model -> compressed file, in resumable stages.

Run directory::

    baseline/   fine-tuning of the starting weights on this data (skipped with 0 epochs)
    prune/      FPGM pruning + fine-tuning            (rlcompress.jobs.prune)
    search/     k per layer under the budget           (rlcompress.search.runner)
    share/      weight sharing with the found policy, centroid fine-tuning, model.rlc
    report.json the numbers printed at the end

A stage whose ``summary.json`` exists is skipped, so ``rlcompress run --resume RUN_DIR``
continues an interrupted run; inside a stage, the stage's own resume applies.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rlcompress.checks import check_fields
from rlcompress.clustering.sharing import ShareConfig
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import TrainConfig, evaluate_model
from rlcompress.engine.train import PRUNE_SELECT
from rlcompress.fileio import write_json
from rlcompress.jobs import baseline, prune, resolve_model, search, share
from rlcompress.models import save_checkpoint
from rlcompress.models.resnet_cifar import ARCH
from rlcompress.pruning import FilterMasks, PruneConfig, shrink_resnet
from rlcompress.search import DDPGConfig, SearchConfig, check_budget
from rlcompress.search.budget import parse_target_size
from rlcompress.search.joint import prunes_nothing

# --quick: one epoch of each fine-tuning over 10,000 of the 45,000 training images, a cheaper
# reward; the search, the evaluations and the file stay as in a full run (issue #13: 5 minutes)
QUICK = {"baseline_epochs": 0, "prune_epochs": 1, "episodes": 30, "share_epochs": 1,
         "val_images": 500, "epoch_images": 10_000}


@dataclass
class PipelineConfig:
    """The whole method's settings. Defaults: the joint search (a pruning rate per channel chain
    and k per layer) under a file budget of 1/16 of the dense float32 model, with the short
    fine-tunings measured in ``results/joint/resnet20-16x.json``; the paper's setting is
    ``prune_rates=""``, ``prune_rate=0.4``, ``target_ratio=13.35``, ``target_size=""``.

    Attributes:
        model: registered model name or a checkpoint X.safetensors.
        init: with a model name, its starting weights: ``baseline`` (the committed clean
            baseline, trained from scratch on the train split), ``pretrained`` (the shared
            checkpoint, whose training saw the validation images: fine-tune it with
            ``baseline_epochs``), a path, or ``none``.
        baseline_epochs: fine-tune the starting weights on this data first (0: use as is).
        prune_rate: FPGM pruning rate per conv layer (the paper's fixed-rate mode).
        prune_rates: joint mode: the rates the search may give each prunable channel chain
            (e.g. ``0,0.2,0.4,0.6``): the search runs on the dense baseline and chooses a rate
            per chain and a k per layer; then the model is pruned at those rates, fine-tuned
            and shared. Empty: prune every conv at ``prune_rate`` first, then search k.
        prune_epochs: fine-tuning epochs after pruning.
        target_ratio: budget as the paper's ratio (0 to use target_size); when given it takes
            precedence over ``target_size``.
        target_size: budget as bytes of the compressed file, e.g. 48KB, or as a file ratio of
            the dense float32 model, e.g. 16x.
        strategy: search strategy: ddpg, random, or a one-shot allocator (uniform, greedy,
            hessian: one policy computed from measured sensitivities, joint mode included).
            Default ``greedy``: at the default budget it is ahead of DDPG on validation by
            about one point over three seeds each (``results/joint/resnet20-16x.json``), and
            DDPG seeded with it and refined on the reward ends level with it, not above.
        episodes: search episodes (an allocator plays one).
        allocator_demos: DDPG: allocators (e.g. ``hessian``) whose policies lead the warm-up
            demonstrations, so the agent starts from them.
        refine: extra evaluations for a hill-climbing walk from the search's best policy
            (``SearchConfig.refine``; 0: none).
        share_epochs: trained-quantization epochs after weight sharing.
        epoch_images: training images per epoch of the pruning and sharing fine-tunings (0:
            the whole train split; ``TrainConfig.epoch_images``).
        lr: peak learning rate of baseline and pruning fine-tuning.
        share_lr: peak learning rate of the shared model's fine-tuning (trained quantization).
        share_distill: weight of distillation from the pruned model in trained quantization
            (0: plain cross-entropy).
        seed: seed of training order and of the search.
        val_images: validation images that score each policy during the search.
        threads: CPU threads (0: one per core).
        quick: small budgets everywhere, to see the whole flow in minutes (:data:`QUICK`: one
            fine-tuning epoch of 10,000 images per stage, 500 reward images); settings given
            with other values than their defaults are kept.
    """

    model: str = "resnet20"
    init: str = "baseline"
    baseline_epochs: int = 0
    prune_rate: float = 0.4
    prune_rates: str = "0,0.1,0.2,0.3,0.4,0.5,0.6"
    prune_epochs: int = 8
    target_ratio: float = 0.0
    target_size: str = "16x"
    strategy: str = "greedy"
    episodes: int = 200
    allocator_demos: str = ""
    refine: int = 0
    share_epochs: int = 4
    epoch_images: int = 0
    lr: float = 0.05
    share_lr: float = 0.01
    share_distill: float = 0.9
    seed: int = 0
    val_images: int = 1000
    threads: int = 0
    quick: bool = False

    def resolved(self) -> PipelineConfig:
        """The config with ``quick`` applied to every setting of :data:`QUICK` still at its
        default (``--quick --share-epochs 2`` keeps the 2)."""
        if not self.quick:
            return self
        default = PipelineConfig()
        return replace(self, **{k: v for k, v in QUICK.items()
                                if getattr(self, k) == getattr(default, k)})

    def __post_init__(self) -> None:  # noqa: D105
        check_fields(self, ge0=("baseline_epochs", "prune_epochs", "target_ratio", "episodes",
                                "share_epochs", "lr", "share_lr", "seed", "val_images", "threads",
                                "epoch_images"),
                     unit=("share_distill",))
        if not 0 <= self.prune_rate < 1:
            raise ValueError(f"PipelineConfig.prune_rate must be in [0, 1), got {self.prune_rate}")
        if not self.target_ratio:
            parse_target_size(self.target_size)  # an unreadable size fails now, not after loading data


def saved_config(path: Path) -> dict:
    """The settings a run directory's ``pipeline.json`` holds; runs saved before the joint
    search existed were prune-first runs (``prune_rates`` ""), before allocator demonstrations
    had none, before refinement none refined, before ``epoch_images`` trained whole epochs."""
    return {"prune_rates": "", "allocator_demos": "", "refine": 0, "epoch_images": 0,
            **json.loads(Path(path).read_text())}


def _done(stage: Path) -> dict | None:
    path = stage / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _stage_printer(progress: bool):  # noqa: ANN202 - a small closure
    def say(i: int, name: str, done: dict | None, what: str) -> None:
        if progress:
            state = "done, skipped" if done is not None else what
            print(f"[{i}/4] {name}: {state}", file=sys.stderr, flush=True)
    return say


def _preflight(cfg: PipelineConfig, init: str | None, scfg: SearchConfig) -> None:
    """Prune a copy of the starting model (instant, no training) and check that the budget
    can be met, so an impossible budget fails now rather than after hours of fine-tuning."""
    net, spec = resolve_model(cfg.model, init)
    if cfg.prune_rates:
        check_budget(net.eval(), spec, scfg)
        return
    if spec.get("arch") != ARCH:
        return  # other architectures are checked when the search starts
    masks = FilterMasks.compute(net, PruneConfig(rate=cfg.prune_rate))
    masks.apply(net)
    small, small_spec = shrink_resnet(net, spec, masks)
    check_budget(small, small_spec, scfg)


def run_pipeline(cfg: PipelineConfig | None = None, out: str = "runs/pipeline",
                 data: DataConfig | None = None, progress: bool = True) -> dict:
    """Run (or resume) every stage and return the report."""
    cfg = (cfg or PipelineConfig()).resolved()
    run = Path(out)
    saved = run / "pipeline.json"
    if saved.is_file() and saved_config(saved) != asdict(cfg):
        raise FileExistsError(f"{run} holds a run with other settings: continue it with "
                              f"--resume {run}, or choose another --out")
    init = None if Path(cfg.model).suffix or cfg.init in ("", "none") else cfg.init
    scfg = SearchConfig(strategy=cfg.strategy, episodes=cfg.episodes, seed=cfg.seed,
                        target_ratio=cfg.target_ratio,
                        target_size="" if cfg.target_ratio else cfg.target_size,
                        val_images=cfg.val_images, threads=cfg.threads, progress=progress,
                        prune_rates=cfg.prune_rates, allocator_demos=cfg.allocator_demos,
                        refine=cfg.refine)
    if _done(run / "prune") is None:
        _preflight(cfg, init, scfg)
    # claimed only once the settings are known to work: a refused command leaves no folder
    # that would then refuse the corrected one as "a run with other settings"
    run.mkdir(parents=True, exist_ok=True)
    write_json(saved, asdict(cfg))
    data_cfg = data or DataConfig()
    say = _stage_printer(progress)
    if progress:
        dataset = load_data(data_cfg, progress=progress)
        print(f"data: {dataset.source} ({len(dataset.train)} train / {len(dataset.val)} val / "
              f"{len(dataset.test)} test images)", file=sys.stderr)

    def tcfg(epochs: int, lr: float, **kw: object) -> TrainConfig:
        return TrainConfig(epochs=epochs, lr=lr, seed=cfg.seed, threads=cfg.threads,
                           progress=progress, epoch_images=cfg.epoch_images, **kw)

    start = run / "baseline" / "best.safetensors"
    say(1, "baseline", _done(run / "baseline"), f"{cfg.baseline_epochs} epochs from {cfg.model}")
    with _timed(run, "baseline"):
        if cfg.baseline_epochs > 0:
            # the shared checkpoints have seen the validation images: keep the last epoch
            baseline(cfg.model, str(run / "baseline"), str(run / "baseline"), init, data_cfg,
                     tcfg(cfg.baseline_epochs, cfg.lr, select="last"), resume=True)
        elif not start.is_file():
            net, spec = resolve_model(cfg.model, init,
                                      load_data(data_cfg, progress=False).num_classes)
            save_checkpoint(net, spec, run / "baseline", "best")
    dcfg = DDPGConfig(warmup=min(30, max(1, cfg.episodes // 10)))
    pruned = run / "prune" / "finetune" / "best.safetensors"
    if cfg.prune_rates:  # joint: search the dense model, then prune at the rates it chose
        say(2, "search", _done(run / "search"), f"joint {cfg.strategy}, {cfg.episodes} episodes")
        with _timed(run, "search"):
            found = search(str(start), str(run / "search"), scfg, ShareConfig(), dcfg, data_cfg,
                           resume=True)
        if prunes_nothing(found["best"]):
            # nothing to recover from: fine-tuning the converged dense model only costs time
            # (8 epochs lowered the clean ResNet-20's validation top-1 from 88.80 to 88.34)
            say(3, "prune", None, "the search pruned no chain: not pruned, not fine-tuned")
            pruned = start
        else:
            say(3, "prune", _done(run / "prune"), f"FPGM at the searched rates, "
                f"{cfg.prune_epochs} fine-tuning epochs")
            with _timed(run, "prune"):
                if _done(run / "prune") is None:
                    prune(str(start), str(run / "prune"),
                          PruneConfig(rate=0.0, rates=found["best"]["rate"]), "physical",
                          data_cfg, tcfg(cfg.prune_epochs, cfg.lr, select=PRUNE_SELECT), resume=True)
    else:
        say(2, "prune", _done(run / "prune"), f"FPGM rate {cfg.prune_rate}, "
            f"{cfg.prune_epochs} fine-tuning epochs")
        with _timed(run, "prune"):
            if _done(run / "prune") is None:
                prune(str(start), str(run / "prune"), PruneConfig(rate=cfg.prune_rate),
                      "physical", data_cfg, tcfg(cfg.prune_epochs, cfg.lr, select=PRUNE_SELECT), resume=True)
        say(3, "search", _done(run / "search"), f"{cfg.strategy}, {cfg.episodes} episodes")
        with _timed(run, "search"):
            found = search(str(pruned), str(run / "search"), scfg, ShareConfig(), dcfg,
                           data_cfg, resume=True)
    say(4, "share", _done(run / "share"), f"{cfg.share_epochs} trained-quantization epochs")
    with _timed(run, "share"):
        shared = _done(run / "share") or share(
            str(pruned), str(run / "share"), found["best"]["k"], ShareConfig(), data_cfg,
            tcfg(cfg.share_epochs, cfg.share_lr, distill=cfg.share_distill), resume=True)
    with _timed(run, "report"):
        report = _report(run, cfg, data_cfg, shared, found)
    report["seconds"] = stage_seconds(run)
    write_json(run / "report.json", report)
    return report


@contextmanager
def _timed(run: Path, stage: str) -> Iterator[None]:
    """Add the wall and CPU (all threads of this process) seconds of a stage to
    ``timings.json``; a resumed stage adds what this session spent, a skipped one ~0."""
    w0, c0 = time.perf_counter(), time.process_time()
    yield
    path = run / "timings.json"
    rec = json.loads(path.read_text()) if path.is_file() else {}
    old = rec.get(stage, {"wall_s": 0.0, "cpu_s": 0.0})
    rec[stage] = {"wall_s": round(old["wall_s"] + time.perf_counter() - w0, 2),
                  "cpu_s": round(old["cpu_s"] + time.process_time() - c0, 2)}
    write_json(path, rec)


def stage_seconds(run: Path) -> dict:
    """Per-stage wall and CPU seconds of a run directory, with their totals."""
    path = Path(run) / "timings.json"
    rec = json.loads(path.read_text()) if path.is_file() else {}
    total = {k: round(sum(v[k] for v in rec.values()), 2) for k in ("wall_s", "cpu_s")}
    return {"stages": rec, "total": total}


def _report(run: Path, cfg: PipelineConfig, data_cfg: DataConfig, shared: dict, found: dict) -> dict:
    base = run / "baseline" / "summary.json"
    if base.is_file():
        base_top1 = json.loads(base.read_text())["test"]["top1"]
    else:
        dataset = load_data(data_cfg, progress=False)
        net, _ = resolve_model(str(run / "baseline" / "best.safetensors"))
        base_top1 = evaluate_model(net, dataset, "test")["top1"]
    report = {
        "baseline_top1": round(base_top1, 2), "top1": shared["top1"], "top5": shared["top5"],
        "loss": round(base_top1 - shared["top1"], 2), "paper_ratio": shared["paper_ratio"],
        "file_ratio": shared["file_ratio"], "file_bytes": shared["file_bytes"],
        "file": str(run / "share" / "model.rlc"), "policy": found["best"]["k"],
        "rates": found["best"].get("rate", {}),
        "search_val_top1": found["best"]["val_top1"], "config": asdict(cfg),
    }
    write_json((run / "report.json"), report)
    return report


def format_report(report: dict) -> str:
    """The short report printed at the end of a run."""
    return (
        f"baseline test top-1   {report['baseline_top1']:.2f}%\n"
        f"compressed test top-1 {report['top1']:.2f}%  ({-report['loss']:+.2f} points)\n"
        f"file                  {report['file']}  ({report['file_bytes'] / 1000:.1f} KB)\n"
        f"ratios                paper {report['paper_ratio']:.2f}x, file {report['file_ratio']:.2f}x"
    )
