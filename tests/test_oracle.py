"""SimulatedOracle: truth, per-id deterministic noise, validation."""

from __future__ import annotations

import numpy as np
import pytest

from alcore.errors import ConfigError, LabelError, UnknownNameError
from alcore.oracle import ORACLES, LabelBatch, Oracle, SimulatedOracle, make_oracle

N, C = 10_000, 5
IDS = np.arange(N, dtype=np.int64) * 11 + 10**12
TRUTH = np.random.default_rng(0).integers(0, C, size=N)


def oracle(**kw) -> SimulatedOracle:
    params = dict(ids=IDS, labels=TRUTH, n_classes=C)
    return make_oracle("simulated", **{**params, **kw})  # type: ignore[return-value]


def test_registry() -> None:
    assert "simulated" in ORACLES
    assert isinstance(oracle(), Oracle)
    with pytest.raises(UnknownNameError, match="simulated"):
        make_oracle("human-ish")
    with pytest.raises(ConfigError, match="no parameter 'bogus'.*noise_rate"):
        make_oracle("simulated", ids=IDS, labels=TRUTH, n_classes=C, bogus=1)


def test_reveals_the_truth() -> None:
    ids = IDS[[5, 0, 9999, 17]]
    batch = oracle().query(ids)
    assert isinstance(batch, LabelBatch) and len(batch) == 4
    assert batch.ids.dtype == np.int64 and batch.labels.dtype == np.int64
    np.testing.assert_array_equal(batch.ids, ids)
    np.testing.assert_array_equal(batch.labels, TRUTH[[5, 0, 9999, 17]])


def test_get_params_keeps_inputs_untouched() -> None:
    o = oracle(price_per_label=0.05)
    params = o.get_params()
    assert params["ids"] is IDS and params["price_per_label"] == 0.05
    assert "n_ids=10000" in repr(o)


@pytest.mark.parametrize("rate", [0.1, 0.3])
def test_noise_rate_is_about_right_and_flips_to_other_classes(rate: float) -> None:
    batch = oracle(noise_rate=rate, random_state=3).query(IDS)
    wrong = batch.labels != TRUTH
    assert abs(wrong.mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / N)
    assert ((batch.labels >= 0) & (batch.labels < C)).all()
    # the wrong answers are spread over the other classes
    shift = (batch.labels[wrong] - TRUTH[wrong]) % C
    counts = np.bincount(shift, minlength=C)
    assert counts[0] == 0
    assert (np.abs(counts[1:] / wrong.sum() - 1 / (C - 1)) < 0.05).all()


def test_noise_is_a_function_of_the_id_alone() -> None:
    o = oracle(noise_rate=0.3, random_state=7)
    whole = o.query(IDS).labels
    perm = np.random.default_rng(1).permutation(N)
    shuffled = o.query(IDS[perm]).labels
    np.testing.assert_array_equal(shuffled, whole[perm])
    pieces = np.concatenate([o.query(IDS[i : i + 333]).labels for i in range(0, N, 333)])
    np.testing.assert_array_equal(pieces, whole)
    again = oracle(noise_rate=0.3, random_state=7).query(IDS).labels
    np.testing.assert_array_equal(again, whole)
    other = oracle(noise_rate=0.3, random_state=8).query(IDS).labels
    assert not np.array_equal(other, whole)


def test_no_noise_at_zero_rate_and_two_classes_flip_to_the_other() -> None:
    np.testing.assert_array_equal(oracle(noise_rate=0.0).query(IDS).labels, TRUTH)
    y = np.zeros(1000, dtype=np.int64)
    o = SimulatedOracle(ids=np.arange(1000), labels=y, n_classes=2, noise_rate=0.5)
    assert set(o.query(np.arange(1000)).labels.tolist()) == {0, 1}


def test_unknown_ids() -> None:
    with pytest.raises(LabelError, match=r"no label for ids \[3\]"):
        oracle().query(np.array([IDS[0], 3]))
    with pytest.raises(LabelError, match=r"\.\.\. \(7 in all\)"):
        oracle().query(np.arange(7))
    assert len(oracle().query(np.array([], dtype=np.int64))) == 0


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(noise_rate=1.0), "noise_rate"),
        (dict(noise_rate=-0.1), "noise_rate"),
        (dict(price_per_label=-1), "price_per_label"),
        (dict(price_per_label=float("nan")), "price_per_label"),
        (dict(random_state=-1), "random_state"),
        (dict(random_state=np.random.default_rng(0)), "random_state"),
        (dict(n_classes=1), "n_classes"),
        (dict(labels=TRUTH[:-1]), "labels"),
        (dict(labels=np.full(N, C)), "class set"),
        (dict(ids=np.zeros(N, dtype=np.int64)), "duplicates"),
    ],
)
def test_validation_happens_at_query(kw, match) -> None:
    o = oracle(**kw)  # sklearn manners: construction stores, query validates
    with pytest.raises(ConfigError, match=match):
        o.query(IDS[:3])


def test_label_batch_validates() -> None:
    with pytest.raises(LabelError, match="2 ids but 1 labels"):
        LabelBatch(ids=np.array([1, 2]), labels=np.array([0]))
    b = LabelBatch(ids=[1, 2], labels=[0, 1])  # type: ignore[arg-type]
    assert b.ids.dtype == np.int64
