"""The library API for a user's own model and data: ``compress`` and ``load``.

``compress`` runs the whole method on any CNN: FPGM masks on every conv, physical removal
where it is provably exact (the rest stays masked and is reported), fine-tuning, the k search
under the budget, weight sharing with centroid fine-tuning, and the ``.rlc`` export. Data is
either an :class:`~rlcompress.data.ImageData` or the user's DataLoaders.
"""

from __future__ import annotations

import copy
import hashlib
import json
import numbers
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from rlcompress.clustering.qat import freeze_qat
from rlcompress.clustering.quantize import hard_bn_hook, quantize, sharing_spec
from rlcompress.clustering.sharing import ShareConfig
from rlcompress.codec import float_state_bytes, layer_weight_count, load_compressed, save_compressed
from rlcompress.codec.sizes import size_report
from rlcompress.data import DataConfig, ImageData, data_digest, load_data
from rlcompress.data.loaders import LoaderData
from rlcompress.engine import TrainConfig, evaluate_model, fit
from rlcompress.engine.train import PRUNE_SELECT
from rlcompress.fileio import write_json
from rlcompress.models import (
    apply_layer_shapes,
    load_state_dict_file,
    load_weights,
    weights_digest,
)
from rlcompress.models.resnet_cifar import ARCH
from rlcompress.models.shapes import fold_parametrizations
from rlcompress.models.user import import_model
from rlcompress.pruning import FilterMasks, PruneConfig, layer_shapes, shrink_resnet
from rlcompress.pruning.groups import GroupPruneConfig, prune_groups
from rlcompress.rundir import claim
from rlcompress.search import DDPGConfig, SearchConfig, check_budget, run_search
from rlcompress.search.allocators import ALLOCATORS
from rlcompress.search.joint import prunes_nothing


def _data(data: ImageData | LoaderData | None, train_loader: object, val_loader: object,
          test_loader: object) -> ImageData | LoaderData:
    if data is not None:
        return data
    if train_loader is None or val_loader is None:
        raise ValueError("give either data=ImageData(...) or train_loader and val_loader")
    return LoaderData(train_loader, val_loader, test_loader)


def _example(data: ImageData | LoaderData, n: int = 1) -> torch.Tensor:
    if isinstance(data, LoaderData):
        return torch.zeros(n, *data.input_shape)
    h, w, c = data.train.images.shape[1:]
    return torch.zeros(n, c, h, w)


