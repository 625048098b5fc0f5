"""What will the next labels buy? A learning curve fitted to (labels, estimated accuracy), with its uncertainty.

The curve is the inverse power law ``acc(n) = a - b (n / n_ref)^(-c)`` (a: the asymptote, c: the
decay), the form that fits learning curves best among the simple ones in Figueroa et al.,
"Predicting sample size required for classification performance", BMC Med. Inf. Decis. Mak. 2012,
and in Mohr and van Rijn, "Learning curves for decision making in supervised machine learning: a
survey" (2022). ``n_ref`` is the largest label count fitted, so ``b`` is the gap still open there.

The fit is generalised least squares: the points' errors come from :mod:`alcore.estimate`'s
intervals, and estimates made on one growing audit are correlated (pass their ``cov``, from
:func:`alcore.estimate.estimate_rounds`: the curve's *level* is then uncertain but its *slope*,
which is what the next batch buys, much less). Round-to-round model noise that the estimates do not
explain is added as a common variance ``extra_sd**2`` chosen so that the reduced chi-square is 1.
The uncertainty of everything derived (accuracy at n, gain of a batch, labels to a target) comes
from a parametric bootstrap: ``n_boot`` curves refitted to data drawn from the fitted curve with
the full error covariance.

>>> import numpy as np
>>> n = np.array([100, 200, 400, 800, 1600])
>>> curve = fit_learning_curve(n, 0.9 - 0.1 * (n / 1600.0) ** -0.5, se=np.full(5, 0.002), n_boot=50)
>>> round(curve.a, 3), round(curve.c, 2)
(0.9, 0.5)
>>> curve.labels_to(0.85).status
'reachable'
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from alcore.errors import ConfigError, problem
from alcore.strategies.base import RandomState, check_random_state

__all__ = [
    "CostModel",
    "LearningCurve",
    "TargetForecast",
    "fit_learning_curve",
    "forecast_target",
    "power_law",
]

#: Bounds of (a, b, c): an accuracy cannot pass 1; curves only rise; decays beyond 3 are not seen.
_LOWER = np.array([0.0, 0.0, 0.02])
_UPPER = np.array([1.0, 10.0, 3.0])


def power_law(n: Any, a: float, b: float, c: float, n_ref: float) -> np.ndarray:
    """``a - b (n / n_ref)^(-c)`` for an array of label counts ``n``."""
    return a - b * (np.asarray(n, dtype=np.float64) / n_ref) ** (-c)


@dataclass(frozen=True)
class TargetForecast:
    """How many labels, and how many dollars, until the curve reaches ``target``.

    ``labels``/``labels_lower``/``labels_upper``: the total labeled count at which the curve reaches
    the target (point, interval; ``inf`` = never on that side). ``usd`` and its interval: the cost
    from now to there (labels x price, audit included, plus the forecast compute), None without a
    cost model. ``status``: ``reached`` (the curve is there already), ``reachable`` (the whole
    interval is finite), ``not_reachable_with_confidence`` (the point is finite but the upper end
    is not: the target is near the asymptote), ``not_reachable`` (above the fitted asymptote), or
    ``beyond_pool`` (needs more labels than ``n_max``). ``reason``: one sentence saying so.
    """

    target: float
    labels: float
    labels_lower: float
    labels_upper: float
    p_reachable: float
    status: str
    reason: str
    usd: float | None = None
    usd_lower: float | None = None
    usd_upper: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class LearningCurve:
    """A fitted inverse power law with bootstrap draws of its parameters.

    Attributes:
        a, b, c: the fitted parameters; ``n_ref``: the reference label count.
        draws: (B, 3) bootstrap draws of (a, b, c).
        n, y: (T,) the fitted points; ``extra_sd``: the model noise added to their errors.
        confidence: the coverage of every interval this curve gives.
    """

    a: float
    b: float
    c: float
    n_ref: float
    draws: np.ndarray = field(repr=False)
    n: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)
    extra_sd: float = 0.0
    confidence: float = 0.95

    @property
    def _q(self) -> tuple[float, float]:
        alpha = 1 - self.confidence
        return alpha / 2, 1 - alpha / 2

    def predict(self, n: Any) -> np.ndarray:
        """(k,) the fitted accuracy at label counts ``n``."""
        return power_law(n, self.a, self.b, self.c, self.n_ref)

    def predict_draws(self, n: Any) -> np.ndarray:
        """(B, k) the bootstrap curves at ``n``."""
        n = np.atleast_1d(np.asarray(n, dtype=np.float64))
        a, b, c = (self.draws[:, i : i + 1] for i in range(3))
        return a - b * (n[None, :] / self.n_ref) ** (-c)

    def interval(self, n: Any) -> tuple[np.ndarray, np.ndarray]:
        """The curve's interval at ``n``: two (k,) arrays."""
        d = self.predict_draws(n)
        lo, hi = self._q
        return np.quantile(d, lo, axis=0), np.quantile(d, hi, axis=0)

    def gain(self, n_from: float, n_to: float) -> tuple[float, float, float]:
        """Accuracy gained from ``n_from`` to ``n_to`` labels: (point, lower, upper), in [0, 1] units."""
        point = float(self.predict([n_to])[0] - self.predict([n_from])[0])
        d = self.predict_draws([n_from, n_to])
        g = d[:, 1] - d[:, 0]
        lo, hi = self._q
        return point, float(np.quantile(g, lo)), float(np.quantile(g, hi))

    def gain_draws(self, n_from: float, n_to: float) -> np.ndarray:
        """(B,) the bootstrap curves' gains from ``n_from`` to ``n_to``."""
        d = self.predict_draws([n_from, n_to])
        return d[:, 1] - d[:, 0]

    def labels_to(self, target: float, *, n_max: float | None = None) -> TargetForecast:
        """The label count at which the curve reaches ``target`` (see :class:`TargetForecast`)."""
        if not 0 < target < 1:
            raise ConfigError(problem(f"target={target!r}", allowed="an accuracy in (0, 1)", fix="pass e.g. 0.85"))
        point = _labels_at(self.a, self.b, self.c, self.n_ref, target)
        each = np.array([_labels_at(a, b, c, self.n_ref, target) for a, b, c in self.draws])
        lo_q, hi_q = self._q
        # No interpolation: a quantile between a finite count and inf is inf, never nan.
        lower = float(np.quantile(each, lo_q, method="lower"))
        upper = float(np.quantile(each, hi_q, method="higher"))
        p = float(np.isfinite(each).mean())
        n_last = float(self.n.max())
        pct = f"{100 * target:.1f}%"
        if not math.isfinite(point):
            status = "not_reachable"
            reason = f"{pct} is above the fitted asymptote {100 * self.a:.1f}% (reachable in {100 * p:.0f}% of the bootstrap curves)"
        elif n_max is not None and point > n_max:
            status = "beyond_pool"
            reason = f"{pct} needs about {point:,.0f} labels, more than the {n_max:,.0f} available"
        elif point <= n_last:
            status = "reached"
            reason = f"the curve is at {pct} already at {point:,.0f} labels"
        elif not math.isfinite(upper):
            status = "not_reachable_with_confidence"
            reason = (
                f"{pct} needs about {point:,.0f} labels, but it lies within the uncertainty of the asymptote "
                f"{100 * self.a:.1f}% (reachable in {100 * p:.0f}% of the bootstrap curves)"
            )
        else:
            status = "reachable"
            reason = f"{pct} needs about {point:,.0f} labels ({lower:,.0f} to {upper:,.0f})"
        return TargetForecast(target, point, lower, upper, p, status, reason)


