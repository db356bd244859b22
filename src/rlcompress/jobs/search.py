"""The ``rlcompress search`` job: load a model, run the search in a run directory, resume it."""

from __future__ import annotations

import json
from pathlib import Path

from rlcompress.clustering.sharing import ShareConfig
from rlcompress.data import DataConfig, load_data
from rlcompress.jobs.train import default_init, resolve_model
from rlcompress.search import DDPGConfig, SearchConfig, run_search


def search(
    model: str,
    out: str = "runs/search",
    cfg: SearchConfig | None = None,
    share_cfg: ShareConfig | None = None,
    ddpg_cfg: DDPGConfig | None = None,
    data: object = None,
    resume: bool = False,
    init: str | None = None,
) -> dict:
    """CLI job: load a checkpoint (or a pruned run's best model) and run :func:`run_search`.

    With a registered model name, ``init`` gives its weights (a path, ``pretrained``, or by
    default ``baseline``: the committed clean checkpoint)."""
    cfg = cfg or SearchConfig()
    init = default_init(model, init)
    path = Path(model)
    if path.is_dir():  # a prune run directory: its fine-tuned model
        path = path / "finetune" / "best.safetensors"
    dataset = load_data(data or DataConfig(), progress=cfg.progress)
    net, spec = resolve_model(str(path) if path.suffix else model, init, dataset.num_classes,
                              require_weights=True)
    return run_search(net, spec, dataset, out, cfg, share_cfg, ddpg_cfg, resume,
                      source={"model": model, "init": init})


def search_resume(run_dir: str, data: object = None, progress: bool = True) -> dict:
    """Continue the search in ``run_dir`` with the settings and model it recorded."""
    saved = Path(run_dir) / "config.json"
    if not saved.is_file():
        raise FileNotFoundError(f"{saved}: not a search run directory")
    c = json.loads(saved.read_text())
    cfg = saved_search_config(c["search"], progress)
    src = c.get("source") or {}
    if "model" not in src:
        raise ValueError(f"{saved} does not record its model; resume with --model ... --out")
    return search(src["model"], run_dir, cfg, ShareConfig(**c["share"]), DDPGConfig(**c["ddpg"]),
                  data, resume=True, init=src.get("init"))


def saved_search_config(saved: dict, progress: bool = True) -> SearchConfig:
    """The :class:`SearchConfig` a search directory's ``config.json`` recorded. A search
    recorded before session 25 charged the dense model's floats at every pruning rate, so it
    goes on that way (``pruned_float_credit`` off) rather than switch budgets halfway."""
    return SearchConfig(**{"pruned_float_credit": False, **saved, "progress": progress})