def _unwrapped(model: nn.Module) -> nn.Module:
    """The module inside ``torch.compile``'s or a data-parallel wrapper: every stage traces,
    prunes, swaps layers and trains it eagerly on one device (a compiled graph would go stale
    at the first change, and the wrappers' state names carry an ``_orig_mod.`` or ``module.``
    prefix); compile or wrap the returned model again."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if type(model).__name__ == "OptimizedModule" and isinstance(inner, nn.Module):
            model = inner
        elif isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        else:
            return model


def _copy(model: nn.Module) -> nn.Module:
    model = _unwrapped(model)
    try:
        return copy.deepcopy(model)
    except RuntimeError as exc:  # torch's deprecated hook forms hold a computed, uncopyable weight
        raise ValueError(
            f"the model cannot be copied ({str(exc).split('.')[0]}); the deprecated "
            "torch.nn.utils.weight_norm / spectral_norm are the usual cause: use "
            "torch.nn.utils.parametrizations.weight_norm / spectral_norm, or call "
            "torch.nn.utils.remove_weight_norm on each layer first") from exc


def _check_outputs(model: nn.Module, data: ImageData | LoaderData) -> None:
    """Every stage scores the model's output as one row of class scores per input; a model
    that returns a tuple or dict (logits and features, say) or too few scores for the labels
    would fail deep inside the first evaluation, so it fails here with what to change."""
    with torch.no_grad():
        out = model(_example(data, 2))
        # compress trains the model too: a forward that differs in training (auxiliary heads,
        # as in GoogLeNet or Inception-v3) is checked on a copy, whose batch norms may move
        trained = copy.deepcopy(model).train()(_example(data, 2))
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returns a {type(out).__name__}; compress needs a model "
                         "whose forward returns one (batch, classes) tensor of class scores: "
                         "wrap it in a module that returns the logits alone")
    if not isinstance(trained, torch.Tensor):
        raise ValueError(f"in training mode the model returns a {type(trained).__name__} "
                         "(auxiliary heads?); compress fine-tunes it, so its forward must return "
                         "the logits alone in training too: wrap it, or drop the extra heads")
    if out.dim() != 2 or out.shape[0] != 2:
        raise ValueError(f"the model returns a tensor of shape {tuple(out.shape)} for 2 inputs; "
                         "compress needs one row of class scores per input, (batch, classes)")
    if out.shape[1] < data.num_classes:
        raise ValueError(f"the model returns {out.shape[1]} class scores, but the labels reach "
                         f"class {data.num_classes - 1}")


def _prune(model: nn.Module, spec: dict | None, rate: float, example: torch.Tensor,
           protect: tuple[str, ...] = (), rates: dict[str, float] | None = None):
    origin = {"weights": layer_weight_count(model), "state_bytes": float_state_bytes(model)}
    if spec is not None and spec.get("arch") == ARCH:
        masks = FilterMasks.compute(model, PruneConfig(rate=rate, rates=rates or {}))
        masks.apply(model)
        small, small_spec = shrink_resnet(model, spec, masks)
        return small, {**small_spec, "origin": origin}, {}, {}
    # any other network: coupled channel groups, each checked against its masked original
    small, report = prune_groups(model, example, GroupPruneConfig(rate=rate, protect=protect),
                                 rates=rates)
    small_spec = {"arch": "user", "shapes": layer_shapes(small)}
    _check_rebuild(model, small, small_spec)
    _check_trains(small, example)
    return small, {**small_spec, "origin": origin}, report.kept_whole, report.to_dict()


def _check_trains(small: nn.Module, example: torch.Tensor) -> None:
    """The pruner traces and checks the model in inference mode; a layer used only in training
    would keep its width and fail at the first fine-tuning step, so it fails here."""
    try:
        with torch.no_grad():
            copy.deepcopy(small).train()(example.expand(2, *example.shape[1:]))
    except RuntimeError as exc:
        raise ValueError(f"the pruned model fails in training mode ({str(exc).splitlines()[0]}): "
                         "a layer it uses only in training was not pruned with its inputs; "
                         "protect the layers that feed it (protect=...)") from exc


def _check_rebuild(original: nn.Module, small: nn.Module, spec: dict) -> None:
    """The file is loaded back into a fresh instance resized to ``spec``; a tensor the pruner
    shrank in a layer kind the spec cannot resize would fail there, after all the training, so
    it fails here instead."""
    skeleton = apply_layer_shapes(copy.deepcopy(original), spec["shapes"]).state_dict()
    bad = [n for n, t in small.state_dict().items()
           if n in skeleton and tuple(skeleton[n].shape) != tuple(t.shape)]
    if bad:
        layers = sorted({n.rpartition(".")[0] for n in bad})
        kinds = ", ".join(f"{n} ({type(small.get_submodule(n)).__name__})" for n in layers)
        raise ValueError(f"pruning resized {kinds}, a kind of layer whose width a compressed "
                         "file cannot record yet; protect the convs that feed it (protect=...)")


def _finetune(model: nn.Module, spec: dict, data: ImageData | LoaderData, cfg: TrainConfig,
              run: Path, hooks: list, teacher: nn.Module | None = None,
              eval_hooks: list | None = None) -> None:
    fit(model, spec, data, cfg, run, resume=True, step_hooks=hooks, teacher=teacher,
        eval_hooks=eval_hooks)
    load_weights(model, load_state_dict_file(run / "best.safetensors"))


def _as_float32(model: nn.Module) -> nn.Module:
    """``model`` in float32, with a warning when it was not: training and search run under
    autocast and the file stores float32 codebooks, so a float64 or float16 model would fail
    at its first convolution."""
    kinds = {t.dtype for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()}
    if kinds - {torch.float32}:
        names = ", ".join(sorted(str(k).removeprefix("torch.") for k in kinds))
        warnings.warn(f"the model holds {names} tensors; compressing a float32 copy",
                      stacklevel=3)
        model.float()
    return model


def _stage(progress: bool):  # noqa: ANN202 - a small closure
    """Prints a header per stage, so the epochs and bars under it say which stage they are."""
    def say(i: int, what: str) -> None:
        if progress:
            print(f"[{i}/3] {what}", file=sys.stderr, flush=True)
    return say


def _epochs(n: int) -> str:
    return f"{n} fine-tuning epoch{'' if n == 1 else 's'}"


def _check_args(target_size: object, target_ratio: object, out: Path, **counts: object) -> None:
    """Arguments the configs below would take or reject only after some work."""
    if (target_size is None) == (target_ratio is None):
        raise ValueError("give exactly one of target_size and target_ratio")
    if target_ratio is not None and not target_ratio > 0:
        raise ValueError(f"target_ratio must be a number > 0, got {target_ratio!r}")
    for name, value in counts.items():
        if not isinstance(value, numbers.Integral) or value < 0:
            raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder; {out} is a file")


def _claim_out(out: Path, model: nn.Module, settings: dict, data: ImageData | LoaderData) -> None:
    """Every stage of ``compress`` resumes from ``out``, so a second call with another model,
    other settings (a smaller budget) or other data would silently reuse the first call's
    search and fine-tunes. Record all three there and refuse others (a folder made before the
    data was recorded takes this call's)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    marker, advice = out / "compress.json", "choose another out, or delete it to start again"
    claim(marker, "model", weights_digest(model), f"{out} holds the compression of another model: {advice}")
    claim(marker, "settings", hashlib.sha256(text.encode()).hexdigest()[:16],
          f"{out} holds a compression made with other settings: {advice}")
    claim(marker, "data", data_digest(data),
          f"{out} holds a compression made on other data: {advice}")


def compress(
    model: nn.Module,
    train_loader: object = None,
    val_loader: object = None,
    test_loader: object = None,
    *,
    data: ImageData | LoaderData | None = None,
    spec: dict | None = None,
    target_size: str | int | None = None,
    target_ratio: float | None = None,
    prune_rate: float = 0.4,
    prune_epochs: int = 3,
    episodes: int = 100,
    share_epochs: int = 3,
    distill: float = 0.9,
    lr: float = 0.01,
    val_images: int = 2000,
    out: str | Path = "runs/compress",
    seed: int = 0,
    progress: bool = True,
    precision: str = "bf16",
    threads: int = 0,
    share: ShareConfig | None = None,
    protect: tuple[str, ...] = (),
    compact_bn: bool = False,
    prune_rates: str | tuple[float, ...] | None = None,
    strategy: str = "ddpg",
) -> tuple[nn.Module, dict]:
    """Compress ``model`` to ``target_size`` bytes (e.g. ``"48KB"``) or a paper ``target_ratio``.

    Returns the decoded compressed model (loaded back from ``out/model.rlc``) and a report
    with validation (and test, if a test loader or split exists) accuracy before and after,
    the file size and both ratios. ``spec`` is needed only for spec-driven registry models
    (e.g. the CIFAR ResNets); any other ``nn.Module`` works without one. ``distill`` weighs
    distillation from the pruned model while the shared model is fine-tuned (0: labels only).
    ``share`` sets the clustering method and fine-tuning mode (default :class:`ShareConfig`:
    Fisher-weighted clustering, batch-norm re-estimation, trained quantization).
    Any network other than the CIFAR ResNets is pruned by coupled channel groups
    (:mod:`rlcompress.pruning.groups`); ``protect`` names layers left untouched, and the report's
    ``pruning_groups`` lists every group, its members, rate and savings. ``compact_bn`` stores
    batch norms as inference scale and shift (a smaller file for deployment).
    ``threads``: CPU threads for every stage (0: whatever ``torch.get_num_threads()`` is now,
    so the caller's setting is kept).
    ``prune_rates`` (e.g. ``"0,0.2,0.4,0.6"``) switches to the joint search: the dense model is
    searched for a pruning rate per exactly removable channel chain and a k per layer under
    the one budget (:mod:`rlcompress.search.joint`), then pruned at those rates, fine-tuned and
    shared; ``prune_rate`` is then unused, and ``protect`` keeps its layers out of the search's
    chains as well as out of the pruner. It is not the default here (it is for ``rlcompress
    run``): its chains are plain conv-to-conv and linear-to-linear links, so it cannot prune
    the depthwise and inverted-residual groups the coupled-group pruner handles in networks
    like MobileNetV2.
    ``strategy``: how k (and, joint, the rates) are chosen: ``ddpg`` (the paper's agent,
    ``episodes`` episodes), ``random``, or a one-shot allocator (``greedy``, ``hessian``,
    ``uniform``; one policy from measured sensitivities, minutes instead of an hour). At
    ResNet-20's 16x file budget ``greedy`` ended about one validation point above DDPG.
    Every stage resumes from ``out``: calling again continues an interrupted call, and a call
    with another model, other settings or other data there is a ValueError
    (``out/compress.json`` records the three digests; :func:`rlcompress.data.data_digest`
    says what it reads of a user's loaders).
    """
    threads = threads or torch.get_num_threads()
    _check_args(target_size, target_ratio, Path(out), prune_epochs=prune_epochs,
                share_epochs=share_epochs, episodes=episodes, val_images=val_images)
    data = _data(data, train_loader, val_loader, test_loader)
    out = Path(out)
    # the caller's model is never modified; every stage moves its copy to its own device
    original = _as_float32(_copy(model).cpu().eval())
    folded = fold_parametrizations(original)
    if folded:
        warnings.warn(f"weight_norm / spectral_norm / parametrizations on {', '.join(folded)} "
                      "are folded into plain weights in the compressed model", stacklevel=2)
    _check_outputs(original, data)
    settings = {"spec": spec, "target_size": target_size, "target_ratio": target_ratio,
                "prune_rate": prune_rate, "prune_epochs": prune_epochs, "episodes": episodes,
                "share_epochs": share_epochs, "distill": distill, "lr": lr,
                "val_images": val_images, "seed": seed, "precision": precision,
                "share": share, "protect": protect, "compact_bn": compact_bn,
                "prune_rates": prune_rates, "strategy": strategy}
    if prune_rates is not None and not isinstance(prune_rates, str):
        prune_rates = ",".join(map(str, prune_rates))
    scfg = SearchConfig(strategy=strategy, episodes=episodes, seed=seed, target_ratio=target_ratio or 0.0,
                        target_size=str(target_size or ""), val_images=val_images,
                        progress=progress, precision=precision, threads=threads,
                        compact_bn=compact_bn, prune_rates=prune_rates or "",
                        protect=tuple(protect))
    tcfg = TrainConfig(epochs=prune_epochs, lr=lr, seed=seed, progress=progress,
                       precision=precision, threads=threads, select=PRUNE_SELECT)
    share = share or ShareConfig()
    ddpg = DDPGConfig(warmup=max(1, min(30, episodes // 5)))
    # an impossible budget fails before any work: in the joint space even at the largest rates
    if prune_rates:
        dense_spec = spec if spec is not None else {"arch": "user", "shapes": layer_shapes(original)}
        check_budget(original, dense_spec, scfg)
    else:
        small, small_spec, kept_whole, groups = _prune(copy.deepcopy(original), spec, prune_rate,
                                                       _example(data), protect)
        check_budget(small, small_spec, scfg)
    # claimed only now, so a refused call leaves nothing that would refuse the corrected one
    _claim_out(out, original, settings, data)
    has_test = not isinstance(data, LoaderData) or data.test_loader is not None
    before = {s: evaluate_model(copy.deepcopy(original), data, s, precision)["top1"]
              for s in (("val", "test") if has_test else ("val",))}
    say = _stage(progress)
    search_what = f"{strategy}" + (f", {episodes} episodes" if strategy not in ALLOCATORS else "")
    if prune_rates:
        say(1, f"search: a pruning rate per chain and k per layer ({search_what})")
        found = run_search(copy.deepcopy(original), dense_spec, data, out / "search", scfg, share,
                           ddpg, resume=True)
        small, small_spec, kept_whole, groups = _prune(
            copy.deepcopy(original), spec, 0.0, _example(data), protect, found["best"]["rate"])
        missed = {n: kept_whole[n] for n, r in found["best"]["rate"].items() if r > 0 and n in kept_whole}
        if missed:  # the search counted those bytes as saved
            warnings.warn(f"the search pruned {', '.join(missed)}, but the pruner kept them whole "
                          f"({'; '.join(missed.values())}): the file may exceed the budget",
                          stacklevel=2)
        say(2, f"prune: FPGM at the searched rates, {_epochs(prune_epochs)}")
        if prune_epochs > 0 and not prunes_nothing(found["best"]):  # else nothing to recover
            _finetune(small, small_spec, data, tcfg, out / "prune", [])
    else:
        say(1, f"prune: FPGM at rate {prune_rate}, {_epochs(prune_epochs)}")
        if prune_epochs > 0:
            _finetune(small, small_spec, data, tcfg, out / "prune", [])
        say(2, f"search: k per layer ({search_what})")
        found = run_search(small.eval(), small_spec, data, out / "search", scfg, share, ddpg,
                           resume=True)
    say(3, f"share: clustering, {_epochs(share_epochs)}, then the file")
    # the uncompressed model: the teacher, and the batch-norm reference of the fine-tuning's hook
    unshared = copy.deepcopy(small).eval() if share_epochs > 0 else None
    teacher = unshared if distill > 0 else None
    quantize(small, found["best"]["k"], data, share, trainable=share_epochs > 0)
    layout = sharing_spec(small)
    if share_epochs > 0:
        cfg = TrainConfig(epochs=share_epochs, lr=lr, seed=seed, progress=progress,
                          precision=precision, distill=distill, threads=threads)
        hook = hard_bn_hook(small, unshared, data, share, precision)
        _finetune(small, {**small_spec, **layout}, data, cfg, out / "share", [], teacher,
                  [hook] if hook else None)
        freeze_qat(small)
    path = out / "model.rlc"
    save_compressed(small.eval(), small_spec, path, extra={"k": found["best"]["k"]},
                    compact_bn=compact_bn)
    skeleton = None if small_spec.get("arch") == ARCH else copy.deepcopy(original)
    decoded, _ = load_compressed(path, model=skeleton)
    report = {
        "val_top1_before": round(before["val"], 2),
        "val_top1": round(evaluate_model(decoded, data, "val", precision)["top1"], 2),
        **size_report(decoded, small_spec, path.stat().st_size),
        "file": str(path), "policy": found["best"]["k"], "rates": found["best"].get("rate", {}),
        "layers_kept_whole": kept_whole,
        "pruning_groups": groups,
    }
    if has_test:
        report["test_top1_before"] = round(before["test"], 2)
        report["test_top1"] = round(evaluate_model(decoded, data, "test", precision)["top1"], 2)
    write_json((out / "report.json"), report)
    return decoded, report


def compress_class(
    model: str,
    init: str,
    class_args: str | dict | None = None,
    data: DataConfig | None = None,
    **options: object,
) -> dict:
    """``rlcompress compress``: :func:`compress` a user's own class from the command line.

    ``model`` names the class as ``pkg.module:Class`` or ``file.py:Class``, built with
    ``class_args`` (a dict, or JSON text); ``init`` is its trained weights (``.safetensors`` or
    a torch file, read with ``weights_only=True``); ``data`` the dataset (CIFAR-10 by default,
    or an image folder); ``options`` are :func:`compress`'s. Returns the report."""
    if not init or init in ("scratch", "baseline", "pretrained"):
        raise ValueError("compress needs the trained weights of your model: --init PATH "
                         "(.safetensors, .pt, .pth)")
    net = import_model(model, class_args)
    load_weights(net, load_state_dict_file(init))
    dataset = load_data(data or DataConfig(), progress=bool(options.get("progress", True)))
    _, report = compress(net, data=dataset, **options)
    return report


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """Load an ``.rlc`` file as a model (``model``: a fresh instance, for a user's own class;
    a ``torch.compile``-d one is filled through the module it wraps)."""
    return load_compressed(path, _unwrapped(model) if model is not None else None)[0]
