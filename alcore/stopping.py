"""When to stop buying labels: stopping rules as a registry, each decision saying why.

A rule looks at what the loop knows after a round (a :class:`StopContext`) and returns a
:class:`StopDecision`: stop or not, a sentence saying why, and the indicator values behind it
(logged per round, like :mod:`alcore.realign`'s triggers).

- ``never``: the loop's own round count ends it.
- ``budget``: stop when the next round would take the spend past ``max_usd``.
- ``target_accuracy``: stop when the estimated accuracy's interval lies above ``target``
  (:mod:`alcore.estimate`); optionally give up when the forecast says the target is out of reach.
- ``stabilizing_predictions``: Bloodgood and Vijay-Shanker, "A method for stopping active learning
  based on stabilizing predictions and the need for user-adjustable stopping", CoNLL 2009: Cohen's
  kappa between successive models' predictions on a fixed unlabeled *stop set*; stop when its mean
  over the last ``window`` rounds reaches ``threshold`` (their defaults: 3 and 0.99).
- ``cost_aware``: stop when the accuracy the next round is forecast to add (:mod:`alcore.forecast`),
  valued at what the user says a point of accuracy is worth, no longer pays for the round.
- ``plateau``: stop when the rest of the planned budget is forecast to add less than ``min_gain``
  points.
- ``any``: stop as soon as one of several rules does (e.g. a budget and the cost-aware rule).

Rules are stateless: the context carries the whole history, so a resumed loop decides the same.

>>> rule = make_stop_rule("budget", max_usd=10.0)
>>> d = rule.decide(StopContext(n_labeled=[100], spent_usd=9.5, next_batch=10, cost=CostModel(price_per_label=0.1)))
>>> d.stop, d.reason
(True, 'the next round ($1.00) would take the spend from $9.50 past the budget $10.00')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from alcore.errors import ConfigError, problem
from alcore.estimate import AccuracyEstimate
from alcore.forecast import CostModel, LearningCurve, fit_learning_curve
from alcore.registry import Extension, Registry

__all__ = [
    "STOP_RULES",
    "StopContext",
    "StopDecision",
    "StopRule",
    "best_stop_round",
    "cohen_kappa",
    "make_stop_rule",
]

#: What a rule may need in its context (the loop computes only what the chosen rule needs).
NEEDS = frozenset({"estimates", "predictions", "cost"})


def cohen_kappa(a: Any, b: Any) -> float:
    """Cohen's kappa between two label vectors (S,): agreement corrected for chance, in [-1, 1].

    Two constant, identical vectors give 1 (perfect agreement; the chance correction is undefined).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ConfigError(problem(f"predictions of shapes {a.shape} and {b.shape}", allowed="two equal (S,) arrays"))
    classes, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    ia, ib = inv[: a.size], inv[a.size :]
    p_o = float(np.mean(ia == ib))
    pa = np.bincount(ia, minlength=classes.size) / a.size
    pb = np.bincount(ib, minlength=classes.size) / a.size
    p_e = float(pa @ pb)
    if p_e >= 1.0:
        return 1.0 if p_o == 1.0 else 0.0
    return (p_o - p_e) / (1 - p_e)


