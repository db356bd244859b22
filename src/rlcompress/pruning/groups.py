"""Structured pruning of any CNN by coupled channel groups, each one proven exact.

Channels that meet are pruned together: a residual add couples every conv that writes into the
sum and every layer that reads it; a depthwise conv couples the expansion conv before it and
the projection after it; a concatenation maps channel ranges back to their producers. The
dependency graph comes from Torch-Pruning (``torch-pruning``), which builds these groups for
torchvision-style networks; rlcompress scores, chooses and *checks* the channels itself:

* **score**: each producer in a group (a conv or linear whose output channels are pruned)
  scores its filters with a registered criterion (FPGM by default); the scores are divided by
  that layer's mean score (FPGM sums grow with a layer's width and weight scale) and averaged
  over the producers, one importance per group channel;
* **choose**: ``num_pruned(channels, rate)`` lowest-scored channels, at a per-group rate or a
  uniform one; groups with a protected layer, grouped (not depthwise) convs or a norm over
  channels (group or layer norm) are left whole, and the layers that produce the model's output
  are never roots;
* **check**: before a group's pruning is kept, the pruned network must compute what the network
  with those channels masked computes (producers' filters, biases and batch-norm scale and shift
  set to zero) on random inputs, to ``atol``. Where it does not (an op that maps zero to
  something else, e.g. a sigmoid gate, or any pattern the graph library gets wrong) the group
  is restored and reported whole: never silently wrong.

Torch-Pruning breaks the option-A CIFAR ResNets (REFERENCES.md), which keep their own exact
path (:func:`~rlcompress.pruning.physical.shrink_resnet`).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from rlcompress.models.shapes import PLAIN_CONVS as CONVS
from rlcompress.models.shapes import fold_parametrizations
from rlcompress.pruning.criteria import CRITERIA, num_pruned
from rlcompress.pruning.measure import count_flops, count_params


def _tp():  # noqa: ANN202 - the module
    try:
        import torch_pruning
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise ImportError("coupled channel pruning needs torch-pruning: "
                          "pip install 'torch-pruning>=1.6'") from exc
    return torch_pruning


@dataclass
class GroupPruneConfig:
    """How channel groups are pruned.

    Attributes:
        rate: fraction of each group's channels to prune (a group's own rate overrides it).
        criterion: filter criterion from the registry (``fpgm``, ``l1``, ``l2``).
        protect: names of layers that must stay untouched (every group containing one is kept).
        atol: largest output difference from the masked network accepted for a pruned group.
        check_batch: random inputs used for the check.
        seed: seed of those inputs.
    """

    rate: float = 0.4
    criterion: str = "fpgm"
    protect: tuple[str, ...] = ()
    atol: float = 1e-5
    check_batch: int = 4
    seed: int = 0

    def __post_init__(self) -> None:  # noqa: D105
        if not 0.0 <= self.rate < 1.0:
            raise ValueError(f"GroupPruneConfig.rate must be in [0, 1), got {self.rate}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown criterion {self.criterion!r}; known: {sorted(CRITERIA)}")


@dataclass
class GroupRecord:
    """One channel group: its members, what was pruned and what it saved."""

    name: str
    members: list[str]
    channels: int
    pruned: int = 0
    rate: float = 0.0
    status: str = "pruned"
    reason: str = ""
    params_saved: int = 0
    flops_saved: int = 0
    bytes_saved: int = 0
    max_abs_diff: float = 0.0


@dataclass
class GroupReport:
    """What coupled pruning did to a model."""

    groups: list[GroupRecord] = field(default_factory=list)
    params_before: int = 0
    params_after: int = 0
    flops_before: int = 0
    flops_after: int = 0
    convs: int = 0
    convs_shrunk: int = 0

    @property
    def kept_whole(self) -> dict[str, str]:
        """Group name -> why it was left whole."""
        return {g.name: g.reason for g in self.groups if g.status != "pruned"}

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {**asdict(self), "kept_whole": self.kept_whole}


def _members(dg: object, group: object) -> list[str]:
    names = []
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, nn.Module) and m in dg._module2name:
            name = dg._module2name[m]
            if name not in names:
                names.append(name)
    return names


def _producers(group: object, tp: object) -> list[tuple[nn.Module, list[int], list[int]]]:
    """(layer, its channel indices, the group's indices) of every conv/linear whose output
    channels the group prunes."""
    out = []
    for item in group:
        dep, idxs = item.dep, item.idxs
        m = dep.target.module
        is_out = dep.handler in (tp.prune_conv_out_channels, tp.prune_linear_out_channels,
                                 tp.prune_depthwise_conv_out_channels)
        if is_out and isinstance(m, (*CONVS, nn.Linear)):
            out.append((m, [int(i) for i in idxs], [int(i) for i in item.root_idxs]))
    return out


class GraphError(ValueError):
    """The dependency graph maps a group's channels to indices its layers do not have."""


def group_scores(group: object, channels: int, criterion: str = "fpgm") -> torch.Tensor:
    """One importance per group channel: each producer's filter scores over its mean, averaged
    over the producers (lower is pruned first)."""
    tp = _tp()
    total = torch.zeros(channels, dtype=torch.float64)
    count = torch.zeros(channels, dtype=torch.float64)
    for layer, idxs, root in _producers(group, tp):
        # Torch-Pruning follows a reshape (a channel shuffle) or a channel pad (an option-A
        # shortcut) with index arithmetic that can land outside the layer; such a group cannot
        # be trusted at all
        if max(idxs, default=0) >= layer.weight.shape[0] or max(root, default=0) >= channels:
            raise GraphError("the graph maps the group's channels outside a layer (index "
                             "arithmetic through a channel pad, a reshape or a channel shuffle)")
        scores = CRITERIA[criterion](layer.weight.detach()).double()
        scores = scores / scores.mean().clamp(min=1e-12)
        total.index_add_(0, torch.tensor(root), scores[idxs])
        count.index_add_(0, torch.tensor(root), torch.ones(len(root), dtype=torch.float64))
    return total / count.clamp(min=1)


@torch.no_grad()
def _mask_group(group: object, tp: object) -> None:
    """Zero what the group's channels produce: producer filters and biases, and the scale and
    shift of the batch norms on them."""
    for item in group:
        m, idxs = item.dep.target.module, [int(i) for i in item.idxs]
        out_fns = (tp.prune_conv_out_channels, tp.prune_linear_out_channels,
                   tp.prune_depthwise_conv_out_channels, tp.prune_batchnorm_out_channels)
        if item.dep.handler not in out_fns or not isinstance(m, nn.Module):
            continue
        for p in (getattr(m, "weight", None), getattr(m, "bias", None)):
            if isinstance(p, torch.Tensor):
                p[idxs] = 0


def _grouped_conv(dg: object, group: object) -> str:
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, CONVS) and 1 < m.groups < m.in_channels:
            return f"{dg._module2name.get(m, '?')} is a grouped conv ({m.groups} groups)"
    return ""


