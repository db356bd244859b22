"""The search job: run episodes of a strategy, log them, keep the best policy, resume exactly.

Run directory::

    config.json         settings, budget, layers
    episodes.csv        one row per episode: k per layer, size, ratio, val accuracy, reward
    best_policy.json    the best policy so far (layer -> k) with its numbers
    agent.pt / .json    the strategy's complete state (networks, buffer, noise, RNG)
    summary.json        written at the end: best, Pareto set, rule policies, timings
    *.png               progress, best policy per layer, accuracy-vs-size cloud

After every episode the CSV row is appended first and the agent saved second; on resume the
CSV is cut back to the agent's episode count, so a kill at any moment loses at most the
episode in flight and the continued run is identical to an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from torch import nn
from tqdm import tqdm

from rlcompress.checks import check_fields
from rlcompress.clustering.policies import RULE_POLICIES, resolve_policy
from rlcompress.clustering.sharing import (
    ClusterCache,
    ShareConfig,
    clusterable_layers,
    codebook_groups,
    kept_weight_count,
)
from rlcompress.codec.bits import bits_for
from rlcompress.codec.sizes import reference_sizes
from rlcompress.data import ImageData
from rlcompress.data.loaders import LoaderData
from rlcompress.engine.runtime import set_threads, torch_threads
from rlcompress.rundir import open_run_dir, read_rows, write_json, write_rows
from rlcompress.search.allocators import ALLOCATORS, Allocation, AllocContext
from rlcompress.search.budget import Budget, file_budget, paper_budget, parse_target_size
from rlcompress.search.ddpg import DDPGConfig
from rlcompress.search.env import ClusterEnv, k_to_action, layer_features
from rlcompress.search.evaluator import PolicyEvaluator
from rlcompress.search.joint import (
    JointEnv,
    JointEvaluator,
    JointSpace,
    joint_demos,
    parse_rates,
    rates_list,
)
from rlcompress.search.refine import hill_climb
from rlcompress.search.strategies import STRATEGIES, make_strategy

FIELDS = ["episode", "reward", "val_top1", "paper_ratio", "cost", "budget_fraction", "sigma",
          "seconds", "ks", "rates"]


@dataclass
class SearchConfig:
    """What to search and under which budget.

    Attributes:
        strategy: ``ddpg``, ``random``, or a one-shot allocator (``uniform``, ``greedy``,
            ``hessian``: see rlcompress.search.allocators).
        episodes: episodes to run (each evaluates one complete policy; an allocator plays one).
        seed: seed of the strategy (networks, noise, random actions).
        target_ratio: budget as the paper's ratio (e.g. 13.35); 0 to use ``target_size``.
        target_size: budget as bytes of the compressed file (e.g. 48KB, 48KiB, 50000), or as
            a file ratio of the dense float32 model (e.g. ``16x``: its state bytes / 16).
        k_min: smallest k an action can choose.
        k_max: largest k an action can choose.
        val_images: size of the fixed validation subset that scores every policy.
        size_weight: reward penalty per fraction of the budget used (0: accuracy only).
        precision: inference precision of the reward evaluation (bf16 or fp32).
        budget_rule: ``cap`` (AMC: each k capped so the later layers can still fit) or
            ``project`` (choose freely, then cut bits from the layers with the most).
        snap: choose whole bits (k a power of two: both budgets charge ceil(log2 k) bits per
            index) and give each layer the largest k of the cost it was charged.
        demos: DDPG only: the first episodes play the rule policies that fit the budget (and
            the largest uniform k that fits), the rest of the warm-up plays them with noise,
            instead of uniformly random actions.
        demo_noise: std of that noise in action units (1/7 of the action range is one bit).
        allocator_demos: DDPG only: one-shot allocators (e.g. ``hessian,greedy``) whose
            policies are played first among the demonstrations, so the agent starts from the
            best measured allocation and learns to improve on it (each is computed once and
            saved as ``allocation-<name>.json``; the clustering it does is cached for the
            episodes).
        rescore: re-score this many of the best distinct policies on ``rescore_images``
            validation images and pick the best of them (the subset's maximum is biased up).
        rescore_images: images for re-scoring (0: the whole validation split).
        threads: CPU threads (0: one per core).
        progress: show a progress bar.
        compact_bn: the file will store batch norms as scale and shift (``--compact-bn``):
            measure the budget's fixed part that way.
        reward_bn_images: training images over which each policy's batch-norm statistics are
            re-estimated for its reward (the final sharing uses ``ShareConfig.bn_images``);
            fewer is faster, the same fixed images for every policy; 0: the sharing's count.
            256 ranks policies as 2,048 do (Spearman 0.99 over 12 policies,
            ``benchmarks/reward_bn_images.py``) in half the time of 512.
        prune_rates: joint search: the pruning rates offered to every prunable channel chain
            (e.g. ``0,0.1,0.2,0.3,0.4,0.5``; 0 is always offered); the model is the dense one
            and each policy is a rate per chain plus a k per layer (rlcompress.search.joint).
            Empty (default): k only, on an already pruned model (the paper's mode).
        protect: joint search: layers whose channels stay whole (no chain they produce or
            consume is offered a rate).
        refine: after the episodes (or an allocator's one), spend up to this many extra
            evaluations on a first-improvement walk from the best policy: one bit moved between
            two layers, one bit added where the budget has room, a chain's rate one step up or
            down (:mod:`rlcompress.search.refine`), scored on the re-scoring images when
            ``rescore`` > 0 (else on the subset); logged as further rows of the search (their
            ``val_top1`` on those images), and its best competes in the final choice.
            0 (default): none.
        pruned_float_credit: joint search with a file budget: charge each prunable chain's
            float parameters (bias, batch norm) for its kept channels only, so the bytes a
            pruning frees are spent on clusters (:class:`~rlcompress.search.joint.JointSpace`);
            off: the dense model's floats are charged at every rate, as before session 25 (the
            committed frontiers were searched that way).
        final_rescore: re-score the best policies (and run the ``refine`` walk) with the final
            sharing's own settings, batch norm re-estimated on ``ShareConfig.bn_images``
            images rather than ``reward_bn_images``, so that the choice is made on the
            finished point's validation top-1 without fine-tuning (to the image: batch norm
            in float32 and the model unfolded, as the share job computes) rather than on a
            noisier estimate of it; about twice the time per re-scored policy. A walk that
            climbs the reward's batch-norm noise picks policies that finish worse than it
            scored them (0.44-0.48 points at 16x post-training,
            ``results/ablations/posttrain_reward_vs_point_resnet20.json``). Off by default:
            every committed search re-scored with the reward's settings.
        choose_by: the signal on the re-scoring images that ranks the re-scored candidates,
            drives the ``refine`` walk and makes the final choice: ``top1`` (default) or
            ``kl``, the mean KL divergence of the policy's outputs from the uncompressed
            model's (lower is better). Top-1 over-fits its images: post-training at 16x,
            KL on one half of the validation split ranks the walks' policies by top-1 on the
            other half better than top-1 on the first half does (Spearman 0.71 / 0.78 vs
            0.65 / 0.65, ``benchmarks/posttrain_halves.py``). The episodes' reward stays
            top-1 on the subset; needs ``rescore`` > 0.
    """

    strategy: str = "ddpg"
    episodes: int = 300
    seed: int = 0
    target_ratio: float = 0.0
    target_size: str = ""
    k_min: int = 2
    k_max: int = 256
    val_images: int = 2000
    size_weight: float = 0.0
    precision: str = "bf16"
    budget_rule: str = "project"
    snap: bool = True
    demos: bool = True
    demo_noise: float = 0.1
    allocator_demos: str = ""
    rescore: int = 5
    rescore_images: int = 0
    threads: int = 0
    progress: bool = True
    compact_bn: bool = False
    reward_bn_images: int = 256
    prune_rates: str = ""
    protect: tuple[str, ...] = ()
    refine: int = 0
    pruned_float_credit: bool = True
    final_rescore: bool = False
    choose_by: str = "top1"

    def __post_init__(self) -> None:  # noqa: D105
        check_fields(self, ge0=("episodes", "seed", "target_ratio", "val_images", "size_weight",
                                "rescore", "rescore_images", "threads", "demo_noise",
                                "reward_bn_images", "refine"),
                     ge1=("k_min", "k_max"), choices={"precision": ("bf16", "fp16", "fp32"),
                                                      "choose_by": ("top1", "kl")})
        if self.choose_by != "top1" and self.rescore < 1:
            raise ValueError(f"SearchConfig.choose_by={self.choose_by!r} ranks the re-scored "
                             "candidates: it needs rescore >= 1")
        if self.k_max < self.k_min:
            raise ValueError(f"SearchConfig.k_max ({self.k_max}) is below k_min ({self.k_min})")
        if self.strategy not in STRATEGIES:  # before any pruning or training, not after
            raise ValueError(f"unknown search strategy {self.strategy!r}; known: "
                             f"{sorted(STRATEGIES)}")
        if self.episodes < 1 and self.strategy not in ALLOCATORS:
            raise ValueError(f"the {self.strategy!r} search needs at least one episode "
                             f"(episodes={self.episodes}); a one-shot allocator (e.g. 'greedy') "
                             "needs none")
        if self.target_size:
            parse_target_size(self.target_size)  # an unreadable budget fails before any work
        if self.prune_rates:
            parse_rates(self.prune_rates)
        unknown = [a for a in self.demo_allocators() if a not in ALLOCATORS]
        if unknown:
            raise ValueError(f"unknown allocator demos {unknown}; known: {sorted(ALLOCATORS)}")

    def demo_allocators(self) -> list[str]:
        """The allocators of ``allocator_demos``, in order."""
        return [a.strip() for a in self.allocator_demos.split(",") if a.strip()]


def joint_options(cfg: SearchConfig) -> dict:
    """The :class:`JointSpace` options that ``cfg`` sets."""
    return {"protect": cfg.protect, "credit_floats": cfg.pruned_float_credit,
            "compact_bn": cfg.compact_bn}


def make_budget(model: nn.Module, spec: dict, names: list[str], cfg: SearchConfig,
                share_cfg: ShareConfig) -> Budget:
    """The budget of ``cfg`` for the clusterable layers ``names`` of ``model``."""
    modules = dict(model.named_modules())
    kept = [kept_weight_count(modules[n]) for n in names]
    if bool(cfg.target_ratio) == bool(cfg.target_size):
        raise ValueError("give exactly one budget: --target-ratio R or --target-size SIZE")
    if cfg.target_ratio:
        ref = reference_sizes(spec, model)
        others = [m for n, m in clusterable_layers(model).items() if n not in names]
        b = paper_budget(kept, ref["weights"], cfg.target_ratio, cfg.k_min, cfg.k_max)
        b.fixed = 32.0 * sum(kept_weight_count(m) for m in others)  # unclustered: float32
        return b
    fixed = _measured_fixed_bytes(model, spec, names, kept, cfg, share_cfg)
    groups = [codebook_groups(modules[n].weight.shape[0], share_cfg.group_size) for n in names]
    ratio, size = parse_target_size(cfg.target_size)
    target = int(reference_sizes(spec, model)["state_bytes"] / ratio) if ratio else size
    return file_budget(kept, fixed, target, cfg.k_min, cfg.k_max, groups)


def _measured_fixed_bytes(model: nn.Module, spec: dict, names: list[str], kept: list[int],
                          cfg: SearchConfig, share_cfg: ShareConfig) -> int:
    """File bytes not covered by the per-layer estimate: measured on a k_min export."""
    import copy

    from rlcompress.clustering.sharing import share_model
    from rlcompress.codec import save_compressed
    from rlcompress.fileio import scratch_dir

    probe = copy.deepcopy(model)
    # the file's size does not depend on which centroids are chosen: no data needed here
    share_model(probe, {n: cfg.k_min for n in names})
    with scratch_dir() as tmp:
        path = tmp / "probe.rlc"
        save_compressed(probe, {k: v for k, v in spec.items() if k != "sharing"}, path,
                        compact_bn=cfg.compact_bn)
        real = path.stat().st_size
    est = file_budget(kept, 0, 1).total([cfg.k_min] * len(kept))
    # manifest entries grow by a few digits as k and offsets grow: a small allowance per layer
    return int(real - est + 16 * len(kept) + 64)


def paper_ratio_of(kept: list[int], ks: list[int], dense_weights: int, other_weights: int = 0) -> float:
    """The paper's ratio of a policy; ``other_weights`` are layers left in float32."""
    bits = sum(n * bits_for(k) for n, k in zip(kept, ks, strict=True)) + 32 * other_weights
    return 32.0 * dense_weights / bits


def demo_policies(budget: Budget, layers: dict[str, nn.Module], names: list[str]) -> list[list[int]]:
    """The rule policies that fit ``budget``, then the largest uniform k that fits."""
    out: list[list[int]] = []
    for rule in RULE_POLICIES:
        ks = resolve_policy(rule, layers)
        out.append([ks[n] for n in names])
    out.append([budget.uniform_k()] * len(names))
    fits = [ks for ks in out if budget.total(ks) <= budget.limit]
    return [ks for i, ks in enumerate(fits) if ks not in fits[:i]]


def episode_plan(episode: int, demos: list, budget: Budget, cfg: SearchConfig,
                 warmup: int, to_actions: Callable[[object], list[float]] | None = None
                 ) -> list[float] | None:
    """Actions of a guided warm-up episode (None: the strategy acts). Seeded per episode, so a
    resumed search replays the same plan. ``to_actions`` turns a demo into the episode's
    actions (default: a k list, one action per layer)."""
    if cfg.strategy != "ddpg" or not cfg.demos or not demos or episode >= warmup:
        return None
    demo = demos[episode % len(demos)]
    base = (to_actions(demo) if to_actions else
            [k_to_action(k, budget.k_min, budget.k_max) for k in demo])
    if episode < len(demos):
        return base
    rng = np.random.default_rng([cfg.seed, episode])
    return [float(np.clip(a + rng.normal(0.0, cfg.demo_noise), 0.0, 1.0)) for a in base]


def _pareto(rows: list[dict]) -> list[dict]:
    """Policies no other policy beats on both size (cost) and validation accuracy."""
    best, front = -1.0, []
    for r in sorted(rows, key=lambda r: (float(r["cost"]), -float(r["val_top1"]))):
        if float(r["val_top1"]) > best:
            front.append(r)
            best = float(r["val_top1"])
    return front


def check_budget(model: nn.Module, spec: dict, cfg: SearchConfig,
                 share_cfg: ShareConfig | None = None) -> Budget:
    """Build the budget of ``cfg`` for ``model`` and raise :class:`BudgetError` if no policy can
    meet it (k only: the smallest k everywhere; joint, with ``cfg.prune_rates``: also the largest
    rate at every chain). Cheap (no data, no training): callers run it before hours of
    fine-tuning."""
    share_cfg = share_cfg or ShareConfig()
    names = list(clusterable_layers(model, share_cfg.first, share_cfg.last))
    budget = make_budget(model.eval(), spec, names, cfg, share_cfg)
    if cfg.prune_rates:
        JointSpace(model, names, budget, parse_rates(cfg.prune_rates), **joint_options(cfg))
    else:
        budget.check()
    return budget


def run_search(
    model: nn.Module,
    spec: dict,
    data: ImageData | LoaderData,
    out: str | Path,
    cfg: SearchConfig | None = None,
    share_cfg: ShareConfig | None = None,
    ddpg_cfg: DDPGConfig | None = None,
    resume: bool = False,
    source: dict | None = None,
) -> dict:
    """Search a k per clusterable layer of ``model`` under the budget; returns the summary.

    ``source`` (e.g. the model's path) is recorded in ``config.json`` so that
    ``rlcompress search --resume RUN_DIR`` can restart from the directory alone."""
    cfg, share_cfg, ddpg_cfg = cfg or SearchConfig(), share_cfg or ShareConfig(), ddpg_cfg or DDPGConfig()
    if resume and (Path(out) / "summary.json").is_file():
        return json.loads((Path(out) / "summary.json").read_text())
    set_threads(cfg.threads)
    t_start = time.perf_counter()
    model = model.eval()
    layers = clusterable_layers(model, share_cfg.first, share_cfg.last)
    names = list(layers)
    budget = make_budget(model, spec, names, cfg, share_cfg)
    space = (JointSpace(model, names, budget, parse_rates(cfg.prune_rates), **joint_options(cfg))
             if cfg.prune_rates else None)
    if space is None:
        budget.check()
    run = open_run_dir(out, resume)  # only now: an impossible budget leaves no folder behind
    ref = reference_sizes(spec, model)
    others = sum(kept_weight_count(m) for n, m in clusterable_layers(model).items()
                 if n not in names)
    reward_cfg = _reward_share_cfg(share_cfg, cfg)
    evaluator = _evaluator(space, model, names, data, cfg.val_images, reward_cfg, ClusterCache(),
                           cfg.precision)
    if isinstance(data, LoaderData):
        shape = (1, *data.input_shape)
    else:
        shape = (1, *data.train.images.shape[3:], *data.train.images.shape[1:3])
    features = layer_features(model, names, budget.kept, shape)
    to_actions = None
    if space is None:
        env = ClusterEnv(features, names, budget, evaluator, cfg.size_weight, cfg.snap,
                         cfg.budget_rule)
        demos = demo_policies(budget, layers, names)
    else:
        env = JointEnv(features, names, space,
                       lambda ks, rates: evaluator.joint_scores(ks, rates, kl=False)["top1"],
                       cfg.size_weight, cfg.snap)
        demos = joint_demos(space, layers)
        to_actions = env.demo_actions
    allocation = None
    ctx = AllocContext(model, names, budget, data, evaluator, cfg.seed, space=space)
    if cfg.strategy in ALLOCATORS:
        allocation = _allocate(run, cfg.strategy, ctx, resume)
    elif cfg.strategy == "ddpg" and cfg.demos:
        # the allocators' policies lead the demonstrations (duplicates dropped)
        firsts = [_allocate(run, a, ctx, resume, f"allocation-{a}.json")
                  for a in cfg.demo_allocators()]
        demos = [d for i, d in enumerate(firsts) if d not in firsts[:i]] + [
            d for d in demos if d not in firsts]
    episodes = 1 if allocation else cfg.episodes
    agent = make_strategy(cfg.strategy, env.observation_space.shape[0], ddpg_cfg, cfg.seed)
    agent_file = run / ("agent.pt" if cfg.strategy == "ddpg" else "agent.json")
    if resume and agent_file.is_file():
        try:
            agent.load(agent_file)
        except Exception as exc:  # torch/pickle/json raise many types on a damaged file
            raise ValueError(f"{agent_file}: cannot resume the search from this file "
                             f"({exc.__class__.__name__}: {str(exc)[:200]})") from exc
        print(f"search: resuming after episode {agent.episodes} of {cfg.episodes}", file=sys.stderr)
    rows = read_rows(run / "episodes.csv", "episode", agent.episodes)
    write_json(run / "config.json", {"search": asdict(cfg), "share": asdict(share_cfg),
                                "ddpg": asdict(ddpg_cfg), "layers": names, "kept": budget.kept,
                                "budget": {"kind": budget.kind, "limit": budget.limit,
                                           "fixed": budget.fixed},
                                "dense_weights": ref["weights"], "source": source or {}})
    t_agent = 0.0
    bar = tqdm(total=episodes, initial=len(rows), desc=f"search ({cfg.strategy})",
               disable=not cfg.progress)
    while agent.episodes < episodes:
        t0 = time.perf_counter()
        plan = (_allocation_plan(allocation, budget, to_actions) if allocation
                else episode_plan(agent.episodes, demos, budget, cfg, ddpg_cfg.warmup, to_actions))
        reward, info, t_ep = play_episode(env, agent, plan)
        t_agent += t_ep
        ks = [info["policy"][n] for n in names]
        kept = space.kept(rates_list(space, info["rates"])) if space else budget.kept
        rows.append({
            "episode": agent.episodes, "reward": round(reward, 6),
            "val_top1": round(info["accuracy"], 3),
            "paper_ratio": round(paper_ratio_of(kept, ks, ref["weights"], others), 4),
            "cost": round(info["cost"], 1), "budget_fraction": round(info["budget_fraction"], 5),
            "sigma": round(getattr(agent, "sigma", float("nan")), 5),
            "seconds": round(time.perf_counter() - t0, 3), "ks": ";".join(map(str, ks)),
            "rates": ";".join(f"{info['rates'].get(names[i], 0.0):g}" for i in space.prunable)
            if space else "",
        })
        write_rows(run / "episodes.csv", FIELDS, rows)
        agent.save(agent_file)
        best = max(rows, key=lambda r: (float(r["val_top1"]), -float(r["cost"])))
        write_json(run / "best_policy.json", _policy_record(best, names, evaluator, space))
        bar.update(1)
        bar.set_postfix(best=f"{float(best['val_top1']):.2f}%", ratio=f"{float(best['paper_ratio']):.2f}")
    bar.close()
    rescorer = None
    if cfg.rescore > 0:
        n_full = cfg.rescore_images or 10**9
        rescorer = _evaluator(space, model, names, data, n_full,
                              share_cfg if cfg.final_rescore else reward_cfg, evaluator.cache,
                              cfg.precision, importance=evaluator.importance,
                              exact=cfg.final_rescore)
    # the search's own rows only: walk rows are scored on other images and must not crowd
    # the subset's candidates out of the re-scoring
    rescored = (_rescore(rows, names, evaluator, rescorer, cfg.rescore, space, cfg.choose_by)
                if rescorer else [])
    walk: list[dict] = []
    if cfg.refine > 0 and len(rows) == episodes:
        # the walk compares neighbours a fraction of a point apart: on the re-scoring images
        # when there are any (the 1,000-image subset's noise is ~1.3 points), and from the
        # policy they rank first (the subset's favourite may be its luckiest draw)
        walk = _refine(_walk_start(rows, rescored, cfg.choose_by), len(rows), names, budget,
                       space, rescorer or evaluator, cfg, (ref["weights"], others))
        rows += walk
        write_rows(run / "episodes.csv", FIELDS, rows)
    summary = _finish(run, rows, names, budget, evaluator, layers, (ref["weights"], others), cfg,
                      rescorer, space, walk, rescored)
    summary["seconds"] = {"total_this_session": round(time.perf_counter() - t_start, 2),
                          "cluster": round(evaluator.seconds["cluster"], 2),
                          "evaluate": round(evaluator.seconds["evaluate"], 2),
                          "bn": round(evaluator.seconds["bn"], 2),
                          "fisher": round(evaluator.seconds["fisher"], 2),
                          "agent": round(t_agent, 2)}
    summary["evaluations_this_session"] = {"scored": evaluator.calls,
                                           "repeated_policies": evaluator.repeats}
    write_json(run / "summary.json", summary)
    return summary


def best_candidate(rescored: list[dict], choose_by: str = "top1") -> dict:
    """The best re-scored candidate by ``choose_by`` (ties: the smaller file), as a search
    picks its walk's start and its final policy."""
    if choose_by == "kl":
        return min(rescored, key=lambda r: (r["val_kl_rescored"], r["cost"]))
    return max(rescored, key=lambda r: (r["val_top1_rescored"], -r["cost"]))


def _walk_start(rows: list[dict], rescored: list[dict], choose_by: str = "top1") -> dict:
    """The row a refinement walk starts from: the best re-scored policy, else the subset's best."""
    if rescored:
        top = best_candidate(rescored, choose_by)
        return next(r for r in rows if int(r["episode"]) == top["episode"])
    return max(rows, key=lambda r: (float(r["val_top1"]), -float(r["cost"])))


def _refine(best: dict, done: int, names: list[str], budget: Budget, space: JointSpace | None,
            evaluator: PolicyEvaluator, cfg: SearchConfig, weights: tuple[int, int]) -> list[dict]:
    """Rows (numbered after ``done``) of a hill-climbing walk from the row ``best`` (see
    :mod:`rlcompress.search.refine`)."""
    ks = tuple(int(k) for k in best["ks"].split(";"))
    rates = [0.0] * len(names)
    if space is not None and best.get("rates"):
        for i, r in zip(space.prunable, best["rates"].split(";"), strict=True):
            rates[i] = float(r)

    def scores(p: tuple) -> dict[str, float]:
        rec = {"k": dict(zip(names, p[1], strict=True)),
               "rate": {names[i]: p[0][i] for i in space.prunable} if space else {}}
        return _score(evaluator, rec, kl=cfg.choose_by == "kl")

    def evaluate(p: tuple) -> float:  # the walk climbs this
        got = scores(p)
        return -got["kl"] if cfg.choose_by == "kl" else got["top1"]

    def cost(p: tuple) -> float:
        return (space.budget_for(list(p[0])) if space else budget).total(list(p[1]))

    t0 = time.perf_counter()
    start = (tuple(rates), ks)
    steps = hill_climb(start, evaluate(start), evaluate, cost, budget.limit,
                       cfg.refine, cfg.seed, budget.k_min, budget.k_max,
                       list(space.rates) if space else None, space.prunable if space else None)
    out = []
    for n, st in enumerate(steps):
        kept = space.kept(st.rates) if space else budget.kept
        # a KL walk's rows: the reward is the signal it climbed (-KL), top-1 as ever
        top1 = (scores((tuple(st.rates), tuple(st.ks)))["top1"] if cfg.choose_by == "kl"
                else st.accuracy)
        out.append({
            "episode": done + n + 1,
            "reward": round(st.accuracy if cfg.choose_by == "kl" else st.accuracy / 100.0, 6),
            "val_top1": round(top1, 3),
            "paper_ratio": round(paper_ratio_of(kept, st.ks, *weights), 4),
            "cost": round(st.cost, 1), "budget_fraction": round(st.cost / budget.limit, 5),
            "sigma": "refine", "seconds": round((time.perf_counter() - t0) / len(steps), 3),
            "ks": ";".join(map(str, st.ks)),
            "rates": ";".join(f"{st.rates[i]:g}" for i in space.prunable) if space else "",
        })
    return out


def _allocate(run: Path, strategy: str, ctx: AllocContext, resume: bool,
              file: str = "allocation.json") -> Allocation:
    """The allocator's policy (read back from ``file`` when resuming): a k list, or (rates, ks)
    in the joint space."""
    path = run / file
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        ks = [int(k) for k in saved["ks"]]
        return ([float(r) for r in saved["rates"]], ks) if "rates" in saved else ks
    t0 = time.perf_counter()
    got = ALLOCATORS[strategy](ctx)
    rates, ks = got if isinstance(got, tuple) else (None, got)
    record = {"strategy": strategy, "ks": ks, "k": dict(zip(ctx.names, ks, strict=True))}
    if rates is not None:
        record |= {"rates": rates, "rate": {ctx.names[i]: rates[i] for i in ctx.space.prunable}}
    write_json(path, record | {"seconds": round(time.perf_counter() - t0, 2)})
    return got


def _allocation_plan(allocation: Allocation, budget: Budget,
                     to_actions: Callable[[object], list[float]] | None) -> list[float]:
    """The actions that play an allocated policy as the search's one episode."""
    if isinstance(allocation, tuple):
        assert to_actions is not None, "a joint allocation needs the joint environment"
        return to_actions(allocation)
    return [k_to_action(k, budget.k_min, budget.k_max) for k in allocation]


def play_episode(env: ClusterEnv, agent: object,
                 plan: list[float] | None = None) -> tuple[float, dict, float]:
    """One episode: act at every layer, then let the agent learn from the final reward.

    With a ``plan`` its actions are played instead of the agent's (guided warm-up); the agent
    still learns from the episode. Transitions store the *effective* actions (after the budget
    rule), since those produced the reward. Returns (reward, final info, agent seconds).
    """
    obs, _ = env.reset()
    done, t_agent = False, 0.0
    while not done:
        ta = time.perf_counter()
        if plan is not None:
            action = plan[env.t]
        else:
            with torch_threads(1):  # tiny networks: one thread beats contention
                action = agent.act(obs)
        t_agent += time.perf_counter() - ta
        obs, reward, done, _, info = env.step(np.array([action], np.float32))
    transitions = env.trajectory([info["policy"][n] for n in env.layers])
    ta = time.perf_counter()
    with torch_threads(1):
        agent.end_episode(transitions, reward)
    return reward, info, t_agent + time.perf_counter() - ta


def _reward_share_cfg(share_cfg: ShareConfig, cfg: SearchConfig) -> ShareConfig:
    """The sharing config the reward uses: batch norm re-estimated on fewer images."""
    if cfg.reward_bn_images and share_cfg.bn_images:
        return dataclasses.replace(share_cfg, bn_images=min(cfg.reward_bn_images, share_cfg.bn_images))
    return share_cfg


def _evaluator(space: JointSpace | None, *args: object, **kwargs: object) -> PolicyEvaluator:
    return (JointEvaluator(space, *args, **kwargs) if space is not None
            else PolicyEvaluator(*args, **kwargs))


def _score(evaluator: PolicyEvaluator, rec: dict, kl: bool = False) -> dict[str, float]:
    """Validation top-1 (and, with ``kl``, the KL divergence) of a policy record (k, and the
    rates of a joint policy)."""
    if isinstance(evaluator, JointEvaluator):
        return evaluator.joint_scores(rec["k"], rec.get("rate", {}), kl=kl)
    return evaluator.scores(rec["k"], kl=kl)


def _policy_record(row: dict, names: list[str], evaluator: PolicyEvaluator,
                   space: JointSpace | None = None) -> dict:
    ks = [int(k) for k in row["ks"].split(";")]
    acc = float(row["val_top1"])
    rec = {"episode": int(row["episode"]), "val_top1": acc,
           "val_top1_se": round(evaluator.standard_error(acc), 3),
           "paper_ratio": float(row["paper_ratio"]), "cost": float(row["cost"]),
           "k": dict(zip(names, ks, strict=True))}
    if space is not None:
        rates = [float(r) for r in row["rates"].split(";")] if row.get("rates") else []
        rec["rate"] = {names[i]: r for i, r in zip(space.prunable, rates, strict=True)}
    return rec


def _finish(run: Path, rows: list[dict], names: list[str], budget: Budget,
            evaluator: PolicyEvaluator, layers: dict, weights: tuple[int, int],
            cfg: SearchConfig, rescorer: PolicyEvaluator | None = None,
            space: JointSpace | None = None, walk: list[dict] | None = None,
            rescored: list[dict] | None = None) -> dict:
    rules = []
    for rule in RULE_POLICIES:
        ks = resolve_policy(rule, layers)
        k_list = [ks[n] for n in names]
        acc = evaluator(ks)
        cost = budget.total(k_list)
        rules.append({"policy": rule, "val_top1": round(acc, 3), "cost": round(cost, 1),
                      "within_budget": cost <= budget.limit,
                      "paper_ratio": round(paper_ratio_of(budget.kept, k_list, *weights), 4)})
        if rescorer is not None:
            rules[-1]["val_top1_rescored"] = round(rescorer(ks), 3)
    best = _policy_record(max(rows, key=lambda r: (float(r["val_top1"]), -float(r["cost"]))),
                          names, evaluator, space)
    rescored = list(rescored or [])
    if walk and rescorer:  # the walk scored on the re-scoring images: its best competes as is
        signal = "reward" if cfg.choose_by == "kl" else "val_top1"
        top = max(walk, key=lambda r: (float(r[signal]), -float(r["cost"])))
        rec = _policy_record(top, names, rescorer, space)
        if all((rec["k"], rec.get("rate")) != (r["k"], r.get("rate")) for r in rescored):
            rescored.append(rec | {"val_top1_rescored": rec["val_top1"],
                                   "val_top1_rescored_se": rec["val_top1_se"],
                                   "rescore_images": rescorer.n,
                                   **({"val_kl_rescored": -float(top["reward"])}
                                      if cfg.choose_by == "kl" else {})})
    if rescored:
        best = best_candidate(rescored, cfg.choose_by)
        write_json(run / "best_policy.json", best)
    summary = {
        "strategy": cfg.strategy, "episodes": len(rows), "seed": cfg.seed,
        "budget": {"kind": budget.kind, "limit": budget.limit},
        "best": best, "rescored": rescored,
        "pareto": [_policy_record(r, names, evaluator, space) for r in _pareto(rows)],
        "rules": rules, "val_images": evaluator.n,
    }
    try:
        from rlcompress.search.plots import plot_search

        plot_search(run, rows, names, budget, rules, summary["best"])
    except ImportError:  # matplotlib is a dependency, but plots must never sink a search
        pass
    return summary


def _rescore(rows: list[dict], names: list[str], evaluator: PolicyEvaluator,
             rescorer: PolicyEvaluator, n: int, space: JointSpace | None = None,
             choose_by: str = "top1") -> list[dict]:
    """The ``n`` best distinct policies on the subset, each re-scored by ``rescorer`` (with
    ``choose_by`` ``kl``, its KL divergence too)."""
    seen: set[str] = set()
    out = []
    for r in sorted(rows, key=lambda r: (-float(r["val_top1"]), float(r["cost"]))):
        key = r["ks"] + "|" + (r.get("rates") or "")
        if key in seen:
            continue
        seen.add(key)
        rec = _policy_record(r, names, evaluator, space)
        got = _score(rescorer, rec, kl=choose_by == "kl")
        acc = got["top1"]
        rec |= {"val_top1_rescored": round(acc, 3),
                "val_top1_rescored_se": round(rescorer.standard_error(acc), 3),
                "rescore_images": rescorer.n,
                **({"val_kl_rescored": round(got["kl"], 6)} if "kl" in got else {})}
        out.append(rec)
        if len(out) == n:
            break
    return out
