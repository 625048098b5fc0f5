"""Accuracy without a test set: known answers, and coverage checks on seeded simulations."""

import doctest
import math

import numpy as np
import pytest

import alcore.estimate
from alcore.errors import ConfigError, LabelError, UnknownNameError
from alcore.estimate import (
    ESTIMATORS,
    Audit,
    active_proposal,
    binomial_interval,
    choose_reserve,
    draw_audit,
    estimate_rounds,
    exact_estimate,
    ppi_estimate,
    wilson_estimate,
)


def test_doctests():
    assert doctest.testmod(alcore.estimate).failed == 0


def test_wilson_and_exact_known_values():
    z = 1.959963984540054
    lo, hi = binomial_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(z**2 / (20 + z**2))  # Wilson at k = 0
    lo, hi = binomial_interval(90, 100)
    assert (lo, hi) == pytest.approx((0.8256, 0.9448), abs=1e-4)
    # Clopper-Pearson at the ends has a closed form: (alpha/2)^(1/n).
    assert binomial_interval(0, 10, method="exact") == pytest.approx((0.0, 1 - 0.025 ** (1 / 10)))
    assert binomial_interval(10, 10, method="exact") == pytest.approx((0.025 ** (1 / 10), 1.0))
    wide, narrow = exact_estimate([1] * 45 + [0] * 5), wilson_estimate([1] * 45 + [0] * 5)
    assert wide.lower < narrow.lower and wide.estimate == narrow.estimate == 0.9


def test_the_reserve_term_widens_the_binomial_interval_by_sqrt_1_plus_m_over_n():
    c = np.r_[np.ones(80), np.zeros(20)]
    plain, pop = wilson_estimate(c), wilson_estimate(c, n_pool=100)
    assert (pop.upper - pop.estimate) == pytest.approx((plain.upper - plain.estimate) * math.sqrt(2))
    assert pop.se == pytest.approx(math.sqrt(0.16 / 100 + 0.16 / 100))


def test_ppi_is_the_formula_and_lam_zero_is_the_audit_mean():
    rng = np.random.default_rng(0)
    f = rng.uniform(0.5, 1, 40)
    c = rng.random(40) < f
    e0 = ppi_estimate(c, f, 0.7, 1000, lam=0.0)
    assert e0.estimate == pytest.approx(c.mean()) and e0.lam == 0.0
    e1 = ppi_estimate(c, f, 0.7, 1000, lam=1.0)
    assert e1.estimate == pytest.approx(0.7 + (c - f).mean())
    auto = ppi_estimate(c, f, 0.7, 1000)
    lam = np.cov(c.astype(float), f)[0, 1] / np.var(f, ddof=1)
    assert auto.lam == pytest.approx(np.clip(lam, 0, 1))


def test_ppi_does_not_collapse_when_every_audit_draw_is_right():
    f = np.full(15, 0.99)
    e = ppi_estimate(np.ones(15, bool), f, 0.99, 10000)
    assert e.half_width > 0.05  # pseudo-draws keep an honest width (Wilson's is ~0.1 here)


def _population(rng, n, sharp):
    if sharp:  # most samples confidently right, some unsure: where PPI and the active audit gain
        f = np.where(rng.random(n) < 0.8, rng.beta(80, 1, n), rng.uniform(0.3, 0.9, n))
    else:
        f = 0.5 + 0.5 * rng.beta(4, 1, n)
    return f, rng.random(n) < f  # calibrated: P(right | f) = f


def _coverage(design, f_model, c, m, reps, rng):
    N = c.size
    truth = c.mean()
    q = active_proposal(f_model) if design == "active" else np.full(N, 1 / N)
    out = []
    for _ in range(reps):
        p = draw_audit(q, m, random_state=rng)
        if design == "wilson":
            e = wilson_estimate(c[p], n_pool=N)
        else:
            e = ppi_estimate(
                c[p], f_model[p], f_model.mean(), N, weights=1 / (N * q[p]) if design == "active" else None
            )
        out.append((e.covers(truth), e.estimate - truth))
    cov = np.mean([o[0] for o in out])
    err = np.array([o[1] for o in out])
    return cov, err


@pytest.mark.parametrize("design", ["wilson", "ppi", "active"])
@pytest.mark.parametrize("miscalibrated", [False, True])
def test_intervals_cover_at_their_nominal_rate(design, miscalibrated):
    rng = np.random.default_rng(1)
    f, c = _population(rng, 5000, sharp=True)
    if miscalibrated:
        f = f**0.3  # overconfident: PPI stays unbiased, the audit rectifies it
    cov, err = _coverage(design, f, c, 100, 400, rng)
    assert 0.92 <= cov <= 0.995
    assert abs(err.mean()) < 0.004  # unbiased (the sd of the mean is ~0.0015)


def test_the_active_audit_and_ppi_beat_the_plain_audit_on_sharp_confidences():
    rng = np.random.default_rng(2)
    f, c = _population(rng, 5000, sharp=True)
    sd = {d: _coverage(d, f, c, 100, 400, rng)[1].std() for d in ("wilson", "ppi", "active")}
    assert sd["ppi"] < 0.9 * sd["wilson"]
    assert sd["active"] < 0.75 * sd["wilson"]


