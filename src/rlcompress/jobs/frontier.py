"""The ``rlcompress frontier`` job: test top-1 against file bytes, for several budgets and every
allocation strategy, each point a real ``.rlc`` file.

For a trained (usually pruned) model and file ratios R (dense float32 bytes / file bytes), every
strategy searches a k policy under the budget ``dense / R`` bytes and the policy is shared and
fine-tuned exactly as ``rlcompress share`` does. Searched strategies (``ddpg``, ``random``) run
``seeds`` seeds; the one-shot allocators are deterministic and run once.

With ``prune_rates`` the frontier is *joint*: ``model`` is the dense model, every strategy also
chooses a pruning rate per chain (rlcompress.search.joint), and each point is pruned at its
rates and fine-tuned for ``prune_epochs`` before sharing; a point that prunes no chain is shared
straight from the dense model (more epochs on a converged network only cost time: 8 of them
lowered the clean ResNet-20's validation top-1 from 88.80 to 88.34).

Run directory::

    <ratio>x/<strategy>-s<seed>/search/   the search (rlcompress.search.runner)
    <ratio>x/<strategy>-s<seed>/prune/    joint only: FPGM at the searched rates, fine-tuning
    <ratio>x/<strategy>-s<seed>/share/    sharing, fine-tuning, model.rlc (rlcompress.jobs.share)

Every point whose ``share/summary.json`` exists is reused, so an interrupted frontier resumes
where it stopped. Run directories do not outlive a machine, so each point also leaves small
records under ``<results>/points/<name>/`` (meant to be committed): ``<point>.search.json`` (the
policy found, kept as soon as the search ends) and ``<point>.<mode>.json`` (the finished row,
its file in ``<results>/files/<name>/``). A record is reused only when the settings it was made
with equal the current ones, so a frontier resumes from a fresh clone without redoing a finished
search or point. Results: ``<results>/<name>.json`` (per-point rows and per-(method, budget)
means with standard deviations), ``<name>.md`` and ``<name>.png``; each point's file is copied
to ``<results>/files/<name>/``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import statistics
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from rlcompress.clustering.policies import RULE_POLICIES
from rlcompress.clustering.sharing import ShareConfig
from rlcompress.codec.sizes import reference_sizes
from rlcompress.data import DataConfig, load_data
from rlcompress.engine import TrainConfig
from rlcompress.engine.train import PRUNE_SELECT, SELECT
from rlcompress.fileio import save_figure, write_json, write_text
from rlcompress.jobs.prune import prune
from rlcompress.jobs.search import search
from rlcompress.jobs.share import share
from rlcompress.jobs.train import default_init, resolve_model
from rlcompress.paths import baseline_path
from rlcompress.pruning import PruneConfig
from rlcompress.rundir import claim
from rlcompress.search import DDPGConfig, SearchConfig, check_budget
from rlcompress.search.joint import prunes_nothing
from rlcompress.search.strategies import STRATEGIES
from rlcompress.selection import best_by_validation

SEARCHED = ("ddpg", "random")
# an allocator's name with this suffix (``greedy+walk``): its one-shot policy followed by the
# searched strategies' refinement walk (``refine``, ``final_rescore``), so that what the
# searches gain over the allocators is measured apart from what the walk gains
WALK = "+walk"


def base_strategy(strategy: str) -> str:
    """The search strategy a frontier method runs (``greedy+walk`` runs ``greedy``)."""
    return strategy.removesuffix(WALK)


def walks(strategy: str) -> bool:
    """Does a frontier method end with the refinement walk (the searches and ``+walk``)?"""
    return strategy in SEARCHED or strategy.endswith(WALK)


@dataclass
class FrontierConfig:
    """Budgets, strategies and training of a frontier.

    Attributes:
        ratios: file ratios (dense float32 bytes / file bytes), one budget each.
        strategies: allocation strategies (``rlcompress search --strategy`` names); an
            allocator's name with ``+walk`` (``greedy+walk``) adds the searches' ``refine``
            walk to its policy, a baseline for what the walk alone gains.
        seeds: seeds of the searched strategies (ddpg, random) and of the ``+walk`` allocators'
            walks; plain allocators run once.
        random_seeds: seeds of the random-search baseline (0: ``seeds``); fewer saves CPU
            hours where random search is far behind the rest.
        only_seeds: run only these seeds of the searched strategies and ``+walk`` allocators
            (empty: all), so that processes can share one budget's seeds; not part of any
            record's key. Such a
            process writes no tables (they would hold its share of the points only): a
            ``collect_only`` run with the whole plan's settings writes them.
        episodes: episodes of the searched strategies.
        share_epochs: trained-quantization epochs of every point.
        share_lr: their peak learning rate.
        share_distill: weight of distillation from the uncompressed model.
        share_dkm_tau: DKM soft-assignment temperature of that training (``ShareConfig.dkm_tau``;
            0: hard straight-through, in ``share/``; otherwise in ``share-dkm<tau>[-bn]/``).
        share_dkm_bn: DKM only: batch norm re-estimated for the hard weights after every
            epoch where that validates better (``ShareConfig.dkm_bn``; in ``share-dkm<tau>-bn/``).
            The committed ResNet-20 frontier was trained without it (``--no-share-dkm-bn``);
            ResNet-32 collapsed to chance without it at one bit per weight.
        val_images: validation images that score each policy during a search.
        reward_bn_images: training images over which each search reward re-estimates batch
            norm (``SearchConfig.reward_bn_images``). 512 rather than the search's default
            256: the ResNet-20 frontier's committed searches were keyed with 512, and a
            frontier must compare its strategies under one reward.
        threads: CPU threads (0: one per core).
        progress: show progress bars.
        compact_bn: files store batch norms as scale and shift (searches budget for it).
        prune_rates: joint frontier: the rates every strategy may give each chain (empty: k
            only, on an already pruned model).
        prune_epochs: joint only: fine-tuning epochs after pruning at the searched rates.
        prune_lr: their peak learning rate.
        prune_select: which of them the sharing starts from (``TrainConfig.select``):
            ``start-or-best`` (the default, as in ``run`` and ``compress``: the pruned model
            before fine-tuning competes, so a light pruning whose fine-tune only loses keeps
            the model as it was) or ``best`` (the committed frontiers' setting).
        allocator_demos: DDPG: allocators whose policies lead its warm-up demonstrations.
        refine: searched strategies (ddpg, random) and ``+walk`` allocators: extra
            evaluations of a hill-climbing walk from the search's best policy
            (``SearchConfig.refine``); the plain allocators stay one-shot, so they remain the
            baselines the search must beat.
        rules: the paper's k rules (``k16``, ``/32``, ...) as points at the sizes they define
            (no budget; the same training as every other point).
        pruned_float_credit: joint searches charge pruned channels' float parameters only for
            the kept channels (``SearchConfig.pruned_float_credit``); the committed ResNet-20
            and ResNet-32 frontiers were searched without (``--no-pruned-float-credit``).
        final_rescore: searched strategies and ``+walk`` allocators re-score their best
            policies and walk with the finished point's batch-norm re-estimation
            (``SearchConfig.final_rescore``); off in every committed frontier but
            ``resnet20-posttrain-fr``.
        choose_by: searched strategies and ``+walk`` allocators rank their re-scored
            candidates, walk and choose by this signal (``SearchConfig.choose_by``: ``top1``,
            every committed frontier, or ``kl``).
        ddpg_imitate: DDPG's self-imitation weight (``DDPGConfig.imitate``): the actor is
            also pulled to the best episode so far, so exploration searches its
            neighbourhood. 0 (default, every committed frontier): off.
        collect_only: run nothing; write the points already finished (with their files) as
            ``<name>.partial.json/.md/.png``: safe beside a running frontier, so a frontier
            that spans sessions can commit what it has.
    """

    ratios: tuple[float, ...] = (8.0, 12.0, 18.0, 27.0, 40.0)
    strategies: tuple[str, ...] = ("uniform", "greedy", "hessian", "random", "ddpg")
    seeds: int = 3
    random_seeds: int = 0
    only_seeds: tuple[int, ...] = ()
    episodes: int = 300
    share_epochs: int = 5
    share_lr: float = 0.01
    share_distill: float = 0.5
    share_dkm_tau: float = ShareConfig.dkm_tau
    share_dkm_bn: bool = ShareConfig.dkm_bn
    val_images: int = 2000
    reward_bn_images: int = 512
    threads: int = 0
    progress: bool = True
    compact_bn: bool = False
    prune_rates: str = ""
    prune_epochs: int = 4
    prune_lr: float = 0.05
    prune_select: str = PRUNE_SELECT
    allocator_demos: str = ""
    refine: int = 0
    rules: tuple[str, ...] = ()
    collect_only: bool = False
    pruned_float_credit: bool = True
    final_rescore: bool = False
    ddpg_imitate: float = 0.0
    choose_by: str = "top1"

    def __post_init__(self) -> None:  # noqa: D105
        if self.choose_by not in ("top1", "kl"):
            raise ValueError(f"FrontierConfig.choose_by must be top1 or kl (got {self.choose_by!r})")
        if self.ddpg_imitate < 0:
            raise ValueError(f"FrontierConfig.ddpg_imitate must be >= 0 (got {self.ddpg_imitate})")
        unknown = [s for s in self.strategies if base_strategy(s) not in STRATEGIES
                   or (s.endswith(WALK) and base_strategy(s) in SEARCHED)]
        if unknown:
            raise ValueError(f"unknown strategies {unknown}; known: {sorted(STRATEGIES)}, and "
                             f"an allocator's name with {WALK!r} (the searches always walk)")
        if self.refine == 0 and any(s.endswith(WALK) for s in self.strategies):
            raise ValueError(f"a {WALK!r} strategy needs a walk: refine > 0")
        if self.prune_select not in SELECT:
            raise ValueError(f"prune_select must be one of {SELECT}, got {self.prune_select!r}")
        if not self.ratios or min(self.ratios) <= 1:
            raise ValueError("frontier ratios must be > 1")
        if self.refine < 0:
            raise ValueError("frontier refine must be >= 0")
        if self.random_seeds < 0:
            raise ValueError("frontier random_seeds must be >= 0")
        if self.seeds < 1:
            raise ValueError("frontier seeds must be >= 1")
        if any(s < 0 for s in self.only_seeds):
            raise ValueError("frontier only_seeds must be >= 0")
        bad = [r for r in self.rules if r not in RULE_POLICIES]
        if bad:
            raise ValueError(f"unknown rules {bad}; known: {list(RULE_POLICIES)}")


def frontier(model: str, out: str = "runs/frontier", cfg: FrontierConfig | None = None,
             data: DataConfig | None = None, results: str = "results/frontier",
             name: str = "", peers: str = "", peers_model: str = "",
             noise_sd: float = 0.0) -> dict:
    """Run (or resume) every point of the frontier of ``model``; returns the results.

    ``peers``: a ``benchmarks/peers.py`` results file run with ``--rlc``; its coremltools rows
    for ``peers_model`` (uniform bits, every layer, their own fine-tuning) are added as points
    at their files' sizes. ``noise_sd``: the test top-1 spread of one training of one policy,
    for the verdicts that count a single-seed rival's noise (see ``verdicts``)."""
    cfg, data_cfg = cfg or FrontierConfig(), data or DataConfig()
    dataset = load_data(data_cfg, progress=cfg.progress)
    if not name:  # resnet20 -> resnet20; runs/x/finetune/best.safetensors -> x; y.safetensors -> y
        path = Path(model)
        name = path.parent.parent.name if path.stem == "best" else path.stem
    if default_init(model, None):  # a model name: its committed clean baseline
        model = str(baseline_path(model))
    net, spec = resolve_model(model, None, dataset.num_classes, require_weights=True)
    dense = reference_sizes(spec, net)["state_bytes"]
    budgets = {r: int(dense / r) for r in cfg.ratios}
    for size in budgets.values():  # every budget must be possible before any training
        check_budget(net.eval(), spec, _search_cfg(cfg, "uniform", 0, size), ShareConfig())
    keep = Path(results), name, model_digest(model)  # the weights are hashed once
    if not cfg.collect_only:
        claim_run_dir(Path(out), keep[2])
    plan = frontier_plan(cfg, budgets, dense)
    points = []
    for i, (r, size, strategy, seed, rule_dense) in enumerate(plan):
        point = _point(model, Path(out), cfg, data_cfg, r, size, strategy, seed, keep,
                       rule_dense)
        points.append(point)
        if point is not None and not cfg.collect_only:  # one line per point, even when quiet
            print(f"frontier {name}: point {i + 1}/{len(plan)} {point['target_ratio']:g}x "
                  f"{strategy} seed {seed}: {point['top1']:.2f}% test, "
                  f"{point['val_top1']:.2f}% val, {point['file_bytes']:,} bytes",
                  file=sys.stderr, flush=True)
    if not cfg.collect_only:
        claim_run_dir(Path(out), keep[2])  # marks a folder this run made
    planned = len(points)
    points = [p for p in points if p is not None]  # collect_only: the unfinished are None
    finished = f"{len(points)} of {planned} points"
    if peers:
        points += peer_points(peers, peers_model, dense)
    table = _aggregate(points)
    calls = verdicts(table, noise_sd=noise_sd)
    result = {"model": model, "name": name, "dense_bytes": dense, "config": asdict(cfg),
              "command": "rlcompress " + " ".join(sys.argv[1:]), "finished": finished,
              "rows": table, "verdicts": calls, "points": points}
    others = [] if cfg.collect_only else points_outside_plan(
        keep[0] / "points" / name, _share_mode(cfg), {"model": keep[2], **_train_key(cfg)}, plan)
    if (cfg.only_seeds or others) and not cfg.collect_only:
        # session 24: a seed-2 process that finished its share wrote resnet32.json, a
        # "finished" frontier of one seed's points; a process given fewer --ratios or
        # --strategies than the frontier it continues would do the same
        why = (f"only_seeds {list(cfg.only_seeds)}" if cfg.only_seeds else
               f"finished points outside its plan: {', '.join(others[:4])}"
               + (", ..." if len(others) > 4 else ""))
        print(f"frontier {name}: this process ran a share of the points ({why}) and writes "
              "no tables: rerun with the whole plan's options and --collect-only for them",
              file=sys.stderr)
        return result
    base = Path(results) / (f"{name}.partial" if cfg.collect_only else name)
    write_json(Path(f"{base}.json"), result)
    write_text(Path(f"{base}.md"), markdown(table) + "\n" + verdict_markdown(calls))
    plot(table, Path(f"{base}.png"), name)
    return result


def claim_run_dir(out: Path, digest: str) -> None:
    """Tie the run folder ``out`` to the model with weights ``digest``: its finished points,
    searches and fine-tunes are resumed as they are, so a folder built on other weights (a
    retrained baseline) would mix two models in one frontier. Such a folder is an error; an
    unmarked one (made before this check, or a moment ago) is marked."""
    if out.is_dir():  # (a frontier whose points all come from committed records makes none)
        claim(out / "model.json", "model_digest", digest,
              f"{out} was built on another model: move it away or pass another --out")


def frontier_plan(cfg: FrontierConfig, budgets: dict[float, int],
                  dense: int) -> list[tuple[float, int, str, int, int]]:
    """The points in the order they run: (ratio, budget bytes, strategy, seed, dense bytes of
    a rule point, else 0)."""
    plan = [(r, budgets[r], strategy, seed, 0) for r in cfg.ratios for strategy in cfg.strategies
            for seed in range(_seeds(cfg, strategy))
            if not cfg.only_seeds or not walks(strategy) or seed in cfg.only_seeds]
    return plan + [(0.0, 0, rule, 0, dense) for rule in cfg.rules]


def point_tag(ratio: float, strategy: str, seed: int) -> str:
    """A point's name in records and files (``24x-ddpg-s1``, ``rules-k16-s0``); its run folder
    is the same with the first ``-`` a ``/``."""
    folder = "rules" if strategy in RULE_POLICIES else f"{ratio:g}x"
    return f"{folder}-{strategy.replace('/', 'd')}-s{seed}"


def point_records(records: Path, mode: str, strict: bool = False) -> dict[str, dict]:
    """The point records in folder ``records`` trained in ``mode``: tag -> the saved JSON
    (``key`` and ``value``). A file that is not a point record raises with ``strict``, else it
    is skipped (a missing folder holds none)."""
    suffix = f".{mode}.json"
    found = {}
    for path in sorted(records.glob(f"*{suffix}")) if records.is_dir() else []:
        try:
            saved = json.loads(path.read_text())
            if not isinstance(saved["key"], dict):
                raise TypeError(f"{path}: key is not a mapping")
        except (OSError, ValueError, KeyError, TypeError):
            if strict:
                raise
            continue
        found[path.name[: -len(suffix)]] = saved
    return found


def points_outside_plan(records: Path, mode: str, key: dict,
                        plan: list[tuple[float, int, str, int, int]]) -> list[str]:
    """The finished points recorded in ``records`` in training ``mode`` whose key holds ``key``
    (the model's digest and the training settings) that ``plan`` does not hold: a process that
    ran such a plan ran a share of a larger frontier."""
    planned = {point_tag(r, strategy, seed) for r, _, strategy, seed, _ in plan}
    return [tag for tag, saved in point_records(records, mode).items()
            if tag not in planned
            and all(saved["key"].get(name) == value for name, value in key.items())]


def _seeds(cfg: FrontierConfig, strategy: str) -> int:
    """How many seeds a strategy runs at each budget."""
    if strategy == "random" and cfg.random_seeds:
        return cfg.random_seeds
    # a +walk allocator's one policy is walked in a seeded order: as many seeds as a search
    return cfg.seeds if walks(strategy) else 1


def _search_cfg(cfg: FrontierConfig, strategy: str, seed: int, size: int) -> SearchConfig:
    return SearchConfig(strategy=base_strategy(strategy), episodes=cfg.episodes, seed=seed,
                        target_size=str(size), val_images=cfg.val_images,
                        reward_bn_images=cfg.reward_bn_images, threads=cfg.threads,
                        progress=cfg.progress, compact_bn=cfg.compact_bn,
                        prune_rates=cfg.prune_rates, allocator_demos=cfg.allocator_demos,
                        refine=cfg.refine if walks(strategy) else 0,
                        pruned_float_credit=cfg.pruned_float_credit,
                        final_rescore=cfg.final_rescore and walks(strategy),
                        choose_by=cfg.choose_by if walks(strategy) else "top1")


def _point(model: str, out: Path, cfg: FrontierConfig, data_cfg: DataConfig, ratio: float,
           size: int, strategy: str, seed: int, keep: tuple[Path, str, str],
           dense: int = 0) -> dict | None:
    """One point: search (or a rule, with ``ratio`` 0 and ``dense`` bytes), prune at the
    searched rates in a joint frontier, share and fine-tune; reused when already done, from the
    run directory or from the committed records in ``keep`` (results folder, frontier name,
    digest of the model's weights)."""
    rule = strategy in RULE_POLICIES
    run = out / point_tag(ratio, strategy, seed).replace("-", "/", 1)
    # each training mode has its own share folder: a frontier retrained in another mode reuses
    # the searches and pruning fine-tunes of its finished points
    mode = _share_mode(cfg)
    share_dir = run / ("share" if mode == "hard" else f"share-{mode}")
    records = keep[0] / "points" / keep[1]
    tag = f"{run.parent.name}-{run.name}"
    search_key = _search_key(keep[2], cfg, strategy, seed, size)
    point_key = {**search_key, **_train_key(cfg)}
    point_record = records / f"{tag}.{mode}.json"
    done = share_dir / "summary.json"
    found = _reuse(records / f"{tag}.search.json", search_key)
    if done.is_file():
        shared = json.loads(done.read_text())
        found = found or _found(run, strategy)
    else:
        row = _reuse(point_record, point_key)
        if row is not None and Path(row["file"]).is_file():
            return row
        if cfg.collect_only:
            return None
        if found is None:
            found = _found(run, strategy) if rule else _run_search(
                model, run, cfg, data_cfg, strategy, seed, size)
            write_json(records / f"{tag}.search.json", {"key": search_key, "value": found})
        shared = prune_and_share(model, run, share_dir, cfg, data_cfg, found, seed)
    files = keep[0] / "files" / keep[1]
    files.mkdir(parents=True, exist_ok=True)
    kept = files / f"{tag}.rlc"
    shutil.copyfile(share_dir / "model.rlc", kept)
    if rule:  # a rule defines its own size: it is its own budget
        size = shared["file_bytes"]
        ratio = round(dense / size, 2)
    row = {"method": strategy, "seed": seed, "target_ratio": ratio, "budget_bytes": size,
           "file_bytes": shared["file_bytes"], "file_ratio": shared["file_ratio"],
           "paper_ratio": shared["paper_ratio"], "top1": shared["top1"],
           "val_top1": shared["val_top1"], "file": str(kept), "k": shared["k"],
           "rate": found.get("best", {}).get("rate", {})}
    write_json(point_record, {"key": point_key, "value": row})
    return row


def _search_key(digest: str, cfg: FrontierConfig, strategy: str, seed: int, size: int) -> dict:
    """The settings a point's search depends on (not threads or progress bars), with the
    digest of the model searched."""
    if strategy in RULE_POLICIES:
        return {"model": digest, "rule": strategy}
    search_cfg = asdict(_search_cfg(cfg, strategy, seed, size))
    for volatile in ("threads", "progress"):
        search_cfg.pop(volatile, None)
    if not search_cfg["pruned_float_credit"]:  # how every search before session 25 was made
        del search_cfg["pruned_float_credit"]
    if not search_cfg["final_rescore"]:  # how every search before session 29 was made
        del search_cfg["final_rescore"]
    if search_cfg["choose_by"] == "top1":  # how every search before session 30 was made
        del search_cfg["choose_by"]
    key = {"model": digest, "search": search_cfg}
    if cfg.ddpg_imitate and base_strategy(strategy) == "ddpg":  # off before session 30
        key["ddpg"] = {"imitate": cfg.ddpg_imitate}
    return key


def model_digest(model: str) -> str:
    """The weights' content, not their path: a clone elsewhere must find its records."""
    path = Path(model)
    weights = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
    if not weights.is_file():
        return model
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:16]


