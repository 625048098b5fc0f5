"""The heavy passes of the diversity strategies, on the CPU (numpy + BLAS) or on a torch device.

Every pass streams the rows in chunks and allocates O(rows + k x d) beyond its input, plus one
``(chunk, k)`` block of at most :data:`BLOCK` floats. ``device=None`` runs numpy on the CPU (on
this project's 2-core machines OpenBLAS's GEMM and numpy's argmin are faster than torch's); a
``torch.device`` runs the same pass through torch on that device, with every random draw still
taken from the caller's ``numpy.random.Generator`` on the host, so that a fixed seed picks the same
ids on either (up to float rounding in exact near-ties; tests compare the two on the CPU).

- :func:`assign`: nearest centre of every row, one GEMM pass (``||c||^2 - 2 x.c`` in one product).
- :func:`kmeans_large`: k-means at scale - Lloyd steps on a seeded subsample, then one assignment
  pass over every row and the exact means of the clusters it forms.
- :func:`knn_mean_dist`: mean distance of every row to its k nearest others, within a group (the
  typicality of TypiClust), from one Gram product per block.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from alcore.strategies.base import dense_span

if TYPE_CHECKING:
    import torch

    from alcore.strategies.base import SelectionContext

__all__ = [
    "BLOCK",
    "accel_device",
    "assign",
    "fit_centres",
    "group_means",
    "kmeans_large",
    "knn_mean_dist",
    "seed_centres",
]

#: Floats in one ``(chunk, k)`` distance block (64 MiB of float32).
BLOCK = 1 << 24
#: k-means at scale: the Lloyd steps on the subsample cost this many passes over the rows...
FIT_PASSES = 0.5
#: ...in at most this many steps (fewer when the subsample must be larger)...
LLOYD_STEPS = 3
#: ...on a subsample of at least this many rows per cluster (or all of them).
MIN_PER_CLUSTER = 16
#: The initial centres: batched k-means++ in this many rounds, on this many subsample rows per cluster.
SEED_ROUNDS = 16
SEED_PER_CLUSTER = 4


def accel_device(ctx: SelectionContext) -> torch.device | None:
    """The torch device the passes of ``ctx`` run on: ``None`` (numpy, CPU) unless ``ctx.device``
    names an accelerator."""
    if ctx.device is None:
        return None
    from alcore.device import resolve_device

    dev = resolve_device(ctx.device)
    return None if dev.type == "cpu" else dev


def _chunk(k: int) -> int:
    return int(max(256, min(16384, BLOCK // max(k, 1))))


def _take(X: np.ndarray, rows: np.ndarray | None, s: int, e: int) -> np.ndarray:
    out = X[s:e] if rows is None else X[rows[s:e]]
    return np.asarray(out, dtype=np.float32)


def assign(
    X: np.ndarray, C: np.ndarray, *, rows: np.ndarray | None = None, device: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centre of every row, in one pass.

    Args:
        X: ``(N, d)`` rows (a memmap is read chunk by chunk, never copied whole).
        C: ``(k, d)`` centres.
        rows: ``(M,)`` indices of the rows of ``X`` to assign (None = all, in order). Increasing
            rows that nearly fill their span (:func:`~alcore.strategies.base.dense_span`) are
            assigned as that slice, and the others in it dropped.
        device: None (numpy) or a torch device.

    Returns:
        ``labels`` ``(M,)`` int64 (ties: the lowest centre) and ``d2`` ``(M,)`` float32, the
        squared distance to that centre (clipped at 0).

    Cost: ``M x k x d`` multiply-adds in ``(chunk, d+1) @ (d+1, k)`` GEMMs: the augmented column
    turns ``||c||^2 - 2 x.c`` into one product; an argmin per block; no other ``(chunk, k)`` pass.
    """
    span = None if rows is None else dense_span(rows)
    if span is not None:  # contiguous slices and a selection cost less than gathering every chunk
        labels, d2 = assign(X[span], C, device=device)
        return labels[rows - span.start], d2[rows - span.start]
    M = X.shape[0] if rows is None else int(rows.size)
    C = np.asarray(C, dtype=np.float32)
    k, d = C.shape
    labels = np.empty(M, dtype=np.int64)
    d2 = np.empty(M, dtype=np.float32)
    step = _chunk(k)
    if device is None:
        Ca = np.empty((d + 1, k), dtype=np.float32)
        Ca[:d] = C.T
        Ca[:d] *= -2.0
        Ca[d] = np.einsum("ij,ij->i", C, C)
        xa = np.empty((min(step, M), d + 1), dtype=np.float32)
        xa[:, d] = 1.0
        block = np.empty((min(step, M), k), dtype=np.float32)  # reused: a fresh one faults in its pages
        for s in range(0, M, step):
            xb = _take(X, rows, s, s + step)
            m = xb.shape[0]
            xa[:m, :d] = xb
            D = np.matmul(xa[:m], Ca, out=block[:m])
            lab = D.argmin(axis=1)
            labels[s : s + m] = lab
            d2[s : s + m] = D[np.arange(m), lab] + np.einsum("ij,ij->i", xb, xb)
    else:
        import torch

        Ct = torch.from_numpy(C).to(device)
        Ca = torch.cat([Ct.T * -2.0, (Ct * Ct).sum(1)[None]], dim=0)
        with torch.inference_mode():
            for s in range(0, M, step):
                xb = torch.from_numpy(_take(X, rows, s, s + step)).to(device)
                xa = torch.cat([xb, torch.ones(len(xb), 1, dtype=xb.dtype, device=device)], dim=1)
                vals, lab = (xa @ Ca).min(dim=1)
                labels[s : s + len(xb)] = lab.cpu().numpy()
                d2[s : s + len(xb)] = (vals + (xb * xb).sum(1)).cpu().numpy()
    np.maximum(d2, 0.0, out=d2)
    return labels, d2


