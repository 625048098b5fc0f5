"""The large-problem passes of the strategies (k-means at scale, within-cluster kNN, ActiveFT's
written-out gradient, consistent MC-dropout masks) and their torch device path, run on the CPU:
each is checked against the exact or the former computation, and the device path picks the same
ids as the numpy path on a fixed seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alcore.errors import ConfigError
from alcore.proxy import ProxyMLP
from alcore.strategies import SelectionContext, _common, _passes, make_strategy, typicality
from alcore.strategies import activeft as activeft_mod
from alcore.strategies import badge as badge_mod
from alcore.strategies import cluster_margin as cluster_margin_mod
from alcore.strategies import coreset as coreset_mod
from alcore.strategies import kmeans as kmeans_mod
from alcore.strategies import probcover as probcover_mod
from alcore.strategies import typiclust as typiclust_mod
from alcore.strategies.kmeans import nearest_to_centroids
from alcore.strategies.typiclust import cluster_members, typicality_fast
from alcore.training import HeadScorer
from tests.test_strategies import make_context
from tests.test_strategies_scale import blobs, ctx_of

CPU = torch.device("cpu")
DEVICE_MODULES = (activeft_mod, badge_mod, cluster_margin_mod, coreset_mod, kmeans_mod, probcover_mod, typiclust_mod)


@pytest.fixture
def large_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every k-means takes the large-problem path, as it does at scale."""
    monkeypatch.setattr(_common, "FULL_KMEANS_MAX_WORK", 0)


def torch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The strategies' device path (torch), on the CPU."""
    for mod in DEVICE_MODULES:
        monkeypatch.setattr(mod, "accel_device", lambda ctx: CPU)


# -- assign, k-means at scale ------------------------------------------------------------------


