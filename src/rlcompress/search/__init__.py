"""Search for a per-layer k policy under a size budget: environment, DDPG, random search."""

from rlcompress.search.budget import Budget, BudgetError, file_budget, paper_budget, parse_size
from rlcompress.search.ddpg import DDPGAgent, DDPGConfig
from rlcompress.search.env import ClusterEnv, action_to_k, k_to_action, layer_features
from rlcompress.search.evaluator import PolicyEvaluator
from rlcompress.search.runner import (
    SearchConfig,
    check_budget,
    make_budget,
    paper_ratio_of,
    run_search,
)
from rlcompress.search.strategies import (
    STRATEGIES,
    RandomStrategy,
    make_strategy,
    register_strategy,
)

__all__ = [
    "STRATEGIES",
    "Budget",
    "BudgetError",
    "ClusterEnv",
    "DDPGAgent",
    "DDPGConfig",
    "PolicyEvaluator",
    "RandomStrategy",
    "SearchConfig",
    "action_to_k",
    "check_budget",
    "file_budget",
    "k_to_action",
    "layer_features",
    "make_budget",
    "make_strategy",
    "paper_budget",
    "paper_ratio_of",
    "parse_size",
    "register_strategy",
    "run_search",
]
