"""BADGE: k-means++ seeding on gradient embeddings, without materialising them.

Ash et al., "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds", ICLR 2020.
The gradient embedding of sample i (last layer, hypothesised label = the predicted class) is
``g_i = (p_i - e_i) (x) h_i`` (``C x H`` numbers) with ``p_i`` the ``(C,)`` probabilities,
``e_i`` the one-hot of ``argmax p_i`` and ``h_i`` the ``(H,)`` hidden activation. Its geometry
factorises:

    <g_i, g_j> = <p_i - e_i, p_j - e_j> <h_i, h_j>,   ||g_i||^2 = ||p_i - e_i||^2 ||h_i||^2,

so one k-means++ step (distance of every sample to the newest centre) costs one pass over the
``(U, H)`` embedding and the ``(U, C)`` residuals: O(U (H + C)) memory, against ``U x C x H`` for
the materialised embedding (and ``U x U`` for the reference code's distance matrix). Written by
hand: no maintained library seeds k-means++ from a factorised (Kronecker) inner product.

The partitioned variant (Wen et al., TMLR 2024 reference code) seeds independently on
``partitions`` disjoint parts of a random candidate subset, ``n / partitions`` picks each: the
work drops from ``n x U`` to ``n x U_c / partitions`` row-visits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch

from alcore.registry import Integral, Interval
from alcore.strategies._common import pick_max, pick_max_torch
from alcore.strategies._passes import accel_device
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["Badge", "badge_factors", "kmeanspp_select", "badge_select", "badge_select_materialised"]


def badge_factors(probs: np.ndarray, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two factors of the gradient embeddings and their squared norms.

    Args:
        probs: ``(U, C)`` class probabilities.
        emb: ``(U, H)`` hidden activations.

    Returns:
        ``q = p - onehot(argmax p)`` ``(U, C)``, ``h`` ``(U, H)`` (as given, dtype kept) and
        ``||g||^2 = ||q||^2 ||h||^2`` ``(U,)``.
    """
    emb = np.asarray(emb)
    dtype = emb.dtype if emb.dtype.kind == "f" else np.float32
    q = np.array(probs, dtype=dtype, copy=True)
    q[np.arange(q.shape[0]), q.argmax(axis=1)] -= 1.0
    h = np.asarray(emb, dtype=dtype)
    g2 = np.einsum("ij,ij->i", q, q) * np.einsum("ij,ij->i", h, h)
    return q, h, g2


