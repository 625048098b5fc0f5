"""k-means diversity: one sample per cluster, the one nearest its centroid.

A standard diversity baseline (e.g. Zhdanov, "Diverse mini-batch Active Learning", 2019, without
the informativeness weights; Hacohen et al. 2022 compare with it). k-means (scikit-learn) with
``k = b`` on the unlabeled pre-computed features; each cluster contributes its member nearest to
the centroid (distinct by construction). A cluster left empty by mini-batch k-means is replaced
by a random unpicked sample.

Memory: the ``(U, D)`` unlabeled features (a copy unless the pool is fully unlabeled and float32),
O(U) labels and distances, ``(b, D)`` centres.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from alcore.strategies._common import as_float32, kmeans
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["KMeansDiversity", "nearest_to_centroids"]


def nearest_to_centroids(
    X: np.ndarray, centers: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each non-empty cluster, the index of its member nearest to its centre (ties by ``rng``).

    Args:
        X: ``(m, d)`` rows; centers: ``(k, d)``; labels: ``(m,)`` int cluster of each row.

    Returns:
        ``(k',)`` int64 indices, one per non-empty cluster, in cluster order.
    """
    d = np.empty(X.shape[0], dtype=np.float64)
    for s in range(0, X.shape[0], 65536):
        diff = X[s : s + 65536] - centers[labels[s : s + 65536]]
        d[s : s + len(diff)] = np.einsum("ij,ij->i", diff, diff)
    order = np.lexsort((rng.random(X.shape[0]), d, labels))
    first = np.concatenate([[True], labels[order][1:] != labels[order][:-1]])
    return order[first].astype(np.int64)


@STRATEGIES.register("kmeans")
class KMeansDiversity(Strategy):
    """k-means with ``k = b`` on the unlabeled features, the sample nearest each centroid; a
    cold-start strategy. No parameters."""

    name = "kmeans"
    requires: ClassVar[frozenset[str]] = frozenset({"features"})
    cold_start: ClassVar[bool] = True

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        unl = ctx.unlabeled_positions()
        X = as_float32(ctx.features if unl.size == ctx.n_pool else ctx.features[unl])
        centers, labels = kmeans(X, n, rng)
        picks = nearest_to_centroids(X, centers, labels, rng)
        if picks.size < n:
            rest = np.setdiff1d(np.arange(unl.size), picks)
            picks = np.concatenate([picks, rng.choice(rest, size=n - picks.size, replace=False)])
        return unl[picks]