def _labels_at(a: float, b: float, c: float, n_ref: float, target: float) -> float:
    if a <= target:
        return math.inf
    if b <= 0:
        return 0.0
    return float(n_ref * (b / (a - target)) ** (1.0 / c))


def _check_points(n_labels: Any, accuracy: Any, min_points: int) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(n_labels, dtype=np.float64)
    y = np.asarray(accuracy, dtype=np.float64)
    if n.ndim != 1 or y.shape != n.shape:
        raise ConfigError(problem(f"n_labels {n.shape} and accuracy {y.shape}", allowed="two (T,) arrays"))
    if n.size < min_points:
        raise ConfigError(
            problem(
                f"{n.size} point(s) to fit a learning curve to",
                allowed=f"at least {min_points} (the curve has 3 parameters)",
                fix="wait for more rounds before forecasting",
            )
        )
    if not (np.isfinite(n).all() and np.isfinite(y).all()) or (n <= 0).any() or (np.diff(n) <= 0).any():
        raise ConfigError(problem("n_labels", allowed="finite, positive and increasing label counts"))
    if (y < 0).any() or (y > 1).any():
        raise ConfigError(problem("accuracy outside [0, 1]", allowed="accuracies in [0, 1]"))
    return n, y


def _whiten(cov: np.ndarray) -> np.ndarray:
    """The inverse Cholesky factor of ``cov`` (made positive definite if it is not quite)."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    floor = max(float(w.max()) * 1e-6, 1e-12)
    L = np.linalg.cholesky((v * np.maximum(w, floor)) @ v.T)
    return np.linalg.inv(L)


def _fit_one(n: np.ndarray, y: np.ndarray, W: np.ndarray, n_ref: float, starts: Sequence[np.ndarray]) -> np.ndarray:
    x = n / n_ref

    def resid(p: np.ndarray) -> np.ndarray:
        return W @ (y - (p[0] - p[1] * x ** (-p[2])))

    def jac(p: np.ndarray) -> np.ndarray:
        xc = x ** (-p[2])
        J = np.stack([-np.ones_like(x), xc, -p[1] * xc * np.log(x)], axis=1)
        return W @ J

    best, best_cost = None, math.inf
    for p0 in starts:
        p0 = np.clip(p0, _LOWER + 1e-9, _UPPER - 1e-9)
        r = least_squares(resid, p0, jac=jac, bounds=(_LOWER, _UPPER), method="trf", x_scale="jac", max_nfev=200)
        if r.cost < best_cost:
            best, best_cost = r.x, r.cost
    assert best is not None
    return best


def _starts(n: np.ndarray, y: np.ndarray, n_ref: float) -> list[np.ndarray]:
    a0 = min(1.0, float(y.max()) + 0.02)
    x0 = n[0] / n_ref
    out = []
    for c0 in (0.3, 0.7, 1.5):
        b0 = max((a0 - float(y[0])) * x0**c0, 1e-3)
        out.append(np.array([a0, b0, c0]))
    return out


def fit_learning_curve(
    n_labels: Any,
    accuracy: Any,
    *,
    se: Any = None,
    cov: Any = None,
    n_boot: int = 200,
    confidence: float = 0.95,
    min_points: int = 4,
    random_state: RandomState = 0,
) -> LearningCurve:
    """Fit ``acc(n) = a - b (n / n_ref)^(-c)`` to T points and bootstrap its uncertainty.

    Args:
        n_labels: (T,) increasing label counts (the training labels, not the audit's).
        accuracy: (T,) estimated (or measured) accuracies in [0, 1].
        se: (T,) standard errors of the points (e.g. ``AccuracyEstimate.se``); or
        cov: (T, T) their covariance (:func:`alcore.estimate.estimate_rounds`); neither: equal
            weights, the noise taken from the residuals.
        n_boot: bootstrap curves (B) behind every interval.
        confidence: the coverage of the intervals.
        min_points: fewer points raise :class:`ConfigError` (say "wait for more rounds").
        random_state: seeds the bootstrap.

    Returns:
        A :class:`LearningCurve`.
    """
    n, y = _check_points(n_labels, accuracy, max(int(min_points), 4))
    T = n.size
    if cov is not None:
        base = np.asarray(cov, dtype=np.float64)
        if base.shape != (T, T) or not np.isfinite(base).all():
            raise ConfigError(problem(f"cov of shape {base.shape}", allowed=f"a finite ({T}, {T}) matrix"))
    elif se is not None:
        s = np.asarray(se, dtype=np.float64)
        if s.shape != (T,) or not np.isfinite(s).all() or (s < 0).any():
            raise ConfigError(problem(f"se of shape {s.shape}", allowed=f"({T},) non-negative numbers"))
        base = np.diag(s**2)
    else:
        base = np.zeros((T, T))
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 10:
        raise ConfigError(problem(f"n_boot={n_boot!r}", allowed="an int >= 10", fix="pass e.g. 200"))
    if not 0 < confidence < 1:
        raise ConfigError(problem(f"confidence={confidence!r}", allowed="a number in (0, 1)"))
    n_ref = float(n.max())
    starts = _starts(n, y, n_ref)
    # Model noise: the smallest common variance that makes the reduced chi-square <= 1.
    tiny = 1e-10
    extra = 0.0
    p = _fit_one(n, y, _whiten(base + tiny * np.eye(T)), n_ref, starts)
    dof = max(T - 3, 1)
    for _ in range(3):
        resid = y - power_law(n, *p, n_ref)

        def chi2(v: float, resid: np.ndarray = resid) -> float:
            W = _whiten(base + (v + tiny) * np.eye(T))
            r = W @ resid
            return float(r @ r) / dof

        if chi2(extra) <= 1.0:
            break
        lo, hi = extra, max(float(resid @ resid) / dof, 1e-8)
        while chi2(hi) > 1.0:
            hi *= 4
        for _ in range(40):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if chi2(mid) > 1.0 else (lo, mid)
        extra = hi
        p = _fit_one(n, y, _whiten(base + (extra + tiny) * np.eye(T)), n_ref, [p, *starts])
    full = base + (extra + tiny) * np.eye(T)
    W = _whiten(full)
    L = np.linalg.inv(W)
    rng = check_random_state(random_state)
    mean = power_law(n, *p, n_ref)
    draws = np.empty((n_boot, 3))
    for i in range(n_boot):
        y_star = mean + L @ rng.standard_normal(T)
        draws[i] = _fit_one(n, y_star, W, n_ref, [p])
    return LearningCurve(float(p[0]), float(p[1]), float(p[2]), n_ref, draws, n, y, math.sqrt(extra), float(confidence))


@dataclass(frozen=True)
class CostModel:
    """What more rounds cost: labels (the audit's share included) plus compute.

    Args:
        price_per_label: dollars per label.
        audit_fraction: audit labels bought per training label (e.g. 0.1).
        compute_usd_per_round: fixed compute dollars per round.
        compute_usd_per_label: compute dollars per round per labeled sample (training grows with
            the labeled set).

    >>> CostModel(price_per_label=0.1, audit_fraction=0.1, compute_usd_per_round=0.5).usd_between(100, 300, batch=100)
    23.0
    """

    price_per_label: float
    audit_fraction: float = 0.0
    compute_usd_per_round: float = 0.0
    compute_usd_per_label: float = 0.0

    def __post_init__(self) -> None:
        for name in ("price_per_label", "audit_fraction", "compute_usd_per_round", "compute_usd_per_label"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ConfigError(problem(f"{name}={v!r}", allowed="a finite number >= 0"))

    @classmethod
    def fit(cls, n_labeled: Any, compute_usd: Any, *, price_per_label: float, audit_fraction: float = 0.0) -> CostModel:
        """Fit the compute part to past rounds: ``compute_usd[t] ~ fixed + per_label * n_labeled[t]``
        (non-negative least squares; one round: all of it fixed)."""
        from scipy.optimize import nnls

        n = np.asarray(n_labeled, dtype=np.float64)
        u = np.asarray(compute_usd, dtype=np.float64)
        if n.ndim != 1 or u.shape != n.shape or n.size == 0 or not np.isfinite(u).all():
            raise ConfigError(
                problem(f"n_labeled {n.shape}, compute_usd {u.shape}", allowed="two non-empty (T,) arrays")
            )
        if n.size == 1 or np.ptp(n) == 0:
            fixed, per = float(u.mean()), 0.0
        else:
            (fixed, per), _ = nnls(np.stack([np.ones_like(n), n], axis=1), u)
        return cls(price_per_label, audit_fraction, float(fixed), float(per))

    def round_usd(self, n_after: float, batch: float) -> float:
        """One round that buys ``batch`` training labels and ends with ``n_after`` labeled."""
        return (
            batch * self.price_per_label * (1 + self.audit_fraction)
            + self.compute_usd_per_round
            + (self.compute_usd_per_label * n_after)
        )

    def usd_between(self, n_from: float, n_to: float, *, batch: float) -> float:
        """Rounds of ``batch`` labels from ``n_from`` to ``n_to`` (the last one rounded up)."""
        if not math.isfinite(n_to):
            return math.inf
        if n_to <= n_from:
            return 0.0
        k = math.ceil((n_to - n_from) / batch)
        ends = n_from + batch * np.arange(1, k + 1)
        return float(sum(self.round_usd(e, batch) for e in ends))


def forecast_target(
    curve: LearningCurve,
    target: float,
    *,
    n_now: float,
    batch: float,
    cost: CostModel | None = None,
    n_max: float | None = None,
) -> TargetForecast:
    """Labels and dollars from ``n_now`` to ``target`` on ``curve`` (rounds of ``batch`` labels)."""
    f = curve.labels_to(target, n_max=n_max)
    if cost is None:
        return f
    usd = [cost.usd_between(n_now, x, batch=batch) for x in (f.labels, f.labels_lower, f.labels_upper)]
    reason = f.reason
    if f.status in ("reachable", "not_reachable_with_confidence"):
        reason += f"; about ${usd[0]:,.2f} from here" + (
            f" (${usd[1]:,.2f} to ${usd[2]:,.2f})" if math.isfinite(usd[2]) else ""
        )
    return TargetForecast(
        f.target, f.labels, f.labels_lower, f.labels_upper, f.p_reachable, f.status, reason, usd[0], usd[1], usd[2]
    )