def best_stop_round(accuracy: Any, *, tolerance: float = 0.01) -> int:
    """The oracle's best stopping point: the first round (0-based) after which no later round gains
    more than ``tolerance`` (1 point by default) over it. ``accuracy``: (T,) true accuracies."""
    acc = np.asarray(accuracy, dtype=np.float64)
    if acc.ndim != 1 or acc.size == 0:
        raise ConfigError(problem(f"accuracy of shape {acc.shape}", allowed="a non-empty (T,) array"))
    later_best = np.maximum.accumulate(acc[::-1])[::-1]  # max over rounds >= t
    ahead = np.r_[later_best[1:], -np.inf]
    return int(np.flatnonzero(ahead - acc <= tolerance)[0])


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop after this round, why (always said), and the indicators behind it."""

    stop: bool
    reason: str
    indicators: dict[str, float] = field(default_factory=dict)
    rule: str = ""


@dataclass(eq=False)
class StopContext:
    """What the loop knows after its latest round T (every sequence has one entry per round).

    Attributes:
        n_labeled: (T,) training labels after each round (the audit's not included), increasing.
        spent_usd: everything spent so far (training and audit labels, compute).
        next_batch: training labels the next round would buy (None: unknown).
        cost: prices the next rounds (:class:`alcore.forecast.CostModel`).
        estimates: (T,) each round's model's estimated accuracy (:mod:`alcore.estimate`).
        estimate_cov: (T, T) their covariance when they share an audit
            (:func:`alcore.estimate.estimate_rounds`); None: independent, from their ``se``.
        predictions: (T,) each round's model's predicted classes on the fixed stop set, (S,) each.
        n_max: labels the pool can still give in all (the forecast's horizon), None: unbounded.
        n_final: the labeled count the loop plans to end at (its last round), for ``plateau``.
        random_state: seeds the forecast's bootstrap (the same context decides the same).
        n_boot: the forecast's bootstrap curves.
    """

    n_labeled: Sequence[int]
    spent_usd: float = 0.0
    next_batch: int | None = None
    cost: CostModel | None = None
    estimates: Sequence[AccuracyEstimate] | None = None
    estimate_cov: np.ndarray | None = None
    predictions: Sequence[np.ndarray] | None = None
    n_max: int | None = None
    n_final: int | None = None
    random_state: int = 0
    n_boot: int = 200
    _curve: dict[tuple[int, int], LearningCurve | str] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        n = np.asarray(self.n_labeled)
        if n.ndim != 1 or n.size == 0 or n.dtype.kind not in "iuf" or (np.diff(n) <= 0).any() or (n < 0).any():
            raise ConfigError(
                problem(
                    f"n_labeled={n.tolist()!r}",
                    allowed="a non-empty increasing list of label counts, one per round",
                    fix="pass the labeled count after every round so far",
                )
            )
        self.n_labeled = n.astype(np.int64)
        T = n.size
        for name in ("estimates", "predictions"):
            seq = getattr(self, name)
            if seq is not None and len(seq) != T:
                raise ConfigError(problem(f"{len(seq)} {name} for {T} rounds", allowed="one per round"))
        if self.estimate_cov is not None and np.asarray(self.estimate_cov).shape != (T, T):
            raise ConfigError(problem(f"estimate_cov of shape {np.shape(self.estimate_cov)}", allowed=f"({T}, {T})"))
        if not math.isfinite(self.spent_usd) or self.spent_usd < 0:
            raise ConfigError(problem(f"spent_usd={self.spent_usd!r}", allowed="a finite number >= 0"))
        if self.next_batch is not None and (not isinstance(self.next_batch, int | np.integer) or self.next_batch < 1):
            raise ConfigError(problem(f"next_batch={self.next_batch!r}", allowed="an int >= 1, or None"))

    @property
    def round(self) -> int:
        """Rounds done (T)."""
        return int(len(self.n_labeled))

    @property
    def n_now(self) -> int:
        return int(self.n_labeled[-1])

    def next_round_usd(self) -> float | None:
        """The forecast cost of the next round, None without a cost model or a next batch."""
        if self.cost is None or self.next_batch is None:
            return None
        return self.cost.round_usd(self.n_now + self.next_batch, self.next_batch)

    def require(self, what: str, who: str) -> Any:
        value = {"estimates": self.estimates, "predictions": self.predictions, "cost": self.cost}[what]
        if value is None or (what == "cost" and self.next_batch is None):
            fix = {
                "estimates": "run an audit (al.audit) so that each round has an accuracy estimate",
                "predictions": "predict each round's model on the stop set",
                "cost": "give the context a cost model and the next batch size",
            }[what]
            raise ConfigError(problem(f"stop rule {who!r} needs {what}, the context has none", fix=fix))
        return value

    def curve(self, *, min_points: int = 4) -> LearningCurve | str:
        """The learning curve fitted to the estimates (cached), or a sentence saying why there is none."""
        key = (min_points, self.n_boot)
        if key not in self._curve:
            ests = self.require("estimates", "forecast")
            if self.round < min_points:
                self._curve[key] = f"too few rounds to forecast ({self.round} < {min_points})"
            else:
                y = np.array([e.estimate for e in ests])
                se = np.array([e.se for e in ests])
                self._curve[key] = fit_learning_curve(
                    self.n_labeled,
                    y,
                    se=se if self.estimate_cov is None else None,
                    cov=self.estimate_cov,
                    n_boot=self.n_boot,
                    min_points=min_points,
                    random_state=self.random_state,
                )
        return self._curve[key]


class StopRule(Extension):
    """Decides after each round whether to stop. Subclasses set ``name`` and ``requires`` (a subset
    of ``{"estimates", "predictions", "cost"}``) and implement :meth:`decide`."""

    name: ClassVar[str]
    requires: ClassVar[frozenset[str]] = frozenset()

    def needs(self) -> frozenset[str]:
        """What this rule reads from the context (the loop computes only that)."""
        return self.requires

    def decide(self, ctx: StopContext) -> StopDecision:
        raise NotImplementedError


STOP_RULES: Registry[type[StopRule]] = Registry("stop rule", where="al.stop_params")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _usd(x: float) -> str:
    return f"${x:,.2f}"


def _number(value: Any, name: str, *, low: float = 0.0, high: float = math.inf, open_low: bool = False) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        side = ">" if open_low else ">="
        raise ConfigError(
            problem(
                f"{name}={value!r}",
                allowed=f"a number {side} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else ""),
            )
        )
    return float(value)


@STOP_RULES.register("never")
class Never(StopRule):
    """Never stop early: the loop runs its rounds."""

    name = "never"

    def decide(self, ctx: StopContext) -> StopDecision:
        return StopDecision(False, "the rule 'never' does not stop (the round count ends the loop)", {}, self.name)


@STOP_RULES.register("budget")
class Budget(StopRule):
    """Stop when the next round would take the total spend past ``max_usd`` (without a cost model
    of the next round: once the spend has reached it)."""

    name = "budget"

    def __init__(self, *, max_usd: float = 100.0) -> None:
        self.max_usd = max_usd

    def decide(self, ctx: StopContext) -> StopDecision:
        budget = _number(self.max_usd, "max_usd")
        nxt = ctx.next_round_usd()
        ind = {"spent_usd": ctx.spent_usd, "max_usd": budget}
        if nxt is None:
            stop = ctx.spent_usd >= budget
            why = f"spent {_usd(ctx.spent_usd)} of the budget {_usd(budget)}"
            return StopDecision(stop, why, ind, self.name)
        ind["next_round_usd"] = nxt
        stop = ctx.spent_usd + nxt > budget
        if stop:
            why = f"the next round ({_usd(nxt)}) would take the spend from {_usd(ctx.spent_usd)} past the budget {_usd(budget)}"
        else:
            why = f"spent {_usd(ctx.spent_usd)}; the next round ({_usd(nxt)}) fits in the budget {_usd(budget)}"
        return StopDecision(stop, why, ind, self.name)


@STOP_RULES.register("target_accuracy")
class TargetAccuracy(StopRule):
    """Stop when the accuracy estimate's interval lies above ``target`` (``use="lower"``, default:
    the lower end; ``"estimate"``: the point estimate, faster and wrong about half the time).

    With ``give_up=True`` it also stops when the learning curve puts the target above its asymptote
    (status ``not_reachable``): more labels will not get there.
    """

    name = "target_accuracy"
    requires = frozenset({"estimates"})

    def __init__(self, *, target: float = 0.9, use: str = "lower", give_up: bool = False) -> None:
        self.target = target
        self.use = use
        self.give_up = give_up

    def decide(self, ctx: StopContext) -> StopDecision:
        target = _number(self.target, "target", high=1.0, open_low=True)
        if self.use not in ("lower", "estimate"):
            raise ConfigError(problem(f"use={self.use!r}", allowed="'lower' or 'estimate'"))
        est = ctx.require("estimates", self.name)[-1]
        value = est.lower if self.use == "lower" else est.estimate
        ind = {"estimate": est.estimate, "lower": est.lower, "upper": est.upper, "target": target}
        interval = f"{_pct(est.estimate)} ({_pct(est.lower)} to {_pct(est.upper)})"
        if value >= target:
            what = "its lower end" if self.use == "lower" else "the estimate"
            return StopDecision(True, f"accuracy {interval}: {what} reached the target {_pct(target)}", ind, self.name)
        why = f"accuracy {interval} has not reached the target {_pct(target)}" + (
            " with confidence" if self.use == "lower" else ""
        )
        curve = ctx.curve()
        if isinstance(curve, LearningCurve):
            f = curve.labels_to(target, n_max=ctx.n_max)
            # Only finite values: indicators go to MLflow; "never" is said by p_reachable and the reason.
            ind.update({"asymptote": curve.a, "p_reachable": f.p_reachable})
            ind.update(
                {
                    k: v
                    for k, v in (("labels_to_target", f.labels), ("labels_to_target_upper", f.labels_upper))
                    if math.isfinite(v)
                }
            )
            why += f"; forecast: {f.reason}"
            if self.give_up and f.status in ("not_reachable", "beyond_pool"):
                return StopDecision(True, why + " (giving up)", ind, self.name)
        return StopDecision(False, why, ind, self.name)


@STOP_RULES.register("stabilizing_predictions")
class StabilizingPredictions(StopRule):
    """Stop when successive models agree on the stop set: the mean Cohen's kappa of the last
    ``window`` pairs of rounds >= ``threshold`` (Bloodgood and Vijay-Shanker 2009)."""

    name = "stabilizing_predictions"
    requires = frozenset({"predictions"})

    def __init__(self, *, threshold: float = 0.99, window: int = 3) -> None:
        self.threshold = threshold
        self.window = window

    def decide(self, ctx: StopContext) -> StopDecision:
        threshold = _number(self.threshold, "threshold", low=-1.0, high=1.0)
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1:
            raise ConfigError(problem(f"window={self.window!r}", allowed="an int >= 1"))
        preds = ctx.require("predictions", self.name)
        if len(preds) < 2:
            return StopDecision(False, "one round only: no agreement to measure yet", {}, self.name)
        kappas = [cohen_kappa(preds[t - 1], preds[t]) for t in range(max(1, len(preds) - self.window), len(preds))]
        ind = {"kappa": kappas[-1], "kappa_mean": float(np.mean(kappas))}
        if len(kappas) < self.window:
            why = f"kappa {kappas[-1]:.4f}; {len(kappas)} of the {self.window} round pairs the window needs"
            return StopDecision(False, why, ind, self.name)
        mean = ind["kappa_mean"]
        if mean >= threshold:
            why = f"predictions stabilised: mean kappa of the last {self.window} rounds {mean:.4f} >= {threshold}"
            return StopDecision(True, why, ind, self.name)
        why = f"mean kappa of the last {self.window} rounds {mean:.4f} < {threshold}"
        return StopDecision(False, why, ind, self.name)


@STOP_RULES.register("cost_aware")
class CostAware(StopRule):
    """Stop when the next rounds no longer pay: the accuracy the next ``horizon`` rounds are forecast
    to add, in points, times ``value_per_point`` (what the user says one point of accuracy is worth,
    in $), is below what they cost (labels, audit, compute).

    ``quantile`` picks the gain from the forecast's bootstrap: 0.5 (default) the median; higher
    values stop only when even an optimistic gain does not pay. Before ``min_rounds`` rounds there is
    no forecast and the rule does not stop.
    """

    name = "cost_aware"
    requires = frozenset({"estimates", "cost"})

    def __init__(
        self, *, value_per_point: float = 10.0, horizon: int = 1, quantile: float = 0.5, min_rounds: int = 4
    ) -> None:
        self.value_per_point = value_per_point
        self.horizon = horizon
        self.quantile = quantile
        self.min_rounds = min_rounds

    def decide(self, ctx: StopContext) -> StopDecision:
        value = _number(self.value_per_point, "value_per_point", open_low=True)
        q = _number(self.quantile, "quantile", high=1.0)
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) or self.horizon < 1:
            raise ConfigError(problem(f"horizon={self.horizon!r}", allowed="an int >= 1 (rounds)"))
        _min_rounds(self.min_rounds)
        if ctx.cost is not None and ctx.next_batch is None:  # the loop's last planned round
            return StopDecision(False, "the last planned round is done: no next round to price", {}, self.name)
        ctx.require("cost", self.name)
        assert ctx.cost is not None and ctx.next_batch is not None
        curve = ctx.curve(min_points=self.min_rounds)
        if isinstance(curve, str):
            return StopDecision(False, curve, {}, self.name)
        n_to = ctx.n_now + self.horizon * ctx.next_batch
        if ctx.n_max is not None:
            n_to = min(n_to, ctx.n_max)
        if n_to <= ctx.n_now:
            return StopDecision(True, "the pool has no labels left to buy", {}, self.name)
        gains = curve.gain_draws(ctx.n_now, n_to)
        gain = float(np.quantile(gains, q))
        lo, hi = (float(np.quantile(gains, x)) for x in curve._q)
        usd = ctx.cost.usd_between(ctx.n_now, n_to, batch=ctx.next_batch)
        worth = 100 * gain * value
        rounds = "the next round" if self.horizon == 1 else f"the next {self.horizon} rounds"
        ind = {
            "gain_points": 100 * gain,
            "gain_points_lower": 100 * lo,
            "gain_points_upper": 100 * hi,
            "worth_usd": worth,
            "cost_usd": usd,
            "asymptote": curve.a,
        }
        said = (
            f"{rounds} should add {100 * gain:.2f} points ({100 * lo:.2f} to {100 * hi:.2f}), worth {_usd(worth)} "
            f"at {_usd(value)} a point, for {_usd(usd)}"
        )
        if worth < usd:
            return StopDecision(True, said + ": not worth it", ind, self.name)
        return StopDecision(False, said + ": worth it", ind, self.name)


@STOP_RULES.register("plateau")
class Plateau(StopRule):
    """Stop when the rest of the planned budget is forecast to add less than ``min_gain`` points:
    the forecast form of "no later round gains more than 1 point" (the benchmark's oracle).

    ``quantile`` of the forecast's bootstrap gain (0.5: the median; higher: stop only when even an
    optimistic forecast is below ``min_gain``). Needs ``StopContext.n_final``.
    """

    name = "plateau"
    requires = frozenset({"estimates"})

    def __init__(self, *, min_gain: float = 1.0, quantile: float = 0.5, min_rounds: int = 4) -> None:
        self.min_gain = min_gain
        self.quantile = quantile
        self.min_rounds = min_rounds

    def decide(self, ctx: StopContext) -> StopDecision:
        min_gain = _number(self.min_gain, "min_gain", open_low=True)
        q = _number(self.quantile, "quantile", high=1.0)
        _min_rounds(self.min_rounds)
        if ctx.n_final is None:
            raise ConfigError(
                problem(
                    "stop rule 'plateau' needs StopContext.n_final",
                    fix="give the labeled count of the last planned round",
                )
            )
        if ctx.n_now >= ctx.n_final:
            return StopDecision(True, "the planned budget is spent", {}, self.name)
        curve = ctx.curve(min_points=self.min_rounds)
        if isinstance(curve, str):
            return StopDecision(False, curve, {}, self.name)
        gains = 100 * curve.gain_draws(ctx.n_now, ctx.n_final)
        gain = float(np.quantile(gains, q))
        lo, hi = (float(np.quantile(gains, x)) for x in curve._q)
        ind = {"gain_to_end_points": gain, "gain_to_end_lower": lo, "gain_to_end_upper": hi, "asymptote": curve.a}
        said = f"the rest of the budget ({ctx.n_final - ctx.n_now:,} labels) should add {gain:.2f} points ({lo:.2f} to {hi:.2f})"
        if gain < min_gain:
            return StopDecision(True, f"{said} < {min_gain:g}: a plateau", ind, self.name)
        return StopDecision(False, f"{said} >= {min_gain:g}", ind, self.name)


def _min_rounds(v: Any) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 4:
        raise ConfigError(problem(f"min_rounds={v!r}", allowed="an int >= 4 (the curve has 3 parameters)"))


@STOP_RULES.register("any")
class AnyOf(StopRule):
    """Stop as soon as one of ``rules`` does: a list of ``{"name": ..., "params": {...}}``."""

    name = "any"

    def __init__(self, *, rules: Sequence[Mapping[str, Any]] = ()) -> None:
        self.rules = rules

    def _built(self) -> list[StopRule]:
        if not self.rules:
            raise ConfigError(
                problem("stop rule 'any' with no rules", allowed='a list of {"name": ..., "params": {...}}')
            )
        out = []
        for r in self.rules:
            if not isinstance(r, Mapping) or "name" not in r or set(r) - {"name", "params"}:
                raise ConfigError(problem(f"rule {r!r} in 'any'", allowed='{"name": ..., "params": {...}}'))
            out.append(make_stop_rule(r["name"], **dict(r.get("params", {}))))
        return out

    def needs(self) -> frozenset[str]:
        return frozenset().union(*(r.needs() for r in self._built()))

    def decide(self, ctx: StopContext) -> StopDecision:
        decisions = [r.decide(ctx) for r in self._built()]
        ind = {f"{d.rule}.{k}": v for d in decisions for k, v in d.indicators.items()}
        for d in decisions:
            if d.stop:
                return StopDecision(True, f"{d.rule}: {d.reason}", ind, self.name)
        return StopDecision(False, "; ".join(f"{d.rule}: {d.reason}" for d in decisions), ind, self.name)


def make_stop_rule(name: str, **params: Any) -> StopRule:
    """The registered stop rule ``name`` (unknown names and parameters raise with the valid ones).

    >>> make_stop_rule("stabilizing_predictions")
    StabilizingPredictions(threshold=0.99, window=3)
    """
    return STOP_RULES.create(name, **params)
