"""Filter pruning: criteria (FPGM, L1, L2), masks on any model, physical removal, and coupled
channel groups for any CNN."""

from rlcompress.pruning.criteria import (
    CRITERIA,
    fpgm_scores,
    keep_indices,
    l1_scores,
    l2_scores,
    num_pruned,
    register_criterion,
)
from rlcompress.pruning.groups import GroupPruneConfig, GroupReport, prune_groups
from rlcompress.pruning.masks import (
    FilterMasks,
    PruneConfig,
    conv_bn_pairs,
    conv_layers,
    paper_weight_counts,
)
from rlcompress.pruning.measure import count_flops, count_params, latency_ms
from rlcompress.pruning.physical import (
    ShrinkReport,
    apply_layer_shapes,
    layer_shapes,
    shrink_generic,
    shrink_resnet,
)

__all__ = [
    "CRITERIA",
    "FilterMasks",
    "GroupPruneConfig",
    "GroupReport",
    "PruneConfig",
    "ShrinkReport",
    "apply_layer_shapes",
    "conv_bn_pairs",
    "conv_layers",
    "count_flops",
    "count_params",
    "fpgm_scores",
    "keep_indices",
    "l1_scores",
    "l2_scores",
    "latency_ms",
    "layer_shapes",
    "num_pruned",
    "paper_weight_counts",
    "prune_groups",
    "register_criterion",
    "shrink_generic",
    "shrink_resnet",
]
