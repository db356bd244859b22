"""Weight sharing: 1-D k-means per layer (optionally Fisher-weighted), shared layers with
trainable codebooks, trained quantization, k policies."""

from rlcompress.clustering.kmeans import (
    INITS,
    METHODS,
    Clustering,
    ClusterMethod,
    cluster_1d,
    exact_1d,
    init_centroids,
    lloyd_1d,
    register_method,
)
from rlcompress.clustering.policies import (
    POLICIES,
    RULE_POLICIES,
    proportional,
    register_policy,
    resolve_policy,
    uniform,
)
from rlcompress.clustering.qat import (
    freeze_qat,
    is_qat,
    make_qat,
    prepare_qat,
    qat_layers,
    qat_model,
    qat_taus,
)
from rlcompress.clustering.sensitivity import fisher_importance
from rlcompress.clustering.sharing import (
    DATA_FREE,
    PAPER,
    ClusterCache,
    ShareConfig,
    cluster_layer,
    clusterable_layers,
    is_shared,
    kept_weight_count,
    make_shared,
    prepare_shared,
    share_layer,
    share_model,
    shared_layers,
    shared_weight,
    surviving_mask,
    unshare,
)
from rlcompress.models.registry import register_spec_hook

__all__ = [
    "DATA_FREE",
    "PAPER",
    "ClusterMethod",
    "cluster_layer",
    "fisher_importance",
    "freeze_qat",
    "is_qat",
    "make_qat",
    "prepare_qat",
    "qat_layers",
    "qat_model",
    "qat_taus",
    "register_method",
    "INITS",
    "METHODS",
    "POLICIES",
    "RULE_POLICIES",
    "ClusterCache",
    "Clustering",
    "ShareConfig",
    "cluster_1d",
    "clusterable_layers",
    "exact_1d",
    "init_centroids",
    "is_shared",
    "kept_weight_count",
    "lloyd_1d",
    "make_shared",
    "prepare_shared",
    "proportional",
    "register_policy",
    "resolve_policy",
    "share_layer",
    "share_model",
    "shared_layers",
    "shared_weight",
    "surviving_mask",
    "unshare",
    "uniform",
]


def _prepare_from_spec(model: object, spec: dict) -> None:
    # "qat": a checkpoint taken during trained quantization (latent weights kept), with its
    # layers' DKM temperatures when it trains through soft assignment
    qat = spec.get("qat")
    if qat:
        prepare_qat(model, spec["sharing"], qat.get("tau") if isinstance(qat, dict) else None)
    else:
        prepare_shared(model, spec["sharing"])


register_spec_hook("sharing", _prepare_from_spec)
