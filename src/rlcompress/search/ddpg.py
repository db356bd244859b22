"""A compact DDPG agent with the AMC/HAQ practices.

Written here rather than taken from stable-baselines3 because SB3's DDPG learns from per-step
rewards with its own noise and buffer handling, while this search needs the episode's final
reward credited to every transition of the episode, a moving-average reward baseline,
truncated-normal noise that decays per episode, random warm-up episodes, and a complete,
restorable state (networks, optimizers, buffer, noise, RNG) after every episode.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlcompress.checks import check_fields
from rlcompress.fileio import atomic_path


@dataclass
class DDPGConfig:
    """DDPG settings (AMC's, except the smaller exploration noise; warm-up as in HAQ's shorter
    runs).

    Attributes:
        hidden: units in each of the two hidden layers of actor and critic.
        lr_actor: actor learning rate.
        lr_critic: critic learning rate.
        tau: soft target update rate.
        batch_size: minibatch size.
        discount: discount of the critic's bootstrap (AMC and HAQ use 1).
        warmup: episodes with uniformly random actions before learning starts.
        sigma: initial std of the truncated-normal exploration noise.
        sigma_decay: noise std multiplier per episode after warm-up.
        sigma_min: floor of the noise std.
        buffer_size: replay capacity in transitions.
        baseline_alpha: rate of the moving-average reward baseline.
        imitate: weight of a self-imitation term in the actor's loss: the mean squared
            distance between the actor's actions and those of the best episode so far (any
            episode, a demonstration included). 0 (default, AMC's agent): none. The critic
            alone, fitted on a few hundred episodes of a 20-step problem, steers the actor
            no closer to the best policies it has seen (post-training ResNet-20 at 16x: the
            policy drifts from greedy's 75% demonstration to 55-70%), so exploration never
            searches the best policy's neighbourhood (self-imitation learning, Oh et al.
            2018; DDPG from demonstrations, Nair et al. 2018).
    """

    hidden: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    discount: float = 1.0
    warmup: int = 30
    # AMC's 0.5 (3.5 bits of k) wrecked every post-warm-up policy on ResNet-20 (val 30-75%
    # vs 83.6% for uniform k16); 0.15 decaying to ~0.01 in 200 episodes explores +-1 bit
    sigma: float = 0.15
    sigma_decay: float = 0.985
    # below ~0.05 whole-bit actions stop changing at all and the search stalls on one policy
    sigma_min: float = 0.05
    buffer_size: int = 100_000
    baseline_alpha: float = 0.5
    imitate: float = 0.0

    def __post_init__(self) -> None:  # noqa: D105
        check_fields(self, ge0=("lr_actor", "lr_critic", "warmup", "sigma", "sigma_min",
                                "imitate"),
                     ge1=("hidden", "batch_size", "buffer_size"),
                     unit=("tau", "discount", "sigma_decay", "baseline_alpha"))


def _mlp(n_in: int, hidden: int, n_out: int, out: nn.Module | None) -> nn.Sequential:
    layers = [nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
              nn.Linear(hidden, n_out)]
    return nn.Sequential(*layers, *([out] if out is not None else []))


class DDPGAgent:
    """Actor-critic with replay, target networks and episode-level reward credit."""

    def __init__(self, state_dim: int, cfg: DDPGConfig | None = None, seed: int = 0) -> None:
        self.cfg = cfg or DDPGConfig()
        self.state_dim = state_dim
        torch.manual_seed(seed)
        h = self.cfg.hidden
        self.actor = _mlp(state_dim, h, 1, nn.Sigmoid())
        self.critic = _mlp(state_dim + 1, h, 1, None)
        self.actor_t = _mlp(state_dim, h, 1, nn.Sigmoid())
        self.critic_t = _mlp(state_dim + 1, h, 1, None)
        self.actor_t.load_state_dict(self.actor.state_dict())
        self.critic_t.load_state_dict(self.critic.state_dict())
        self.opt_a = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.lr_actor)
        self.opt_c = torch.optim.Adam(self.critic.parameters(), lr=self.cfg.lr_critic)
        n = self.cfg.buffer_size
        self.buf = {"s": np.zeros((n, state_dim), np.float32), "a": np.zeros((n, 1), np.float32),
                    "r": np.zeros((n, 1), np.float32), "s2": np.zeros((n, state_dim), np.float32),
                    "d": np.zeros((n, 1), np.float32)}
        self.size = self.ptr = 0
        self.rng = np.random.default_rng(seed)
        self.sigma = self.cfg.sigma
        self.baseline: float | None = None
        self.episodes = 0
        # the best episode so far (states, effective actions), for self-imitation
        self.elite_reward = float("-inf")
        self.elite_s = np.zeros((0, state_dim), np.float32)
        self.elite_a = np.zeros((0, 1), np.float32)

    # -------------------------------------------------------------------- acting
    def act(self, state: np.ndarray, explore: bool = True) -> float:
        """Action in [0, 1]: random during warm-up, else actor + truncated-normal noise."""
        if explore and self.episodes < self.cfg.warmup:
            return float(self.rng.random())
        with torch.no_grad():
            mu = float(self.actor(torch.as_tensor(state[None], dtype=torch.float32))[0, 0])
        if not explore:
            return mu
        return self._truncated_normal(mu, self.sigma)

    def _truncated_normal(self, mu: float, sigma: float) -> float:
        if sigma <= 0:
            return mu
        for _ in range(100):  # rejection sampling on [0, 1]
            a = self.rng.normal(mu, sigma)
            if 0.0 <= a <= 1.0:
                return float(a)
        return float(np.clip(mu, 0.0, 1.0))

    # ------------------------------------------------------------------ learning
    def end_episode(self, transitions: list[tuple[np.ndarray, float, np.ndarray, bool]],
                    reward: float) -> dict[str, float]:
        """Store an episode with its final reward (minus the moving baseline) on every
        transition, then run one update per transition once warm-up is over."""
        if self.baseline is None:
            self.baseline = reward
        advantage = reward - self.baseline
        self.baseline += self.cfg.baseline_alpha * (reward - self.baseline)
        if reward > self.elite_reward:
            self.elite_reward = reward
            self.elite_s = np.stack([t[0] for t in transitions]).astype(np.float32)
            self.elite_a = np.asarray([[t[1]] for t in transitions], np.float32)
        for s, a, s2, done in transitions:
            i = self.ptr
            self.buf["s"][i], self.buf["a"][i, 0], self.buf["r"][i, 0] = s, a, advantage
            self.buf["s2"][i], self.buf["d"][i, 0] = s2, float(done)
            self.ptr = (self.ptr + 1) % self.cfg.buffer_size
            self.size = min(self.size + 1, self.cfg.buffer_size)
        self.episodes += 1
        stats = {"critic_loss": float("nan"), "actor_loss": float("nan")}
        if self.episodes > self.cfg.warmup:
            self.sigma = max(self.sigma * self.cfg.sigma_decay, self.cfg.sigma_min)
            for _ in transitions:
                stats = self._update()
        return stats

    def _update(self) -> dict[str, float]:
        idx = self.rng.integers(0, self.size, size=min(self.cfg.batch_size, self.size))
        s, a, r, s2, d = (torch.from_numpy(self.buf[k][idx]) for k in ("s", "a", "r", "s2", "d"))
        with torch.no_grad():
            q_next = self.critic_t(torch.cat([s2, self.actor_t(s2)], 1))
            target = r + self.cfg.discount * (1 - d) * q_next
        q = self.critic(torch.cat([s, a], 1))
        critic_loss = nn.functional.mse_loss(q, target)
        self.opt_c.zero_grad()
        critic_loss.backward()
        self.opt_c.step()
        actor_loss = -self.critic(torch.cat([s, self.actor(s)], 1)).mean()
        if self.cfg.imitate > 0 and len(self.elite_a):
            es, ea = torch.from_numpy(self.elite_s), torch.from_numpy(self.elite_a)
            actor_loss = actor_loss + self.cfg.imitate * nn.functional.mse_loss(self.actor(es), ea)
        self.opt_a.zero_grad()
        actor_loss.backward()
        self.opt_a.step()
        with torch.no_grad():
            for net, tgt in ((self.actor, self.actor_t), (self.critic, self.critic_t)):
                for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                    pt.mul_(1 - self.cfg.tau).add_(self.cfg.tau * p)
        return {"critic_loss": critic_loss.item(), "actor_loss": actor_loss.item()}

    # --------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        """Write networks, optimizers, replay buffer, noise, baseline and RNG state."""
        state = {
            "nets": {n: getattr(self, n).state_dict() for n in ("actor", "critic", "actor_t", "critic_t")},
            "opt_a": self.opt_a.state_dict(), "opt_c": self.opt_c.state_dict(),
            "buf": {k: torch.from_numpy(v[: self.size].copy()) for k, v in self.buf.items()},
            "size": self.size, "ptr": self.ptr, "sigma": self.sigma,
            "baseline": self.baseline if self.baseline is not None else float("nan"),
            "episodes": self.episodes, "rng": json.dumps(self.rng.bit_generator.state),
            "elite_reward": self.elite_reward, "elite_s": torch.from_numpy(self.elite_s),
            "elite_a": torch.from_numpy(self.elite_a),
            "cfg": json.dumps(asdict(self.cfg)),
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)

    def load(self, path: str | Path) -> None:
        """Restore everything :meth:`save` wrote (``weights_only`` loading)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        for n, sd in state["nets"].items():
            getattr(self, n).load_state_dict(sd)
        self.opt_a.load_state_dict(state["opt_a"])
        self.opt_c.load_state_dict(state["opt_c"])
        self.size, self.ptr = int(state["size"]), int(state["ptr"])
        for k, v in state["buf"].items():
            self.buf[k][: self.size] = v.numpy()
        self.sigma, self.episodes = float(state["sigma"]), int(state["episodes"])
        b = float(state["baseline"])
        self.baseline = None if np.isnan(b) else b
        self.rng.bit_generator.state = json.loads(state["rng"])
        if "elite_s" in state:  # agents saved before self-imitation have none
            self.elite_reward = float(state["elite_reward"])
            self.elite_s, self.elite_a = state["elite_s"].numpy(), state["elite_a"].numpy()