def _share_mode(cfg: FrontierConfig) -> str:
    """The trained quantization's mode, which names a point's share folder and record."""
    if cfg.share_dkm_tau == 0:
        return "hard"
    return f"dkm{cfg.share_dkm_tau:g}" + ("-bn" if cfg.share_dkm_bn else "")


# what a record's training key means where it omits a setting (see _train_key)
_TRAIN_KEY_OMITTED = {"prune_select": "best", "share_dkm_bn": False}


def _train_key(cfg: FrontierConfig) -> dict:
    """The settings a point's pruning fine-tune and sharing depend on (settings added later
    only where they differ from their default, so that older records still match)."""
    train = {f: getattr(cfg, f) for f in (
        "share_epochs", "share_lr", "share_distill", "share_dkm_tau", "prune_epochs",
        "prune_lr", "compact_bn")}
    if cfg.prune_select != _TRAIN_KEY_OMITTED["prune_select"]:
        train["prune_select"] = cfg.prune_select
    if cfg.share_dkm_tau > 0 and cfg.share_dkm_bn:  # records made before it existed: off
        train["share_dkm_bn"] = True
    return {"train": train}


def config_from_record(key: dict, **overrides) -> FrontierConfig:
    """The frontier settings a point record was trained with (its ``key``: ``_train_key``'s
    training part and the search's pruning rates), so that the point can be trained again
    exactly; settings the key omits take the values they had when it was written, not today's
    defaults. ``overrides`` sets the fields that do not change the result (threads, progress)."""
    train = {**_TRAIN_KEY_OMITTED, **key["train"]}
    return FrontierConfig(**train, prune_rates=key["search"].get("prune_rates", ""), **overrides)


