"""Constrained (seeded) k-means, shared by NTKCPL's clustering pseudo-labels and AS3L's priors.

Basu, Banerjee & Mooney, "Semi-supervised Clustering by Seeding", ICML 2002 (the "constrained
k-means" variant): the labeled samples seed the centroids and keep their cluster throughout.

* centroid of cluster ``c`` = mean of the labeled samples of class ``c``; a cluster with no labeled
  sample starts at a distinct random unlabeled point;
* iterate: assign every unlabeled point to its nearest centroid (labeled points stay in the
  cluster of their class), recompute the centroids as cluster means (an emptied cluster keeps its
  centroid), stop when no assignment changes or after ``max_iter`` iterations.

Distances are squared Euclidean, computed in row chunks (one ``(chunk, k)`` block at a time), so
memory is O(N + k x D) beyond the ``(N, D)`` input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alcore.errors import ConfigError, problem

__all__ = ["ConstrainedKMeansResult", "constrained_kmeans", "l2_normalize"]

_CHUNK = 8192


@dataclass(frozen=True)
class ConstrainedKMeansResult:
    """``labels`` (N,) int64 cluster of every row; ``centers`` (k, D) float64; ``n_iter`` the
    number of assignment passes; ``converged`` False if ``max_iter`` stopped it."""

    labels: np.ndarray
    centers: np.ndarray
    n_iter: int
    converged: bool


def l2_normalize(X: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """``X`` with unit-norm rows (float32; a zero row stays zero)."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    return X / np.maximum(norms, eps)[:, None]


def _nearest(X: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of every row of ``X``."""
    cn = np.einsum("ij,ij->i", centers, centers)
    idx = np.empty(X.shape[0], dtype=np.int64)
    for s in range(0, X.shape[0], _CHUNK):
        xb = np.asarray(X[s : s + _CHUNK], dtype=np.float64)
        d = cn[None, :] - 2.0 * (xb @ centers.T)
        d += np.einsum("ij,ij->i", xb, xb)[:, None]
        idx[s : s + len(xb)] = d.argmin(axis=1)
    return idx


def _means(X: np.ndarray, labels: np.ndarray, k: int, previous: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, X.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, np.asarray(X, dtype=np.float64))
    out = previous.copy()
    filled = counts > 0
    out[filled] = sums[filled] / counts[filled, None]
    return out


def constrained_kmeans(
    X: np.ndarray,
    n_clusters: int,
    seed_positions: np.ndarray,
    seed_labels: np.ndarray,
    *,
    random_state: int | np.random.Generator | None,
    max_iter: int = 1000,
) -> ConstrainedKMeansResult:
    """Constrained seeded k-means (Basu et al. 2002; METHODS.md section 5).

    Args:
        X: ``(N, D)`` float features.
        n_clusters: k >= 1. Seeded clusters are ``0 .. C-1`` (their class ids); the others start
            at random unlabeled points.
        seed_positions: ``(L,)`` distinct rows of ``X`` whose cluster is known (may be empty: then
            this is Lloyd's k-means from k random points).
        seed_labels: ``(L,)`` their clusters, ints in ``[0, n_clusters)``.
        random_state: seed or Generator for the starting points of unseeded clusters.
        max_iter: cap on assignment passes (1000 in the reference).

    Returns:
        :class:`ConstrainedKMeansResult`; ``labels[seed_positions] == seed_labels`` always.
    """
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] == 0 or not np.isfinite(X).all():
        raise ConfigError(problem(f"features of shape {X.shape}", allowed="a non-empty finite (N, D) array"))
    n = X.shape[0]
    pos = np.asarray(seed_positions, dtype=np.int64).reshape(-1)
    lab = np.asarray(seed_labels, dtype=np.int64).reshape(-1)
    if not isinstance(n_clusters, int | np.integer) or not 1 <= n_clusters <= n:
        raise ConfigError(problem(f"n_clusters={n_clusters!r} for {n} points", allowed=f"an int in [1, {n}]"))
    k = int(n_clusters)
    if pos.shape != lab.shape:
        raise ConfigError(problem(f"{pos.size} seed positions but {lab.size} seed labels", allowed="one label each"))
    if pos.size and (pos.min() < 0 or pos.max() >= n or np.unique(pos).size != pos.size):
        raise ConfigError(problem("seed positions out of range or repeated", allowed=f"distinct rows in [0, {n})"))
    if lab.size and (lab.min() < 0 or lab.max() >= k):
        raise ConfigError(
            problem(
                f"seed labels in [{lab.min()}, {lab.max()}] for {k} clusters",
                allowed=f"clusters in [0, {k})",
                fix="ask for at least as many clusters as there are seeded classes",
            )
        )
    if not isinstance(max_iter, int) or max_iter < 1:
        raise ConfigError(problem(f"max_iter={max_iter!r}", allowed="an int >= 1"))
    from alcore.strategies.base import check_random_state  # here: the strategies import this module

    rng = check_random_state(random_state)

    seeded = np.zeros(n, dtype=bool)
    seeded[pos] = True
    free = np.flatnonzero(~seeded)
    centers = np.zeros((k, X.shape[1]), dtype=np.float64)
    has_seed = np.bincount(lab, minlength=k) > 0
    if has_seed.any():
        centers = _means(X[pos], lab, k, centers)
    empty = np.flatnonzero(~has_seed)
    if empty.size:
        if free.size < empty.size:
            raise ConfigError(
                problem(
                    f"{empty.size} unseeded clusters but only {free.size} unlabeled points to start them",
                    fix="ask for fewer clusters",
                )
            )
        centers[empty] = X[rng.choice(free, size=empty.size, replace=False)]

    labels = np.full(n, -1, dtype=np.int64)
    labels[pos] = lab
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - it is read after the loop
        new = _nearest(X[free], centers) if free.size else np.empty(0, dtype=np.int64)
        if it > 1 and np.array_equal(new, labels[free]):
            converged = True
            break
        labels[free] = new
        centers = _means(X, labels, k, centers)
    return ConstrainedKMeansResult(labels=labels, centers=centers, n_iter=it, converged=converged)
