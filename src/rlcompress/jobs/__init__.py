"""Jobs: what the CLI subcommands call. Each loads its inputs, runs the library stages in a
resumable run directory and writes a summary; the stages below never import this layer."""

from rlcompress.jobs.prune import MODES, prune
from rlcompress.jobs.search import search, search_resume
from rlcompress.jobs.share import evaluate_file, export, share
from rlcompress.jobs.train import baseline, evaluate_checkpoint, resolve_model, train

__all__ = [
    "MODES",
    "baseline",
    "evaluate_checkpoint",
    "evaluate_file",
    "export",
    "prune",
    "resolve_model",
    "search",
    "search_resume",
    "share",
    "train",
]
