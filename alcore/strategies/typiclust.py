"""TypiClust: the most typical sample of the largest uncovered clusters.

Hacohen, Dekel & Weinshall, "Active Learning on a Budget: Opposite Strategies Suit High and Low
Budgets", ICML 2022 (code: avihu111/TypiClust). k-means into ``min(|L| + b, max_clusters)``
clusters; clusters are visited by fewest labeled members, then largest size (clusters of at most
``min_cluster_size`` members last); in each, pick the unlabeled member of highest typicality

    typicality(x) = 1 / (mean Euclidean distance from x to its k nearest neighbours in the cluster)

with ``k = min(n_neighbors, |cluster| // 2)``; visits cycle until the batch is full.

Deviation from the reference code: typicality is computed once per visited cluster (on its
unlabeled members) and the next pick in that cluster is the next most typical one, instead of
recomputing after each pick (removing one point barely moves its neighbours' scores).

Scale. Small problems (``N x clusters <= FULL_KMEANS_MAX_WORK``) use scikit-learn's exact KMeans
and ``NearestNeighbors``. Larger ones use the passes of :mod:`~alcore.strategies._passes`: k-means
as one assignment pass plus at most half a pass of Lloyd steps on a subsample, and the typicality from one
Gram product per cluster (on the context's device when it names an accelerator). The work is then
within a small factor of its lower bound: one assignment pass (``N x k x D``) plus one exact kNN
pass inside the clusters (``sum_c m_c^2 x D``); ``bench/selection.py`` measures both.

Memory: the ``(N, D)`` features (not copied when float32), O(N) labels, the k-means subsample,
and per cluster an ``(m, m)`` Gram block (``(4096, m)`` slabs when ``m > 4096``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from alcore.registry import Integral, Interval
from alcore.strategies._common import as_float32, kmeans, kmeans_is_large
from alcore.strategies._passes import accel_device, knn_mean_dist
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["TypiClust", "typicality"]


def typicality(X: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    """``(m,)`` typicality of each row of ``X`` ``(m, d)``: inverse mean distance to its
    ``min(n_neighbors, m // 2)`` nearest other rows (a single row scores 0)."""
    from sklearn.neighbors import NearestNeighbors

    m = X.shape[0]
    k = min(int(n_neighbors), m // 2)
    if k < 1:
        return np.zeros(m)
    dist, _ = NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(X).kneighbors(X)
    return 1.0 / (dist[:, 1:].mean(axis=1) + 1e-5)


def typicality_fast(X: np.ndarray, n_neighbors: int = 20, *, device: object = None) -> np.ndarray:
    """:func:`typicality` from one Gram product (:func:`~alcore.strategies._passes.knn_mean_dist`):
    the same quantity, rounded differently (float32 Gram instead of scikit-learn's float64
    distances), on ``device`` when given. The large-problem path of :class:`TypiClust`."""
    m = X.shape[0]
    k = min(int(n_neighbors), m // 2)
    if k < 1:
        return np.zeros(m)
    return 1.0 / (knn_mean_dist(X, k, device=device) + 1e-5)


def cluster_members(labels: np.ndarray, k: int, keep: np.ndarray) -> list[np.ndarray]:
    """For each cluster ``0..k-1``, the ascending indices ``i`` with ``labels[i] == c`` and
    ``keep[i]``: one stable sort, O(N log N), instead of a pass over ``labels`` per cluster."""
    idx = np.flatnonzero(keep)
    lab = labels[idx]
    order = np.argsort(lab, kind="stable")
    bounds = np.searchsorted(lab[order], np.arange(k + 1))
    return [idx[order[bounds[c] : bounds[c + 1]]] for c in range(k)]


@STRATEGIES.register("typiclust")
class TypiClust(Strategy):
    """TypiClust (Hacohen et al. 2022) on the pre-computed features; a cold-start strategy.

    Args:
        max_clusters: cap on the number of clusters (the reference uses 500).
        n_neighbors: k of the typicality (20).
        min_cluster_size: clusters this small are visited last (reference: 5, they are dropped).
    """

    name = "typiclust"
    requires: ClassVar[frozenset[str]] = frozenset({"features"})
    cold_start: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "min_cluster_size": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(self, *, max_clusters: int = 500, n_neighbors: int = 20, min_cluster_size: int = 5) -> None:
        self.max_clusters = max_clusters
        self.n_neighbors = n_neighbors
        self.min_cluster_size = min_cluster_size

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        X = as_float32(ctx.features)
        k = min(ctx.n_labeled + n, int(self.max_clusters), ctx.n_pool)
        device = accel_device(ctx)
        large = kmeans_is_large(ctx.n_pool, k)
        _, labels = kmeans(X, k, rng, device=device)
        k = int(labels.max()) + 1
        sizes = np.bincount(labels, minlength=k)
        labeled_counts = np.bincount(labels[ctx.labeled_mask], minlength=k)
        order = np.lexsort((rng.random(k), -sizes, labeled_counts, sizes <= self.min_cluster_size))
        groups = cluster_members(labels, k, ~ctx.labeled_mask)
        self.n_clusters_ = k
        self.cluster_sizes_ = np.array([g.size for g in groups], dtype=np.int64)
        queues: dict[int, list[int]] = {}
        picks: list[int] = []
        while len(picks) < n:
            progressed = False
            for c in order:
                if len(picks) == n:
                    break
                c = int(c)
                if c not in queues:
                    members = groups[c]
                    if members.size == 0:
                        queues[c] = []
                        continue
                    if large:
                        typ = typicality_fast(X[members], self.n_neighbors, device=device)
                    else:
                        typ = typicality(X[members], self.n_neighbors)
                    ranked = members[np.lexsort((rng.random(members.size), -typ))]
                    queues[c] = ranked[::-1].tolist()  # pop() from the end = most typical first
                if queues[c]:
                    picks.append(queues[c].pop())
                    progressed = True
            if not progressed:  # cannot happen while n <= unlabeled; guard against a silent loop
                break
        return np.asarray(picks, dtype=np.int64)
