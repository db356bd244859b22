"""Fast accuracy of a k policy on a fixed validation subset (the search's reward signal).

The model is never deep-copied or wrapped per episode: each layer's clustered weight tensor
for a given k is computed once (through the clustering cache) and copied into a working model,
which is then evaluated in inference mode, in bf16 with channels_last on CPU (through a copy
with its batch norms folded into the convs where torch.fx can trace it), on a validation
subset whose inputs are prepared once. With a sensitive clustering method the per-weight
Fisher importances are computed once, from training images; with ``bn_images`` the batch-norm
statistics are re-estimated for every policy on a fixed set of augmented training images (so
the reward sees the model that sharing will produce, and stays a function of the policy).
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlcompress.clustering.sensitivity import fisher_importance
from rlcompress.clustering.sharing import ClusterCache, ShareConfig, layer_indices
from rlcompress.data import ImageData, SplitData, to_model_input
from rlcompress.data.loaders import LoaderData
from rlcompress.engine.batches import calibration_batches
from rlcompress.engine.bn import bn_reference, recalibrate_bn
from rlcompress.engine.evaluate import ranked
from rlcompress.engine.fold import FoldedCopy
from rlcompress.engine.runtime import autocast, to_channels_last


class PolicyEvaluator:
    """Accuracy (%) of the model with each layer clustered to the policy's k."""

    def __init__(
        self,
        model: nn.Module,
        layers: list[str],
        data: ImageData | LoaderData,
        n_val: int = 2000,
        share_cfg: ShareConfig | None = None,
        cache: ClusterCache | None = None,
        precision: str = "bf16",
        batch_size: int = 1000,
        seed: int = 0,
        importance: dict[str, torch.Tensor] | None = None,
        exact: bool = False,
    ) -> None:
        """``importance``: per-weight Fisher importances already computed for this model and
        sharing configuration (another evaluator's), instead of computing them again.
        ``exact``: compute as the share job does (batch norm re-estimated in float32, the
        model evaluated unfolded), so that a policy scores what its finished point will
        validate at without fine-tuning; slower, and bf16 folding changes a few
        near-tie predictions."""
        self.model = to_channels_last(copy.deepcopy(model).eval())
        self.modules = dict(self.model.named_modules())
        self._folded = None if exact else FoldedCopy.of(self.model)
        self.bn_precision = "fp32" if exact else precision
        self.exact = exact
        if self._folded is not None:
            to_channels_last(self._folded.net)
        self.layers = list(layers)
        self.cfg = share_cfg or ShareConfig()
        self.cache = cache or ClusterCache()
        self.precision = precision
        if isinstance(data, LoaderData):
            self.inputs = data.materialise("val", n_val, seed)
        else:
            subset: SplitData = data.val.subset(n_val, seed=seed)
            self.inputs = [
                (to_model_input(subset.images[i : i + batch_size], data.mean, data.std),
                 subset.labels[i : i + batch_size])
                for i in range(0, len(subset), batch_size)
            ]
        self.n = sum(len(y) for _, y in self.inputs)
        self._weights: dict[tuple[str, int], torch.Tensor] = {}
        self._original = {n: self.modules[n].weight.detach().clone() for n in self.layers}
        # weights and batch-norm statistics before any policy re-estimates them
        self._original_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.seconds = {"cluster": 0.0, "evaluate": 0.0, "fisher": 0.0, "bn": 0.0}
        self.importance: dict[str, torch.Tensor] = dict(importance or {})
        if self.cfg.weighted and importance is None:
            t0 = time.perf_counter()
            calib = calibration_batches(data, self.cfg.calibration_images, seed=self.cfg.kmeans_seed)
            self.importance = fisher_importance(self.model, calib, self.layers)
            self.seconds["fisher"] = time.perf_counter() - t0
        self.bn_batches = calibration_batches(data, self.cfg.bn_images, seed=self.cfg.kmeans_seed + 1)
        self.bn_reference = bn_reference(self.model, self.bn_batches, precision=self.bn_precision) \
            if self.bn_batches and self.cfg.bn_mode == "shift" else None
        self.calls = 0
        self.repeats = 0
        # pruning rates of the chains (a joint evaluator's); none here
        self.rates: dict[str, float] = {}
        # a policy's scores are a deterministic function of it: a search that proposes the
        # same policy again (a converging DDPG repeated 30-45% of its 260 frontier episodes)
        # is answered from here instead of re-clustering, re-estimating and re-evaluating
        self._memo: dict[tuple, dict[str, float]] = {}
        self._reference: list[torch.Tensor] | None = None

    def clustered_weight(self, name: str, k: int) -> torch.Tensor:
        """Weight of layer ``name`` after clustering its surviving weights into ``k`` clusters
        (``k`` = 0: the layer's own float weight)."""
        if k == 0:
            return self._original[name]
        key = (name, k)
        if key not in self._weights:
            self._weights[key] = self.cluster(self._original[name], k, name,
                                              self.importance.get(name))
        return self._weights[key]

    def cluster(self, w: torch.Tensor, k: int, name: str,
                importance: torch.Tensor | None = None) -> torch.Tensor:
        """``w`` with its surviving weights replaced by their centroids among ``k`` (pruned
        positions stay zero), timed as clustering."""
        t0 = time.perf_counter()
        res, idx = layer_indices(w, k, self.cfg, self.cache, name, importance)
        book = torch.from_numpy(np.asarray(res.codebook, dtype=np.float64).reshape(-1))
        out = torch.cat([book, book.new_zeros(1)])[idx].to(w.dtype)
        self.seconds["cluster"] += time.perf_counter() - t0
        return out

    @torch.inference_mode()
    def __call__(self, policy: dict[str, int]) -> float:
        """Top-1 accuracy in % on the validation subset."""
        return self.scores(policy, kl=False)["top1"]

    @torch.inference_mode()
    def reference(self) -> list[torch.Tensor]:
        """Log-probabilities of the uncompressed model on the subset (computed once)."""
        if self._reference is None:
            backup = {k: v.clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self._original_state)
            self._reference = [F.log_softmax(self.model(x).float(), 1) for x, _ in self.inputs]
            self.model.load_state_dict(backup)
        return self._reference

    def load_policy(self, policy: dict[str, int]) -> None:
        """Write every layer's clustered weight for ``policy`` into the working model."""
        for name in self.layers:
            self.modules[name].weight.copy_(self.clustered_weight(name, int(policy[name])))

    @torch.inference_mode()
    def scores(self, policy: dict[str, int], kl: bool = True) -> dict[str, float]:
        """Top-1 (%) on the subset and, with ``kl``, the mean KL divergence of the policy's
        outputs from the uncompressed model's (a lower-variance signal than top-1)."""
        key = (tuple(sorted((n, int(k)) for n, k in policy.items())),
               tuple(sorted(self.rates.items())))
        known = self._memo.get(key)
        if known is not None and (not kl or "kl" in known):
            self.repeats += 1
            return {"top1": known["top1"], **({"kl": known["kl"]} if kl else {})}
        ref = self.reference() if kl else None
        self.load_policy(policy)
        if self.bn_batches:
            t0 = time.perf_counter()
            with torch.inference_mode(False), torch.no_grad():
                recalibrate_bn(self.model, self.bn_batches, precision=self.bn_precision,
                               reference=self.bn_reference)
            self.seconds["bn"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        net = self.model if self._folded is None else self._folded.refresh()
        correct, div = 0, 0.0
        dev = torch.device("cpu")
        for b, (x, y) in enumerate(self.inputs):
            if self.exact:
                logits, top = ranked(net, x, dev, self.precision)
                correct += (top[:, 0] == y).sum().item()
            else:
                with autocast(dev, self.precision):
                    logits = net(x)
                correct += (logits.argmax(1) == y).sum().item()
            if ref is not None:
                div += F.kl_div(F.log_softmax(logits.float(), 1), ref[b], log_target=True,
                                reduction="sum").item()
        self.seconds["evaluate"] += time.perf_counter() - t0
        self.calls += 1
        self._memo[key] = {"top1": 100.0 * correct / self.n, **({"kl": div / self.n} if kl else {})}
        return dict(self._memo[key])

    @torch.inference_mode()
    def top1_of(self, model: torch.nn.Module) -> float:
        """Top-1 (%) of another model (e.g. a fine-tuned copy) on this evaluator's subset, in
        float32 so that it compares across precisions."""
        model.eval()
        correct = sum(int((model(x.float().contiguous()).argmax(1) == y).sum())
                      for x, y in self.inputs)
        return 100.0 * correct / self.n

    def standard_error(self, accuracy: float) -> float:
        """Binomial standard error (in points) of an accuracy measured on this subset."""
        p = accuracy / 100.0
        return 100.0 * math.sqrt(max(p * (1 - p), 1e-12) / self.n)