def group_means(
    X: np.ndarray, labels: np.ndarray, k: int, previous: np.ndarray, *, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Means of the rows of each label (``(k, d)`` float32) and the group sizes ``(k,)``; a group
    with no row keeps its ``previous`` centre. One O(M x d) pass (``index_add`` per chunk of rows,
    summed in float32 in row order within a chunk, float64 across chunks)."""
    import torch

    M = labels.size
    sums = np.zeros((k, previous.shape[1]), dtype=np.float64)
    step = 65536
    part = torch.zeros((k, previous.shape[1]), dtype=torch.float32)
    for s in range(0, M, step):
        part.zero_()
        lab = torch.from_numpy(np.ascontiguousarray(labels[s : s + step], dtype=np.int64))
        xb = np.ascontiguousarray(_take(X, rows, s, s + step))
        part.index_add_(0, lab, torch.from_numpy(xb) if xb.flags.writeable else torch.tensor(xb))
        sums += part.numpy()
    counts = np.bincount(labels, minlength=k)
    means = np.asarray(previous, dtype=np.float32).copy()
    full = counts > 0
    means[full] = (sums[full] / counts[full, None]).astype(np.float32)
    return means, counts


def seed_centres(
    X: np.ndarray, k: int, rng: np.random.Generator, *, rounds: int = SEED_ROUNDS, device: Any = None
) -> np.ndarray:
    """``(k,)`` distinct row indices of ``X`` ``(m, d)``, drawn by D^2 sampling in ``rounds``
    batches: k-means++ (Arthur & Vassilvitskii 2007) when ``k <= rounds``; for larger ``k`` each
    batch is drawn at once, without replacement, with probability proportional to the squared
    distance to the nearest seed so far (weighted sampling by exponential keys, Efraimidis &
    Spirakis 2006), then the distances are updated with one ``(m, batch)`` product - a batched
    k-means++ in the spirit of k-means|| (Bahmani et al. 2012). Work: ``m x k x d`` in ``rounds``
    GEMMs instead of ``k`` matrix-vector products."""
    m = X.shape[0]
    first = int(rng.integers(m))
    picks = [np.array([first])]
    min_d = _passes_d2(X, X[[first]], device)
    for b in np.array_split(np.arange(k - 1), max(1, min(rounds, k) - 1)):
        if b.size == 0:
            continue
        w = min_d.astype(np.float64)
        keys = rng.exponential(size=m)  # one draw per row whatever the weights: the same stream on any device
        pos = w > 0
        keys[pos] /= w[pos]
        keys[~pos] = np.inf
        if pos.sum() < b.size:  # every other row sits on a seed: fill uniformly
            taken = np.concatenate(picks)
            free = np.setdiff1d(np.flatnonzero(~pos), taken)
            new = np.concatenate([np.flatnonzero(pos), rng.choice(free, size=b.size - int(pos.sum()), replace=False)])
        else:
            new = np.argpartition(keys, b.size - 1)[: b.size]
            new = new[np.argsort(keys[new], kind="stable")]
        picks.append(new)
        np.minimum(min_d, _passes_d2(X, X[new], device), out=min_d)
        min_d[new] = 0.0
    return np.concatenate(picks)[:k]


def _passes_d2(X: np.ndarray, C: np.ndarray, device: Any) -> np.ndarray:
    return assign(X, C, device=device)[1]


def kmeans_large(
    X: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    rows: np.ndarray | None = None,
    device: Any = None,
    fit_passes: float = FIT_PASSES,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the rows of ``X`` (``rows`` of them, or all) into ``k`` clusters, at the cost of
    one assignment pass over them plus ``fit_passes`` passes' worth of Lloyd steps on a subsample.

    1. A seeded random subsample of ``s = min(M, max(M x fit_passes / LLOYD_STEPS,
       MIN_PER_CLUSTER x k))`` rows, in random order; the initial centres by batched k-means++
       (:func:`seed_centres`) on its first ``min(s, 4 k)`` rows.
    2. ``min(LLOYD_STEPS, floor(M x fit_passes / s))`` Lloyd steps on the subsample (stopping once
       no label changes); an empty cluster restarts at the subsample row farthest from its centre.
       None when one step would cost more than ``fit_passes`` passes (many clusters for the rows:
       ``MIN_PER_CLUSTER x k > M x fit_passes``): the seeds are the centres and the pass of step 3
       is their one Lloyd step.
    3. One assignment pass over all ``M`` rows; the centres returned are the exact means of the
       clusters it forms (one O(M x d) pass: a free full-data half-step).

    Returns ``(k, d)`` float32 centres and ``(M,)`` int64 labels. Memory: the ``(s, d)`` subsample
    plus O(M + k x d). ``bench/selection.py kmeans`` compares its seconds and inertia with
    scikit-learn's ``MiniBatchKMeans`` (batch 4096, the former large-problem path) on EMNIST letters
    and on the bench's blobs.
    """
    centers = fit_centres(X, k, rng, rows=rows, device=device, fit_passes=fit_passes, min_steps=0)
    labels, _ = assign(X, centers, rows=rows, device=device)
    centers, _ = group_means(X, labels, centers.shape[0], centers, rows=rows)
    return centers, labels


def fit_centres(
    X: np.ndarray,
    k: int,
    rng: np.random.Generator,
    *,
    rows: np.ndarray | None = None,
    device: Any = None,
    fit_passes: float = FIT_PASSES,
    min_steps: int = 1,
) -> np.ndarray:
    """Steps 1 and 2 of :func:`kmeans_large`: ``(min(k, M), d)`` float32 centres fitted by Lloyd
    steps on a seeded subsample, ``fit_passes`` passes' worth of work; no pass over all rows.
    At least ``min_steps`` steps, whatever they cost (:func:`kmeans_large` asks 0: its own pass
    is a Lloyd step; a caller that uses the centres as they are asks 1, so that they are means,
    not seeds)."""
    M = X.shape[0] if rows is None else int(rows.size)
    k = int(min(k, M))
    s = int(min(M, max(M * fit_passes / LLOYD_STEPS, MIN_PER_CLUSTER * k)))
    steps = int(max(min_steps, min(LLOYD_STEPS, M * fit_passes // s)))
    if steps == 0:  # only the seeding's rows are read
        s = min(s, SEED_PER_CLUSTER * k)
    pick = rng.permutation(M)[:s]
    order = np.argsort(pick, kind="stable")  # read the rows in file order, keep the random order
    src = pick[order] if rows is None else rows[pick[order]]
    Xs = np.empty((s, X.shape[1]), dtype=np.float32)
    for b in range(0, s, 8192):  # in blocks: one fresh (s, d) array, not a second one to scatter from
        Xs[order[b : b + 8192]] = X[src[b : b + 8192]]
    centers = Xs[seed_centres(Xs[: min(s, SEED_PER_CLUSTER * k)], k, rng, device=device)]
    labels = np.full(s, -1, dtype=np.int64)
    for _ in range(steps):
        new, d2 = assign(Xs, centers, device=device)
        if np.array_equal(new, labels):
            break
        labels = new
        centers, counts = group_means(Xs, labels, k, centers)
        empty = np.flatnonzero(counts == 0)
        if empty.size:  # restart each empty cluster at a far row (largest distance first)
            centers[empty] = Xs[np.argsort(-d2, kind="stable")[: empty.size]]
    return centers


def knn_mean_dist(X: np.ndarray, n_neighbors: int, *, device: Any = None, block: int = 4096) -> np.ndarray:
    """``(m,)`` mean Euclidean distance of every row of ``X`` ``(m, d)`` to its ``n_neighbors``
    nearest other rows (exact, brute force). One Gram product ``X X^T`` (a symmetric rank-k update
    when ``m <= block``, else ``(block, m)`` slabs) and a partial sort per row.

    The row itself is excluded by position (its own distance is exactly 0 here: ``||x||^2`` is
    read off the Gram diagonal), so duplicates of a row count as neighbours at distance 0.
    """
    m = X.shape[0]
    k = int(min(n_neighbors, m - 1))
    out = np.zeros(m, dtype=np.float64)
    if k < 1:
        return out
    if device is None:
        if m <= block:
            G = X @ X.T
            n = np.diagonal(G).copy()
            G *= -2.0
            G += n[:, None]
            G += n[None, :]
            np.fill_diagonal(G, np.inf)
            np.maximum(G, 0.0, out=G)
            part = np.partition(G, k - 1, axis=1)[:, :k]
            return np.sqrt(part, dtype=np.float64).mean(axis=1)
        n = np.einsum("ij,ij->i", X, X)
        for s in range(0, m, block):
            G = X[s : s + block] @ X.T
            G *= -2.0
            G += n[s : s + block, None]
            G += n[None, :]
            r = np.arange(G.shape[0])
            G[r, s + r] = np.inf
            np.maximum(G, 0.0, out=G)
            part = np.partition(G, k - 1, axis=1)[:, :k]
            out[s : s + len(G)] = np.sqrt(part, dtype=np.float64).mean(axis=1)
        return out
    import torch

    with torch.inference_mode():
        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)).to(device)
        n = (Xt * Xt).sum(1)
        for s in range(0, m, block):
            G = Xt[s : s + block] @ Xt.T
            G.mul_(-2.0).add_(n[s : s + block, None]).add_(n[None, :])
            r = torch.arange(G.shape[0], device=device)
            G[r, s + r] = float("inf")
            G.clamp_(min=0.0)
            part = torch.topk(G, k, dim=1, largest=False).values
            out[s : s + len(G)] = part.double().sqrt().mean(1).cpu().numpy()
    return out