@pytest.mark.parametrize("device", [None, CPU])
@pytest.mark.parametrize("n_rows", [300, 480])  # gathered (in random order); nearly all, increasing: one slice
def test_assign_is_the_brute_force_nearest_centre(device, n_rows: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 7)).astype(np.float32)
    C = rng.normal(size=(13, 7)).astype(np.float32)
    rows = rng.permutation(500)[:n_rows]
    rows = np.sort(rows) if n_rows == 480 else rows
    labels, d2 = _passes.assign(X, C, rows=rows, device=device)
    full = ((X[rows, None, :].astype(np.float64) - C[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, full.argmin(1))
    np.testing.assert_allclose(d2, full.min(1), rtol=1e-4, atol=1e-4)


def test_kmeans_large_finds_the_blobs_in_about_one_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = blobs(n_blobs=6, per=400, dim=10, seed=1)
    visits = []
    real = _passes.assign

    def counting(Xa, C, *, rows=None, device=None):
        visits.append(Xa.shape[0] if rows is None else rows.size)
        return real(Xa, C, rows=rows, device=device)

    monkeypatch.setattr(_passes, "assign", counting)
    centers, labels = _passes.kmeans_large(X, 6, np.random.default_rng(0))
    # every blob is one cluster (same partition up to renaming)
    assert len({(a, b) for a, b in zip(y, labels, strict=True)}) == 6
    # the returned centres are the means of the returned clusters
    for c in range(6):
        np.testing.assert_allclose(centers[c], X[labels == c].mean(0), rtol=1e-4, atol=1e-4)
    # work: one pass over all rows, after at most FIT_PASSES passes' worth of Lloyd steps
    assert visits[-1] == len(X) and sum(visits[:-1]) <= _passes.FIT_PASSES * len(X) + 1
    again = _passes.kmeans_large(X, 6, np.random.default_rng(0))
    np.testing.assert_array_equal(again[1], labels)


def test_kmeans_large_path_picks_each_clusters_nearest_member_from_one_pass(large_path, monkeypatch) -> None:
    """At scale the kmeans strategy reads all rows once after the fit: each row's nearest fitted
    centre and distance, and from them each cluster's nearest member (brute force agrees)."""
    X, y = blobs(n_blobs=8, per=300, dim=12, seed=3)
    labels = np.full(len(X), -1)
    labels[[0, 300, 600]] = y[[0, 300, 600]]  # a few labeled rows: the unlabeled ones are read in place
    visits, real = [], kmeans_mod.assign

    def counting(Xa, C, *, rows=None, device=None):
        visits.append(Xa.shape[0] if rows is None else rows.size)
        return real(Xa, C, rows=rows, device=device)

    monkeypatch.setattr(kmeans_mod, "assign", counting)
    fitted = []
    fit = kmeans_mod.fit_centres
    monkeypatch.setattr(kmeans_mod, "fit_centres", lambda *a, **k: fitted.append(fit(*a, **k)) or fitted[-1])
    ctx = ctx_of(X, labels, n_classes=8)
    ids = make_strategy("kmeans").select(ctx, 8, random_state=0)
    assert visits == [len(X) - 3]  # one pass over the unlabeled rows, after the fit
    unl = np.flatnonzero(labels < 0)
    D = ((X[unl, None, :] - fitted[0][None]) ** 2).sum(-1)
    nearest = unl[[np.flatnonzero(D.argmin(1) == c)[D[D.argmin(1) == c, c].argmin()] for c in range(8)]]
    assert sorted(ids - 100) == sorted(nearest.tolist())
    assert len({int(y[i - 100]) for i in ids}) == 8  # one per blob


def test_kmeans_large_fit_costs_at_most_fit_passes_with_many_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    """With many clusters for the rows (Cluster-Margin: b clusters of 10 b candidates) one Lloyd
    step on the subsample would cost more than FIT_PASSES passes: the seeds are the centres and the
    final pass is their Lloyd step. Work counted in row x centre distances."""
    X, _ = blobs(n_blobs=6, per=400, dim=10, seed=1)
    work: list[int] = []
    real = _passes.assign

    def counting(Xa, C, *, rows=None, device=None):
        work.append((Xa.shape[0] if rows is None else rows.size) * C.shape[0])
        return real(Xa, C, rows=rows, device=device)

    monkeypatch.setattr(_passes, "assign", counting)
    k = 100
    centers, labels = _passes.kmeans_large(X, k, np.random.default_rng(0))
    assert work[-1] == len(X) * k and sum(work[:-1]) <= _passes.FIT_PASSES * len(X) * k
    assert np.unique(labels).size > 0.9 * k  # the seeds spread over the rows
    for c in np.unique(labels)[:5]:  # the returned centres are the means of the returned clusters
        np.testing.assert_allclose(centers[c], X[labels == c].mean(0), rtol=1e-4, atol=1e-4)
    # the kmeans strategy's fit (min_steps=1) still takes its Lloyd step: means, not rows
    fitted = _passes.fit_centres(X, k, np.random.default_rng(0))
    assert not (fitted[:, None, :] == X[None]).all(-1).any(-1).all()


@pytest.mark.parametrize("seed", range(6))
def test_nearest_members_is_the_smallest_distance_per_cluster_ties_by_rng(seed: int) -> None:
    """The definition (sort every row by cluster, distance, random key; first of each cluster),
    against the one-scatter path that sorts only the rows at their cluster's minimum."""
    r = np.random.default_rng(seed)
    labels = r.integers(0, 9, size=250)
    d2 = (r.integers(0, 4, size=250) if seed % 2 else r.random(250)).astype(np.float32)  # ties when integral
    order = np.lexsort((np.random.default_rng(seed).random(250), d2, labels))
    first = np.concatenate([[True], labels[order][1:] != labels[order][:-1]])
    np.testing.assert_array_equal(kmeans_mod.nearest_members(labels, d2, np.random.default_rng(seed)), order[first])


def test_kmeans_large_with_more_clusters_than_distinct_rows() -> None:
    X = np.repeat(np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32), 40, axis=0)
    centers, labels = _passes.kmeans_large(X, 5, np.random.default_rng(2))
    assert centers.shape == (5, 2) and labels.min() >= 0 and labels.max() < 5
    # each distinct row is a cluster of its own
    assert len({(tuple(x), c) for x, c in zip(X.tolist(), labels.tolist(), strict=True)}) == 3


# -- TypiClust ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", [None, CPU])
@pytest.mark.parametrize("block", [4096, 37])
def test_knn_typicality_equals_scikit_learns(device, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    X, _ = blobs(n_blobs=2, per=60, dim=5, seed=4)
    real = _passes.knn_mean_dist
    monkeypatch.setattr(
        typiclust_mod, "knn_mean_dist", lambda Xa, k, device=None: real(Xa, k, device=device, block=block)
    )
    np.testing.assert_allclose(typicality_fast(X, 20, device=device), typicality(X, 20), rtol=1e-4)
    np.testing.assert_array_equal(typicality_fast(X[:1], 20), np.zeros(1))


def test_cluster_members_equals_one_scan_per_cluster() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 9, size=400)
    keep = rng.random(400) < 0.7
    groups = cluster_members(labels, 10, keep)
    for c in range(10):
        np.testing.assert_array_equal(groups[c], np.flatnonzero((labels == c) & keep))


def test_typiclust_large_path_takes_the_densest_point_of_each_blob(large_path) -> None:
    X, y = blobs(n_blobs=5, per=60, dim=8, seed=3)
    X[::60] = X[1::60]  # a duplicate in each blob: the most typical pair
    ids = make_strategy("typiclust").select(ctx_of(X), 5, random_state=0) - 100
    assert sorted(y[ids].tolist()) == [0, 1, 2, 3, 4]


# -- k-means, Cluster-Margin --------------------------------------------------------------------


def test_nearest_to_centroids_reads_rows_in_place() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)).astype(np.float32)
    rows = np.sort(rng.choice(200, 120, replace=False))
    labels = rng.integers(0, 7, size=120)
    centers = rng.normal(size=(7, 3)).astype(np.float32)
    a = nearest_to_centroids(X[rows], centers, labels, np.random.default_rng(1))
    b = nearest_to_centroids(X, centers, labels, np.random.default_rng(1), rows=rows)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, params", [("kmeans", {}), ("typiclust", {}), ("cluster_margin", {})])