def _reuse(path: Path, key: dict) -> dict | None:
    """A committed record's value when it was made with exactly ``key``'s settings."""
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    # through JSON, so tuples and lists compare equal
    return saved["value"] if saved.get("key") == json.loads(json.dumps(key)) else None


def _found(run: Path, strategy: str) -> dict:
    """A rule's policy, or the search summary left in the run directory."""
    if strategy in RULE_POLICIES:
        return {"best": {"k": strategy, "rate": {}}}
    path = run / "search" / "summary.json"
    return {"best": json.loads(path.read_text())["best"]} if path.is_file() else {"best": {}}


def _run_search(model: str, run: Path, cfg: FrontierConfig, data_cfg: DataConfig,
                strategy: str, seed: int, size: int) -> dict:
    """Search a point's policy; returns ``{"best": {"k": ..., "rate": ...}}``."""
    ddpg = DDPGConfig(warmup=min(30, max(1, cfg.episodes // 10)), imitate=cfg.ddpg_imitate)
    found = search(model, str(run / "search"), _search_cfg(cfg, strategy, seed, size),
                   ShareConfig(), ddpg, data_cfg, resume=True)
    return {"best": {"k": found["best"]["k"], "rate": found["best"].get("rate", {})}}


def prune_and_share(model: str, run: Path, share_dir: Path, cfg: FrontierConfig,
                    data_cfg: DataConfig, found: dict, seed: int,
                    teacher: str | None = None) -> dict:
    """Prune at the found rates (joint frontier), then share and fine-tune the found k
    (distilled from ``teacher`` where given, else from the unshared model)."""
    start = model
    if cfg.prune_rates and not prunes_nothing(found["best"]):
        # a point that prunes nothing is not fine-tuned before sharing (nothing to recover;
        # more epochs on the converged dense model lowered its validation top-1)
        prune(model, str(run / "prune"), PruneConfig(rate=0.0, rates=found["best"]["rate"]),
              "physical", data_cfg, TrainConfig(epochs=cfg.prune_epochs, lr=cfg.prune_lr,
                                                seed=seed, threads=cfg.threads,
                                                progress=cfg.progress,
                                                select=cfg.prune_select), resume=True,
              latency=False)
        start = str(run / "prune" / "finetune" / "best.safetensors")
    tcfg = TrainConfig(epochs=cfg.share_epochs, lr=cfg.share_lr, distill=cfg.share_distill,
                       seed=seed, threads=cfg.threads, progress=cfg.progress)
    scfg = ShareConfig(dkm_tau=cfg.share_dkm_tau, dkm_bn=cfg.share_dkm_bn)
    return share(start, str(share_dir), found["best"]["k"], scfg,
                 data_cfg, tcfg, resume=True, compact_bn=cfg.compact_bn, teacher=teacher)


def peer_points(path: str, model: str, dense: int) -> list[dict]:
    """The coremltools rows of a peers benchmark file (run with ``--rlc``) as frontier points;
    with several epochs or learning rates per method and bits, the best validation top-1."""
    saved = json.loads(Path(path).read_text())
    rows = [r for r in (saved["rows"] if isinstance(saved, dict) else saved)
            if r["tool"] == "coremltools" and r["model"] == model and r.get("file_bytes")]
    if not rows:
        raise ValueError(f"{path}: no coremltools rows with files for model {model!r} "
                         "(run benchmarks/peers.py with --rlc)")
    best = best_by_validation(rows, lambda r: (r["method"], r["bits"], r["epochs"]))
    return [{"method": f"coremltools-{m}-{e}ep", "seed": r.get("seed", 0),
             "target_ratio": round(dense / r["file_bytes"], 2), "budget_bytes": r["file_bytes"],
             "file_bytes": r["file_bytes"], "file_ratio": round(dense / r["file_bytes"], 3),
             "paper_ratio": round(32 / b, 3), "top1": r["top1"], "val_top1": r["val_top1"],
             "file": r["file"], "k": f"uniform {2 ** b}", "rate": {}}
            for (m, b, e), r in sorted(best.items())]


def _aggregate(points: list[dict]) -> list[dict]:
    """One row per (method, budget): means over seeds, the standard deviation of top-1."""
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((p["method"], p["budget_bytes"]), []).append(p)
    rows = []
    for (method, budget), ps in groups.items():
        tops = [p["top1"] for p in ps]
        rows.append({
            "method": method, "budget_bytes": budget, "target_ratio": ps[0]["target_ratio"],
            "file_bytes": round(statistics.fmean(p["file_bytes"] for p in ps)),
            "file_ratio": round(statistics.fmean(p["file_ratio"] for p in ps), 3),
            "paper_ratio": round(statistics.fmean(p["paper_ratio"] for p in ps), 3),
            "top1": round(statistics.fmean(tops), 2),
            "top1_std": round(statistics.stdev(tops), 2) if len(tops) > 1 else 0.0,
            "val_top1": round(statistics.fmean(p["val_top1"] for p in ps), 2),
            "seeds": len(ps), "file": ps[0]["file"],
        })
    return sorted(rows, key=lambda r: (r["target_ratio"], r["method"]))


def markdown(rows: list[dict]) -> str:
    """The frontier as a Markdown table: one row per budget, one column per method."""
    methods = sorted({r["method"] for r in rows})
    ratios = sorted({r["target_ratio"] for r in rows})
    cell = {(r["method"], r["target_ratio"]): r for r in rows}
    lines = ["| file ratio (budget) | " + " | ".join(methods) + " |",
             "|---|" + "---|" * len(methods)]
    for ratio in ratios:
        cells = []
        for m in methods:
            r = cell.get((m, ratio))
            cells.append("-" if r is None else f"{r['top1']:.2f}" + (
                f" +- {r['top1_std']:.2f} (n={r['seeds']})" if r["seeds"] > 1 else "")
                + f", {r['file_bytes'] / 1000:.1f} KB")
        lines.append(f"| {ratio:g}x | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdicts(rows: list[dict], learned: str = "ddpg", noise_sd: float = 0.0) -> list[dict]:
    """Per budget, does the learned policy win? Its mean test top-1 against the best other
    allocator at that budget and the best peer whose file fits the same budget; a win needs a
    margin of more than two standard errors of the learned policy's seeds (issue #13's rule;
    one seed is no evidence, so it never wins).

    That rule treats the rival's number as exact. ``wins_with_rival_noise`` also counts the
    rival's standard error: over its seeds when it has several, else ``noise_sd``, the measured
    spread of one training of one policy (``benchmarks/training_noise.py``; 0: unknown, the
    two rules then agree). ``val_margin`` is the same comparison on validation top-1."""
    out = []
    for own in (r for r in rows if r["method"] == learned):
        rivals = [r for r in rows if r["method"] != learned and (
            r["budget_bytes"] == own["budget_bytes"] if r["method"] in STRATEGIES
            else r["file_bytes"] <= own["budget_bytes"])]
        if not rivals:
            continue
        best = max(rivals, key=lambda r: r["top1"])
        se = own["top1_std"] / math.sqrt(own["seeds"])
        rival_se = (best["top1_std"] / math.sqrt(best["seeds"]) if best["seeds"] > 1
                    else noise_sd)
        margin = own["top1"] - best["top1"]
        val = ({"val_margin": round(own["val_top1"] - best["val_top1"], 2)}
               if "val_top1" in own and "val_top1" in best else {})
        out.append({"target_ratio": own["target_ratio"], "budget_bytes": own["budget_bytes"],
                    "learned": learned, "top1": own["top1"], "seeds": own["seeds"],
                    "se": round(se, 3), "best_other": best["method"],
                    "best_other_top1": best["top1"], "margin": round(margin, 2),
                    "wins": own["seeds"] > 1 and margin > 2 * se, **val,
                    "rival_se": round(rival_se, 3),
                    "wins_with_rival_noise": own["seeds"] > 1
                    and margin > 2 * math.hypot(se, rival_se)})
    return out


def verdict_markdown(calls: list[dict]) -> str:
    """The verdicts as a Markdown table."""
    lines = ["| file ratio (budget) | learned (mean, s.e., seeds) | best other (s.e.) | margin | "
             "wins by > 2 s.e. | counting the rival's noise | validation margin |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {c['target_ratio']:g}x | {c['learned']} {c['top1']:.2f} +- {c['se']:.2f} "
              f"(n={c['seeds']}) | {c['best_other']} {c['best_other_top1']:.2f} "
              f"(+- {c['rival_se']:.2f}) | {c['margin']:+.2f} | {'yes' if c['wins'] else 'no'} | "
              f"{'yes' if c['wins_with_rival_noise'] else 'no'} | "
              + (f"{c['val_margin']:+.2f} |" if "val_margin" in c else "- |") for c in calls]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Test top-1 against file KB, one line per method (error bars: std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for m in sorted({r["method"] for r in rows}):
        rs = sorted((r for r in rows if r["method"] == m), key=lambda r: r["file_bytes"])
        ax.errorbar([r["file_bytes"] / 1000 for r in rs], [r["top1"] for r in rs],
                    yerr=[r["top1_std"] for r in rs], marker="o", ms=4, capsize=3, label=m)
    ax.set(xlabel="file size (KB)", ylabel="test top-1 (%)", title=f"{title}: accuracy vs size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
