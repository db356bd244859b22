from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from torch import nn

from conftest import planted_data
from rlcompress.models import build_model, resnet_spec
from rlcompress.search import (
    Budget,
    BudgetError,
    ClusterEnv,
    DDPGAgent,
    DDPGConfig,
    RandomStrategy,
    SearchConfig,
    action_to_k,
    k_to_action,
    paper_budget,
    parse_size,
    run_search,
)
from rlcompress.search.runner import demo_policies, episode_plan, play_episode

KEPT = [400, 3000, 3000, 9000, 600]
BEST_K = [8, 64, 16, 128, 4]


def planted_accuracy(policy: dict[str, int]) -> float:
    """Accuracy peaks at a known k per layer."""
    ks = list(policy.values())
    return 100.0 - 2.0 * sum((math.log2(k) - math.log2(b)) ** 2 for k, b in zip(ks, BEST_K, strict=True))


def _env(budget: Budget | None = None, evaluate=planted_accuracy) -> ClusterEnv:
    feats = np.random.default_rng(0).random((len(KEPT), 8)).astype(np.float32)
    names = [f"l{i}" for i in range(len(KEPT))]
    budget = budget or paper_budget(KEPT, sum(KEPT), target_ratio=4.0)
    return ClusterEnv(feats, names, budget, evaluate)


def test_env_passes_gymnasium_checker():
    check_env(_env(), skip_render_check=True)


def test_action_mapping():
    assert action_to_k(0.0, 2, 256) == 2 and action_to_k(1.0, 2, 256) == 256
    for k in (2, 3, 17, 100, 256):
        assert action_to_k(k_to_action(k, 2, 256), 2, 256) == k


@pytest.mark.parametrize("ratio", [4.0, 8.0, 15.9])
def test_budget_never_exceeded(ratio):
    budget = paper_budget(KEPT, sum(KEPT), target_ratio=ratio)
    env = _env(budget)
    rng = np.random.default_rng(1)
    for _ in range(200):
        env.reset()
        done = False
        while not done:
            _, _, done, _, info = env.step(np.array([rng.random()], np.float32))
        assert info["cost"] <= budget.limit + 1e-9
        assert 32 * sum(KEPT) / info["cost"] >= ratio - 1e-9


def test_extreme_budgets():
    with pytest.raises(BudgetError, match="cannot be met"):
        _env(paper_budget(KEPT, sum(KEPT), target_ratio=33.0))  # k >= 2: at most 32x
    loose = _env(paper_budget(KEPT, sum(KEPT), target_ratio=1.0))
    loose.reset()
    for _ in KEPT:
        _, _, done, _, info = loose.step(np.array([1.0], np.float32))
    assert set(info["policy"].values()) == {256}


def test_snap_uniform_and_ratio_tolerance():
    budget = paper_budget(KEPT, sum(KEPT), target_ratio=8.0)
    assert budget.snap_up(0, 17) == 32 and budget.snap_up(0, 16) == 16 and budget.snap_up(0, 3) == 4
    assert budget.uniform_k() == 16  # 4 bits everywhere is exactly 8x
    printed = round(32 * sum(KEPT) / (4.0 * sum(KEPT) - 1), 3)  # a ratio printed with 3 decimals
    assert paper_budget(KEPT, sum(KEPT), printed).uniform_k() == 16
    assert {action_to_k(a, 2, 256, pow2=True) for a in np.linspace(0, 1, 57)} == {2 ** b for b in range(1, 9)}
    env = _env(budget)
    env.reset()
    _, _, _, _, info = env.step(np.array([k_to_action(20, 2, 256)], np.float32))
    assert info["k"] == 16  # 20 clusters round to 4 bits (log scale), and 4 bits buy 16


def test_projection_cuts_the_largest_holder_first():
    budget = paper_budget(KEPT, sum(KEPT), target_ratio=8.0)  # 4 bits per weight on average
    small_up = [256, 16, 16, 16, 256]  # the two small layers overspend
    fixed = budget.project(small_up)
    assert budget.total(fixed) <= budget.limit
    assert fixed[0] == 256 and fixed[4] == 256 and fixed[3] < 16  # the 9000-weight layer pays
    assert budget.project([16] * len(KEPT)) == [16] * len(KEPT)  # within budget: unchanged
    env = _env(budget)
    env.rule = "project"
    env.reset()
    for k in small_up:
        _, _, done, _, info = env.step(np.array([k_to_action(k, 2, 256)], np.float32))
    assert done and list(info["policy"].values()) == fixed and info["cost"] <= budget.limit


