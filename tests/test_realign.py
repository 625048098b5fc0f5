import numpy as np
import pytest

from alcore.errors import ConfigError, UnknownNameError
from alcore.realign import TRIGGERS, logme, make_trigger, ped


def _blobs(sep, n=300, D=16, C=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    mu = rng.normal(0, sep, (C, D))
    return mu[y] + rng.normal(0, 1, (n, D)), y


def _logme_direct(F, y, tol=1e-3):
    """The METHODS.md iteration with an explicit (alpha I + beta F^T F)^-1 solve: the reference."""
    n, D = F.shape
    FtF = F.T @ F
    s = np.linalg.eigvalsh(FtF)
    out = []
    for k in np.unique(y):
        t = (y == k).astype(float)
        a, b = 1.0, 1.0
        for _ in range(100):
            gamma = np.sum(b * s / (a + b * s))
            m = b * np.linalg.solve(a * np.eye(D) + b * FtF, F.T @ t)
            na, nb = gamma / (m @ m), (n - gamma) / np.sum((F @ m - t) ** 2)
            done = abs(na - a) / a < tol and abs(nb - b) / b < tol
            a, b = na, nb
            if done:
                break
        m = b * np.linalg.solve(a * np.eye(D) + b * FtF, F.T @ t)
        res = np.sum((F @ m - t) ** 2)
        ev = n / 2 * np.log(b) + D / 2 * np.log(a) - n / 2 * np.log(2 * np.pi) - b / 2 * res - a / 2 * m @ m
        ev -= 0.5 * np.sum(np.log(a + b * s))
        out.append(ev / n)
    return float(np.mean(out))


@pytest.mark.parametrize("n, D, sep", [(200, 16, 2.0), (60, 40, 1.0)])
def test_logme_matches_the_direct_formula(n, D, sep):
    F, y = _blobs(sep, n=n, D=D)
    assert logme(F, y) == pytest.approx(_logme_direct(F, y), rel=1e-3, abs=1e-3)


def test_logme_is_finite_with_fewer_samples_than_dimensions():
    F, y = _blobs(1.0, n=20, D=64)  # a perfect linear fit exists: the evidence must still be a number
    assert np.isfinite(logme(F, y))


def test_logme_prefers_separable_labels():
    F, y = _blobs(3.0)
    shuffled = np.random.default_rng(1).permutation(y)
    assert logme(F, y) > logme(F, shuffled) + 0.5
    Fw, _ = _blobs(0.5)
    assert logme(F, y) > logme(Fw, y)  # better separated features, higher LogME


def test_ped_moves_overlapping_classes_apart_and_never_lowers_logme():
    F, y = _blobs(0.8)
    Z0, Z = ped(F, y, max_steps=0), ped(F, y)

    def spread(Z):
        mu = np.stack([Z[y == c].mean(0) for c in np.unique(y)])
        return np.linalg.norm(mu[:, None] - mu[None], axis=2).sum()

    assert spread(Z) > spread(Z0)
    levels = [logme(ped(F, y, max_steps=k), y) for k in range(0, 7)]
    assert all(b >= a - 1e-9 for a, b in zip(levels, levels[1:], strict=False))
    far, yf = _blobs(50.0)  # no overlap: nothing moves
    np.testing.assert_allclose(ped(far, yf), ped(far, yf, max_steps=0))


def test_schedule_fires_once_per_count():
    t = make_trigger("schedule", at=[30, 60])
    hist = []
    fired = []
    for n in (10, 20, 30, 40, 50, 60, 70):
        d = t.decide(round=n // 10, n_labeled=n, X=None, y=None, history=hist)
        hist.append({"fired": d.fire, "n_labeled_at_fire": n if d.fire else 0})
        fired.append(d.fire)
    assert fired == [False, False, True, False, False, True, False]


def test_schedule_remembers_a_count_fired_on_earlier_features():
    # a realignment starts a new feature version and so an empty history: fired_at still knows
    t = make_trigger("schedule", at=[30, 60])
    kw = {"X": None, "y": None, "history": []}
    assert t.decide(round=3, n_labeled=30, **kw).fire
    assert not t.decide(round=4, n_labeled=40, fired_at=(30,), **kw).fire
    assert t.decide(round=6, n_labeled=60, fired_at=(30,), **kw).fire
    assert not t.decide(round=7, n_labeled=70, fired_at=(30, 60), **kw).fire


def test_logme_drop_and_ped_gap_fire_on_their_indicators():
    F, y = _blobs(3.0)
    t = make_trigger("logme_drop", tolerance=0.0, min_labels=10)
    first = t.decide(round=1, n_labeled=300, X=F, y=y, history=[])
    assert not first.fire and "logme" in first.indicators
    worse, _ = _blobs(0.3)
    d = t.decide(round=2, n_labeled=300, X=worse, y=y, history=[first.indicators])
    assert d.fire and d.indicators["logme_delta"] < 0
    Fo, yo = _blobs(0.8)
    gap = make_trigger("ped_gap", threshold=0.0, min_labels=10).decide(round=1, n_labeled=300, X=Fo, y=yo, history=[])
    assert gap.fire and gap.indicators["ped_gap"] > 0
    assert (
        not make_trigger("ped_gap", threshold=1e9, min_labels=10)
        .decide(round=1, n_labeled=300, X=Fo, y=yo, history=[])
        .fire
    )


def test_registry():
    assert {"logme_drop", "ped_gap", "schedule", "never", "every_round"} <= set(TRIGGERS.names())
    with pytest.raises(UnknownNameError, match="logme_drop"):
        make_trigger("sometimes")
    with pytest.raises(ConfigError, match="threshold"):
        make_trigger("ped_gap", thresh=1)
    with pytest.raises(ConfigError, match="at least 2"):
        logme(np.zeros((1, 3)), np.zeros(1))
