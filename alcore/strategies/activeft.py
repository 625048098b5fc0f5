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

Scale. The work of one selection is at least its forward products: ``iterations x (batch_size x
(b + L) + (b + L)^2) x D`` for the loss and one ``U x b x D`` pass to assign the centroids. The
large-problem path (``U x b > FAST_WORK``, or any accelerator) stays within a small factor of
that: it writes out the gradient (a scatter-add for the data term instead of a second product, the
repulsion only for the centroids in use) and assigns in one streaming pass; ``bench/selection.py``
measures both against the bare products.

Memory: the ``(U, D)`` features (read in place), ``(block, b)`` and ``(b + L, block)`` blocks, the
``(batch_size, D)`` minibatch, ``TOP_K x b`` candidates - O(U + b x D) beyond the features
(the small path: one ``(batch_size, b)``, one ``(b, b)`` block and ``(64, U)`` similarities).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch

from alcore.registry import Integral, Interval, Options, Real
from alcore.strategies._common import as_float32, sq_norms
from alcore.strategies._passes import BLOCK, accel_device
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy
from alcore.strategies.coreset import kcenter_greedy

__all__ = ["ActiveFT", "activeft_select"]


#: ``candidates x n`` above which the large-problem path runs (hand-written gradient, one
#: streaming assignment pass); below it, torch autograd and the blockwise assignment.
FAST_WORK = 2_000_000
#: Nearest candidates kept per centroid by the streaming assignment pass.
TOP_K = 8


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
    device: torch.device | None = None,
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
        device: a torch device for the large-problem path (None: the CPU).

    Returns:
        ``(n,)`` int64 indices into ``X`` (a subset of ``candidates``), in centroid order.

    Small problems (``U x n <= FAST_WORK`` on the CPU) run the loss through torch autograd and
    assign in blocks of 64 centroids. Larger ones (or any ``device``) compute the same gradient by
    hand - the max over centroids only sends gradient to each row's own centroid, so the data term's
    backward is a scatter-add instead of a second ``(batch, n)`` product, and the repulsion is
    evaluated only for the centroids some row of the batch is assigned to - and assign in one
    streaming pass that keeps the ``TOP_K`` nearest candidates of every centroid. Both compute the
    same quantities; they round differently.
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

    def batches() -> Iterator[np.ndarray]:
        for _ in range(int(iterations)):
            if batch_size is None or batch_size >= candidates.size:
                yield candidates
            else:
                yield np.sort(rng.choice(candidates, size=int(batch_size), replace=False))

    fixed = np.asarray(fixed, dtype=np.int64)
    if device is None and candidates.size * n <= FAST_WORK:
        cent = _optimise_autograd(rows, init, fixed, batches(), temperature, lr, balance)
        return _assign_blockwise(X, inv, cent, np.asarray(candidates, dtype=np.int64), n)
    dev = torch.device("cpu") if device is None else torch.device(device)
    cent = _optimise_fast(rows, init, fixed, batches(), temperature, lr, balance, dev)
    return _assign_streaming(X, inv, cent, np.asarray(candidates, dtype=np.int64), dev)


