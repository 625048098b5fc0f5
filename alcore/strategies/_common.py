"""Shared pieces of the diversity strategies: feature spaces, chunked distances,
k-means (scikit-learn, or the large-problem passes of ``_passes``), seeded tie-breaks. Nothing here
allocates more than O(N x d)."""

from __future__ import annotations

from typing import Any

import numpy as np

from alcore.strategies.base import SelectionContext

#: Rows per chunk of a chunked distance computation: a (CHUNK, M) float32 block stays small.
CHUNK = 2048
#: Exact ``KMeans`` while rows x clusters stays below this; larger problems use ``_passes.kmeans_large``.
FULL_KMEANS_MAX_WORK = 2_000_000
#: Floats of one slab of the element-wise steps of :func:`sq_dists` (1 MiB: stays in cache).
SLAB_VALUES = 1 << 18


def seed_from(rng: np.random.Generator) -> int:
    """One int seed for a library that takes ``random_state=int`` (scikit-learn), drawn from ``rng``."""
    return int(rng.integers(0, 2**31 - 1))


def as_float32(X: np.ndarray) -> np.ndarray:
    """``X`` as a float32 ndarray, without a copy when it already is one (memmaps included)."""
    return np.asarray(X) if getattr(X, "dtype", None) == np.float32 else np.asarray(X, dtype=np.float32)


def space_rows(ctx: SelectionContext, space: str, positions: np.ndarray | None = None) -> np.ndarray:
    """``(M, d)`` float32 rows of ``ctx`` in ``space``: the pre-computed features (``D``) or the
    proxy's embedding (``H``). ``positions=None`` means every row of the pool."""
    if space == "features":
        X = ctx.features if positions is None else ctx.features[positions]
        return as_float32(X)
    rows = np.arange(ctx.n_pool) if positions is None else positions
    return as_float32(ctx.embeddings_of(rows))


def sq_norms(X: np.ndarray) -> np.ndarray:
    """``(M,)`` float32 squared row norms, computed chunk by chunk."""
    out = np.empty(X.shape[0], dtype=np.float32)
    for s in range(0, X.shape[0], 65536):
        xb = X[s : s + 65536]
        out[s : s + len(xb)] = np.einsum("ij,ij->i", xb, xb)
    return out


def sq_dists(Xa: np.ndarray, na: np.ndarray, Xb: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """``(a, b)`` squared Euclidean distances by ``||a||^2 - 2ab + ||b||^2`` (one float32 GEMM),
    clipped at 0 against cancellation."""
    d = Xa @ Xb.T
    # the four element-wise steps slab by slab, each slab (about 1 MB) in cache for all four: one
    # read and one write of the block instead of four (the same operations in the same order)
    step = max(1, SLAB_VALUES // max(d.shape[1], 1))
    for s in range(0, d.shape[0], step):
        slab = d[s : s + step]
        slab *= -2.0
        slab += na[s : s + step, None]
        slab += nb[None, :]
        np.maximum(slab, 0.0, out=slab)
    return d


def pick_max(values: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest value, ties broken by ``rng`` (one extra O(M) pass)."""
    m = values.max()
    ties = np.flatnonzero(values == m)
    return int(ties[0] if ties.size == 1 else rng.choice(ties))


def pick_max_torch(values: Any, rng: np.random.Generator) -> int:
    """:func:`pick_max` of a torch tensor (on any device), drawing from ``rng`` as it does."""
    m = values.max()
    ties = (values == m).nonzero().flatten()
    return int(ties[0] if ties.numel() == 1 else rng.choice(ties.cpu().numpy()))


def kmeans_is_large(rows: int, k: int) -> bool:
    """Whether k-means of ``rows`` rows into ``k`` clusters takes the large-problem path."""
    return rows * min(k, rows) > FULL_KMEANS_MAX_WORK


def kmeans(
    X: np.ndarray, k: int, rng: np.random.Generator, *, rows: np.ndarray | None = None, device: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the rows of ``X`` (``rows`` of them, or all): scikit-learn's exact ``KMeans`` while
    ``rows x k <= FULL_KMEANS_MAX_WORK``, else :func:`~alcore.strategies._passes.kmeans_large`
    (one assignment pass plus at most half a pass of Lloyd steps on a subsample; on ``device`` when given).
    Returns ``(k, d)`` float32 centres and ``(M,)`` int64 labels. Memory: O(M + k x d) beyond
    ``X`` (plus a subsample of ``X`` on the large path, the rows themselves on the exact one)."""
    from alcore.strategies._passes import kmeans_large

    M = X.shape[0] if rows is None else int(rows.size)
    k = int(min(k, M))
    if kmeans_is_large(M, k):
        return kmeans_large(X, k, rng, rows=rows, device=device)
    from sklearn.cluster import KMeans  # here: importing scikit-learn costs 1-4 s the large path never needs

    seed = seed_from(rng)
    est = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(X if rows is None else X[rows])
    return est.cluster_centers_.astype(np.float32), est.labels_.astype(np.int64)
