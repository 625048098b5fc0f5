"""Known answers of the diversity, coverage and Bayesian strategies (coreset, BADGE, BALD,
TypiClust, ProbCover, ActiveFT, k-means, Cluster-Margin) and the MC-dropout proxy."""

from __future__ import annotations

import numpy as np
import pytest

from alcore.errors import ConfigError
from alcore.proxy import ProxyMLP
from alcore.strategies import (
    STRATEGIES,
    SelectionContext,
    badge_select,
    badge_select_materialised,
    bald_scores,
    kcenter_greedy,
    make_strategy,
    probcover_select,
    radius_graph,
    typicality,
)


class EmbedScorer:
    """Probabilities from a fixed table keyed by row, embedding = the features."""

    def __init__(self, probs: np.ndarray, mc: np.ndarray | None = None) -> None:
        self.probs, self.mc = probs, mc

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self.probs[X[:, -1].astype(int)]

    def embed(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X[:, :-1], dtype=np.float32)

    def predict_proba_mc(self, X: np.ndarray, n_samples: int, *, random_state: int) -> np.ndarray:
        return self.mc[:n_samples, X[:, -1].astype(int)]


def blobs(n_blobs: int = 5, per: int = 40, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=20.0, size=(n_blobs, dim))
    y = np.repeat(np.arange(n_blobs), per)
    return (centers[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


def ctx_of(X: np.ndarray, labels: np.ndarray | None = None, model=None, n_classes: int = 5) -> SelectionContext:
    labels = np.full(len(X), -1) if labels is None else labels
    return SelectionContext(
        pool_ids=np.arange(len(X)) + 100, features=X, labels=labels, n_classes=n_classes, model=model
    )


# -- coreset ---------------------------------------------------------------------------------


def test_kcenter_picks_the_far_outlier_first() -> None:
    X, _ = blobs(n_blobs=1, per=50)
    X = np.vstack([X, [[500.0] * X.shape[1]]]).astype(np.float32)
    labels = np.full(len(X), -1)
    labels[:3] = 0
    ids = make_strategy("coreset", space="features").select(ctx_of(X, labels), 1, random_state=0)
    assert ids.tolist() == [100 + len(X) - 1]


def test_kcenter_covers_every_blob_and_matches_brute_force() -> None:
    X, y = blobs()
    rng = np.random.default_rng(0)
    sel = np.ones(len(X), bool)
    sel[:1] = False
    picks = kcenter_greedy(X, 4, centers=np.array([0]), selectable=sel, rng=rng)
    assert set(y[picks].tolist()) | {y[0]} == set(range(5))
    # brute force: the farthest point from the chosen centres, one at a time
    centers = [0]
    for p in picks:
        d = ((X[:, None, :] - X[centers][None]) ** 2).sum(-1).min(1)
        assert p == int(np.argmax(d))
        centers.append(int(p))


def test_coreset_embedding_space_needs_a_model() -> None:
    X, _ = blobs()
    labels = np.full(len(X), -1)
    labels[0] = 0
    with pytest.raises(ConfigError, match="proxy model"):
        make_strategy("coreset").select(ctx_of(X, labels), 3, random_state=0)
    with pytest.raises(ConfigError, match="space"):
        make_strategy("coreset", space="pixels").select(ctx_of(X, labels), 3, random_state=0)


# -- BADGE -----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_badge_factorised_equals_materialised(seed: int) -> None:
    rng = np.random.default_rng(seed)
    U, C, H = 120, 4, 6
    logits = rng.normal(size=(U, C)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    emb = np.abs(rng.normal(size=(U, H)))
    a = badge_select(probs, emb, 15, np.random.default_rng(seed))
    b = badge_select_materialised(probs, emb, 15, np.random.default_rng(seed))
    np.testing.assert_array_equal(a, b)
    assert np.unique(a).size == 15


def test_badge_partitioned_is_distinct_and_seeded() -> None:
    X, _ = blobs()
    probs = np.full((len(X), 5), 0.2)
    probs[:, 0] += np.linspace(0, 0.5, len(X))
    probs /= probs.sum(1, keepdims=True)
    Xk = np.hstack([X, np.arange(len(X))[:, None]]).astype(np.float32)
    labels = np.full(len(X), -1)
    labels[:5] = 0
    s = make_strategy("badge", partitions=3, max_candidates=60)
    a = s.select(ctx_of(Xk, labels, EmbedScorer(probs)), 10, random_state=4)
    b = s.select(ctx_of(Xk, labels, EmbedScorer(probs)), 10, random_state=4)
    np.testing.assert_array_equal(a, b)
    assert np.unique(a).size == 10


def test_badge_with_max_candidates_scores_only_the_candidates() -> None:
    """The proxy runs on the max_candidates rows only, and picks what it picks with every row's
    probabilities and embedding cached (the former path)."""
    X, _ = blobs(per=60)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(5), size=len(X))
    Xk = np.hstack([X, np.arange(len(X))[:, None]]).astype(np.float32)
    labels = np.full(len(X), -1)
    labels[::30] = 0
    seen: list[int] = []

    class Counting(EmbedScorer):
        def predict_proba(self, X):
            seen.append(len(X))
            return super().predict_proba(X)

    s = make_strategy("badge", partitions=2, max_candidates=70)
    a = s.select(ctx_of(Xk, labels, Counting(probs)), 8, random_state=3)
    assert sum(seen) == 70
    cached = ctx_of(Xk, labels, EmbedScorer(probs))
    cached.probs(), cached.embeddings()
    np.testing.assert_array_equal(a, s.select(cached, 8, random_state=3))


# -- BALD ------------------------------------------------------------------------------------


def test_bald_zero_when_passes_agree_and_highest_when_they_disagree() -> None:
    agree = np.tile([[0.7, 0.2, 0.1]], (10, 1))
    flip = np.array([[0.9, 0.05, 0.05], [0.05, 0.9, 0.05]] * 5)
    uniform = np.full((10, 3), 1 / 3)  # uncertain but not disagreeing: BALD 0
    mc = np.stack([agree, flip, uniform], axis=1)  # (T=10, U=3, C=3)
    s = bald_scores(mc)
    np.testing.assert_allclose(s[[0, 2]], 0.0, atol=1e-12)
    assert s[1] > 0.3 and s.argmax() == 1
    X = np.array([[0.0, 0], [0, 1], [0, 2], [0, 3]], dtype=np.float32)
    mc4 = np.concatenate([np.tile([[[0.98, 0.01, 0.01]]], (10, 1, 1)), mc], axis=1)
    model = EmbedScorer(mc4.mean(0), mc4)
    ids = make_strategy("bald").select(ctx_of(X, np.array([0, -1, -1, -1]), model, 3), 1, random_state=0)
    assert ids.tolist() == [102]


def test_proxy_mc_dropout_is_seeded_and_varies() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)
    m = ProxyMLP(hidden=16, epochs=3, batch_size=32).fit(X, y, 2)
    a = m.predict_proba_mc(X[:10], 7, random_state=3)
    assert a.shape == (7, 10, 2) and np.allclose(a.sum(-1), 1, atol=1e-5)
    np.testing.assert_array_equal(a, m.predict_proba_mc(X[:10], 7, random_state=3))
    assert not np.allclose(a[0], a[1])  # masks differ between passes
    np.testing.assert_allclose(a.mean(0), m.predict_proba(X[:10]), atol=0.2)
    with pytest.raises(ConfigError, match="n_samples"):
        m.predict_proba_mc(X, 0, random_state=0)
    labels = np.full(64, -1)
    labels[:8] = y[:8]
    ctx = SelectionContext(pool_ids=np.arange(64), features=X, labels=labels, n_classes=2, model=m, chunk_size=16)
    assert ctx.probs_mc(5, np.random.default_rng(0)).shape == (5, 56, 2)
    ids = make_strategy("bald", n_samples=5).select(ctx, 4, random_state=0)
    assert np.unique(ids).size == 4 and (labels[ids] == -1).all()


# -- TypiClust, ProbCover, ActiveFT, k-means -------------------------------------------------------


def test_typicality_is_highest_at_the_densest_point() -> None:
    rng = np.random.default_rng(0)
    spread = rng.uniform(-10, 10, size=(200, 2))
    tight = 3.0 + 0.05 * rng.normal(size=(30, 2))
    X = np.vstack([spread, tight]).astype(np.float32)
    t = typicality(X, 20)
    assert t.shape == (230,) and t.argmax() >= 200


def test_typiclust_picks_the_densest_point_of_each_blob() -> None:
    X, y = blobs(n_blobs=3, per=60, dim=2)
    centers = np.array([X[y == b].mean(0) for b in range(3)])
    X[y == 0] = centers[0] + 3.0 * (X[y == 0] - centers[0])  # blob 0: wide ...
    X[:10] = centers[0] + 0.05 * np.random.default_rng(1).normal(size=(10, 2))  # ... with a dense core
    ids = make_strategy("typiclust").select(ctx_of(X), 3, random_state=0) - 100
    assert sorted(y[ids].tolist()) == [0, 1, 2]
    pick0 = ids[y[ids] == 0][0]
    assert pick0 < 10


def test_probcover_one_ball_per_blob_picks_one_point_per_blob() -> None:
    X, y = blobs(n_blobs=4, per=30)
    ids = make_strategy("probcover", delta=15.0).select(ctx_of(X), 4, random_state=0) - 100
    assert sorted(y[ids].tolist()) == [0, 1, 2, 3]
    s = make_strategy("probcover")  # delta from purity: balls stay inside blobs
    ids = s.select(ctx_of(X, n_classes=4), 4, random_state=0) - 100
    assert sorted(y[ids].tolist()) == [0, 1, 2, 3]
    d = np.linalg.norm(X[:, None] - X[None], axis=-1)
    impure = ((d <= s.delta_) & (y[:, None] != y[None, :])).any(axis=1)
    assert s.delta_ > 0 and impure.mean() <= 0.05


def test_probcover_graph_and_greedy_known_answer() -> None:
    X = np.array([[0.0], [1], [2], [10], [11], [30]], dtype=np.float32)
    indptr, indices = radius_graph(X, 1.5, max_degree=10)
    assert np.diff(indptr).tolist() == [2, 3, 2, 2, 2, 1]
    picks = probcover_select(indptr, indices, np.zeros(6, bool), 3, np.random.default_rng(0))
    assert picks.tolist() == [1, *picks[1:2].tolist(), 5] and picks[1] in (3, 4)
    # a degree cap keeps the nearest
    indptr, indices = radius_graph(X, 1.5, max_degree=1)
    assert np.diff(indptr).max() == 1 and indices.tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "name, params", [("activeft", {"init": "fps"}), ("kmeans", {}), ("typiclust", {}), ("probcover", {})]
)
def test_one_point_per_well_separated_blob(name: str, params: dict) -> None:
    X, y = blobs(n_blobs=5, per=40, dim=8, seed=3)
    ids = make_strategy(name, **params).select(ctx_of(X), 5, random_state=0) - 100
    assert sorted(y[ids].tolist()) == [0, 1, 2, 3, 4]


