"""The audit, the forecast and the stop rule as the round engine runs them (issue 17).

:class:`alcore.rounds.ActiveLearner` calls these functions at fixed points of a round; everything
they decide is kept in the experiment state (:class:`alcore.run_state.ExperimentState`'s ``audit``,
``monitor`` and round records), so a resumed run decides the same:

1. :func:`setup` (round 0): the audit's **reserve**, a seeded uniformly random part of the pool
   (``al.audit.reserve``) that selection never sees and training never uses; it is also the stop
   set of ``stabilizing_predictions`` (without an audit, a seeded sample of the pool is).
2. :func:`draw` (with each round's query): the audit draws the round adds, chosen with the previous
   round's model's confidence on the reserve (uniform in round 1), up to ``al.audit.draws_at``
   the labels the round ends with, or more if ``al.audit.half_width`` asks
   (:func:`draws_for_width`); they are bought with the round's batch, from the same oracle, and
   paid as audit labels (:meth:`alcore.ledger.CostLedger.buy_audit`).
3. :func:`observe` then :func:`judge` (when the round is measured): the round's model (the proxy on
   the current features) predicts on the reserve; every round's estimate with its 95% interval
   and their covariance (:func:`alcore.estimate.estimate_rounds`), the forecast to
   ``al.audit.target`` once the learning curve has enough points, and the stop rule's decision,
   which says why whether it stops or not.
4. :func:`estimate_final` (after the final network is trained): that network, judged on every
   audit label bought: the accuracy figure of a project without a test set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from alcore.config import ALCfg
from alcore.estimate import Audit, choose_reserve, estimate_rounds
from alcore.forecast import CostModel, LearningCurve, forecast_target
from alcore.seeding import derive_seed
from alcore.stopping import StopContext, make_stop_rule

__all__ = [
    "STOP_SET_MAX",
    "context",
    "draw",
    "draws_for_width",
    "estimate_entries",
    "estimate_final",
    "excluded",
    "judge",
    "observe",
    "record_audit",
    "setup",
    "stop_set",
]

#: Without an audit, ``stabilizing_predictions`` watches a seeded sample of at most this many pool ids.
STOP_SET_MAX = 2000


def active(al: ALCfg) -> bool:
    """Whether this experiment has anything to monitor (an audit, or a stop rule other than ``never``)."""
    return al.audit.enabled or al.stop != "never"


def setup(state: Any, al: ALCfg, pool_ids: np.ndarray, *, seed: int) -> None:
    """Choose the reserve (and the stop set) of a new experiment; nothing when nothing is monitored."""
    state.audit, state.monitor = None, {}
    if not active(al):
        return
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    needs = make_stop_rule(al.stop, **al.stop_params).needs()
    if al.audit.enabled:
        size = al.audit.reserve_size(pool_ids.size)
        reserve = choose_reserve(pool_ids, size, random_state=derive_seed(seed, "audit-reserve"))
        a = al.audit
        state.audit = Audit(
            reserve_ids=reserve, sampling=a.sampling, estimator=a.estimator, mix=a.mix, confidence=a.confidence
        )
        state.monitor = {"stop_set": "reserve", "predictions": {}}
    elif "predictions" in needs:
        size = min(STOP_SET_MAX, pool_ids.size - 1)
        ids = choose_reserve(pool_ids, size, random_state=derive_seed(seed, "stop-set"))
        state.monitor = {"stop_set": ids.tolist(), "predictions": {}}
    else:
        state.monitor = {"predictions": {}}


def excluded(state: Any) -> np.ndarray | None:
    """Ids selection must never see (the audit's reserve), None without an audit."""
    return None if state.audit is None else state.audit.reserve_ids


def stop_set(state: Any) -> np.ndarray | None:
    """The ids each round's model predicts on (the reserve, or the stop set), None when none is needed."""
    s = state.monitor.get("stop_set")
    if s is None:
        return None
    return state.audit.reserve_ids if s == "reserve" else np.asarray(s, dtype=np.int64)


def draw(state: Any, al: ALCfg, round: int, n_after: int, *, seed: int) -> np.ndarray:
    """The audit ids round ``round`` buys with its batch (sorted; none without an audit).

    Draws ``al.audit.draws_at(n_after)`` (or :func:`draws_for_width`, the larger) ``- draws so far``
    once per round (a second call, after a resume, draws nothing more), with the previous round's
    model's confidence on the reserve.
    Returns the ids this round drew that are not labeled yet and were not drawn by an earlier round
    (those are bought, or out with annotators, with their own round's batch).
    """
    audit = state.audit
    if audit is None:
        return np.zeros(0, dtype=np.int64)
    rounds = audit.draw_rounds()
    if not (rounds >= round).any():
        m = max(al.audit.draws_at(n_after), draws_for_width(state, al, round)) - audit.n_draws
        if m > 0:
            prev = state.monitor.get("predictions", {}).get(str(round - 1))
            conf = None if prev is None else np.asarray(prev["conf"], dtype=np.float64)
            audit.draw(None, m, random_state=derive_seed(seed, "audit", round), round=round, confidence=conf)
    earlier = np.concatenate([audit.drawn_in(r) for r in np.unique(audit.draw_rounds()) if r < round] or [[]])
    mine = np.intersect1d(audit.drawn_in(round), audit.pending_ids)
    return np.setdiff1d(mine, earlier.astype(np.int64)).astype(np.int64)


def draws_for_width(state: Any, al: ALCfg, round: int) -> int:
    """The draws ``al.audit.half_width`` asks for in ``round`` (0 when it is not set).

    Sized from the previous round's estimate: its standard error ``se`` on ``m`` draws gives the
    per-draw variance ``v = m (se^2 - a (1 - a) / N)`` (``a`` the estimate, ``N`` the reserve; the
    second term is the reserve's own sampling variance, which no draw removes), and the interval is
    ``z sqrt(v / m' + a (1 - a) / N)`` wide on ``m'`` draws. In round 1, before any model, half of
    what a coin flip (a = 0.5, plain binomial) would need; later rounds top up. Never more than
    ``N`` draws (a reserve too small for the width gets the widest audit it allows). A round whose
    previous estimate is still missing (audit answers out) asks for nothing more.
    """
    hw = al.audit.half_width
    if hw is None or state.audit is None:
        return 0
    n = int(state.audit.reserve_ids.size)
    z = float(stats.norm.ppf(0.5 + al.audit.confidence / 2))
    prev = state.records.get(round - 1, {}) if round > 1 else {}
    if "estimated_accuracy_se" not in prev:
        return min(n, math.ceil(0.5 * 0.25 * (z / hw) ** 2)) if round <= 1 else 0
    a, se, m = float(prev["estimated_accuracy"]), float(prev["estimated_accuracy_se"]), int(prev["audit_draws"])
    reserve_var = a * (1 - a) / n
    per_draw = max(m * (se**2 - reserve_var), 1e-6)
    room = (hw / z) ** 2 - reserve_var
    return n if room <= 0 else min(n, math.ceil(per_draw / room))


def record_audit(state: Any, round: int, ids: Any, labels: Any) -> None:
    """Keep bought audit labels in the audit and pay for them in ``round`` (new ones only)."""
    ids = np.asarray(ids, dtype=np.int64)
    if not ids.size:
        return
    new = int(np.isin(ids, state.audit.labeled_ids(), invert=True).sum())
    state.audit.record(ids, np.asarray(labels, dtype=np.int64))
    if new:
        state.ledger.buy_audit(round, new)


def observe(state: Any, round: int, predicted: Sequence[int], confidence: Sequence[float]) -> None:
    """Keep round ``round``'s model's predictions on the stop set (confidence rounded to 6 digits,
    as the state stores it, so that a resumed run computes from the same numbers)."""
    state.monitor.setdefault("predictions", {})[str(round)] = {
        "pred": [int(x) for x in predicted],
        "conf": np.round(np.asarray(confidence, dtype=np.float64), 6).tolist(),
    }


def _estimates(state: Any, rounds: list[int]) -> tuple[list[int], list[Any], np.ndarray | None]:
    """The rounds (of ``rounds``) whose model has audit labels to be judged on, their estimates and covariance."""
    audit = state.audit
    labels = audit.draw_labels()
    keep = np.flatnonzero(labels >= 0)
    if not keep.size:
        return [], [], None
    y, pos = labels[keep], audit.draw_positions()[keep]
    draw_round = audit.draw_rounds()[keep]
    w = audit.weights()
    preds = state.monitor["predictions"]
    used, C, F, fbar, md = [], [], [], [], []
    for r in rounds:
        m = int((draw_round <= r).sum())
        if m == 0 or str(r) not in preds:
            continue
        pred = np.asarray(preds[str(r)]["pred"], dtype=np.int64)
        conf = np.asarray(preds[str(r)]["conf"], dtype=np.float64)
        used.append(r)
        C.append(pred[pos] == y)
        F.append(conf[pos])
        fbar.append(float(conf.mean()))
        md.append(m)
    if not used:
        return [], [], None
    ests, cov = estimate_rounds(
        np.array(C),
        np.array(F),
        np.array(fbar),
        md,
        audit.reserve_ids.size,
        weights=None if w is None else w[keep],
        estimator=audit.estimator,
        confidence=audit.confidence,
    )
    return used, ests, cov


def estimate_final(state: Any, predicted: Sequence[int], confidence: Sequence[float]) -> dict[str, Any]:
    """The final network's accuracy estimated on every audit label bought, from its predictions and
    top-class confidence on the reserve (in reserve order): ``estimated_accuracy`` (``_lower``,
    ``_upper``, ``_se``) and ``audit_draws``; empty without an audit or before its first label."""
    audit = state.audit
    if audit is None or audit.n_labeled == 0:
        return {}
    e = audit.estimate(
        predicted=np.asarray(predicted, dtype=np.int64), confidence=np.asarray(confidence, dtype=np.float64)
    )
    return estimate_entries(e)


def estimate_entries(e: Any) -> dict[str, Any]:
    """An :class:`~alcore.estimate.AccuracyEstimate` as the entries a round record (or the final
    network's record) keeps, and :func:`draws_for_width` reads back."""
    return {
        "estimated_accuracy": e.estimate,
        "estimated_accuracy_lower": e.lower,
        "estimated_accuracy_upper": e.upper,
        "estimated_accuracy_se": e.se,
        "audit_draws": int(e.n_audit),
    }


def context(
    state: Any, al: ALCfg, round: int, *, schedule: Sequence[int], n_pool: int, price_per_label: float, seed: int
) -> tuple[StopContext | None, dict[str, Any]]:
    """What the stop rule sees after round ``round`` (only what was known then: the ledger up to
    it, the audit draws made by then), and the round's estimate entries. None when the round has
    no estimate yet (audit answers still out)."""
    out: dict[str, Any] = {}
    measured = sorted({*(k for k in state.records if k < round), round})
    est_rounds, ests, cov = _estimates(state, measured) if state.audit is not None else ([], [], None)
    if est_rounds and est_rounds[-1] == round:
        out.update(estimate_entries(ests[-1]))
    rounds = est_rounds if state.audit is not None else measured
    if not rounds or rounds[-1] != round:
        return None, out
    by_round = {int(r["round"]): r for r in state.ledger.rows()}
    n_labeled = [int(by_round[r]["labels_total"]) for r in rounds]
    compute = [float(by_round[r]["compute_usd"]) for r in rounds]
    reserve = 0 if state.audit is None else int(state.audit.reserve_ids.size)
    cost = CostModel.fit(n_labeled, compute, price_per_label=price_per_label, audit_fraction=al.audit.fraction)
    preds = state.monitor.get("predictions", {})
    stop_preds = [np.asarray(preds[str(r)]["pred"]) for r in rounds] if stop_set(state) is not None else None
    ctx = StopContext(
        n_labeled=n_labeled,
        spent_usd=float(by_round[round]["total_usd_cum"]),
        next_batch=int(schedule[round]) if round < len(schedule) else None,
        cost=cost,
        estimates=ests if ests else None,
        estimate_cov=cov,
        predictions=stop_preds,
        n_max=n_pool - reserve,
        n_final=int(sum(schedule)),
        random_state=derive_seed(seed, "forecast", round),
    )
    return ctx, out


def judge(
    state: Any, al: ALCfg, round: int, *, schedule: Sequence[int], n_pool: int, price_per_label: float, seed: int
) -> dict[str, Any]:
    """Round ``round``'s estimate, forecast and stop decision, as record entries:
    ``estimated_accuracy`` (``_lower``, ``_upper``, ``_se``), ``audit_draws``, ``forecast`` (a dict)
    with ``forecast_labels_to_target`` / ``forecast_usd_to_target`` when finite, and ``stop``
    (``{"stop", "reason", "rule", "indicators"}``)."""
    ctx, out = context(state, al, round, schedule=schedule, n_pool=n_pool, price_per_label=price_per_label, seed=seed)
    if ctx is None:  # no estimate for this round yet (audit answers still out)
        reason = "no audit label for this round's model yet: the stop rule waits for one"
        out["stop"] = {"stop": False, "reason": reason, "rule": al.stop, "indicators": {}}
        return out
    if al.audit.target is not None and ctx.estimates is not None:
        curve = ctx.curve()
        if isinstance(curve, LearningCurve):
            f = forecast_target(curve, al.audit.target, n_now=ctx.n_now, batch=al.batch, cost=ctx.cost, n_max=ctx.n_max)
            out["forecast"] = {"target": f.target, "status": f.status, "reason": f.reason}
            if math.isfinite(f.labels):
                out["forecast_labels_to_target"] = max(0.0, f.labels - ctx.n_now)
            if f.usd is not None and math.isfinite(f.usd):
                out["forecast_usd_to_target"] = f.usd
        else:
            out["forecast"] = {"target": al.audit.target, "status": "waiting", "reason": curve}
    d = make_stop_rule(al.stop, **al.stop_params).decide(ctx)
    out["stop"] = {"stop": bool(d.stop), "reason": d.reason, "rule": d.rule, "indicators": dict(d.indicators)}
    return out
