"""Constrained seeded k-means (Basu et al. 2002): known answers and its invariants."""

from __future__ import annotations

import numpy as np
import pytest

from alcore.cluster import constrained_kmeans, l2_normalize
from alcore.errors import ConfigError


def line(*xs: float) -> np.ndarray:
    return np.asarray(xs, dtype=np.float64)[:, None]


def test_known_answer_on_a_line() -> None:
    # Seeds 0 -> cluster 0 and 12 -> cluster 1: the first assignment splits at 6, the means are
    # 1 and 11, and the next pass changes nothing.
    X = line(0, 1, 2, 10, 11, 12)
    r = constrained_kmeans(X, 2, [0, 5], [0, 1], random_state=0)
    np.testing.assert_array_equal(r.labels, [0, 0, 0, 1, 1, 1])
    np.testing.assert_allclose(r.centers[:, 0], [1.0, 11.0])
    assert r.converged and r.n_iter == 2


def test_seeds_keep_their_cluster_even_when_far_from_it() -> None:
    # The point at 11 is labeled class 0: it stays in cluster 0 and pulls its centroid.
    X = line(0, 1, 2, 10, 11, 12)
    r = constrained_kmeans(X, 2, [0, 4, 5], [0, 0, 1], random_state=0)
    assert r.labels[4] == 0 and r.labels[0] == 0 and r.labels[5] == 1
    # Centroid 0 starts at mean(0, 11) = 5.5: 1 and 2 join it, 10 joins 12.
    np.testing.assert_array_equal(r.labels, [0, 0, 0, 1, 0, 1])
    np.testing.assert_allclose(r.centers[:, 0], [(0 + 1 + 2 + 11) / 4, 11.0])


def test_seed_labels_name_the_clusters() -> None:
    # Class ids are cluster ids: seeding blob B with class 0 puts blob B in cluster 0.
    rng = np.random.default_rng(0)
    A = rng.normal(size=(50, 2))
    B = rng.normal(size=(50, 2)) + 20
    X = np.vstack([A, B])
    r = constrained_kmeans(X, 2, [60, 10], [0, 1], random_state=1)
    np.testing.assert_array_equal(r.labels[:50], 1)
    np.testing.assert_array_equal(r.labels[50:], 0)


def test_unseeded_clusters_start_at_unlabeled_points_and_find_blobs() -> None:
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [30, 0], [0, 30], [30, 30]], dtype=float)
    truth = np.repeat(np.arange(4), 40)
    X = centers[truth] + rng.normal(size=(160, 2))
    # Only classes 0 and 1 are seeded; clusters 2 and 3 start at random unlabeled points.
    r = constrained_kmeans(X, 4, [0, 40], [0, 1], random_state=3)
    assert r.converged
    np.testing.assert_array_equal(r.labels[truth == 0], 0)
    np.testing.assert_array_equal(r.labels[truth == 1], 1)
    # The other two blobs are each one cluster, 2 or 3.
    assert {int(r.labels[truth == 2][0]), int(r.labels[truth == 3][0])} == {2, 3}
    for c in (2, 3):
        assert np.unique(r.labels[truth == c]).size == 1


def test_no_seeds_is_lloyd_and_is_seeded_by_random_state() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 5))
    a = constrained_kmeans(X, 6, [], [], random_state=7)
    b = constrained_kmeans(X, 6, [], [], random_state=np.random.default_rng(7))
    np.testing.assert_array_equal(a.labels, b.labels)
    # A Lloyd fixed point: every point is at its nearest centre, every centre is its cluster's mean.
    d = ((X[:, None, :] - a.centers[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(d.argmin(1), a.labels)
    for c in range(6):
        np.testing.assert_allclose(a.centers[c], X[a.labels == c].mean(0))


def test_max_iter_stops_and_says_so() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(500, 3))
    r = constrained_kmeans(X, 20, [], [], random_state=0, max_iter=1)
    assert r.n_iter == 1 and not r.converged


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_clusters=0), "n_clusters"),
        (dict(n_clusters=2, seed_positions=[0], seed_labels=[2]), "seed labels"),
        (dict(n_clusters=2, seed_positions=[0, 0], seed_labels=[0, 0]), "repeated"),
        (dict(n_clusters=2, seed_positions=[9], seed_labels=[0]), "out of range"),
        (dict(n_clusters=2, seed_positions=[0], seed_labels=[0, 1]), "one label each"),
        (dict(n_clusters=6, seed_positions=[0, 1], seed_labels=[0, 0]), "unseeded clusters"),
    ],
)
def test_bad_input_is_named(kwargs: dict, match: str) -> None:
    X = line(0, 1, 2, 10, 11, 12)
    args = dict(seed_positions=[], seed_labels=[]) | kwargs
    with pytest.raises(ConfigError, match=match):
        constrained_kmeans(
            X, args.pop("n_clusters"), args.pop("seed_positions"), args.pop("seed_labels"), random_state=0
        )


def test_l2_normalize() -> None:
    X = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(X), [[0.6, 0.8], [0.0, 0.0]])
