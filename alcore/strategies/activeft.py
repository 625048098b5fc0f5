"""ActiveFT: parametric centroid optimisation on L2-normalised features.

Xie et al., "Active Finetuning: Exploiting Annotation Budget in the Pretraining-Finetuning
Paradigm", CVPR 2023 (code: yichen928/ActiveFT). ``b`` centroids ``theta`` (initialised at random
samples) are optimised with Adam to minimise, over normalised features ``f``,

    -mean_i [ s_i - log(exp(s_i) + balance * sum_k exp(<theta_{c_i}, theta_k> / tau)) ],
    s_i = max_j <f_i, theta_j> / tau,  c_i = argmax_j,

which pulls every centroid into its region of the data and pushes the centroids apart
(``theta`` normalised in the loss; the repulsion term uses detached centroids, as the reference).
Then each centroid, in order, takes its nearest (cosine) sample not yet taken.
Labeled samples enter as fixed centroids (they attract and repel but are never picked).

Deviation: each iteration uses a seeded random minibatch of ``batch_size`` features (the reference
uses all of them; at 10^6 samples that is ``N x b x d`` flops per step).

Memory: the ``(U, D)`` features (read in place), one ``(batch_size, b)`` and one ``(b, b)`` block,
and ``(64, U)`` similarities in the final assignment - O(U x D + b^2).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch

from alcore.registry import Integral, Interval, Options, Real
from alcore.strategies._common import as_float32, sq_norms
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy
from alcore.strategies.coreset import kcenter_greedy

__all__ = ["ActiveFT", "activeft_select"]


def activeft_select(
    X: np.ndarray,
    n: int,
    *,
    candidates: np.ndarray,
    fixed: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 0.07,
    lr: float = 1e-3,
    iterations: int = 100,
    batch_size: int | None = 16384,
    balance: float = 1.0,
    init: str = "random",
) -> np.ndarray:
    """ActiveFT selection.

    Args:
        X: ``(M, d)`` float32 rows (normalised on the fly, never copied whole).
        n: picks, ``<= candidates.size``.
        candidates: ``(U,)`` indices into ``X`` that may be picked (they also form the data term).
        fixed: ``(L,)`` indices of rows that are fixed centroids (the labeled set).
        rng: initial centroids and minibatches.
        init: ``"random"`` samples (the reference default) or ``"fps"``: farthest point sampling
            on the normalised candidates (greedy k-center from the fixed centroids; the reference's
            other option - it needs a normalised ``(U, d)`` copy).

    Returns:
        ``(n,)`` int64 indices into ``X`` (a subset of ``candidates``), in centroid order.
    """
    inv = 1.0 / np.sqrt(np.maximum(sq_norms(X), 1e-12))

    def rows(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(X[idx], dtype=np.float32) * inv[idx, None].astype(np.float32))

    if init == "fps":
        Xn = np.asarray(X[candidates], dtype=np.float32) * inv[candidates, None].astype(np.float32)
        fixed_rows = np.asarray(fixed, dtype=np.int64)
        Xn = np.vstack([Xn, np.asarray(X[fixed_rows], dtype=np.float32) * inv[fixed_rows, None].astype(np.float32)])
        selectable = np.arange(Xn.shape[0]) < candidates.size
        centers = np.arange(candidates.size, Xn.shape[0])
        init = candidates[kcenter_greedy(Xn, n, centers=centers, selectable=selectable, rng=rng)]
        del Xn
    else:
        init = rng.choice(candidates, size=n, replace=False)
    theta = torch.nn.Parameter(rows(init).clone())
    fixed_t = rows(np.asarray(fixed, dtype=np.int64))
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(int(iterations)):
        if batch_size is None or batch_size >= candidates.size:
            batch = candidates
        else:
            batch = np.sort(rng.choice(candidates, size=int(batch_size), replace=False))
        f = rows(batch)
        cent = torch.cat([torch.nn.functional.normalize(theta, dim=1), fixed_t])
        s, pos = (f @ cent.T / temperature).max(dim=1)
        rep = torch.exp(cent.detach() @ cent.T / temperature).sum(dim=0)
        loss = -(s - torch.logaddexp(s, torch.log(balance * rep[pos]))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    cent = torch.nn.functional.normalize(theta.detach(), dim=1).numpy()
    # each centroid, in order, takes its nearest untaken candidate (cosine similarity)
    cand = np.asarray(candidates, dtype=np.int64)
    taken = np.zeros(cand.size, dtype=bool)
    picks = np.empty(n, dtype=np.int64)
    for s0 in range(0, n, 64):
        block = np.empty((min(64, n - s0), cand.size), dtype=np.float32)
        for r0 in range(0, cand.size, 65536):
            idx = cand[r0 : r0 + 65536]
            block[:, r0 : r0 + idx.size] = (cent[s0 : s0 + 64] @ np.asarray(X[idx], dtype=np.float32).T) * inv[idx]
        block[:, taken] = -np.inf
        for r in range(block.shape[0]):
            j = int(np.argmax(block[r]))
            while taken[j]:
                block[r, j] = -np.inf
                j = int(np.argmax(block[r]))
            taken[j] = True
            picks[s0 + r] = cand[j]
    return picks


@STRATEGIES.register("activeft")
class ActiveFT(Strategy):
    """ActiveFT (Xie et al. 2023) on the pre-computed features; a cold-start strategy.

    Args:
        temperature: tau (0.07); lr: Adam step (1e-3); iterations: optimisation steps (100);
        batch_size: features per step (None = all, as the reference); balance: weight of the
        repulsion term (1.0); init: initial centroids, ``"random"`` samples (reference default) or
        ``"fps"`` (farthest point sampling).
    """

    name = "activeft"
    requires: ClassVar[frozenset[str]] = frozenset({"features"})
    cold_start: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "iterations": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "balance": [Interval(Real, 0, None, closed="neither")],
        "init": [Options(("random", "fps"))],
    }

    def __init__(
        self,
        *,
        temperature: float = 0.07,
        lr: float = 1e-3,
        iterations: int = 100,
        batch_size: int | None = 16384,
        balance: float = 1.0,
        init: str = "random",
    ) -> None:
        self.temperature = temperature
        self.lr = lr
        self.iterations = iterations
        self.batch_size = batch_size
        self.balance = balance
        self.init = init

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        return activeft_select(
            as_float32(ctx.features),
            n,
            candidates=ctx.unlabeled_positions(),
            fixed=ctx.labeled_positions(),
            rng=rng,
            temperature=float(self.temperature),
            lr=float(self.lr),
            iterations=int(self.iterations),
            batch_size=None if self.batch_size is None else int(self.batch_size),
            balance=float(self.balance),
            init=self.init,
        )