def test_large_path_keeps_the_contract(name: str, params: dict, large_path) -> None:
    ctx = make_context()
    ids = make_strategy(name, **params).select(ctx, 25, random_state=5)
    assert np.unique(ids).size == 25 and not np.isin(ids, ctx.pool_ids[ctx.labels >= 0]).any()
    np.testing.assert_array_equal(ids, make_strategy(name, **params).select(make_context(), 25, random_state=5))


# -- ActiveFT ----------------------------------------------------------------------------------


def test_activeft_written_out_gradient_equals_autograd() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1200, 16)).astype(np.float32)
    inv = 1 / np.sqrt((X * X).sum(1))

    def rows(idx):
        return torch.from_numpy(X[idx] * inv[idx, None])

    def batches():
        r = np.random.default_rng(1)
        for _ in range(15):
            yield np.sort(r.choice(1100, 300, replace=False))

    init, fixed = rng.choice(1100, 40, replace=False), np.arange(1100, 1110)
    a = activeft_mod._optimise_autograd(rows, init, fixed, batches(), 0.07, 1e-2, 1.0)
    b = activeft_mod._optimise_fast(rows, init, fixed, batches(), 0.07, 1e-2, 1.0, CPU)
    np.testing.assert_allclose(a, b, atol=1e-5)
    cand = np.arange(1100)
    np.testing.assert_array_equal(
        activeft_mod._assign_blockwise(X, inv, a, cand, 40), activeft_mod._assign_streaming(X, inv, a, cand, CPU)
    )


def test_activeft_streaming_assignment_falls_back_when_the_nearest_are_taken(monkeypatch) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 6)).astype(np.float32)
    inv = 1 / np.sqrt((X * X).sum(1))
    cent = np.repeat(X[:1] * inv[:1, None], 5, axis=0)  # five identical centroids
    monkeypatch.setattr(activeft_mod, "TOP_K", 2)
    cand = np.arange(300)
    np.testing.assert_array_equal(
        activeft_mod._assign_blockwise(X, inv, cent, cand, 5), activeft_mod._assign_streaming(X, inv, cent, cand, CPU)
    )


@pytest.mark.parametrize("init", ["random", "fps"])
def test_activeft_large_path_picks_the_ids_of_the_small_path(init: str, monkeypatch) -> None:
    X, _ = blobs(n_blobs=4, per=100, dim=12, seed=2)
    labels = np.full(len(X), -1)
    labels[:4] = 0
    s = make_strategy("activeft", init=init, iterations=20, batch_size=150)
    small = s.select(ctx_of(X, labels), 12, random_state=3)
    monkeypatch.setattr(activeft_mod, "FAST_WORK", 0)
    np.testing.assert_array_equal(s.select(ctx_of(X, labels), 12, random_state=3), small)


# -- the device path (torch) against the numpy path, on the CPU ----------------------------------


@pytest.mark.parametrize(
    "name, params",
    [
        ("coreset", {}),
        ("coreset", {"space": "features"}),
        ("badge", {}),
        ("badge", {"partitions": 3, "max_candidates": 150}),
        ("probcover", {}),
        ("activeft", {}),
    ],
)
def test_device_path_picks_the_ids_of_the_numpy_path(name: str, params: dict, monkeypatch) -> None:
    numpy_ids = make_strategy(name, **params).select(make_context(), 25, random_state=11)
    torch_on_cpu(monkeypatch)
    np.testing.assert_array_equal(make_strategy(name, **params).select(make_context(), 25, random_state=11), numpy_ids)


@pytest.mark.parametrize("name", ["kmeans", "typiclust", "cluster_margin", "probcover"])
def test_device_path_of_the_large_k_means_picks_the_same_ids(name: str, large_path, monkeypatch) -> None:
    numpy_ids = make_strategy(name).select(make_context(), 25, random_state=11)
    torch_on_cpu(monkeypatch)
    np.testing.assert_array_equal(make_strategy(name).select(make_context(), 25, random_state=11), numpy_ids)