def kmeanspp_select(
    dist_to: Callable[[int], np.ndarray], norms2: np.ndarray, n: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means++ seeding as in BADGE's reference code: the first centre is the largest norm, each
    next one is drawn with probability proportional to the squared distance to its nearest centre.

    Args:
        dist_to: ``c -> (U,)`` squared distances of every point to point ``c``.
        norms2: ``(U,)`` squared norms (the first pick is their argmax, ties broken by ``rng``).
        n: picks, ``<= U``.
        rng: the draws (one uniform per pick) and tie-breaks.

    Returns:
        ``(n,)`` int64 distinct indices in pick order. When every remaining point sits on a centre
        (all distances 0), the rest are drawn uniformly from the unpicked points.
    """
    U = norms2.shape[0]
    picks = np.empty(n, dtype=np.int64)
    chosen = np.zeros(U, dtype=bool)
    min_d = np.full(U, np.inf)
    for i in range(n):
        if i == 0:
            c = pick_max(norms2, rng)
        else:
            cum = np.cumsum(min_d, dtype=np.float64)
            total = cum[-1]
            if total > 0 and np.isfinite(total):
                c = int(np.searchsorted(cum, rng.random() * total, side="right"))
                c = min(c, U - 1)
                while chosen[c]:  # only reachable through rounding at a boundary
                    c -= 1
            else:
                c = int(rng.choice(np.flatnonzero(~chosen)))
        picks[i] = c
        chosen[c] = True
        d = np.maximum(dist_to(c), 0.0)
        np.minimum(min_d, d, out=min_d)
        min_d[chosen] = 0.0
    return picks


def badge_select(
    probs: np.ndarray, emb: np.ndarray, n: int, rng: np.random.Generator, *, device: Any = None
) -> np.ndarray:
    """BADGE on the factorised gradient embeddings.

    Args:
        probs: ``(U, C)`` probabilities; emb: ``(U, H)`` hidden activations; n: picks ``<= U``.
        device: None (numpy) or a torch device: the same seeding in torch there (the factors are
            copied to it once), the same draws from ``rng``.

    Returns:
        ``(n,)`` int64 indices into the rows, in pick order.

    Memory: ``q`` ``(U, C)``, four ``(U,)`` vectors; the ``(U, C x H)`` gradient embedding is
    never formed. Time per pick: ``h @ h_c`` and ``q @ q_c``, one pass over the rows.
    """
    q, h, g2 = badge_factors(probs, emb)
    if device is not None:
        return _kmeanspp_select_torch(q, h, g2, n, rng, device)

    def dist_to(c: int) -> np.ndarray:
        return g2 + g2[c] - 2.0 * (q @ q[c]) * (h @ h[c])

    return kmeanspp_select(dist_to, g2, n, rng)


@torch.inference_mode()
def _kmeanspp_select_torch(
    q: np.ndarray, h: np.ndarray, g2: np.ndarray, n: int, rng: np.random.Generator, device: Any
) -> np.ndarray:
    """:func:`kmeanspp_select` with BADGE's factorised distances, in torch on ``device``: the same
    operations and the same draws from ``rng`` (one uniform per pick, tie-breaks)."""
    qt, ht, g2t = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (q, h, g2))
    U = g2t.shape[0]
    picks = np.empty(n, dtype=np.int64)
    chosen = torch.zeros(U, dtype=torch.bool, device=device)
    min_d = torch.full((U,), float("inf"), dtype=torch.float64, device=device)
    for i in range(n):
        if i == 0:
            c = pick_max_torch(g2t, rng)
        else:
            cum = torch.cumsum(min_d, dim=0)
            total = float(cum[-1])
            if total > 0 and np.isfinite(total):
                value = torch.tensor([rng.random() * total], dtype=torch.float64, device=device)
                c = min(int(torch.searchsorted(cum, value, right=True)), U - 1)
                while bool(chosen[c]):  # only reachable through rounding at a boundary
                    c -= 1
            else:
                c = int(rng.choice(np.flatnonzero(~chosen.cpu().numpy())))
        picks[i] = c
        chosen[c] = True
        d = (g2t + g2t[c] - 2.0 * (qt @ qt[c]) * (ht @ ht[c])).clamp_(min=0.0)
        torch.minimum(min_d, d.double(), out=min_d)
        min_d[chosen] = 0.0
    return picks


def badge_select_materialised(probs: np.ndarray, emb: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The same selection on the explicit ``(U, C x H)`` gradient embeddings. For tests and small
    pools only: it needs ``U x C x H`` floats."""
    q, h, _ = badge_factors(probs, emb)
    G = (q[:, :, None] * h[:, None, :]).reshape(q.shape[0], -1)
    g2 = np.einsum("ij,ij->i", G, G)

    def dist_to(c: int) -> np.ndarray:
        diff = G - G[c]
        return np.einsum("ij,ij->i", diff, diff)

    return kmeanspp_select(dist_to, g2, n, rng)


@STRATEGIES.register("badge")
class Badge(Strategy):
    """BADGE (Ash et al. 2020) on the proxy: k-means++ on factorised gradient embeddings.

    Args:
        partitions: split the candidates into this many random parts and seed each part
            independently with its share of the budget (1 = plain BADGE).
        max_candidates: draw this many unlabeled samples at random as candidates (None = all).
            Must be >= the batch size.

    Memory: the ``(U, H)`` embedding and ``(U, C)`` probabilities of the unlabeled pool (plain
    BADGE) or of one part of the candidates at a time, plus O(U).
    Time: the proxy's forward over the ``U_c`` candidates (the unlabeled pool, or
    ``max_candidates`` of it), then ``n x U_c / partitions`` row-visits of ``H + C`` floats.
    """

    name = "badge"
    requires: ClassVar[frozenset[str]] = frozenset({"model", "embeddings"})
    cold_start: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "partitions": [Interval(Integral, 1, None, closed="left")],
        "max_candidates": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, *, partitions: int = 1, max_candidates: int | None = None) -> None:
        self.partitions = partitions
        self.max_candidates = max_candidates

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        U = ctx.n_unlabeled
        device = accel_device(ctx)
        if self.max_candidates is None and self.partitions == 1:
            probs, emb = ctx.probs(), ctx.embeddings()
            return ctx.unlabeled_positions()[badge_select(probs, emb, n, rng, device=device)]
        m = U if self.max_candidates is None else min(U, max(n, int(self.max_candidates)))
        cand = rng.permutation(U)[:m]
        parts = np.array_split(cand, min(int(self.partitions), n))
        budgets = [len(b) for b in np.array_split(np.arange(n), len(parts))]
        chosen = []
        for part, b in zip(parts, budgets, strict=True):
            part = np.sort(part)
            # the proxy scores this part's candidates only, when the part is seeded
            probs, emb = ctx.probs_at(part), ctx.embeddings_at(part)
            chosen.append(part[badge_select(probs, emb, b, rng, device=device)])
        return ctx.unlabeled_positions()[np.concatenate(chosen)]
