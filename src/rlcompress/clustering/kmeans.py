"""One-dimensional k-means for weight sharing: a fast sorted Lloyd and an exact optimum.

We write the Lloyd iteration ourselves because general k-means libraries (scikit-learn's
KMeans, the HAQ choice) ignore that the data is one-dimensional: on sorted weights every
cluster is a contiguous run, its boundaries are midpoints between neighbouring centroids
(one ``searchsorted``) and its mean comes from prefix sums, so an iteration costs O(k log n)
after one O(n log n) sort. The exact mode delegates to ``kmeans1d`` (dynamic programming,
MIT-licensed), which reaches the global optimum in O(n k).

Weighted variants minimise sum_i w_i (x_i - c(x_i))^2 with a per-weight importance w_i (the
diagonal Fisher information, as in SqueezeLLM and coremltools' SKM): the weighted Lloyd uses
prefix sums of w and w*x, and the weighted optimum comes from ``ckwrap`` (Ckmeans.1d.dp, the
weighted 1-D dynamic program, linear-time; ``kmeans1d`` has no weights). For fixed centroids
the best assignment is still the nearest centroid whatever the weights, so a weighted result is
stored and decoded exactly like an unweighted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

INITS = ("linear", "density", "kmeans++")


@dataclass
class Clustering:
    """Result of clustering one weight vector.

    Attributes:
        codebook: sorted centroids, float32 (at most k of them; fewer when the data has fewer
            distinct values).
        labels: index into ``codebook`` for every input value (int64, input order).
        sse: sum of squared errors of the assignment (unweighted, also for the weighted
            methods, so that results of different methods compare on the same scale).
    """

    codebook: np.ndarray
    labels: np.ndarray
    sse: float


def init_centroids(xs: np.ndarray, k: int, init: str, seed: int = 0) -> np.ndarray:
    """Initial centroids for sorted data ``xs``: linear, density (quantiles) or k-means++."""
    if init == "linear":
        return np.linspace(xs[0], xs[-1], k)
    if init == "density":
        return np.quantile(xs, (np.arange(k) + 0.5) / k)
    if init == "kmeans++" and k > 1024:
        # seeding costs O(n k); at this many clusters quantiles already tile the data finely
        return init_centroids(xs, k, "density")
    if init == "kmeans++":
        rng = np.random.default_rng(seed)
        cents = [xs[rng.integers(len(xs))]]
        d2 = (xs - cents[0]) ** 2
        for _ in range(1, k):
            total = d2.sum()
            if total <= 0:
                break
            c = xs[min(np.searchsorted(np.cumsum(d2), rng.random() * total), len(xs) - 1)]
            cents.append(c)
            d2 = np.minimum(d2, (xs - c) ** 2)
        return np.sort(np.asarray(cents))
    raise ValueError(f"init must be one of {INITS}, got {init!r}")


def lloyd_1d(
    x: np.ndarray, k: int, init: str = "kmeans++", max_iter: int = 300, tol: float = 1e-9,
    seed: int = 0, weights: np.ndarray | None = None,
) -> Clustering:
    """Lloyd's k-means on 1-D data using sorted runs and prefix sums (optionally weighted)."""
    x = np.asarray(x, dtype=np.float64).ravel()
    xs, uniq = _check(x, k)
    if uniq is not None:
        return uniq
    ws = np.ones_like(xs) if weights is None else _check_weights(weights, x)[np.argsort(x, kind="stable")]
    cw = np.concatenate([[0.0], np.cumsum(ws)])
    cs = np.concatenate([[0.0], np.cumsum(ws * xs)])
    c2 = np.concatenate([[0.0], np.cumsum(ws * xs * xs)])
    cents = np.unique(init_centroids(xs, k, init, seed))
    prev = np.inf
    for _ in range(max_iter):
        cuts = np.concatenate([[0], np.searchsorted(xs, (cents[1:] + cents[:-1]) / 2), [len(xs)]])
        cnt = cuts[1:] - cuts[:-1]
        wsum, s, sq = (a[cuts[1:]] - a[cuts[:-1]] for a in (cw, cs, c2))
        keep = cnt > 0
        cents = s[keep] / wsum[keep]
        sse = float(np.sum(sq[keep] - s[keep] ** 2 / wsum[keep]))
        if len(cents) < k:
            # clusters emptied (common with linear init and rare large weights): re-seed them
            # at the worst-fitted weights, so that the layer really uses k centroids
            cents = _reseed(xs, cents, k - len(cents))
            prev = np.inf
            continue
        if np.isfinite(prev) and prev - sse <= tol * prev:
            break
        prev = sse
    return _finish(x, cents)


def _reseed(xs: np.ndarray, cents: np.ndarray, missing: int) -> np.ndarray:
    bounds = (cents[1:] + cents[:-1]) / 2
    err = (xs - cents[np.searchsorted(bounds, xs)]) ** 2
    extra = xs[np.argsort(-err, kind="stable")[: 4 * missing]]
    return np.unique(np.concatenate([cents, extra[np.isin(extra, cents, invert=True)][:missing]]))


