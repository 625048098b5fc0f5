"""ProbCover: greedy maximum coverage of delta-balls.

Yehuda, Dekel, Hacohen & Weinshall, "Active Learning Through a Covering Lens", NeurIPS 2022
(code: avihu111/TypiClust, ``probcover.py``). Build the graph with an edge ``i -> j`` when
``||x_i - x_j|| <= delta``; remove every point covered by a labeled sample; then repeatedly pick
the point whose ball covers the most still-uncovered points (ties at random; uniformly at random
once everything is covered).

``delta``: given, or the largest radius whose balls are pure (every point in the ball has the
ball centre's k-means pseudo-label, k = number of classes) for a fraction >= ``purity`` of the
points, as in the paper (0.95). A ball around ``i`` is pure iff ``delta`` is below ``i``'s
distance to the nearest point of another cluster, so the radius is a quantile of that vector.

Scale. The graph is built by chunked brute-force radius search (float32 GEMM,
``(chunk, M)`` blocks) and stored as CSR, out-edges and in-edges: memory = 2 x 4 bytes per edge,
at most ``M x max_degree`` edges (a ball holding more keeps its ``max_degree`` nearest points).
The radius search costs ``M^2 x d`` flops (twice when ``delta`` is derived), so the graph is built
on at most ``max_points`` nodes: every labeled sample plus a seeded uniform subsample of the
unlabeled ones (coverage of the subsample estimates coverage of the pool; picks come from it).
Hand-written: scikit-learn's ``radius_neighbors`` returns per-row object arrays and has no degree
cap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from alcore.registry import Integral, Interval, Real
from alcore.strategies._common import (
    CHUNK,
    as_float32,
    kmeans,
    pick_max,
    sq_dists,
    sq_norms,
)
from alcore.strategies._passes import BLOCK, accel_device
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["ProbCover", "delta_from_purity", "radius_graph", "probcover_select"]


def _block_rows(chunk_size: int, m: int) -> int:
    """Rows of one ``(rows, m)`` distance block: ``chunk_size``, fewer when the block would pass
    :data:`~alcore.strategies._passes.BLOCK` floats (at least 64)."""
    return int(max(64, min(chunk_size, BLOCK // max(m, 1))))


def delta_from_purity(
    X: np.ndarray, pseudo: np.ndarray, purity: float = 0.95, chunk_size: int = CHUNK, *, device: Any = None
) -> float:
    """The largest delta whose balls are pure for a fraction >= ``purity`` of the rows.

    Args:
        X: ``(M, d)`` float32 rows; pseudo: ``(M,)`` int cluster labels.
        device: None (numpy) or a torch device for the distance blocks.

    Memory: one ``(chunk, M)`` float32 block of at most :data:`~alcore.strategies._passes.BLOCK`
    floats and its mask, plus O(M).
    """
    chunk_size = _block_rows(chunk_size, X.shape[0])
    norms = sq_norms(X)
    if device is not None:
        d_other = _nearest_other_torch(X, norms, pseudo, chunk_size, device)
    else:
        d_other = np.empty(X.shape[0], dtype=np.float32)
        for s in range(0, X.shape[0], chunk_size):
            block = sq_dists(X[s : s + chunk_size], norms[s : s + chunk_size], X, norms)
            block[pseudo[s : s + chunk_size, None] == pseudo[None, :]] = np.inf
            d_other[s : s + len(block)] = block.min(axis=1)
    d = np.sort(np.sqrt(d_other))
    finite = d[np.isfinite(d)]
    if finite.size == 0:  # one cluster only: every ball is pure
        return float(np.sqrt(norms.max()) * 2 + 1)
    pure_if = X.shape[0] - np.searchsorted(d, d, side="right")  # rows with d_other > d[i]
    ok = pure_if >= purity * X.shape[0]
    return float(d[ok].max()) if ok.any() else float(d[0] * 0.5)


@torch.inference_mode()
def _sq_dist_blocks(X: np.ndarray, norms: np.ndarray, chunk_size: int, device: Any) -> Iterator[tuple[int, Any]]:
    """``(start, (chunk, M) squared distances)`` blocks of ``X`` against itself, in torch on
    ``device``, computed as :func:`~alcore.strategies._common.sq_dists` does."""
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
    nt = torch.from_numpy(norms).to(device)
    for s in range(0, Xt.shape[0], chunk_size):
        block = (Xt[s : s + chunk_size] @ Xt.T).mul_(-2.0).add_(nt[s : s + chunk_size, None]).add_(nt[None, :])
        yield s, block.clamp_(min=0.0)


@torch.inference_mode()
def _nearest_other_torch(
    X: np.ndarray, norms: np.ndarray, pseudo: np.ndarray, chunk_size: int, device: Any
) -> np.ndarray:
    pt = torch.from_numpy(np.asarray(pseudo, dtype=np.int64)).to(device)
    out = np.empty(X.shape[0], dtype=np.float32)
    for s, block in _sq_dist_blocks(X, norms, chunk_size, device):
        block[pt[s : s + len(block), None] == pt[None, :]] = float("inf")
        out[s : s + len(block)] = block.min(dim=1).values.cpu().numpy()
    return out


@torch.inference_mode()
def _radius_graph_torch(
    X: np.ndarray, norms: np.ndarray, r2: np.float32, max_degree: int, chunk_size: int, device: Any
) -> tuple[np.ndarray, np.ndarray]:
    counts = np.zeros(X.shape[0] + 1, dtype=np.int64)
    parts = []
    for s, block in _sq_dist_blocks(X, norms, chunk_size, device):
        rows = torch.arange(len(block), device=device)
        block[rows, s + rows] = 0.0  # a point is always in its own ball
        inside = block <= float(r2)
        deg = inside.sum(dim=1)
        over = torch.nonzero(deg > max_degree).flatten()
        if over.numel():
            inside[over] = False
            nearest = torch.topk(block[over], max_degree, dim=1, largest=False).indices
            inside[over[:, None], nearest] = True
            deg[over] = max_degree
        parts.append(torch.nonzero(inside)[:, 1].to(torch.int32).cpu().numpy())
        counts[s + 1 : s + 1 + len(block)] = deg.cpu().numpy()
    return np.cumsum(counts), (np.concatenate(parts) if parts else np.empty(0, dtype=np.int32))


def radius_graph(
    X: np.ndarray, delta: float, *, max_degree: int, chunk_size: int = CHUNK, device: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """CSR out-edges ``(indptr (M+1,), indices (E,) int32)`` of the delta-ball graph (self loops
    included), at most ``max_degree`` nearest per row. Memory: E x 4 bytes + one ``(chunk, M)``
    block of at most :data:`~alcore.strategies._passes.BLOCK` floats (the chunk shrinks as M
    grows) and its mask. ``device``: None (numpy) or a torch device for the distance blocks."""
    chunk_size = _block_rows(chunk_size, X.shape[0])
    norms = sq_norms(X)
    if device is not None:
        return _radius_graph_torch(X, norms, np.float32(delta) ** 2, int(max_degree), chunk_size, device)
    r2 = np.float32(delta) ** 2
    counts = np.zeros(X.shape[0] + 1, dtype=np.int64)
    parts = []
    for s in range(0, X.shape[0], chunk_size):
        block = sq_dists(X[s : s + chunk_size], norms[s : s + chunk_size], X, norms)
        rows = np.arange(len(block))
        block[rows, s + rows] = 0.0  # a point is always in its own ball
        inside = block <= r2
        deg = inside.sum(axis=1)
        over = np.flatnonzero(deg > max_degree)
        for o in np.array_split(over, -(-over.size // 256)) if over.size else ():
            # a few rows at a time: argpartition returns an int64 index for every column
            inside[o] = False
            nearest = np.argpartition(block[o], max_degree - 1, axis=1)[:, :max_degree]
            inside[o[:, None], nearest] = True
        deg[over] = max_degree
        _, cols = np.nonzero(inside)
        parts.append(cols.astype(np.int32))
        counts[s + 1 : s + 1 + len(block)] = deg
    return np.cumsum(counts), (np.concatenate(parts) if parts else np.empty(0, dtype=np.int32))


def _transpose(indptr: np.ndarray, indices: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.repeat(np.arange(m, dtype=np.int32), np.diff(indptr))
    order = np.argsort(indices, kind="stable")
    t_indptr = np.concatenate([[0], np.cumsum(np.bincount(indices, minlength=m))])
    return t_indptr, rows[order]


def _gather(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Concatenated CSR rows ``rows``."""
    if rows.size == 0:
        return np.empty(0, dtype=indices.dtype)
    starts, ends = indptr[rows], indptr[rows + 1]
    lens = ends - starts
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens)
    return indices[np.arange(lens.sum()) + offsets]


