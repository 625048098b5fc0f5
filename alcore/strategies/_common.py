"""Shared pieces of the diversity strategies: feature spaces, chunked distances,
k-means through scikit-learn, seeded tie-breaks. Nothing here allocates more than O(N x d)."""

from __future__ import annotations

import numpy as np

from alcore.strategies.base import SelectionContext

#: Rows per chunk of a chunked distance computation: a (CHUNK, M) float32 block stays small.
CHUNK = 2048
#: Exact ``KMeans`` while rows x clusters stays below this; larger problems use ``MiniBatchKMeans``.
FULL_KMEANS_MAX_WORK = 2_000_000


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
    d *= -2.0
    d += na[:, None]
    d += nb[None, :]
    np.maximum(d, 0.0, out=d)
    return d


def pick_max(values: np.ndarray, rng: np.random.Generator) -> int:
    """Index of the largest value, ties broken by ``rng`` (one extra O(M) pass)."""
    m = values.max()
    ties = np.flatnonzero(values == m)
    return int(ties[0] if ties.size == 1 else rng.choice(ties))


def kmeans(X: np.ndarray, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k-means through scikit-learn: ``KMeans`` while ``rows x k <= FULL_KMEANS_MAX_WORK``, else
    ``MiniBatchKMeans`` (batch 4096). Returns ``(k, d)`` centres and ``(M,)`` int labels.
    Memory: O(M + k x d) beyond ``X``."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    k = int(min(k, X.shape[0]))
    seed = seed_from(rng)
    if X.shape[0] * k <= FULL_KMEANS_MAX_WORK:
        est = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(X)
    else:
        est = MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=1, random_state=seed).fit(X)
    return est.cluster_centers_.astype(np.float32), est.labels_.astype(np.int64)
