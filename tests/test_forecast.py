"""The learning-curve forecast: known parameters, statuses, uncertainty, costs, and a real curve."""

import doctest
import math

import numpy as np
import pytest

import alcore.forecast
from alcore.errors import ConfigError
from alcore.forecast import CostModel, fit_learning_curve, forecast_target, power_law

N = np.arange(100, 1600, 100)
A, B, C = 0.9, 0.05, 0.6


def test_doctests():
    assert doctest.testmod(alcore.forecast).failed == 0


def test_recovers_known_parameters_and_labels_to_target():
    curve = fit_learning_curve(N, power_law(N, A, B, C, 1500), se=np.full(N.size, 1e-4), n_boot=20)
    assert (curve.a, curve.b, curve.c) == pytest.approx((A, B, C), abs=2e-3)
    f = curve.labels_to(0.88)
    assert f.status == "reachable"
    assert f.labels == pytest.approx(1500 * (B / (A - 0.88)) ** (1 / C), rel=0.02)
    assert f.labels_lower <= f.labels <= f.labels_upper < math.inf


def test_statuses_say_why():
    rng = np.random.default_rng(0)
    y = power_law(N, A, B, C, 1500) + rng.normal(0, 0.004, N.size)
    curve = fit_learning_curve(N, y, se=np.full(N.size, 0.004), n_boot=100)
    assert curve.labels_to(0.95).status == "not_reachable"
    assert "above the fitted asymptote" in curve.labels_to(0.95).reason
    assert curve.labels_to(0.80).status == "reached"
    near = curve.labels_to(curve.a - 0.003)  # within the asymptote's uncertainty
    assert near.status == "not_reachable_with_confidence" and near.labels_upper == math.inf
    far = float(curve.predict([6000])[0])
    assert curve.labels_to(far, n_max=2000).status == "beyond_pool"


def test_too_few_points_and_bad_input_are_refused_clearly():
    with pytest.raises(ConfigError, match="wait for more rounds"):
        fit_learning_curve([100, 200, 300], [0.5, 0.6, 0.65])
    with pytest.raises(ConfigError, match="increasing"):
        fit_learning_curve([100, 300, 200, 400], [0.5, 0.6, 0.65, 0.7])
    with pytest.raises(ConfigError, match="cov"):
        fit_learning_curve(N, power_law(N, A, B, C, 1500), cov=np.eye(3))


def test_intervals_cover_the_true_curve_on_noisy_synthetic_curves():
    """Fit the first 8 points of curves with known parameters and noise of known size; the 95%
    interval of the curve at 1,500 labels (an extrapolation) holds the truth in most repetitions."""
    rng = np.random.default_rng(1)
    n = N[:8]
    truth = power_law(1500, A, B, C, 1500)
    hits, errors = 0, []
    reps = 30
    for r in range(reps):
        y = power_law(n, A, B, C, 1500) + rng.normal(0, 0.005, n.size)
        curve = fit_learning_curve(n, y, se=np.full(n.size, 0.005), n_boot=100, random_state=r)
        lo, hi = curve.interval([1500])
        hits += lo[0] <= truth <= hi[0]
        errors.append(curve.predict([1500])[0] - truth)
    assert hits / reps >= 0.8
    assert abs(np.mean(errors)) < 0.01


def test_shared_audit_errors_leave_the_gain_precise():
    """Estimates sharing an audit err together: a common offset moves the level but not the
    slope. With the covariance, the gain of the next batch is known much better than the level."""
    rng = np.random.default_rng(2)
    T = N.size
    cov = 0.01**2 * np.ones((T, T)) + 0.001**2 * np.eye(T)
    y = power_law(N, A, B, C, 1500) + 0.01 * rng.standard_normal() + 0.001 * rng.standard_normal(T)
    with_cov = fit_learning_curve(N, y, cov=cov, n_boot=100)
    as_independent = fit_learning_curve(N, y, se=np.sqrt(np.diag(cov)), n_boot=100)
    _, lo, hi = with_cov.gain(1500, 1600)
    _, lo_i, hi_i = as_independent.gain(1500, 1600)
    true_gain = power_law(1600, A, B, C, 1500) - power_law(1500, A, B, C, 1500)
    assert lo <= true_gain <= hi
    assert hi - lo < 0.5 * (hi_i - lo_i)


def test_model_noise_beyond_the_given_errors_is_estimated():
    rng = np.random.default_rng(3)
    y = power_law(N, A, B, C, 1500) + rng.normal(0, 0.01, N.size)
    curve = fit_learning_curve(N, y, se=np.full(N.size, 1e-4), n_boot=20)
    assert 0.004 < curve.extra_sd < 0.02  # the points scatter by ~0.01, far more than their se


def test_cost_model_prices_rounds_and_fits_compute():
    cost = CostModel(price_per_label=0.1, audit_fraction=0.1, compute_usd_per_round=0.5, compute_usd_per_label=0.001)
    assert cost.round_usd(300, 100) == pytest.approx(100 * 0.11 + 0.5 + 0.3)
    assert cost.usd_between(100, 250, batch=100) == pytest.approx(cost.round_usd(200, 100) + cost.round_usd(300, 100))
    assert cost.usd_between(100, math.inf, batch=100) == math.inf and cost.usd_between(300, 200, batch=100) == 0
    fitted = CostModel.fit([100, 200, 300, 400], [0.6, 0.7, 0.8, 0.9], price_per_label=0.1)
    assert (fitted.compute_usd_per_round, fitted.compute_usd_per_label) == pytest.approx((0.5, 0.001))
    with pytest.raises(ConfigError, match="price_per_label"):
        CostModel(price_per_label=-1)


def test_forecast_target_gives_dollars_with_the_labels():
    curve = fit_learning_curve(N, power_law(N, A, B, C, 1500), se=np.full(N.size, 1e-3), n_boot=50)
    f = forecast_target(curve, 0.885, n_now=1500, batch=100, cost=CostModel(price_per_label=0.1))
    assert f.status == "reachable" and f.usd is not None
    assert f.usd == pytest.approx(0.1 * 100 * math.ceil((f.labels - 1500) / 100))
    assert f.usd_lower <= f.usd <= f.usd_upper and "$" in f.reason


def test_a_real_learning_curve_extrapolates_within_two_points():
    """Digits, logistic regression on random labels (the mean of 3 random orders, as a learning
    curve is measured): fit on 30..240 labels, predict 480."""
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    test, pool = order[:600], order[600:]
    ns = np.array([30, 60, 90, 120, 160, 200, 240, 480])
    acc = np.zeros(ns.size)
    with threadpool_limits(1):  # tiny fits: threads only contend
        for r in range(3):
            perm = np.random.default_rng(r).permutation(pool)
            for i, n in enumerate(ns):
                clf = LogisticRegression(max_iter=300).fit(X[perm[:n]] / 16, y[perm[:n]])
                acc[i] += float((clf.predict(X[test] / 16) == y[test]).mean()) / 3
    se = np.sqrt(acc * (1 - acc) / test.size / 3)
    curve = fit_learning_curve(ns[:-1], acc[:-1], se=se[:-1], n_boot=100)
    lo, hi = curve.interval([480])
    assert abs(curve.predict([480])[0] - acc[-1]) < 0.02
    assert lo[0] - 0.005 <= acc[-1] <= hi[0] + 0.005