def probcover_select(
    indptr: np.ndarray, indices: np.ndarray, labeled: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """Greedy max coverage on a CSR ball graph.

    Args:
        indptr, indices: out-edges (``i -> j``: ``j`` is in the ball of ``i``).
        labeled: ``(M,)`` bool, rows already labeled (their balls start covered; never picked).
        n: picks, ``<= (~labeled).sum()``.

    Returns:
        ``(n,)`` int64 row indices in pick order. Total work O(E + n x M).
    """
    m = labeled.shape[0]
    t_indptr, t_indices = _transpose(indptr, indices, m)
    covered = np.zeros(m, dtype=bool)
    covered[_gather(indptr, indices, np.flatnonzero(labeled))] = True
    csum = np.concatenate([[0], np.cumsum(~covered[indices], dtype=np.int64)])
    gain = csum[indptr[1:]] - csum[indptr[:-1]]  # uncovered points in each ball
    gain[labeled] = -1
    picks = np.empty(n, dtype=np.int64)
    for i in range(n):
        if gain.max() > 0:
            c = pick_max(gain, rng)
        else:  # all covered: the reference picks at random
            c = int(rng.choice(np.flatnonzero(gain == 0)))
        picks[i] = c
        ball = indices[indptr[c] : indptr[c + 1]]
        new = ball[~covered[ball]]
        covered[new] = True
        np.subtract.at(gain, _gather(t_indptr, t_indices, new), 1)
        gain[c] = -1  # picked and labeled rows stay < 0: never picked again
    return picks


@STRATEGIES.register("probcover")
class ProbCover(Strategy):
    """ProbCover (Yehuda et al. 2022) on the pre-computed features; a cold-start strategy.

    Args:
        delta: ball radius (Euclidean, feature units); None = derive from ``purity``.
        purity: fraction of pure balls the derived delta keeps (0.95, as in the paper).
        max_points: nodes of the graph (labeled + a random unlabeled subsample); raise it for a
            finer estimate at ``M^2 x d`` cost.
        max_degree: most points a ball keeps (its nearest); bounds memory at ``M x max_degree``
            edges x 8 bytes.
    """

    name = "probcover"
    requires: ClassVar[frozenset[str]] = frozenset({"features"})
    cold_start: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "delta": [Interval(Real, 0, None, closed="neither"), None],
        "purity": [Interval(Real, 0, 1, closed="right")],
        "max_points": [Interval(Integral, 1, None, closed="left")],
        "max_degree": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        delta: float | None = None,
        purity: float = 0.95,
        max_points: int = 50_000,
        max_degree: int = 1000,
    ) -> None:
        self.delta = delta
        self.purity = purity
        self.max_points = max_points
        self.max_degree = max_degree

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        unl = ctx.unlabeled_positions()
        lab = ctx.labeled_positions()
        n_unl = min(unl.size, max(n, int(self.max_points) - lab.size))
        sub = unl if n_unl == unl.size else np.sort(rng.choice(unl, size=n_unl, replace=False))
        nodes = np.concatenate([lab, sub])
        X = as_float32(ctx.features[nodes])
        device = accel_device(ctx)
        delta = self.delta
        if delta is None:
            _, pseudo = kmeans(X, ctx.n_classes, rng, device=device)
            delta = delta_from_purity(X, pseudo, float(self.purity), device=device)
        self.delta_ = float(delta)
        indptr, indices = radius_graph(X, float(delta), max_degree=int(self.max_degree), device=device)
        self.n_edges_ = int(indices.size)
        labeled = np.zeros(nodes.size, dtype=bool)
        labeled[: lab.size] = True
        return nodes[probcover_select(indptr, indices, labeled, n, rng)]
