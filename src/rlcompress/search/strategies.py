"""Search strategies behind one interface: DDPG, random search, and the one-shot allocators of
:mod:`rlcompress.search.allocators` (a small registry)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rlcompress.fileio import write_json
from rlcompress.search.allocators import ALLOCATORS
from rlcompress.search.ddpg import DDPGAgent, DDPGConfig


class RandomStrategy:
    """Uniformly random actions (the budget rule still caps each k): the honest baseline."""

    def __init__(self, state_dim: int, cfg: DDPGConfig | None = None, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.episodes = 0
        self.sigma = float("nan")

    def act(self, state: np.ndarray, explore: bool = True) -> float:
        """A uniform action in [0, 1]."""
        return float(self.rng.random())

    def end_episode(self, transitions: list, reward: float) -> dict[str, float]:
        """Count the episode; nothing to learn."""
        self.episodes += 1
        return {}

    def save(self, path: str | Path) -> None:
        """Write the RNG state and episode count."""
        write_json(path, {"rng": self.rng.bit_generator.state, "episodes": self.episodes})

    def load(self, path: str | Path) -> None:
        """Restore what :meth:`save` wrote."""
        state = json.loads(Path(path).read_text())
        self.rng.bit_generator.state = state["rng"]
        self.episodes = int(state["episodes"])


class AllocatedStrategy(RandomStrategy):
    """Stands in for an allocator in the episode loop: the runner plays the allocated policy as
    its single episode, so this never acts; it only counts the episode for resume."""


STRATEGIES: dict[str, Callable[..., object]] = {"ddpg": DDPGAgent, "random": RandomStrategy}
STRATEGIES |= {name: AllocatedStrategy for name in ALLOCATORS}


def register_strategy(name: str, factory: Callable[..., object]) -> None:
    """Add a strategy: ``factory(state_dim, ddpg_cfg, seed)`` returning an object with
    ``act``, ``end_episode``, ``save``, ``load`` and an ``episodes`` counter."""
    STRATEGIES[name] = factory


def make_strategy(name: str, state_dim: int, cfg: DDPGConfig | None, seed: int) -> object:
    """Build a registered strategy."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name](state_dim, cfg, seed)