def test_cluster_margin_spreads_over_clusters_of_low_margin() -> None:
    X, y = blobs(n_blobs=4, per=30)
    probs = np.tile([[0.9, 0.1, 0.0, 0.0, 0.0]], (len(X), 1))
    probs[y < 2] = [0.5, 0.5, 0.0, 0.0, 0.0]  # blobs 0 and 1 are the uncertain ones
    Xk = np.hstack([X, np.arange(len(X))[:, None]]).astype(np.float32)
    labels = np.full(len(X), -1)
    labels[[59, 119]] = 0
    s = make_strategy("cluster_margin", margin_factor=10, n_clusters=2)
    ids = s.select(ctx_of(Xk, labels, EmbedScorer(probs)), 2, random_state=0) - 100
    assert sorted(y[ids].tolist()) == [0, 1]


@pytest.mark.parametrize(
    "name, params",
    [
        ("badge", {"partitions": 0}),
        ("bald", {"n_samples": 0}),
        ("typiclust", {"max_clusters": 0}),
        ("probcover", {"purity": 1.5}),
        ("activeft", {"temperature": -1.0}),
        ("cluster_margin", {"margin_factor": 0.5}),
    ],
)
def test_bad_params_fail_at_start_up_and_when_work_starts(name: str, params: dict) -> None:
    with pytest.raises(ConfigError, match=next(iter(params))):
        make_strategy(name, **params)  # the registry checks the declared constraints before building
    strategy = STRATEGIES.get(name)(**params)  # built by hand: stored untouched
    assert strategy.get_params().items() >= params.items()
    X, _ = blobs()
    Xk = np.hstack([X, np.arange(len(X))[:, None]]).astype(np.float32)
    labels = np.full(len(X), -1)
    labels[:5] = 0
    probs = np.full((len(X), 5), 0.2)
    model = EmbedScorer(probs, np.tile(probs, (3, 1, 1)))
    with pytest.raises(ConfigError, match=next(iter(params))):
        strategy.select(ctx_of(Xk, labels, model), 3, random_state=0)
