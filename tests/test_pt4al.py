"""PT4AL: numeric sort into batches, the even-stride cold start, least confidence within the
cycle's batch, the reference's text-sort defect as an option, and the overflow rule."""

from __future__ import annotations

import numpy as np
import pytest

from alcore.errors import ConfigError
from alcore.strategies import SelectionContext, make_strategy, pt4al_batches, pt4al_order


class FixedProbs:
    """A Scorer whose max probability is given per row (the rest spread evenly)."""

    def __init__(self, conf_by_row: np.ndarray, n_classes: int = 2) -> None:
        self.conf = conf_by_row
        self.C = n_classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        rows = X[:, 0].astype(int)
        p = np.tile((1 - self.conf[rows])[:, None] / (self.C - 1), (1, self.C))
        p[:, 0] = self.conf[rows]
        return p

    def embed(self, X: np.ndarray) -> np.ndarray:
        return X


def context(losses, labeled=(), model=None, round=1, n_rounds=4) -> SelectionContext:
    n = len(losses)
    labels = np.full(n, -1)
    labels[list(labeled)] = 0
    X = np.arange(n, dtype=np.float32)[:, None]  # column 0 = the row, for FixedProbs
    return SelectionContext(
        pool_ids=np.arange(100, 100 + n),
        features=X,
        labels=labels,
        n_classes=2,
        model=model,
        round=round,
        extras={"pretext_loss": np.asarray(losses, dtype=float)},
        n_rounds=n_rounds,
    )


def test_numeric_order_highest_loss_first() -> None:
    np.testing.assert_array_equal(pt4al_order(np.array([0.5, 9.1, 10.2, 0.01])), [2, 1, 0, 3])


def test_faithful_order_is_the_text_sort_of_the_reference() -> None:
    # "9.1" > "10.2" > "0.5" > "0.01" as strings: 10.2 is not first.
    np.testing.assert_array_equal(pt4al_order(np.array([0.5, 9.1, 10.2, 0.01]), faithful=True), [1, 2, 0, 3])


def test_batches_are_consecutive_slices_of_the_order() -> None:
    losses = np.arange(10.0)
    b = pt4al_batches(losses, 3)
    np.testing.assert_array_equal(np.concatenate(b), np.arange(9, -1, -1))
    assert [len(x) for x in b] == [4, 3, 3]


def test_cycle_zero_is_an_even_stride_of_the_hardest_batch() -> None:
    losses = np.arange(20.0)  # batch 0 (of 4) = rows 19..15 in that order
    ids = make_strategy("pt4al").select(context(losses), 2, random_state=0)
    # Every 2nd-and-a-half of [19, 18, 17, 16, 15]: offsets floor(0), floor(2.5) -> rows 19, 17.
    np.testing.assert_array_equal(ids, [119, 117])


def test_reference_stride_picks_every_fifth() -> None:
    losses = np.arange(5000.0)[::-1].copy()  # row i has rank i
    ids = make_strategy("pt4al").select(context(losses, n_rounds=1), 1000, random_state=0)
    np.testing.assert_array_equal(ids - 100, np.arange(0, 5000, 5))


def test_later_cycles_take_the_least_confident_of_their_batch_only() -> None:
    losses = np.arange(20.0)  # batches: [19..15], [14..10], [9..5], [4..0]
    conf = np.full(20, 0.99)
    conf[[12, 10, 3]] = [0.55, 0.6, 0.5]  # row 3 is the least confident overall but in batch 3
    ctx = context(losses, labeled=[19, 17], model=FixedProbs(conf), round=2)
    ids = make_strategy("pt4al").select(ctx, 2, random_state=0)
    np.testing.assert_array_equal(ids, [112, 110])


def test_a_short_batch_continues_into_the_next_one() -> None:
    losses = np.arange(8.0)  # 4 batches of 2: [7, 6], [5, 4], [3, 2], [1, 0]
    conf = np.linspace(0.6, 0.9, 8)
    ctx = context(losses, labeled=[5], model=FixedProbs(conf), round=2)
    ids = make_strategy("pt4al").select(ctx, 3, random_state=0)
    # batch 1 has only row 4 free; then batch 2's two, least confident (lowest conf) first.
    np.testing.assert_array_equal(ids - 100, [4, 2, 3])


def test_more_rounds_than_batches_stay_in_the_last_batch_first() -> None:
    losses = np.arange(8.0)
    conf = np.linspace(0.6, 0.9, 8)
    ctx = context(losses, model=FixedProbs(conf), round=9, n_rounds=4)
    ids = make_strategy("pt4al").select(ctx, 2, random_state=0)
    np.testing.assert_array_equal(np.sort(ids - 100), [0, 1])


def test_needs_the_number_of_batches() -> None:
    ctx = context(np.arange(8.0), n_rounds=None)
    with pytest.raises(ConfigError, match="number of batches"):
        make_strategy("pt4al").select(ctx, 2, random_state=0)
    ids = make_strategy("pt4al", n_batches=2).select(ctx, 2, random_state=0)
    np.testing.assert_array_equal(ids - 100, [7, 5])


def test_later_cycles_need_a_model() -> None:
    with pytest.raises(ConfigError, match="proxy model"):
        make_strategy("pt4al").select(context(np.arange(8.0), labeled=[7], round=2), 2, random_state=0)