def _channel_norm(dg: object, group: object) -> str:
    for dep, _ in group:
        m = dep.target.module
        if isinstance(m, (nn.GroupNorm, nn.LayerNorm)):
            return (f"{dg._module2name.get(m, '?')} is a {type(m).__name__}: its statistics run "
                    "over the channels, so removing some changes every other")
    return ""


def output_layers(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The conv and linear layers whose result the model returns as it is: their output
    channels are the model's outputs (class scores), never a width to prune."""
    seen: list[tuple[torch.Tensor, nn.Module]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: seen.append((out, mod)))
             for m in model.modules() if isinstance(m, (*CONVS, nn.Linear))]
    try:
        with torch.no_grad():
            y = model(example)
    finally:
        for h in hooks:
            h.remove()
    outs = list(y.values()) if isinstance(y, dict) else list(y) if isinstance(y, (tuple, list)) else [y]
    return [mod for out, mod in seen if any(out is o for o in outs)]


def _owners(model: nn.Module, group: object) -> list[nn.Module]:
    """The modules holding the bare parameters a group prunes (a layer scale, a user's gain):
    Torch-Pruning targets the parameter itself, so restoring the members alone would leave it
    shrunk."""
    bare = {id(dep.target.module) for dep, _ in group if isinstance(dep.target.module, nn.Parameter)}
    return [m for m in model.modules()
            if any(id(p) in bare for p in m.parameters(recurse=False))] if bare else []


