"""AS3L: one-shot active selection and label-propagation priors for the few-label regime.

Wen, Liu, Sun & Li, "Active Self-Semi-Supervised Learning for Few Labeled Samples",
Neurocomputing 2024 (arXiv 2203.04560); METHODS.md section 4.

1. :func:`fine_features` - ``n_runs`` k-means runs on the self-supervised features ``f_self``
   (L2-normalised) give ``n_runs`` clusterings; a linear layer on the frozen encoder's features,
   followed by one classification head per clustering, is trained to predict those cluster ids
   (no human label). Its output, L2-normalised, is ``f_fine``.
2. :func:`one_shot_select` - ``n_runs`` k-means runs with ``K`` clusters on ``f_fine``; every
   run's clusters are matched to the first run's (Hungarian on the overlap counts); the samples
   on which all runs agree form each cluster's *overlap*, and the medoid of each overlap is one of
   the ``K`` samples to label (the medoid of the first run's cluster when the overlap is empty).
3. :func:`prior_labels` - constrained seeded k-means (:mod:`alcore.cluster`) on ``f_fine`` with
   the labeled samples as seeds and ``k`` = the number of classes: each cluster's class is the
   prior label of its members; the confidence is the softmax over classes of the negative squared
   distances to the centroids divided by ``temperature``.

Only features and the labels the oracle returned for the selected samples are read: nothing here
takes the pool's hidden labels (``tests/test_as3l.py`` proves it with garbage labels).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alcore.cluster import constrained_kmeans, l2_normalize
from alcore.errors import ConfigError, problem

__all__ = [
    "Priors",
    "fine_features",
    "one_shot_select",
    "prior_labels",
    "read_priors",
    "train_on_priors",
    "write_priors",
]

PRIORS_KEY = b"alcore.as3l_priors"


def _kmeans_runs(Z: np.ndarray, k: int, n_runs: int, rng: np.random.Generator) -> list[np.ndarray]:
    from alcore.strategies._common import kmeans

    return [kmeans(Z, k, rng)[1] for _ in range(n_runs)]


def fine_features(
    F_self: np.ndarray,
    n_clusters: int,
    *,
    n_runs: int = 5,
    dim: int | None = None,
    epochs: int = 30,
    batch_size: int = 512,
    lr: float = 1e-2,
    random_state: int = 0,
) -> np.ndarray:
    """``(N, dim)`` float32 ``f_fine``: a linear layer on ``F_self`` trained to predict the cluster
    ids of ``n_runs`` k-means runs (``n_clusters`` each), one head per run; output L2-normalised.

    Args:
        F_self: ``(N, D)`` self-supervised features of the pool.
        n_clusters: clusters per k-means run (AS3L: the labeling budget K).
        dim: width of the linear layer (default ``D``).
        epochs, batch_size, lr: Adam on the summed cross entropies of the heads.
    """
    import torch

    X = l2_normalize(F_self)
    n, d = X.shape
    if not 2 <= n_clusters <= n or n_runs < 1 or epochs < 1:
        raise ConfigError(
            problem(
                f"AS3L fine features: n_clusters={n_clusters}, n_runs={n_runs}, epochs={epochs} for {n} samples",
                allowed="2 <= n_clusters <= N, n_runs >= 1, epochs >= 1",
            )
        )
    rng = np.random.default_rng(random_state)
    targets = np.stack(_kmeans_runs(X, n_clusters, n_runs, rng), axis=1)  # (N, runs)
    width = int(dim or d)
    gen = torch.Generator().manual_seed(int(random_state))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(random_state))
        proj = torch.nn.Linear(d, width)
        heads = torch.nn.ModuleList(torch.nn.Linear(width, n_clusters) for _ in range(n_runs))
    opt = torch.optim.Adam([*proj.parameters(), *heads.parameters()], lr=lr)
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(targets)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            idx = perm[s : s + batch_size]
            z = proj(Xt[idx])
            loss = sum(torch.nn.functional.cross_entropy(h(z), Yt[idx, j]) for j, h in enumerate(heads))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.inference_mode():
        out = proj(Xt).numpy()
    return l2_normalize(out)


def _match_to(ref: np.ndarray, other: np.ndarray, k: int) -> np.ndarray:
    """Relabel ``other``'s clusters to the ``ref`` cluster they overlap most (Hungarian)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (ref, other), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = np.empty(k, dtype=np.int64)
    mapping[cols] = rows
    return mapping[other]


def _medoid(Z: np.ndarray) -> int:
    """Row of ``Z`` with the smallest sum of distances to the other rows (chunked)."""
    if Z.shape[0] <= 2:
        return 0
    from alcore.strategies._common import CHUNK, sq_dists, sq_norms

    sums = np.empty(Z.shape[0])
    sq = sq_norms(Z)
    for s in range(0, Z.shape[0], CHUNK):
        sums[s : s + CHUNK] = np.sqrt(sq_dists(Z[s : s + CHUNK], sq[s : s + CHUNK], Z, sq)).sum(axis=1)
    return int(np.argmin(sums))


