"""k-means diversity: one sample per cluster, the one nearest its centroid.

A standard diversity baseline (e.g. Zhdanov, "Diverse mini-batch Active Learning", 2019, without
the informativeness weights; Hacohen et al. 2022 compare with it). k-means with ``k = b`` on the
unlabeled pre-computed features; each cluster contributes its member nearest to the centroid
(distinct by construction). A cluster left empty by the k-means is replaced by a random unpicked
sample.

Small problems (``U x b <= FULL_KMEANS_MAX_WORK``) use scikit-learn's exact KMeans on a copy of
the unlabeled rows. Larger ones read the rows in place and cost one assignment pass
(``U x b x D``, the lower bound of any k-means) plus half a pass of Lloyd steps on a subsample
(:func:`~alcore.strategies._passes.fit_centres`; on the context's device when it names one): the
assignment pass gives each row's distance to its centre, so each cluster's nearest member comes
from it, to the centres the subsample fitted (no second pass for the exact means).

Memory: O(U) labels and distances, ``(b, D)`` centres, the k-means subsample (large path) or the
``(U, D)`` unlabeled rows (small path).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from alcore.strategies._common import as_float32, kmeans, kmeans_is_large
from alcore.strategies._passes import accel_device, assign, fit_centres
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["KMeansDiversity", "nearest_members", "nearest_to_centroids"]


def nearest_to_centroids(
    X: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    *,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """For each non-empty cluster, the index of its member nearest to its centre (ties by ``rng``).

    Args:
        X: ``(m, d)`` rows (or the rows ``rows`` of it); centers: ``(k, d)``; labels: ``(m,)`` int
            cluster of each row.

    Returns:
        ``(k',)`` int64 indices (into ``rows`` when given), one per non-empty cluster, in cluster
        order.
    """
    m = labels.size
    d = np.empty(m, dtype=np.float64)
    for s in range(0, m, 65536):
        xb = X[s : s + 65536] if rows is None else X[rows[s : s + 65536]]
        diff = xb - centers[labels[s : s + 65536]]
        d[s : s + len(diff)] = np.einsum("ij,ij->i", diff, diff)
    return nearest_members(labels, d, rng)


def nearest_members(labels: np.ndarray, d2: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each non-empty cluster, the index of its member with the smallest ``d2`` (its squared
    distance to the centre; ties by ``rng``), in cluster order."""
    keys = rng.random(labels.size)
    if labels.size == 0:
        return np.empty(0, dtype=np.int64)
    # each cluster's smallest d2 in one scatter pass; only the rows that reach it are sorted
    k = int(labels.max()) + 1
    lowest = np.full(k, np.inf, dtype=np.float64)
    np.minimum.at(lowest, labels, d2)
    tied = np.flatnonzero(d2 == lowest[labels])
    order = tied[np.lexsort((keys[tied], labels[tied]))]
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
        if kmeans_is_large(unl.size, n):  # the unlabeled rows are read in place, never copied
            X, rows = as_float32(ctx.features), (None if unl.size == ctx.n_pool else unl)
            # centres fitted on a subsample, then ONE pass: each row's nearest centre and its distance,
            # from which each cluster's nearest member (the means of that pass are not needed)
            centers = fit_centres(X, n, rng, rows=rows, device=accel_device(ctx))
            labels, d2 = assign(X, centers, rows=rows, device=accel_device(ctx))
            picks = nearest_members(labels, d2, rng)
        else:
            X = as_float32(ctx.features if unl.size == ctx.n_pool else ctx.features[unl])
            centers, labels = kmeans(X, n, rng)
            picks = nearest_to_centroids(X, centers, labels, rng)
        if picks.size < n:
            rest = np.setdiff1d(np.arange(unl.size), picks)
            picks = np.concatenate([picks, rng.choice(rest, size=n - picks.size, replace=False)])
        return unl[picks]