def _first_line(exc: Exception, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _snapshot(modules: list[nn.Module]) -> list[tuple[nn.Module, dict]]:
    return [(m, copy.deepcopy(m.__dict__)) for m in modules]


def _restore(saved: list[tuple[nn.Module, dict]]) -> None:
    for m, state in saved:
        m.__dict__.clear()
        m.__dict__.update(state)


def prune_groups(model: nn.Module, example: torch.Tensor, cfg: GroupPruneConfig | None = None,
                 rates: dict[str, float] | None = None) -> tuple[nn.Module, GroupReport]:
    """A physically pruned copy of ``model`` and the report of every channel group.

    ``example`` is one input batch (its shape is what the graph is traced with). ``rates`` maps
    a group's name (its first conv, as reported) to its own rate. The caller's model is not
    modified; in the copy, weight reparametrizations (weight_norm, ...) are folded into plain
    weights (:func:`~rlcompress.models.shapes.fold_parametrizations`).
    """
    tp, cfg, rates = _tp(), cfg or GroupPruneConfig(), rates or {}
    model = copy.deepcopy(model).eval()
    fold_parametrizations(model)  # Torch-Pruning cannot resize weight_norm's g and v
    names = {n for n, _ in model.named_modules()}
    missing = [p for p in cfg.protect if p not in names]
    if missing:
        raise KeyError(f"protected layers not in the model: {missing}")
    shape = tuple(example.shape[1:])
    report = GroupReport(params_before=count_params(model),
                         flops_before=count_flops(model, (1, *shape)))
    before = {n: (m.in_channels, m.out_channels) for n, m in model.named_modules()
              if isinstance(m, CONVS)}
    # Torch-Pruning follows the autograd graph: a frozen layer (requires_grad=False) would be
    # missing from it, and its channels left unpruned while its neighbours shrink
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    for p in model.parameters():
        p.requires_grad_(True)
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    x = torch.randn(cfg.check_batch, *shape, generator=torch.Generator().manual_seed(cfg.seed))
    for name, channels, failure in _roots(dg, output_layers(model, example)):
        if failure:
            report.groups.append(GroupRecord(name=name, members=[name], channels=channels,
                                             status="kept whole", reason=failure))
            continue
        report.groups.append(_prune_one(model, dg, tp, name, channels, rates.get(name, cfg.rate),
                                        cfg, x))
    for n, p in model.named_parameters():  # pruned layers hold new Parameters
        p.requires_grad_(n not in frozen)
    report.params_after = count_params(model)
    report.flops_after = count_flops(model, (1, *shape))
    report.convs = len(before)
    report.convs_shrunk = sum(1 for n, m in model.named_modules()
                              if isinstance(m, CONVS) and (m.in_channels, m.out_channels)
                              != before[n])
    return model, report


def _roots(dg: object, ignored: list[nn.Module]) -> list[tuple[str, int, str]]:
    """(name, channels, why it cannot be pruned or "") of every group's root, in the graph's
    order. Torch-Pruning's own ``get_all_groups`` does this, but one group it cannot build (a
    conv feeding a GRU) raises inside its generator and ends the walk for every other group.
    Linear layers are roots too: an MLP's hidden width (a ConvNeXt block's, a VGG head's) is as
    removable as a conv's, and a linear SE gate couples into the conv channels it scales."""
    ignored = [*ignored, *getattr(dg, "IGNORED_LAYERS_IN_TRACING", [])]
    visited: set[int] = set()
    out = []
    for m in list(dg.module2node):
        if not isinstance(m, (*CONVS, nn.Linear)) or id(m) in visited or any(m is i for i in ignored):
            continue
        pruner = dg.get_pruner_of_module(m)
        channels = pruner.get_out_channels(m) if pruner is not None else None
        if channels is None:
            continue
        name = dg._module2name[m]
        try:
            group = dg.get_pruning_group(m, pruner.prune_out_channels, list(range(channels)))
        except (IndexError, KeyError, ValueError, RuntimeError) as exc:
            visited.add(id(m))
            out.append((name, channels, f"the graph library cannot build its group ({_first_line(exc)})"))
            continue
        prunable = True
        for dep, _ in group:
            if dg.is_out_channel_pruning_fn(dep.handler):
                visited.add(id(dep.target.module))
                prunable = prunable and not any(dep.target.module is i for i in ignored)
        if prunable and len(group):
            out.append((name, channels, ""))
    return out


def _prune_one(model: nn.Module, dg: object, tp: object, name: str, channels: int, rate: float,
               cfg: GroupPruneConfig, x: torch.Tensor) -> GroupRecord:
    """Prune one group in place if its check passes; restore it otherwise."""
    root = model.get_submodule(name)
    prune_out = dg.get_pruner_of_module(root).prune_out_channels
    full = dg.get_pruning_group(root, prune_out, list(range(channels)))
    members = _members(dg, full)
    record = GroupRecord(name=name, members=members, channels=channels, rate=rate)
    n_prune = num_pruned(channels, rate) if channels > 1 else 0
    reason = (f"protected layer {sorted(set(members) & set(cfg.protect))[0]}"
              if set(members) & set(cfg.protect) else _grouped_conv(dg, full)
              or _channel_norm(dg, full) or ("rate 0" if n_prune == 0 else ""))
    if not reason:
        try:
            order = torch.sort(group_scores(full, channels, cfg.criterion), stable=True).indices
        except GraphError as exc:
            reason = str(exc)
    if reason:
        record.status, record.reason, record.rate = "kept whole", reason, 0.0
        return record
    idxs = sorted(order[:n_prune].tolist())
    group = dg.get_pruning_group(root, prune_out, idxs)
    shape = (1, *x.shape[1:])
    params, flops = count_params(model), count_flops(model, shape)
    saved = _snapshot([model.get_submodule(m) for m in members] + _owners(model, group))
    with torch.no_grad():
        _mask_group(group, tp)
        want = model(x)  # the channels masked, full width
        _restore(copy.deepcopy(saved))
        got, failure = None, ""
        try:  # the graph library's errors, and layers it missed, mean "keep the group whole"
            group.prune()
            got = model(x)
        except (RuntimeError, IndexError, ValueError, KeyError, AttributeError) as exc:
            failure = f"the pruned network fails to run ({_first_line(exc)})"
    if got is None or got.shape != want.shape:
        diff = float("inf")
    else:
        diff = float((got - want).abs().max())
    if diff > cfg.atol:
        _restore(saved)
        record.status, record.rate, record.max_abs_diff = "kept whole", 0.0, diff
        record.reason = failure or ("its channels reach the model's output (pruning them changes "
                                    "the output shape)" if diff == float("inf")
                                    else f"pruned output differs from the masked one by "
                                    f"{diff:.2g} (an op that does not map zero to zero, or a "
                                    "pattern the graph gets wrong)")
        return record
    record.pruned, record.max_abs_diff = len(idxs), diff
    record.params_saved = params - count_params(model)
    record.flops_saved = flops - count_flops(model, shape)
    record.bytes_saved = 4 * record.params_saved
    return record