def test_demos_guide_only_the_ddpg_warmup():
    budget = paper_budget(KEPT, sum(KEPT), target_ratio=8.0)
    layers = {f"l{i}": torch.nn.Linear(n, 1) for i, n in enumerate(KEPT)}
    demos = demo_policies(budget, layers, list(layers))
    assert [16] * len(KEPT) in demos
    assert all(budget.total(ks) <= budget.limit for ks in demos)
    cfg = SearchConfig(target_ratio=8.0)
    first = episode_plan(0, demos, budget, cfg, warmup=5)
    assert [action_to_k(a, 2, 256, pow2=True) for a in first] == demos[0]
    noisy = episode_plan(len(demos), demos, budget, cfg, warmup=5)
    assert noisy == episode_plan(len(demos), demos, budget, cfg, warmup=5) and noisy != first
    assert episode_plan(5, demos, budget, cfg, warmup=5) is None
    assert episode_plan(0, demos, budget, SearchConfig(strategy="random"), warmup=5) is None
    assert episode_plan(0, demos, budget, SearchConfig(demos=False), warmup=5) is None


def test_parse_size():
    assert parse_size("48KB") == 48000 and parse_size("48KiB") == 49152
    assert parse_size("1.5MB") == 1_500_000 and parse_size("1234") == 1234
    with pytest.raises(ValueError):
        parse_size("lots")


def test_ddpg_learns_planted_problem():
    env = _env(paper_budget(KEPT, sum(KEPT), target_ratio=3.0))
    agent = DDPGAgent(env.observation_space.shape[0], DDPGConfig(warmup=15, sigma=0.3,
                                                                   sigma_decay=0.95), seed=0)
    rewards = [play_episode(env, agent)[0] for _ in range(90)]
    warm, late = np.mean(rewards[:15]), np.mean(rewards[-15:])
    assert late > warm + 0.05, (warm, late)
    assert max(rewards) > 0.9


def _imitation_gap(imitate: float, tmp_path: Path) -> tuple[float, DDPGAgent]:
    """Mean |actor - best episode's actions| after a run whose one good episode is the first."""
    env = _env(paper_budget(KEPT, sum(KEPT), target_ratio=3.0))
    agent = DDPGAgent(env.observation_space.shape[0],
                      DDPGConfig(warmup=0, sigma=0.3, imitate=imitate), seed=0)
    good = [k_to_action(k, 2, 256) for k in BEST_K]
    play_episode(env, agent, good)
    rng = np.random.default_rng(1)
    for _ in range(30):  # worse episodes: random policies
        play_episode(env, agent, list(rng.random(len(KEPT))))
    path = tmp_path / f"agent-{imitate}.pt"
    agent.save(path)
    restored = DDPGAgent(env.observation_space.shape[0], agent.cfg, seed=5)
    restored.load(path)
    assert restored.elite_reward == agent.elite_reward
    assert np.array_equal(restored.elite_a, agent.elite_a)
    with torch.no_grad():
        acts = agent.actor(torch.from_numpy(agent.elite_s)).numpy()
    return float(np.abs(acts - agent.elite_a).mean()), agent


def test_self_imitation_pulls_the_actor_to_the_best_episode(tmp_path: Path):
    gap_off, off = _imitation_gap(0.0, tmp_path)
    gap_on, on = _imitation_gap(10.0, tmp_path)
    # both remember the same best episode (the planted optimum, played first)
    assert on.elite_reward == off.elite_reward == pytest.approx(1.0, abs=0.05)
    assert gap_on < 0.05 < gap_off, (gap_on, gap_off)


def test_random_strategy_is_seeded():
    a, b = RandomStrategy(11, None, seed=3), RandomStrategy(11, None, seed=3)
    s = np.zeros(11, np.float32)
    assert [a.act(s) for _ in range(5)] == [b.act(s) for _ in range(5)]


def _tiny():
    torch.manual_seed(0)
    spec = resnet_spec(8, num_classes=4, widths=(8, 16, 32))
    return build_model(spec).eval(), spec