def test_active_proposal_bounds_weights_and_sums_to_one():
    f = np.r_[np.full(90, 1.0), np.linspace(0.3, 0.9, 10)]
    q = active_proposal(f, mix=0.25)
    assert q.sum() == pytest.approx(1.0) and (1 / (f.size * q)).max() <= 1 / 0.25 + 1e-9
    assert q[95] > q[0]  # unsure samples are drawn more
    assert np.allclose(active_proposal(np.ones(10)), 0.1)
    with pytest.raises(ConfigError, match="mix"):
        active_proposal(f, mix=0)


def test_draws_and_reserve_are_seeded():
    q = active_proposal(np.linspace(0.4, 1, 50))
    assert np.array_equal(draw_audit(q, 30, random_state=3), draw_audit(q, 30, random_state=3))
    r = choose_reserve(np.arange(100, 200), 10, random_state=0)
    assert np.array_equal(r, choose_reserve(np.arange(100, 200), 10, random_state=0))
    assert r.size == 10 and np.all(np.diff(r) > 0) and np.isin(r, np.arange(100, 200)).all()
    with pytest.raises(ConfigError, match="reserve size"):
        choose_reserve(np.arange(10), 10, random_state=0)


def _probs(conf, pred, C=3):
    p = np.zeros((conf.size, C))
    p[np.arange(conf.size), pred] = conf
    other = (pred + 1) % C
    p[np.arange(conf.size), other] = 1 - conf
    return p


def test_audit_buys_each_id_once_and_survives_a_state_round_trip():
    rng = np.random.default_rng(4)
    reserve = np.arange(1000, 1300)
    y = rng.integers(0, 3, reserve.size)
    conf = rng.uniform(0.4, 1, reserve.size)
    pred = np.where(rng.random(reserve.size) < conf, y, (y + 1) % 3)
    probs = _probs(conf, pred)
    audit = Audit(reserve_ids=reserve, sampling="active")
    bought: list[int] = []
    for r in range(3):
        to_buy = audit.draw(probs, 60, random_state=r, round=r)
        assert not set(to_buy.tolist()) & set(bought)  # never bought twice
        audit.record(to_buy, y[to_buy - 1000])
        bought += to_buy.tolist()
    assert audit.n_draws == 180 and audit.n_labeled == len(bought) <= 180
    est = audit.estimate(probs)
    twin = Audit.from_state_dict(audit.state_dict())
    assert twin.estimate(probs) == est and twin.n_labeled == audit.n_labeled
    assert est.covers(float((pred == y).mean())) and est.method == "ppi_weighted"


def test_audit_refuses_bad_labels_and_bad_combinations():
    audit = Audit(reserve_ids=np.arange(10), sampling="uniform", estimator="wilson")
    with pytest.raises(ConfigError, match="no labeled draw"):
        audit.estimate(np.full((10, 2), 0.5))
    ids = audit.draw(None, 3, random_state=0)
    with pytest.raises(LabelError, match="not drawn"):
        audit.record(np.array([(set(range(10)) - set(ids.tolist())).pop()]), np.array([0]))
    audit.record(ids, np.zeros(ids.size, int))
    with pytest.raises(LabelError, match="already has"):
        audit.record(ids[:1], np.ones(1, int))
    with pytest.raises(ConfigError, match="active"):
        Audit(reserve_ids=np.arange(10), sampling="active", estimator="wilson")
    with pytest.raises(UnknownNameError, match="ppi"):
        Audit(reserve_ids=np.arange(10), estimator="bogus")
    assert ESTIMATORS.names() == ["exact", "ppi", "wilson"]


def test_estimate_rounds_covariance_matches_the_spread_of_differences():
    """Two models that differ on 5% of the pool, one audit grown from 60 to 120 draws: the
    covariance the estimator reports predicts the spread of the estimated *gain* across audits."""
    rng = np.random.default_rng(5)
    N = 4000
    f1, c1 = _population(rng, N, sharp=False)
    flip = rng.random(N) < 0.05
    c2 = np.where(flip, ~c1, c1)
    f2 = np.where(flip, 1.5 - f1, f1).clip(0.5, 1)
    gains, predicted, independent = [], [], []
    for _ in range(300):
        p = rng.integers(0, N, 120)
        C = np.stack([c1[p], c2[p]])
        F = np.stack([f1[p], f2[p]])
        ests, cov = estimate_rounds(C, F, np.array([f1.mean(), f2.mean()]), [60, 120], N)
        gains.append(ests[1].estimate - ests[0].estimate)
        predicted.append(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
        independent.append(cov[0, 0] + cov[1, 1])
        assert cov[0, 0] == pytest.approx(ests[0].se ** 2)
    assert np.var(gains) == pytest.approx(np.mean(predicted), rel=0.3)
    # Shared draws: the gain is far more precise than two independent estimates would say.
    assert np.var(gains) < 0.7 * np.mean(independent)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ConfigError, match="non-empty 1-D"):
        wilson_estimate([])
    with pytest.raises(ConfigError, match="other than 0 and 1"):
        wilson_estimate([0, 2])
    with pytest.raises(ConfigError, match="audit_confidence"):
        ppi_estimate([1, 0], [0.5], 0.5, 10)
    with pytest.raises(ConfigError, match="weights"):
        ppi_estimate([1, 0], [0.5, 0.6], 0.5, 10, weights=[1.0, -1.0])
    with pytest.raises(ConfigError, match="lam"):
        ppi_estimate([1, 0], [0.5, 0.6], 0.5, 10, lam=2.0)
    with pytest.raises(ConfigError, match="confidence"):
        wilson_estimate([1, 0], confidence=95)