def _optimise_autograd(
    rows: Callable[[np.ndarray], torch.Tensor],
    init: np.ndarray,
    fixed: np.ndarray,
    batches: Iterator[np.ndarray],
    temperature: float,
    lr: float,
    balance: float,
) -> np.ndarray:
    theta = torch.nn.Parameter(rows(init).clone())
    fixed_t = rows(fixed)
    opt = torch.optim.Adam([theta], lr=lr)
    for batch in batches:
        f = rows(batch)
        cent = torch.cat([torch.nn.functional.normalize(theta, dim=1), fixed_t])
        s, pos = (f @ cent.T / temperature).max(dim=1)
        rep = torch.exp(cent.detach() @ cent.T / temperature).sum(dim=0)
        loss = -(s - torch.logaddexp(s, torch.log(balance * rep[pos]))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return torch.nn.functional.normalize(theta.detach(), dim=1).numpy()


def _assign_blockwise(X: np.ndarray, inv: np.ndarray, cent: np.ndarray, cand: np.ndarray, n: int) -> np.ndarray:
    """Each centroid, in order, takes its nearest untaken candidate (cosine similarity)."""
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


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b``; on the CPU through numpy's BLAS (faster than torch's on these machines)."""
    if a.device.type == "cpu":
        return torch.from_numpy(np.matmul(a.numpy(), b.numpy()))
    return a @ b


@torch.no_grad()
def _optimise_fast(
    rows: Callable[[np.ndarray], torch.Tensor],
    init: np.ndarray,
    fixed: np.ndarray,
    batches: Iterator[np.ndarray],
    temperature: float,
    lr: float,
    balance: float,
    dev: torch.device,
) -> np.ndarray:
    """The loss of :func:`_optimise_autograd` with its gradient written out (Adam as there):

    ``L = -mean_i [s_i - log(exp(s_i) + balance rep_{p_i})]``, ``s_i = <f_i, c_{p_i}> / tau``,
    ``p_i = argmax_j <f_i, c_j>``, ``rep_k = sum_j exp(<sg(c_j), c_k> / tau)``; with
    ``a_i = sigmoid(s_i - log r_i)``, ``r_i = balance rep_{p_i}``:
    ``dL/dc_k = sum_{i: p_i = k} [-(1 - a_i) / B f_i / tau + balance (1 - a_i) / (B r_i) (E^T C)_k / tau]``
    with ``E_jk = exp(<c_j, c_k> / tau)``, then through ``c = theta / ||theta||``.
    """
    theta = torch.nn.Parameter(rows(init).clone().to(dev))
    fixed_t = rows(fixed).to(dev)
    n = theta.shape[0]
    opt = torch.optim.Adam([theta], lr=lr)
    tau = float(temperature)
    for batch in batches:
        norm = theta.detach().norm(dim=1, keepdim=True).clamp_min(1e-12)
        c_free = theta.detach() / norm
        cent = torch.cat([c_free, fixed_t])  # (K, d)
        K = cent.shape[0]
        B = batch.size
        s = torch.empty(B, device=dev)
        pos = torch.empty(B, dtype=torch.int64, device=dev)
        f_all = []
        for r0 in range(0, B, _rows_per_block(K)):
            f = rows(batch[r0 : r0 + _rows_per_block(K)]).to(dev)
            s[r0 : r0 + len(f)], pos[r0 : r0 + len(f)] = _mm(f, cent.T).max(dim=1)
            f_all.append(f)
        s /= tau
        need = torch.unique(pos)
        rep = torch.zeros(K, device=dev)
        EC = torch.zeros(need.numel(), cent.shape[1], device=dev)
        for c0 in range(0, need.numel(), _rows_per_block(K)):
            blk = need[c0 : c0 + _rows_per_block(K)]
            E = torch.exp(_mm(cent, cent[blk].T.contiguous()) / tau)  # (K, blk)
            rep[blk] = E.sum(dim=0)
            EC[c0 : c0 + blk.numel()] = _mm(E.T.contiguous(), cent)
        r = balance * rep[pos]
        a = torch.sigmoid(s - torch.log(r))
        g_s = -(1.0 - a) / (B * tau)  # dL/d<f_i, c_{p_i}>
        g_rep = torch.zeros(K, device=dev).index_add_(0, pos, balance * (1.0 - a) / (B * r))
        grad = torch.zeros(K, cent.shape[1], device=dev)
        r0 = 0
        for f in f_all:
            grad.index_add_(0, pos[r0 : r0 + len(f)], f * g_s[r0 : r0 + len(f), None])
            r0 += len(f)
        grad[need] += g_rep[need, None] * EC / tau
        g = grad[:n]
        theta.grad = (g - c_free * (c_free * g).sum(dim=1, keepdim=True)) / norm
        opt.step()
    c = theta.detach()
    return (c / c.norm(dim=1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


def _rows_per_block(width: int) -> int:
    return int(max(256, min(16384, BLOCK // max(width, 1))))


def _assign_streaming(
    X: np.ndarray, inv: np.ndarray, cent: np.ndarray, cand: np.ndarray, dev: torch.device
) -> np.ndarray:
    """:func:`_assign_blockwise` from one pass over the candidates: keep each centroid's ``TOP_K``
    most similar candidates; a centroid whose ``TOP_K`` are all taken by earlier ones (rare: the
    repulsion keeps centroids apart) recomputes its similarity to every candidate."""
    n = cent.shape[0]
    C = torch.from_numpy(np.ascontiguousarray(cent.T)).to(dev)  # (d, n)
    kk = int(min(TOP_K, cand.size))
    top_v = torch.full((kk, n), -np.inf, device=dev)
    top_i = torch.zeros((kk, n), dtype=torch.int64, device=dev)
    step = _rows_per_block(n)
    for r0 in range(0, cand.size, step):
        idx = cand[r0 : r0 + step]
        xb = torch.from_numpy(np.asarray(X[idx], dtype=np.float32)).to(dev)
        S = _mm(xb, C) * torch.from_numpy(inv[idx].astype(np.float32)).to(dev)[:, None]
        v, i = torch.topk(S, min(kk, len(idx)), dim=0)
        v, j = torch.topk(torch.cat([top_v, v]), kk, dim=0)
        top_i = torch.gather(torch.cat([top_i, i + r0]), 0, j)
        top_v = v
    top_v, top_i = top_v.cpu().numpy(), top_i.cpu().numpy()
    taken = np.zeros(cand.size, dtype=bool)
    picks = np.empty(n, dtype=np.int64)
    for c in range(n):
        order = np.lexsort((top_i[:, c], -top_v[:, c]))  # most similar first, then the lowest index
        free = [int(top_i[o, c]) for o in order if not taken[top_i[o, c]]]
        if free:
            j = free[0]
        else:
            sims = np.empty(cand.size, dtype=np.float32)
            for r0 in range(0, cand.size, 65536):
                idx = cand[r0 : r0 + 65536]
                sims[r0 : r0 + idx.size] = (np.asarray(X[idx], dtype=np.float32) @ cent[c]) * inv[idx]
            sims[taken] = -np.inf
            j = int(np.argmax(sims))
        taken[j] = True
        picks[c] = cand[j]
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
            device=accel_device(ctx),
        )