def one_shot_select(
    F_fine: np.ndarray,
    k: int,
    *,
    n_runs: int = 5,
    exclude: np.ndarray | None = None,
    random_state: int | np.random.Generator = 0,
) -> np.ndarray:
    """``(k,)`` distinct positions of ``F_fine`` to label: medoids of the clusters' overlaps.

    Args:
        F_fine: ``(N, d)`` fine-tuned features.
        k: number of samples (= clusters per run).
        exclude: positions that may not be chosen (already labeled); their clusters are skipped
            and the remaining picks come from the largest other overlaps.
    """
    from alcore.strategies.base import check_random_state

    rng = check_random_state(random_state)
    Z = np.asarray(F_fine, dtype=np.float32)
    n = Z.shape[0]
    banned = np.zeros(n, dtype=bool)
    if exclude is not None:
        banned[np.asarray(exclude, dtype=np.int64)] = True
    free = int((~banned).sum())
    if not 1 <= k <= free:
        raise ConfigError(problem(f"AS3L asked for {k} samples of {free} selectable", allowed=f"1 <= k <= {free}"))
    n_clusters = min(n, k + int(banned.sum()))
    runs = _kmeans_runs(Z, n_clusters, n_runs, rng)
    ref = runs[0]
    agree = np.ones(n, dtype=bool)
    for other in runs[1:]:
        agree &= _match_to(ref, other, n_clusters) == ref
    covered = np.zeros(n_clusters, dtype=bool)
    covered[ref[banned]] = True
    sizes = np.bincount(ref[agree & ~banned], minlength=n_clusters)
    order = np.lexsort((rng.random(n_clusters), -sizes, covered))
    picks: list[int] = []
    taken = banned.copy()
    for c in order:
        if len(picks) == k:
            break
        members = np.flatnonzero((ref == c) & agree & ~taken)
        if members.size == 0:
            members = np.flatnonzero((ref == c) & ~taken)
        if members.size == 0:
            continue
        p = int(members[_medoid(Z[members])])
        picks.append(p)
        taken[p] = True
    if len(picks) < k:  # fewer non-empty clusters than asked: fill with the most central free rows
        rest = np.flatnonzero(~taken)
        picks += rest[rng.permutation(rest.size)[: k - len(picks)]].tolist()
    return np.asarray(picks, dtype=np.int64)


@dataclass(frozen=True)
class Priors:
    """``labels`` (N,) prior class of every pool row, ``confidence`` (N,) in (0, 1]."""

    labels: np.ndarray
    confidence: np.ndarray


def prior_labels(
    F_fine: np.ndarray,
    labeled: np.ndarray,
    y_labeled: np.ndarray,
    n_classes: int,
    *,
    temperature: float = 0.1,
    random_state: int | np.random.Generator = 0,
) -> Priors:
    """Label-propagation priors: constrained seeded k-means with the labeled rows as seeds.

    Labeled rows keep their own label (confidence 1). Classes without a labeled sample get a
    cluster started at a random unlabeled row, which may then claim samples of any class: the
    priors are only as good as the labels that seed them.
    """
    if temperature <= 0:
        raise ConfigError(problem(f"temperature={temperature}", allowed="a number > 0"))
    Z = l2_normalize(F_fine)
    res = constrained_kmeans(Z, n_classes, labeled, y_labeled, random_state=random_state)
    C = res.centers.astype(np.float32)
    d2 = (Z**2).sum(1)[:, None] - 2 * Z @ C.T + (C**2).sum(1)[None]
    logits = -d2 / temperature
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=1, keepdims=True)
    conf = p[np.arange(len(Z)), res.labels].astype(np.float32)
    conf[np.asarray(labeled, dtype=np.int64)] = 1.0
    return Priors(labels=res.labels.astype(np.int64), confidence=conf)


def train_on_priors(
    X: np.ndarray,
    priors: Priors,
    n_classes: int,
    *,
    min_confidence: float = 0.0,
    random_state: int = 0,
    **proxy: object,
):
    """The cheap baseline: a proxy MLP (:class:`alcore.proxy.ProxyMLP`) trained on the pool's
    features with the prior labels of the rows whose confidence is at least ``min_confidence``."""
    from alcore.proxy import ProxyMLP

    keep = priors.confidence >= min_confidence
    if keep.sum() < 2:
        raise ConfigError(problem(f"only {int(keep.sum())} priors reach min_confidence={min_confidence}"))
    model = ProxyMLP(**proxy, random_state=random_state)  # type: ignore[arg-type]
    return model.fit(np.asarray(X)[keep], priors.labels[keep], n_classes)


def write_priors(path: str, ids: np.ndarray, priors: Priors, spec: dict) -> None:
    """Write the priors of the pool rows ``ids`` (id, prior, confidence) with their provenance."""
    from alcore.idtable import write_id_table

    cols = {"prior": priors.labels.astype(np.int64), "confidence": priors.confidence.astype(np.float32)}
    write_id_table(path, ids, cols, spec, key=PRIORS_KEY)


def read_priors(path: str) -> tuple[np.ndarray, Priors, dict]:
    """``(ids, priors, spec)`` of a file written by :func:`write_priors`."""
    from alcore.idtable import read_id_table

    ids, cols, spec = read_id_table(
        path, ("prior", "confidence"), key=PRIORS_KEY, what="AS3L priors", stage="as3l flow"
    )
    return ids, Priors(labels=cols["prior"].astype(np.int64), confidence=cols["confidence"].astype(np.float32)), spec