# The dynamic programs take O(n k) time and memory: beyond this many cells (about 1.5 s) the sorted
# Lloyd takes over, whose error is within a fraction of a percent of the optimum at such k.
EXACT_CELLS = 10_000_000


def exact_1d(x: np.ndarray, k: int, weights: np.ndarray | None = None) -> Clustering:
    """Globally optimal 1-D k-means (dynamic programming: ``kmeans1d``, or ``ckwrap`` when
    weighted); above :data:`EXACT_CELLS` (n x k) the (weighted) sorted Lloyd with quantile
    initialisation instead."""
    x = np.asarray(x, dtype=np.float64).ravel()
    xs, uniq = _check(x, k)
    if uniq is not None:
        return uniq
    if len(xs) * k > EXACT_CELLS:
        return lloyd_1d(x, k, init="density", weights=weights)
    if weights is None:
        import kmeans1d

        _, cents = kmeans1d.cluster(xs, k)
        return _finish(x, np.unique(np.asarray(cents)))
    import ckwrap

    w = _check_weights(weights, x)
    order = np.argsort(x, kind="stable")
    res = ckwrap.ckmeans(xs, k, weights=w[order])
    cents = np.asarray(res.centers, dtype=np.float64)
    # ckwrap can return empty clusters (centre 0/0 = NaN) when runs of weights sit at the floor
    # (dead channels give zero Fisher importance): drop them, then re-seed the missing centroids
    # at the worst-fitted weights, which can only lower the error of the nearest assignment
    cents = np.unique(cents[np.isfinite(cents)])
    if len(cents) < k:
        cents = _reseed(xs, cents, k - len(cents))
    return _finish(x, cents)


def _check_weights(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64).ravel()
    if w.shape != x.shape:
        raise ValueError(f"weights have {w.size} values for {x.size} data points")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    # a zero weight would leave a centroid undefined in an all-zero run; a tiny positive floor
    # keeps every run's weighted mean defined without changing any result measurably
    return np.maximum(w, w.max() * 1e-12)


def _check(x: np.ndarray, k: int) -> tuple[np.ndarray, Clustering | None]:
    if not 2 <= k <= 65536:
        raise ValueError(f"k must be in [2, 65536], got {k}")
    if x.size == 0:
        raise ValueError("cannot cluster an empty weight vector")
    if not np.isfinite(x).all():
        raise ValueError("weights contain NaN or infinity")
    xs = np.sort(x)
    distinct = np.unique(xs)
    if len(distinct) <= k:  # every value gets its own centroid: zero error
        return xs, _finish(x, distinct)
    return xs, None


def _finish(x: np.ndarray, cents: np.ndarray) -> Clustering:
    """Assign every value to its nearest centroid (ties to the lower one) in float32."""
    book = np.unique(cents.astype(np.float32))
    bounds = (book[1:].astype(np.float64) + book[:-1]) / 2
    labels = np.searchsorted(bounds, x, side="left")
    # bounds are midpoints in float64 of float32 values: the assignment is to the nearest
    # stored centroid, so the reported error is the error of what is actually stored
    err = x - book[labels].astype(np.float64)
    return Clustering(book, labels.astype(np.int64), float(np.dot(err, err)))


@dataclass(frozen=True)
class ClusterMethod:
    """A registered 1-D clustering method.

    Attributes:
        fn: ``fn(x, k, weights, init, seed) -> Clustering``.
        weighted: the method needs a per-weight importance (it is sensitivity-aware).
        description: one line for ``--help`` and the README.
    """

    fn: Callable[[np.ndarray, int, np.ndarray | None, str, int], Clustering]
    weighted: bool
    description: str


METHODS: dict[str, ClusterMethod] = {}


def register_method(name: str, method: ClusterMethod) -> None:
    """Make a clustering method selectable by name everywhere (share, search, compress)."""
    METHODS[name] = method


register_method("lloyd", ClusterMethod(
    lambda x, k, w, init, seed: lloyd_1d(x, k, init=init, seed=seed), False,
    "sorted Lloyd k-means, unweighted (Deep Compression)"))
register_method("exact", ClusterMethod(
    lambda x, k, w, init, seed: exact_1d(x, k), False,
    "optimal unweighted 1-D k-means (dynamic programming)"))
register_method("sensitive", ClusterMethod(
    lambda x, k, w, init, seed: exact_1d(x, k, weights=w), True,
    "optimal Fisher-weighted 1-D k-means (dynamic programming)"))
register_method("sensitive-lloyd", ClusterMethod(
    lambda x, k, w, init, seed: lloyd_1d(x, k, init=init, seed=seed, weights=w), True,
    "Fisher-weighted sorted Lloyd k-means"))


def cluster_1d(
    x: np.ndarray, k: int, method: str = "lloyd", init: str = "kmeans++", seed: int = 0,
    weights: np.ndarray | None = None,
) -> Clustering:
    """Cluster ``x`` into at most ``k`` centroids with a registered ``method``.

    Weighted methods need ``weights`` (one importance per value); unweighted ones ignore them.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    spec = METHODS[method]
    if spec.weighted and weights is None:
        raise ValueError(f"clustering method {method!r} needs per-weight importances")
    return spec.fn(x, k, weights if spec.weighted else None, init, seed)
