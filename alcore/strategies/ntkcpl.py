"""NTKCPL: pick the samples that most reduce the estimated risk over the pool, where the risk is
measured against clustering pseudo-labels and the classifier is approximated by its NTK.

Wen, Pizarro & Li, "NTKCPL: Active Learning on Top of Self-Supervised Model by Estimating True
Coverage", arXiv 2306.04099; METHODS.md section 2.

1. **Kernel subset.** Memory is one ``(m, m)`` kernel, ``m = max_kernel`` rows: the labeled
   samples first, then random unlabeled ones (the reference uses 50,000; 4 m^2 bytes per
   matrix - 100 MB at the default 5,000), recomputed each round. Candidates and the risk are
   those of the subset.
2. **NTK.** A one-hidden-layer ReLU MLP in NTK parameterisation, ``f(x) = W2 relu(W1 x / sqrt(D)
   + b1) / sqrt(H) + b2`` with standard normal parameters, on L2-normalised features scaled to
   norm ``sqrt(D)``. Its empirical NTK in closed form (:func:`ntk_kernel`; the per-output blocks
   averaged over outputs, the cross-output blocks dropped as in the paper), and its initial
   outputs ``f0``.
3. **CPL.** Pseudo-labels from k-means on the L2-normalised features: with no label, ``k`` = the
   number of classes; with labels, constrained seeded k-means (:mod:`alcore.cluster`) with
   ``k = (|L| + b) / 2`` clusters (at least the number of classes, at most ``max_clusters`` =
   100), the labeled samples fixed in the cluster of their class. The MLP has one output per
   cluster; the labeled samples' targets are their true classes (= their clusters).
4. **Select.** The linearised network trained to convergence on S predicts
   ``f_S = f0 + Theta(., S) Theta(S, S)^-1 (Y_S - f0(S))``. Its posterior kernel
   ``P = Theta - Theta(., S) Theta(S, S)^-1 Theta(S, .)`` and ``f_S`` are updated by Schur
   complements when a block B joins S: ``f += P(., B) P(B, B)^-1 (Y_B - f(B))``,
   ``P -= P(., B) P(B, B)^-1 P(B, .)``. The estimated risk is the fraction of the subset whose
   predicted cluster differs from its pseudo-label. Each step scores every candidate ``c`` by the
   risk after adding it alone with its pseudo-label (a rank-1 update), adds the ``step`` best,
   and updates ``P`` and ``f``.

``centred``: the linearised prediction starts from the MLP's initial outputs ``f0`` (METHODS.md).
With one random initialisation ``f0`` is noise of the same size as the updates, and far from S it
decides the argmax; ``centred=True`` drops it (``f0 = 0``: the mean prediction over
initialisations, as an NTK ensemble predicts). ``bench/selfsup.py`` measures both.

``step``: the reference adds 250 per step with budgets of thousands. With small budgets one step
would take the whole batch from a single ranking, so the step is also capped at
``ceil(b / min_steps)``: at least ``min_steps`` re-rankings per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from alcore.registry import Integral, Interval, Real
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy, top_n

__all__ = ["NTKCPL", "NTKParams", "init_ntk_mlp", "ntk_kernel", "ntk_outputs", "ntkcpl_select"]


@dataclass(frozen=True)
class NTKParams:
    """A one-hidden-layer ReLU MLP in NTK parameterisation: ``W1`` (H, D), ``b1`` (H,),
    ``W2`` (C, H), ``b2`` (C,), all standard normal at initialisation."""

    W1: np.ndarray
    b1: np.ndarray
    W2: np.ndarray
    b2: np.ndarray


def init_ntk_mlp(d: int, hidden: int, n_out: int, rng: np.random.Generator) -> NTKParams:
    """Standard normal parameters (float64) for ``D -> H -> C``."""
    return NTKParams(
        W1=rng.standard_normal((hidden, d)),
        b1=rng.standard_normal(hidden),
        W2=rng.standard_normal((n_out, hidden)),
        b2=rng.standard_normal(n_out),
    )


def _hidden(X: np.ndarray, p: NTKParams) -> np.ndarray:
    return np.asarray(X, dtype=np.float64) @ p.W1.T / math.sqrt(p.W1.shape[1]) + p.b1


def ntk_outputs(X: np.ndarray, p: NTKParams) -> np.ndarray:
    """``(n, C)`` outputs ``f0`` of the MLP at its parameters ``p``."""
    h = _hidden(X, p)
    return np.maximum(h, 0.0) @ p.W2.T / math.sqrt(p.W2.shape[1]) + p.b2


def ntk_kernel(Xa: np.ndarray, Xb: np.ndarray, p: NTKParams) -> np.ndarray:
    """``(a, b)`` empirical NTK of the MLP, averaged over its outputs (closed form, no autograd):

    ``Theta(x, x') = relu(h)^T relu(h') / H + 1 + (x^T x' / D + 1) * sum_j w_j 1[h_j>0] 1[h'_j>0] / H``

    with ``h = W1 x / sqrt(D) + b1`` and ``w_j = mean_c W2[c, j]^2`` (the gradients of the output
    layer, its bias, the hidden layer and its bias, in that order). float64.
    """
    ha, hb = _hidden(Xa, p), _hidden(Xb, p)
    H, D = p.W1.shape
    w = (p.W2**2).mean(axis=0)
    out = np.maximum(ha, 0.0) @ np.maximum(hb, 0.0).T / H + 1.0
    gates = ((ha > 0) * w) @ (hb > 0).T.astype(np.float64) / H
    xx = np.asarray(Xa, dtype=np.float64) @ np.asarray(Xb, dtype=np.float64).T / D + 1.0
    out += xx * gates
    return out


def _condition(P: np.ndarray, f: np.ndarray, block: np.ndarray, Y: np.ndarray, jitter: float) -> None:
    """In place: add ``block`` (rows of the subset) with targets ``Y`` (|B|, C) to the training set
    of the linearised network (Schur-complement update of ``P`` and ``f``)."""
    if block.size == 0:
        return
    PB = P[:, block]  # (m, |B|) copy
    A = PB[block] + jitter * np.eye(block.size)
    L = np.linalg.cholesky(A)
    # G = PB A^-1, through two triangular solves on the transpose.
    G = np.linalg.solve(L.T, np.linalg.solve(L, PB.T)).T
    f += G @ (Y - f[block])
    P -= G @ PB.T


def _risks(P: np.ndarray, f: np.ndarray, cpl: np.ndarray, cands: np.ndarray) -> np.ndarray:
    """``(len(cands),)`` estimated risk after adding each candidate alone with its pseudo-label.

    Adding ``c`` moves the outputs to ``f + P(., c) delta_c`` with
    ``delta_c = (onehot(cpl_c) - f(c)) / P(c, c)``. A row ``x`` can change between right and
    wrong only if ``|P(x, c)| (max delta_c - min delta_c)`` reaches the gap between its
    pseudo-label's output and the best other output, so only those (row, candidate) pairs are
    evaluated in full - exact, and usually a small fraction of the ``m x |cands|`` pairs.
    """
    m, k = f.shape
    rows = np.arange(m)
    own = f[rows, cpl]
    others = f.copy()
    others[rows, cpl] = -np.inf
    gap = np.abs(own - others.max(axis=1)) if k > 1 else np.full(m, np.inf)
    wrong = own < others.max(axis=1) if k > 1 else np.zeros(m, dtype=bool)
    base = int(wrong.sum())
    out = np.empty(cands.size)
    eye = np.eye(k)
    chunk = max(1, (1 << 22) // m)
    for s in range(0, cands.size, chunk):
        cb = cands[s : s + chunk]
        delta = (eye[cpl[cb]] - f[cb]) / np.maximum(P[cb, cb], 1e-12)[:, None]  # (B, k)
        reach = np.abs(P[cb]) * (delta.max(axis=1) - delta.min(axis=1))[:, None]  # (B, m)
        bi, xi = np.nonzero(reach >= gap[None, :])
        moved = f[xi] + P[cb[bi], xi][:, None] * delta[bi]  # (pairs, k)
        now_wrong = moved.argmax(axis=1) != cpl[xi]
        change = np.bincount(bi, weights=now_wrong.astype(np.float64) - wrong[xi], minlength=cb.size)
        out[s : s + cb.size] = (base + change) / m
    return out


def ntkcpl_select(
    X: np.ndarray,
    labeled: np.ndarray,
    y_labeled: np.ndarray,
    n: int,
    *,
    n_classes: int,
    rng: np.random.Generator,
    hidden: int = 256,
    max_kernel: int = 5000,
    max_clusters: int = 100,
    step: int = 250,
    min_steps: int = 5,
    jitter: float = 1e-6,
    centred: bool = False,
) -> np.ndarray:
    """Positions of ``n`` unlabeled rows of ``X`` chosen by NTKCPL (see the module docstring).

    Args:
        X: ``(N, D)`` features.
        labeled: ``(L,)`` positions of the labeled rows; ``y_labeled`` their classes.
        n: how many to pick (<= the unlabeled rows).

    Returns:
        ``(n,)`` distinct unlabeled positions, in the order they were added.

    Memory: ``O(m^2)`` floats for the kernel, ``m = max(max_kernel, |L| + n)``; nothing of size
    ``N^2``.
    """
    from alcore.cluster import constrained_kmeans, l2_normalize

    N, D = X.shape
    labeled = np.asarray(labeled, dtype=np.int64)
    is_lab = np.zeros(N, dtype=bool)
    is_lab[labeled] = True
    unl = np.flatnonzero(~is_lab)
    m = min(N, max(int(max_kernel), labeled.size + n))
    extra = rng.choice(unl, size=min(unl.size, m - labeled.size), replace=False)
    subset = np.concatenate([labeled, np.sort(extra)])
    Z = l2_normalize(np.asarray(X[subset]))
    n_lab = labeled.size

    if n_lab == 0:
        k = min(n_classes, subset.size)
    else:
        k = min(max(n_classes, (n_lab + n) // 2), max(int(max_clusters), n_classes))
        # unseeded clusters start at unlabeled points of the subset
        k = min(k, n_classes + subset.size - n_lab)
    cpl = constrained_kmeans(Z, k, np.arange(n_lab), np.asarray(y_labeled, dtype=np.int64), random_state=rng).labels

    params = init_ntk_mlp(D, int(hidden), k, rng)
    Zs = Z.astype(np.float64) * math.sqrt(D)
    P = ntk_kernel(Zs, Zs, params)
    f = np.zeros((Zs.shape[0], k)) if centred else ntk_outputs(Zs, params)
    scale = float(np.mean(np.diag(P)))
    eps = jitter * scale
    _condition(P, f, np.arange(n_lab), np.eye(k)[cpl[:n_lab]], eps)

    cand = np.arange(n_lab, subset.size)
    chosen: list[np.ndarray] = []
    left = n
    step_size = max(1, min(int(step), math.ceil(n / int(min_steps))))
    while left > 0:
        s = min(step_size, left)
        risk = _risks(P, f, cpl, cand)
        pick = cand[top_n(-risk, s, rng)]
        _condition(P, f, pick, np.eye(k)[cpl[pick]], eps)
        chosen.append(pick)
        cand = np.setdiff1d(cand, pick, assume_unique=True)
        left -= s
    return subset[np.concatenate(chosen)]


@STRATEGIES.register("ntkcpl")
class NTKCPL(Strategy):
    """NTKCPL (Wen et al. 2023) on the pre-computed features; a cold-start strategy.

    Args:
        hidden: hidden width H of the NTK MLP (the proxy's default, 256).
        max_kernel: rows m of the kernel subset (memory ~ 3 x 8 m^2 bytes; the reference: 50,000).
        max_clusters: cap on the number of pseudo-label clusters (100).
        step: candidates added per greedy step (250).
        min_steps: at least this many greedy steps per batch (caps the step for small budgets).
        jitter: ridge added to ``P(B, B)`` relative to the kernel's mean diagonal.
        centred: drop the initial outputs ``f0`` from the prediction (see the module docstring).
    """

    name = "ntkcpl"
    requires: ClassVar[frozenset[str]] = frozenset({"features"})
    cold_start: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "hidden": [Interval(Integral, 1, None, closed="left")],
        "max_kernel": [Interval(Integral, 1, None, closed="left")],
        "max_clusters": [Interval(Integral, 1, None, closed="left")],
        "step": [Interval(Integral, 1, None, closed="left")],
        "min_steps": [Interval(Integral, 1, None, closed="left")],
        "jitter": [Interval(Real, 0, 1, closed="right")],
        "centred": ["boolean"],
    }

    def __init__(
        self,
        *,
        hidden: int = 256,
        max_kernel: int = 5000,
        max_clusters: int = 100,
        step: int = 250,
        min_steps: int = 5,
        jitter: float = 1e-6,
        centred: bool = False,
    ) -> None:
        self.hidden = hidden
        self.max_kernel = max_kernel
        self.max_clusters = max_clusters
        self.step = step
        self.min_steps = min_steps
        self.jitter = jitter
        self.centred = centred

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        lab = ctx.labeled_positions()
        return ntkcpl_select(
            ctx.features,
            lab,
            ctx.labels[lab],
            n,
            n_classes=ctx.n_classes,
            rng=rng,
            hidden=int(self.hidden),
            max_kernel=int(self.max_kernel),
            max_clusters=int(self.max_clusters),
            step=int(self.step),
            min_steps=int(self.min_steps),
            jitter=float(self.jitter),
            centred=bool(self.centred),
        )
