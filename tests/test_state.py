"""LabelState: every label event is checked whole, errors change nothing, state round-trips."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from alcore.errors import ConfigError, LabelError
from alcore.state import LabelState

IDS = np.array([100, 7, 55, 3, 10**12, 42], dtype=np.int64)


def snapshot(state: LabelState) -> tuple[np.ndarray, np.ndarray]:
    return state.labeled_round.copy(), state.labels.copy()


def make_state() -> LabelState:
    state = LabelState(IDS, n_classes=3)
    state.label([7, 10**12], [2, 0], round=1)
    return state


def test_fresh_state_is_all_unlabeled() -> None:
    state = LabelState(IDS, n_classes=3)
    assert state.n_labeled == 0 and state.n_unlabeled == 6 and state.current_round == 0
    assert state.labeled_round.dtype == np.int32 and state.labels.dtype == np.int64
    np.testing.assert_array_equal(state.labels_array(), -np.ones(6))
    np.testing.assert_array_equal(state.unlabeled_ids, IDS)
    assert state.labeled_ids.size == 0
    state.check_invariants()


def test_label_updates_aligned_arrays() -> None:
    state = make_state()
    state.label(np.array([42]), np.array([1]), round=2)
    np.testing.assert_array_equal(state.labeled_round, [0, 1, 0, 0, 1, 2])
    np.testing.assert_array_equal(state.labels_array(), [-1, 2, -1, -1, 0, 1])
    np.testing.assert_array_equal(state.labeled_ids, [7, 10**12, 42])
    np.testing.assert_array_equal(state.unlabeled_ids, [100, 55, 3])
    np.testing.assert_array_equal(state.labels_of([42, 7]), [1, 2])
    np.testing.assert_array_equal(state.round_of([42, 7, 3]), [2, 1, 0])
    np.testing.assert_array_equal(state.ids_in_round(1), [7, 10**12])
    np.testing.assert_array_equal(state.positions_of([10**12, 100]), [4, 0])
    assert state.n_labeled == 3 and state.current_round == 2
    state.check_invariants()


def test_label_same_round_twice_and_empty_call() -> None:
    state = make_state()
    state.label([3], [0], round=1)
    state.label([], [], round=1)
    assert state.n_labeled == 3


def test_arrays_are_read_only() -> None:
    state = make_state()
    for arr in (state.labeled_round, state.labels, state.pool_ids):
        with pytest.raises(ValueError):
            arr[0] = 1
    out = state.labels_array()
    out[0] = 2  # a copy
    assert state.labels[0] == -1


@pytest.mark.parametrize(
    ("ids", "labels", "round", "match"),
    [
        ([100, 999], [0, 1], 1, r"not in the pool: \[999\]"),
        ([100, 55, 100], [0, 1, 0], 1, r"repeated within one call: \[100\]"),
        ([100, 7], [0, 1], 1, r"already labeled: \[7\]"),
        ([100, 55], [0, 3], 1, r"labels outside the class set for ids \[55\]"),
        ([100, 55], [0, -1], 1, r"\[55\]"),
        ([100, 55], [0], 1, "2 ids but 1 labels"),
        ([100], [0], 0, "round=0"),
        ([100], [0], True, "round=True"),
        ([100], [0], 1.0, "round=1.0"),
        ([100.0], [0], 1, "ids has shape"),
        ([100], [0.5], 1, "labels has shape"),
        ([[100]], [0], 1, "ids has shape"),
    ],
)
def test_every_error_leaves_state_unchanged(ids, labels, round, match) -> None:
    state = make_state()
    before = snapshot(state)
    with pytest.raises(LabelError, match=match):
        state.label(ids, labels, round=round)
    after = snapshot(state)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    state.check_invariants()


def test_rounds_never_go_back() -> None:
    state = make_state()
    state.label([3], [1], round=3)
    with pytest.raises(LabelError, match="round=2 while the state is at round 3"):
        state.label([100], [0], round=2)


def test_error_names_only_the_first_few_ids() -> None:
    state = LabelState(np.arange(100), n_classes=2)
    with pytest.raises(LabelError, match=r"\[100, 101, 102, 103, 104, \.\.\. \(20 in all\)\]"):
        state.label(np.arange(100, 120), np.zeros(20, dtype=int), round=1)


def test_labels_of_refuses_unlabeled_and_unknown() -> None:
    state = make_state()
    with pytest.raises(LabelError, match=r"not labeled yet: \[3\]"):
        state.labels_of([7, 3])
    with pytest.raises(LabelError, match="not in the pool"):
        state.labels_of([8])


@pytest.mark.parametrize(
    ("pool_ids", "n_classes", "match"),
    [
        ([1, 2, 2], 3, "duplicates"),
        ([1.0, 2.0], 3, "pool_ids"),
        ([[1, 2]], 3, "pool_ids"),
        ([1, 2], 1, "n_classes"),
        ([1, 2], 2.0, "n_classes"),
    ],
)
def test_constructor_validates(pool_ids, n_classes, match) -> None:
    with pytest.raises(ConfigError, match=match):
        LabelState(pool_ids, n_classes)


def test_state_dict_round_trip_through_json() -> None:
    state = make_state()
    state.label([42, 55], [1, 1], round=4)
    d = json.loads(json.dumps(state.state_dict()))
    assert d["version"] == 1 and d["n_classes"] == 3 and d["pool_ids"] == IDS.tolist()
    assert d["rounds"] == sorted(d["rounds"])
    twin = LabelState.from_state_dict(d)
    np.testing.assert_array_equal(twin.pool_ids, state.pool_ids)
    np.testing.assert_array_equal(twin.labeled_round, state.labeled_round)
    np.testing.assert_array_equal(twin.labels, state.labels)
    assert twin.current_round == 4
    other = LabelState(IDS, n_classes=3)
    other.load_state_dict(d)
    np.testing.assert_array_equal(other.labels, state.labels)
    twin.check_invariants()


def test_load_refuses_another_pool_and_changes_nothing() -> None:
    d = make_state().state_dict()
    target = LabelState(IDS[::-1], n_classes=3)
    target.label([3], [0], round=1)
    before = snapshot(target)
    with pytest.raises(LabelError, match="another pool.*first difference at position 0"):
        target.load_state_dict(d)
    with pytest.raises(LabelError, match="another pool"):
        LabelState(IDS[:3], n_classes=3).load_state_dict(d)
    with pytest.raises(ConfigError, match="n_classes"):
        LabelState(IDS, n_classes=4).load_state_dict(d)
    np.testing.assert_array_equal(snapshot(target)[0], before[0])
    np.testing.assert_array_equal(snapshot(target)[1], before[1])


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda d: d.pop("labels"), ConfigError, "missing"),
        (lambda d: d.update(format="other"), ConfigError, "not a label-state dict"),
        (lambda d: d.update(version=99), ConfigError, "version 99"),
        (lambda d: d.update(labels=[0, 5]), LabelError, "outside the class set"),
        (lambda d: d.update(rounds=[0, 1]), LabelError, "round >= 1"),
        (lambda d: d.update(rounds=[1]), LabelError, "1 rounds for 2"),
        (lambda d: d.update(labeled_ids=[7, 7]), LabelError, "repeated"),
        (lambda d: d.update(labeled_ids=[7, 8]), LabelError, "not in the pool"),
    ],
)
def test_load_validates_entries(edit, error, match) -> None:
    d = make_state().state_dict()
    edit(d)
    target = make_state()
    target.label([3], [0], round=2)
    before = snapshot(target)
    with pytest.raises(error, match=match):
        target.load_state_dict(d)
    np.testing.assert_array_equal(snapshot(target)[0], before[0])
    np.testing.assert_array_equal(snapshot(target)[1], before[1])


def test_check_invariants_catches_corruption() -> None:
    state = make_state()
    state._labels[0] = 1  # labeled without a round
    with pytest.raises(LabelError, match="disagree at ids \\[100\\]"):
        state.check_invariants()


def test_million_pool_is_fast() -> None:
    n = 10**6
    rng = np.random.default_rng(0)
    pool = rng.permutation(n).astype(np.int64) * 3 + 10**9
    t0 = time.perf_counter()
    state = LabelState(pool, n_classes=10)
    for r in range(1, 4):
        ids = rng.choice(state.unlabeled_ids, size=10**5, replace=False)
        state.label(ids, rng.integers(0, 10, size=ids.size), round=r)
    labels = state.labels_of(state.labeled_ids)
    elapsed = time.perf_counter() - t0
    assert state.n_labeled == 3 * 10**5 and labels.size == 3 * 10**5
    state.check_invariants()
    assert elapsed < 5.0, elapsed
