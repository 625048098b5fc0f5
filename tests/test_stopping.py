"""Stopping rules: the registry contract, known answers, and each decision saying why."""

import doctest
import math

import numpy as np
import pytest

import alcore.stopping
from alcore.errors import ConfigError, UnknownNameError
from alcore.estimate import AccuracyEstimate
from alcore.forecast import CostModel, power_law
from alcore.stopping import STOP_RULES, StopContext, StopDecision, best_stop_round, cohen_kappa, make_stop_rule

A, B, C = 0.9, 0.04, 0.7
BATCH = 100
N_ROUNDS = 20
COST = CostModel(price_per_label=0.1)  # a round of 100 labels costs $10


def _estimates(n, se=0.002):
    return [
        AccuracyEstimate(float(a), float(a - 2 * se), float(a + 2 * se), se, 500, "test")
        for a in power_law(n, A, B, C, 2000)
    ]


def _context(t, *, se=0.002, predictions=None):
    n = BATCH * np.arange(1, t + 1)
    return StopContext(
        n_labeled=n,
        spent_usd=float(n[-1]) * 0.1,
        next_batch=BATCH,
        cost=COST,
        estimates=_estimates(n, se),
        predictions=predictions,
        n_final=BATCH * N_ROUNDS,
        n_boot=50,
    )