def _rows(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


CFG = dict(episodes=6, target_ratio=6.0, val_images=64, progress=False, k_max=64, threads=1)


def test_search_runs_and_is_deterministic(tmp_path: Path):
    data = planted_data(n_train=64, n_val=64, size=16)
    dcfg = DDPGConfig(warmup=2, hidden=32, batch_size=8)
    for name in ("a", "b"):
        model, spec = _tiny()
        summary = run_search(model, spec, data, tmp_path / name, SearchConfig(**CFG), None, dcfg)
    assert _rows(tmp_path / "a" / "episodes.csv") == _rows(tmp_path / "b" / "episodes.csv")
    assert summary["episodes"] == 6 and summary["best"]["paper_ratio"] >= 6.0
    assert {r["policy"] for r in summary["rules"]} == {"/16", "/32", "/64", "k16", "k32", "k64"}
    for png in ("progress.png", "best_policy.png", "accuracy_vs_size.png"):
        assert (tmp_path / "a" / png).is_file()
    assert (tmp_path / "a" / "best_policy.json").is_file()
    rescored = summary["rescored"]
    assert rescored and rescored[0]["rescore_images"] == 64
    assert summary["best"]["val_top1_rescored"] == max(r["val_top1_rescored"] for r in rescored)


class _Killed(Exception):
    pass


def test_resume_after_kill_equals_uninterrupted(tmp_path: Path, monkeypatch):
    data = planted_data(n_train=64, n_val=64, size=16)
    dcfg = DDPGConfig(warmup=2, hidden=32, batch_size=8)
    model, spec = _tiny()
    run_search(model, spec, data, tmp_path / "full", SearchConfig(**CFG), None, dcfg)

    from rlcompress.search import evaluator as ev

    original = ev.PolicyEvaluator.__call__
    calls = {"n": 0}

    def dying(self, policy):
        calls["n"] += 1
        if calls["n"] == 4:  # dies inside episode 4
            raise _Killed
        return original(self, policy)

    monkeypatch.setattr(ev.PolicyEvaluator, "__call__", dying)
    model, spec = _tiny()
    with pytest.raises(_Killed):
        run_search(model, spec, data, tmp_path / "cut", SearchConfig(**CFG), None, dcfg)
    assert len(_rows(tmp_path / "cut" / "episodes.csv")) == 3
    monkeypatch.setattr(ev.PolicyEvaluator, "__call__", original)
    model, spec = _tiny()
    run_search(model, spec, data, tmp_path / "cut", SearchConfig(**CFG), None, dcfg, resume=True)
    assert _rows(tmp_path / "full" / "episodes.csv") == _rows(tmp_path / "cut" / "episodes.csv")


def test_random_search_and_file_budget(tmp_path: Path):
    data = planted_data(n_train=64, n_val=64, size=16)
    model, spec = _tiny()
    cfg = SearchConfig(**{**CFG, "target_ratio": 0.0, "target_size": "40KB", "strategy": "random"})
    summary = run_search(model, spec, data, tmp_path / "r", cfg)
    assert summary["budget"]["kind"] == "file" and summary["budget"]["limit"] == 40000
    for r in _rows(tmp_path / "r" / "episodes.csv"):
        assert float(r["cost"]) <= 40000
    with pytest.raises(BudgetError):
        run_search(*_tiny(), data, tmp_path / "tight",
                   SearchConfig(**{**CFG, "target_ratio": 0.0, "target_size": "2KB"}))
    assert not (tmp_path / "tight").exists()  # a refused search leaves no run folder


def test_cli_search_and_resume_from_run_dir(image_tar: Path, tmp_path: Path, capsys):
    import json

    from rlcompress.cli import main
    from rlcompress.models import model_spec, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(build_model("resnet20", num_classes=3), model_spec("resnet20", num_classes=3),
                    tmp_path, "m")
    data = ["--source", str(image_tar), "--data-dir", str(tmp_path / "d"), "--val-size", "3"]
    out = tmp_path / "s"
    assert main(["search", "--model", str(tmp_path / "m.safetensors"), "--out", str(out),
                 "--target-ratio", "8", "--episodes", "3", "--warmup", "1", "--val-images", "3",
                 "--method", "sensitive-lloyd", "--calibration-images", "8", "--bn-images", "8",
                 "--quiet", *data]) == 0
    first = json.loads(capsys.readouterr().out)
    (out / "summary.json").unlink()  # as if stopped before the end
    assert main(["search", "--resume", str(out), "--quiet", *data]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["best"] == first["best"] and again["episodes"] == 3
    assert main(["search", "--quiet", *data]) == 2  # neither --model nor --resume RUN_DIR


class _Tokens(nn.Module):
    """A conv stem cut into 16 tokens, a linear layer over the tokens, self-attention (whose
    output projection is used through its weight, never called) and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.tok = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        t = self.tok(self.stem(x).flatten(2).transpose(1, 2))
        return self.fc(self.attn(t, t, t, need_weights=False)[0].mean(1))


def test_features_of_token_linears_and_layers_used_without_a_call():
    from rlcompress.search.env import layer_features

    names = ["stem", "tok", "attn.out_proj", "fc"]
    kept = [8 * 3 * 16, 64, 64, 64]
    feats = layer_features(_Tokens().eval(), names, kept, (1, 3, 16, 16))
    log_macs = dict(zip(names, feats[:, 7], strict=True))
    # the token linear runs at 16 positions, the classifier and the never-called projection once
    assert log_macs["tok"] > log_macs["fc"] == log_macs["attn.out_proj"]
