"""Cluster-Margin: diversify the lowest-margin candidates by clustering them.

Citovsky et al., "Batch Active Learning at Scale", NeurIPS 2021. Take the ``margin_factor x b``
unlabeled samples of smallest margin, cluster them, visit the clusters from the smallest up and
take one random member of each, round robin, until ``b`` are picked.

Deviation: the paper clusters the whole pool once with hierarchical agglomerative clustering
(average linkage), which needs O(N^2) memory; here the candidates are clustered each round with
k-means, ``n_clusters`` (default ``b``) clusters: O(b x d) memory beyond the pool (scikit-learn's
exact KMeans for small problems, else one assignment pass plus at most half a pass of Lloyd steps on a
subsample, :func:`~alcore.strategies._passes.kmeans_large`). Lower bound of the whole: the
scoring pass of the proxy over the unlabeled pool plus one assignment pass of the candidates.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from alcore.registry import Integral, Interval, Options, Real
from alcore.strategies._common import kmeans, space_rows
from alcore.strategies._passes import accel_device
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy, top_n
from alcore.strategies.typiclust import cluster_members
from alcore.strategies.uncertainty import margin_scores

__all__ = ["ClusterMargin", "round_robin_by_cluster"]


def round_robin_by_cluster(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``n`` rows: clusters (``(m,)`` int labels) from smallest to largest, one random
    member each, round robin. Ties in size are broken by ``rng``."""
    k = int(labels.max()) + 1 if labels.size else 0
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((rng.random(k), sizes))
    groups = cluster_members(labels, k, np.ones(labels.size, dtype=bool))
    members = [list(rng.permutation(groups[c])) for c in order if sizes[c] > 0]
    picks: list[int] = []
    while len(picks) < n:
        for queue in members:
            if queue and len(picks) < n:
                picks.append(int(queue.pop()))
        members = [q for q in members if q]
    return np.asarray(picks, dtype=np.int64)


@STRATEGIES.register("cluster_margin")
class ClusterMargin(Strategy):
    """Cluster-Margin (Citovsky et al. 2021).

    Args:
        margin_factor: candidates = this many times the batch size, smallest margin first (>= 1).
        n_clusters: clusters of the candidates (None = the batch size).
        space: ``"embedding"`` (the proxy's hidden activation, as the paper) or ``"features"``.

    Memory: ``(U, C)`` probabilities, the ``(m, d)`` candidate rows, O(U).
    """

    name = "cluster_margin"
    requires: ClassVar[frozenset[str]] = frozenset({"model", "embeddings"})
    cold_start: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "margin_factor": [Interval(Real, 0.999, None, closed="neither")],
        "n_clusters": [Interval(Integral, 1, None, closed="left"), None],
        "space": [Options(("embedding", "features"))],
    }

    def __init__(self, *, margin_factor: float = 10.0, n_clusters: int | None = None, space: str = "embedding") -> None:
        self.margin_factor = margin_factor
        self.n_clusters = n_clusters
        self.space = space

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        unl = ctx.unlabeled_positions()
        m = min(unl.size, int(np.ceil(self.margin_factor * n)))
        cand = unl[top_n(margin_scores(ctx.probs()), m, rng)]
        X = space_rows(ctx, self.space, cand)
        _, labels = kmeans(X, n if self.n_clusters is None else int(self.n_clusters), rng, device=accel_device(ctx))
        return cand[round_robin_by_cluster(labels, n, rng)]