def _predictions(t, S=500, seed=0):
    """Each round's predictions on a stop set: successive models disagree on fewer samples."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 5, S)
    out = []
    for r in range(t):
        flip = rng.random(S) < 0.2 / (r + 1) ** 2
        base = np.where(flip, rng.integers(0, 5, S), base)
        out.append(base.copy())
    return out


def test_doctests():
    assert doctest.testmod(alcore.stopping).failed == 0


@pytest.mark.parametrize("name", STOP_RULES.names())
def test_every_rule_decides_with_a_reason_and_deterministically(name):
    params = {"rules": [{"name": "budget", "params": {"max_usd": 50}}, {"name": "never"}]} if name == "any" else {}
    rule = make_stop_rule(name, **params)
    assert type(rule)(**rule.get_params()).get_params() == rule.get_params()
    assert rule.needs() <= alcore.stopping.NEEDS
    ctx = _context(8, predictions=_predictions(8))
    d1, d2 = rule.decide(ctx), rule.decide(_context(8, predictions=_predictions(8)))
    assert isinstance(d1, StopDecision) and d1 == d2
    assert d1.reason and d1.rule == name
    assert all(isinstance(v, float) and math.isfinite(v) for v in d1.indicators.values())


def test_unknown_names_and_parameters_list_the_valid_ones():
    with pytest.raises(UnknownNameError, match="cost_aware.*stabilizing_predictions"):
        make_stop_rule("kappa")
    with pytest.raises(ConfigError, match="threshold, window"):
        make_stop_rule("stabilizing_predictions", thresh=0.9)


def test_cohen_kappa_known_values():
    from sklearn.metrics import cohen_kappa_score

    assert cohen_kappa([0, 0, 1, 1], [0, 1, 1, 1]) == pytest.approx(0.5)
    assert cohen_kappa([2, 2, 2], [2, 2, 2]) == 1.0
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 4, 200), rng.integers(0, 4, 200)
    b[:150] = a[:150]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_best_stop_round_is_the_first_round_no_later_round_beats_by_a_point():
    assert best_stop_round([0.5, 0.7, 0.8, 0.805, 0.808, 0.809]) == 2
    assert best_stop_round([0.5, 0.7, 0.8, 0.805, 0.82, 0.8]) == 4  # 0.82 is 1.5 points above round 3
    assert best_stop_round([0.9]) == 0


def test_stabilizing_predictions_stops_when_successive_models_agree():
    rule = make_stop_rule("stabilizing_predictions", threshold=0.99, window=3)
    preds = _predictions(12)
    kappas = [cohen_kappa(preds[t - 1], preds[t]) for t in range(1, 12)]
    stops = [rule.decide(_context(t, predictions=preds[:t])).stop for t in range(1, 13)]
    first = stops.index(True) + 1
    # The first round whose last three kappas average >= 0.99.
    expected = next(t for t in range(4, 13) if np.mean(kappas[t - 4 : t - 1]) >= 0.99)
    assert first == expected
    d = rule.decide(_context(2, predictions=preds[:2]))
    assert not d.stop and "window" in d.reason


def test_budget_stops_before_the_round_that_would_overshoot():
    rule = make_stop_rule("budget", max_usd=50.0)
    assert not rule.decide(_context(3)).stop  # $30 spent, next round $10
    d = rule.decide(_context(5))  # $50 spent
    assert d.stop and "past the budget" in d.reason and d.indicators["next_round_usd"] == 10.0


def test_target_accuracy_waits_for_the_interval_and_can_give_up():
    n = BATCH * np.arange(1, 21)
    acc = power_law(n, A, B, C, 2000)
    target = float(acc[9]) - 0.001
    lower = make_stop_rule("target_accuracy", target=target)
    point = make_stop_rule("target_accuracy", target=target, use="estimate")
    t_lower = next(t for t in range(1, 21) if lower.decide(_context(t, se=0.01)).stop)
    t_point = next(t for t in range(1, 21) if point.decide(_context(t, se=0.01)).stop)
    assert t_point == 10 and t_lower > t_point  # the lower end needs a margin of 2 se
    d = make_stop_rule("target_accuracy", target=0.95).decide(_context(8))
    assert not d.stop and "asymptote" in d.reason
    d = make_stop_rule("target_accuracy", target=0.95, give_up=True).decide(_context(8))
    assert d.stop and "giving up" in d.reason


def test_cost_aware_stops_where_the_next_round_stops_paying():
    """A point is worth $40; a round costs $10: stop once the next round adds < 0.25 points."""
    rule = make_stop_rule("cost_aware", value_per_point=40.0)
    n = BATCH * np.arange(1, N_ROUNDS + 2)
    gains = 100 * np.diff(power_law(n, A, B, C, 2000))
    expected = int(np.flatnonzero(gains < 0.25)[0]) + 1  # rounds done when the next gain < 0.25
    stops = [t for t in range(4, N_ROUNDS + 1) if rule.decide(_context(t)).stop]
    assert abs(stops[0] - expected) <= 1
    d = rule.decide(_context(stops[0]))
    assert "not worth it" in d.reason and d.indicators["worth_usd"] < d.indicators["cost_usd"]
    early = rule.decide(_context(3))
    assert not early.stop and "too few rounds" in early.reason


def test_plateau_stops_when_the_rest_of_the_budget_adds_less_than_a_point():
    rule = make_stop_rule("plateau", min_gain=1.0)
    n = BATCH * np.arange(1, N_ROUNDS + 1)
    acc = power_law(n, A, B, C, 2000)
    expected = int(np.flatnonzero(100 * (acc[-1] - acc) < 1.0)[0]) + 1
    first = next(t for t in range(4, N_ROUNDS + 1) if rule.decide(_context(t)).stop)
    assert abs(first - expected) <= 1


def test_any_stops_with_the_first_rule_that_does_and_needs_their_union():
    rule = make_stop_rule(
        "any", rules=[{"name": "budget", "params": {"max_usd": 50}}, {"name": "stabilizing_predictions"}]
    )
    assert rule.needs() == {"predictions"}
    d = rule.decide(_context(5, predictions=_predictions(5)))
    assert d.stop and d.reason.startswith("budget:") and "budget.spent_usd" in d.indicators
    with pytest.raises(ConfigError, match="no rules"):
        make_stop_rule("any").decide(_context(5))


def test_missing_inputs_and_bad_parameters_are_named():
    with pytest.raises(ConfigError, match="needs predictions"):
        make_stop_rule("stabilizing_predictions").decide(_context(5))
    ctx = StopContext(n_labeled=[100, 200])
    with pytest.raises(ConfigError, match="needs estimates"):
        make_stop_rule("target_accuracy").decide(ctx)
    with pytest.raises(ConfigError, match="needs cost"):
        make_stop_rule("cost_aware").decide(StopContext(n_labeled=[100], estimates=_estimates(np.array([100]))))
    with pytest.raises(ConfigError, match="value_per_point"):
        make_stop_rule("cost_aware", value_per_point=0).decide(_context(5))
    with pytest.raises(ConfigError, match="increasing"):
        StopContext(n_labeled=[200, 100])
    with pytest.raises(ConfigError, match="one per round"):
        StopContext(n_labeled=[100, 200], estimates=_estimates(np.array([100])))


def test_config_fields_are_checked_and_accepted_now_that_the_engine_reads_them():
    from alcore.config import AuditCfg, parse_params

    assert parse_params({}).al.stop == "never" and not parse_params({}).al.audit.enabled
    with pytest.raises(ConfigError, match="set al.audit.fraction"):
        parse_params({"al": {"stop": "cost_aware"}})
    with pytest.raises(ConfigError, match="Unknown stop rule 'kappa'"):
        parse_params({"al": {"stop": "kappa"}})
    al = parse_params({"al": {"stop": "cost_aware", "audit": {"fraction": 0.1, "target": 0.9}}}).al
    assert al.stop == "cost_aware" and al.audit.enabled and al.audit.target == 0.9
    assert parse_params({"al": {"stop": "stabilizing_predictions"}}).al.stop == "stabilizing_predictions"  # no audit
    with pytest.raises(ConfigError, match="al.audit.target forecasts from the audit"):
        parse_params({"al": {"audit": {"target": 0.9}}})
    with pytest.raises(ConfigError, match="needs al.audit.estimator=ppi"):
        parse_params({"al": {"audit": {"sampling": "active", "estimator": "wilson"}}})
    audit = AuditCfg(initial=150, fraction=0.1)
    assert [audit.draws_at(n) for n in (100, 1500, 3000)] == [150, 150, 300]
    assert AuditCfg().draws_at(3000) == 0


def test_the_forecast_target_is_not_part_of_the_experiment():
    from alcore.config import parse_params
    from alcore.run_state import experiment_digest

    audit = {"fraction": 0.1}
    a = parse_params({"al": {"audit": audit}})
    b = parse_params({"al": {"audit": {**audit, "target": 0.9}}})
    c = parse_params({"al": {"audit": {**audit, "reserve": 0.2}}})
    assert experiment_digest(a) == experiment_digest(b) != experiment_digest(c)


def test_cost_aware_does_not_fail_after_the_last_planned_round():
    ctx = _context(6)
    ctx.next_batch = None  # the loop's last round: nothing left to price
    d = make_stop_rule("cost_aware").decide(ctx)
    assert not d.stop and "last planned round" in d.reason


def test_half_width_sizes_the_audit_so_that_the_interval_is_that_narrow():
    """``al.audit.half_width`` asks for the draws that bring the next interval to the width: sized
    from the last estimate's spread, half a coin flip's need in round 1, capped by the reserve."""
    from types import SimpleNamespace

    from alcore.config import ALCfg, AuditCfg
    from alcore.estimate import Audit
    from alcore.monitor import draws_for_width

    rng = np.random.default_rng(0)
    n = 4000
    y = rng.integers(0, 3, n)
    conf = rng.uniform(0.4, 1.0, n)
    pred = np.where(rng.random(n) < conf, y, (y + 1) % 3)  # right about as often as it is confident
    audit = Audit(reserve_ids=np.arange(n), sampling="uniform", estimator="ppi")
    state = SimpleNamespace(audit=audit, records={})
    al = ALCfg(audit=AuditCfg(half_width=0.04))
    assert al.audit.enabled and ALCfg(audit=AuditCfg()).audit.enabled is False
    first = draws_for_width(state, al, 1)
    assert first == math.ceil(0.125 * (1.959964 / 0.04) ** 2)  # 301: half of what a coin flip needs
    audit.record(audit.draw(None, first, random_state=0, round=1), y[audit.pending_ids])
    est = audit.estimate(predicted=pred, confidence=conf)
    assert est.half_width > 0.04  # round 1 is short of the width...
    state.records[1] = {"estimated_accuracy": est.estimate, "estimated_accuracy_se": est.se, "audit_draws": est.n_audit}
    need = draws_for_width(state, al, 2)
    assert need > first  # ...so round 2 tops it up
    audit.record(audit.draw(None, need - audit.n_draws, random_state=1, round=2), y[audit.pending_ids])
    est2 = audit.estimate(predicted=pred, confidence=conf)
    assert 0.034 < est2.half_width <= 0.042  # the width asked for (the pseudo-draws and t widen it a hair)
    # a wider target asks for fewer; a missing estimate asks for nothing more; unset asks for nothing
    assert draws_for_width(state, ALCfg(audit=AuditCfg(half_width=0.08)), 2) < need
    assert draws_for_width(state, al, 3) == 0
    assert draws_for_width(state, ALCfg(audit=AuditCfg(fraction=0.1)), 2) == 0
    # a reserve too small for the width gets every draw it allows
    small = SimpleNamespace(audit=Audit(reserve_ids=np.arange(50), sampling="uniform"), records=state.records)
    assert draws_for_width(small, al, 2) == 50
