"""Core-set selection: greedy k-center on the proxy's embedding or on the pre-computed features.

Sener & Savarese, "Active Learning for Convolutional Neural Networks: A Core-Set Approach",
ICLR 2018 (the greedy 2-approximation of k-center, their Algorithm 1).

Memory: O(N) beyond the ``(N, d)`` rows - one "distance to the nearest chosen centre" vector,
the squared norms and one temporary - never an N x N matrix. Time: one pass over the rows per
pick (``X @ c``), plus one chunked GEMM against the labeled centres at the start.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from alcore.registry import Options
from alcore.strategies._common import CHUNK, pick_max, pick_max_torch, space_rows, sq_dists, sq_norms
from alcore.strategies._passes import BLOCK, accel_device
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["Coreset", "kcenter_greedy"]


def kcenter_greedy(
    X: np.ndarray,
    n: int,
    *,
    centers: np.ndarray,
    selectable: np.ndarray,
    rng: np.random.Generator,
    chunk_size: int = CHUNK,
    device: Any = None,
) -> np.ndarray:
    """Greedy k-center: repeatedly take the selectable row farthest from every centre.

    Args:
        X: ``(M, d)`` float32 rows (not copied).
        n: picks to make, ``<= selectable.sum()``.
        centers: ``(L,)`` int indices into ``X`` of the initial centres (the labeled set); if empty,
            the first pick is a uniformly random selectable row.
        selectable: ``(M,)`` bool, rows that may be picked.
        rng: breaks ties (and draws the first pick when there is no centre).
        chunk_size: rows per block of the initial ``(block, L)`` distance GEMM.
        device: None (numpy) or a torch device: the same passes in torch there (``X`` is copied
            to it once), the same draws from ``rng``.

    Returns:
        ``(n,)`` int64 indices into ``X`` in pick order.

    Memory: three float32 ``(M,)`` vectors plus one ``(chunk_size, min(L, 4096))`` block.
    """
    if device is not None:
        return _kcenter_greedy_torch(X, n, centers=centers, selectable=selectable, rng=rng, device=device)
    X = np.asarray(X)
    norms = sq_norms(X)
    # min_dist: squared distance to the nearest centre; -1 marks rows that may not be picked.
    min_dist = np.full(X.shape[0], np.inf, dtype=np.float32)
    centers = np.asarray(centers, dtype=np.int64)
    for c0 in range(0, centers.size, 4096):
        cs = centers[c0 : c0 + 4096]
        Xc, nc = X[cs], norms[cs]
        for s in range(0, X.shape[0], chunk_size):
            block = sq_dists(X[s : s + chunk_size], norms[s : s + chunk_size], Xc, nc).min(axis=1)
            np.minimum(min_dist[s : s + len(block)], block, out=min_dist[s : s + len(block)])
    min_dist[~selectable] = -1.0
    picks = np.empty(n, dtype=np.int64)
    d = np.empty_like(min_dist)
    for i in range(n):
        if centers.size == 0 and i == 0:
            c = int(rng.choice(np.flatnonzero(selectable)))
        else:
            c = pick_max(min_dist, rng)
        picks[i] = c
        # the one pass over the pool per pick: ||x||^2 - 2 x.c + ||c||^2
        np.matmul(X, X[c], out=d)
        d *= -2.0
        d += norms
        d += norms[c]
        np.minimum(min_dist, d, out=min_dist)
        min_dist[c] = -1.0
    return picks


@torch.inference_mode()
def _kcenter_greedy_torch(
    X: np.ndarray, n: int, *, centers: np.ndarray, selectable: np.ndarray, rng: np.random.Generator, device: Any
) -> np.ndarray:
    """:func:`kcenter_greedy` in torch on ``device``: the same operations, in the same order."""
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
    norms = (Xt * Xt).sum(1)
    min_dist = torch.full((Xt.shape[0],), float("inf"), device=device)
    centers = np.asarray(centers, dtype=np.int64)
    step = int(max(256, BLOCK // max(min(centers.size, 4096), 1)))
    for c0 in range(0, centers.size, 4096):
        cs = torch.from_numpy(centers[c0 : c0 + 4096]).to(device)
        Xc, nc = Xt[cs], norms[cs]
        for s in range(0, Xt.shape[0], step):
            block = (Xt[s : s + step] @ Xc.T).mul_(-2.0).add_(norms[s : s + step, None]).add_(nc[None, :])
            block.clamp_(min=0.0)
            torch.minimum(min_dist[s : s + len(block)], block.min(dim=1).values, out=min_dist[s : s + len(block)])
    min_dist[torch.from_numpy(~np.asarray(selectable, dtype=bool)).to(device)] = -1.0
    picks = np.empty(n, dtype=np.int64)
    for i in range(n):
        if centers.size == 0 and i == 0:
            c = int(rng.choice(np.flatnonzero(selectable)))
        else:
            c = pick_max_torch(min_dist, rng)
        picks[i] = c
        d = (Xt @ Xt[c]).mul_(-2.0).add_(norms).add_(norms[c])
        torch.minimum(min_dist, d, out=min_dist)
        min_dist[c] = -1.0
    return picks


@STRATEGIES.register("coreset")
class Coreset(Strategy):
    """Greedy k-center (Sener & Savarese 2018); the labeled samples are the initial centres.

    Args:
        space: ``"embedding"`` (the proxy's hidden activation, ``(N, H)``; needs a model) or
            ``"features"`` (the pre-computed ``(N, D)`` features, used in place, no copy).

    Memory: the ``(N, H)`` embedding when ``space="embedding"``, plus O(N). Time per pick: one pass
    over the ``(N, d)`` rows.
    """

    name = "coreset"
    requires: ClassVar[frozenset[str]] = frozenset({"embeddings"})
    cold_start: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {"space": [Options(("embedding", "features"))]}

    def __init__(self, *, space: str = "embedding") -> None:
        self.space = space

    def _check_requirements(self, ctx: SelectionContext) -> None:
        if self.space == "embedding" or ctx.n_labeled == 0:  # features need no model
            super()._check_requirements(ctx)

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        X = space_rows(ctx, self.space)
        return kcenter_greedy(
            X, n, centers=ctx.labeled_positions(), selectable=~ctx.labeled_mask, rng=rng, device=accel_device(ctx)
        )