def test_context_device_is_checked_when_work_starts() -> None:
    ctx = make_context()
    ctx.device = "not-a-device"
    with pytest.raises(ConfigError, match="not a device"):
        make_strategy("coreset").select(ctx, 3, random_state=0)
    ctx.device = "cpu"  # the numpy path, explicitly
    np.testing.assert_array_equal(
        make_strategy("coreset").select(ctx, 3, random_state=0),
        make_strategy("coreset").select(make_context(), 3, random_state=0),
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["coreset", "badge", "probcover", "activeft", "kmeans", "typiclust", "cluster_margin"])
def test_cuda_picks_the_ids_of_the_cpu(name: str) -> None:
    cpu = make_strategy(name).select(make_context(), 25, random_state=11)
    ctx = make_context()
    ctx.device = "cuda"
    np.testing.assert_array_equal(make_strategy(name).select(ctx, 25, random_state=11), cpu)


# -- BALD with consistent MC-dropout masks ----------------------------------------------------------


def _proxy(X: np.ndarray, y: np.ndarray) -> ProxyMLP:
    return ProxyMLP(hidden=16, epochs=3, batch_size=32, random_state=0).fit(X, y, int(y.max()) + 1)


def test_consistent_masks_are_one_mask_set_for_every_row() -> None:
    X, y = blobs(n_blobs=3, per=30, dim=6)
    m = _proxy(X, y)
    mc = m.predict_proba_mc(X, 5, random_state=4, consistent=True)
    assert mc.shape == (5, len(X), 3)
    gen = torch.Generator().manual_seed(4)
    keep = (torch.rand((5, 16), generator=gen) >= 0.25).float()
    with torch.inference_mode():
        h = m.net_.embed(torch.from_numpy(X))
        for t in range(5):
            expect = torch.softmax(m.net_.fc2(h * keep[t] / 0.75), dim=1).numpy()
            np.testing.assert_allclose(mc[t], expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(mc, m.predict_proba_mc(X, 5, random_state=4, consistent=True))
    # the rows do not matter: any chunk of rows sees the same masks
    np.testing.assert_allclose(
        m.predict_proba_mc(X[10:20], 5, random_state=4, consistent=True), mc[:, 10:20], rtol=1e-5, atol=1e-7
    )


def test_head_scorer_consistent_masks() -> None:
    rng = np.random.default_rng(0)
    head = HeadScorer(rng.normal(size=(3, 6)), rng.normal(size=3))
    Z = rng.normal(size=(20, 6)).astype(np.float32)
    mc = head.predict_proba_mc(Z, 4, random_state=2, consistent=True)
    keep = np.random.default_rng(2).random((4, 6), dtype=np.float32) >= 0.25
    for t in range(4):
        np.testing.assert_allclose(mc[t], head.predict_proba(Z * keep[t] / 0.75), rtol=1e-5, atol=1e-6)


def test_bald_consistent_does_not_depend_on_chunking() -> None:
    X, y = blobs(n_blobs=3, per=40, dim=6)
    labels = np.full(len(X), -1)
    labels[::10] = y[::10]
    m = _proxy(X[::10], y[::10])

    def ctx(chunk: int) -> SelectionContext:
        return SelectionContext(
            pool_ids=np.arange(len(X)), features=X, labels=labels, n_classes=3, model=m, chunk_size=chunk
        )

    s = make_strategy("bald", masks="consistent")
    a = s.select(ctx(7), 10, random_state=1)
    np.testing.assert_array_equal(a, s.select(ctx(64), 10, random_state=1))
    with pytest.raises(ConfigError, match="masks"):
        make_strategy("bald", masks="shared").select(ctx(7), 3, random_state=0)


def test_bald_default_masks_are_consistent_where_the_model_offers_them() -> None:
    """masks='auto' (the default): the proxy's consistent masks (the fast path at scale); a model
    whose predict_proba_mc has no 'consistent' keeps a fresh mask per row and pass."""
    X, y = blobs(n_blobs=3, per=40, dim=6)
    labels = np.full(len(X), -1)
    labels[::10] = y[::10]
    ctx = SelectionContext(
        pool_ids=np.arange(len(X)), features=X, labels=labels, n_classes=3, model=_proxy(X[::10], y[::10])
    )
    picks = {
        m: make_strategy("bald", masks=m).select(ctx, 10, random_state=1).tolist()
        for m in ("auto", "consistent", "independent")
    }
    assert picks["auto"] == picks["consistent"] != picks["independent"]
    stub = make_context()  # SoftmaxScorer: predict_proba_mc without 'consistent'
    assert not stub.offers_consistent_masks()
    np.testing.assert_array_equal(
        make_strategy("bald").select(stub, 5, random_state=0),
        make_strategy("bald", masks="independent").select(stub, 5, random_state=0),
    )


def test_bald_consistent_needs_a_model_that_offers_it() -> None:
    ctx = make_context()  # SoftmaxScorer: predict_proba_mc without 'consistent'
    with pytest.raises(ConfigError, match="consistent"):
        make_strategy("bald", masks="consistent").select(ctx, 3, random_state=0)
