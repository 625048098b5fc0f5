"""How accurate is the model now, with nobody labeling a test set? An audit, and estimates with a 95% interval.

The **audit** is a small sample of labels bought from the same oracle, kept out of training and out
of selection, drawn from a fixed **reserve**: a uniformly random part of the pool that selection
never sees (:func:`choose_reserve`). Because the reserve is an i.i.d. sample of the pool and the
model never trains on it, the model's accuracy on the reserve's population is its accuracy on new
data - the test accuracy, up to the test set's own sampling noise.

Three estimators of that accuracy from the same audit labels:

- ``wilson`` / ``exact``: the baseline. The fraction of uniformly drawn audit samples the model gets
  right, with Wilson's score interval (Wilson, JASA 1927) or the exact Clopper-Pearson interval
  (Biometrika 1934).
- ``ppi``: prediction-powered inference (Angelopoulos, Bates, Fannjiang, Jordan, Zrnic, "Prediction-
  powered inference", Science 2023), with the power tuning of PPI++ (Angelopoulos, Duchi, Zrnic,
  arXiv 2311.01453, 2023). The model's own confidence ``f(x)`` (its top class probability) on the
  *whole* reserve predicts whether it is right; the audit only has to measure how wrong that
  prediction is. The estimate stays unbiased however badly ``f`` is calibrated (the audit rectifies
  it); calibration only sets how much narrower the interval gets. The tuned ``lam`` is the best
  affine recalibration of ``f`` (a constant shift of ``f`` cancels out exactly).
- ``ppi`` on an **active audit**: audit samples drawn with known probabilities ``q(x)`` that favour
  the samples the model is unsure of, ``q`` proportional to ``sqrt(f (1 - f))`` (the variance-optimal
  proposal when ``f`` is calibrated: Zrnic and Candes, "Active statistical inference", ICML 2024),
  mixed with the uniform distribution so that no weight exceeds ``1 / mix`` (defensive importance
  sampling, Hesterberg 1995). Each draw is weighted by ``1 / (N q)`` (Hansen-Hurwitz), which is
  active testing (Kossen, Farquhar, Gal, Rainforth, "Active testing: sample-efficient model
  evaluation", ICML 2021) with PPI's control variate. The draws stay valid for every later model:
  their weights depend only on the proposal they were drawn from, which is recorded with them.

Why not importance-weight the labels that active learning itself chose, as active testing does?
Its weights need each label's probability of being chosen. Top-n selection is deterministic:
every sample outside the chosen batch had probability 0 and every chosen one 1, so no weight
exists for the unchosen part of the pool. The only unbiased use of the batch is as a fully
observed stratum, whose weight (batch / pool, under 1% in practice) buys nothing; and the batch is
trained on one round later. A stochastic acquisition would give the probabilities but change every
strategy's behaviour. So the audit is drawn on purpose, with its probabilities known.

Every interval is for the *population* accuracy (the variance of the reserve as a sample of the
population is included): compared with a test set of ``n_test`` samples, add that set's own
``acc (1 - acc) / n_test`` variance.

>>> import numpy as np
>>> est = wilson_estimate(np.r_[np.ones(90), np.zeros(10)].astype(bool))
>>> round(est.estimate, 2), round(est.lower, 3), round(est.upper, 3)
(0.9, 0.826, 0.945)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

from alcore.errors import ConfigError, LabelError, problem
from alcore.registry import Registry
from alcore.strategies.base import RandomState, check_random_state

__all__ = [
    "ESTIMATORS",
    "SAMPLINGS",
    "AccuracyEstimate",
    "Audit",
    "active_proposal",
    "binomial_interval",
    "choose_reserve",
    "draw_audit",
    "estimate_rounds",
    "exact_estimate",
    "ppi_estimate",
    "wilson_estimate",
]


@dataclass(frozen=True)
class AccuracyEstimate:
    """An accuracy estimate with its two-sided interval.

    Attributes:
        estimate: the point estimate, in [0, 1].
        lower, upper: the interval's ends, clipped to [0, 1].
        se: the standard error (for ``wilson``/``exact``: the normal one, sqrt(p (1 - p) / m)).
        n_audit: audit draws used (m).
        method: the estimator's name.
        confidence: the interval's nominal coverage.
        lam: PPI's power-tuning coefficient (0 for the binomial estimators).
    """

    estimate: float
    lower: float
    upper: float
    se: float
    n_audit: int
    method: str
    confidence: float = 0.95
    lam: float = 0.0

    @property
    def half_width(self) -> float:
        return (self.upper - self.lower) / 2

    def covers(self, value: float) -> bool:
        """Whether ``value`` lies in the interval (ends included)."""
        return self.lower <= value <= self.upper

    def as_dict(self) -> dict[str, Any]:
        """Plain values, e.g. for MLflow metrics or a stop decision's indicators."""
        return asdict(self)


# -- checks --------------------------------------------------------------------------------------
def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 < confidence < 1:
        raise ConfigError(problem(f"confidence={confidence!r}", allowed="a number in (0, 1)", fix="pass e.g. 0.95"))
    return float(confidence)


def _as_correct(correct: Any) -> np.ndarray:
    c = np.asarray(correct)
    if c.ndim != 1 or c.size == 0:
        raise ConfigError(
            problem(
                f"correct has shape {c.shape}",
                allowed="a non-empty 1-D array: one 0/1 (or bool) per audit draw",
                fix="buy at least one audit label first",
            )
        )
    if c.dtype != bool and not np.isin(c, (0, 1)).all():
        raise ConfigError(problem("correct holds values other than 0 and 1", allowed="booleans or 0/1"))
    return c.astype(np.float64)


def _as_prob(x: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or (shape is not None and a.shape != shape) or a.size == 0:
        want = f"shape {shape}" if shape is not None else "a non-empty 1-D array"
        raise ConfigError(problem(f"{name} has shape {a.shape}", allowed=want, fix=f"pass one {name} value per sample"))
    if not np.isfinite(a).all() or (a < 0).any() or (a > 1).any():
        raise ConfigError(problem(f"{name} holds values outside [0, 1]", allowed="probabilities in [0, 1]"))
    return a


# -- the binomial baseline -------------------------------------------------------------------------
def binomial_interval(k: int, n: int, *, confidence: float = 0.95, method: str = "wilson") -> tuple[float, float]:
    """Two-sided interval for a binomial proportion with ``k`` successes in ``n`` trials.

    ``method="wilson"``: the score interval (Wilson 1927), near-nominal coverage down to small n;
    ``method="exact"``: Clopper-Pearson (1934), never below nominal, wider.
    """
    confidence = _check_confidence(confidence)
    if not (0 <= k <= n) or n < 1:
        raise ConfigError(problem(f"k={k}, n={n}", allowed="0 <= k <= n and n >= 1"))
    alpha = 1 - confidence
    if method == "wilson":
        z = stats.norm.ppf(1 - alpha / 2)
        p = k / n
        denom = 1 + z**2 / n
        centre = (p + z**2 / (2 * n)) / denom
        half = z / denom * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
        return float(max(0.0, centre - half)), float(min(1.0, centre + half))
    if method == "exact":
        lo = 0.0 if k == 0 else float(stats.beta.ppf(alpha / 2, k, n - k + 1))
        hi = 1.0 if k == n else float(stats.beta.ppf(1 - alpha / 2, k + 1, n - k))
        return lo, hi
    raise ConfigError(problem(f"method={method!r}", allowed="'wilson' or 'exact'"))


def wilson_estimate(correct: Any, *, n_pool: int | None = None, confidence: float = 0.95) -> AccuracyEstimate:
    """The fraction right on a uniform audit, with Wilson's interval. ``correct``: (m,) 0/1.

    ``n_pool``: the size N of the reserve the audit was drawn from (with replacement); the interval
    then also covers the reserve's own sampling variance (its half-widths grow by sqrt(1 + m / N)),
    so it is for the population accuracy like PPI's. None: for the reserve's accuracy (N infinite).
    """
    return _binomial(correct, n_pool, confidence, "wilson")


def exact_estimate(correct: Any, *, n_pool: int | None = None, confidence: float = 0.95) -> AccuracyEstimate:
    """The fraction right on a uniform audit, with the Clopper-Pearson interval (``n_pool``: as in
    :func:`wilson_estimate`)."""
    return _binomial(correct, n_pool, confidence, "exact")


def _binomial(correct: Any, n_pool: int | None, confidence: float, method: str) -> AccuracyEstimate:
    c = _as_correct(correct)
    m, k = c.size, int(c.sum())
    lo, hi = binomial_interval(k, m, confidence=confidence, method=method)
    p = k / m
    se2 = p * (1 - p) / m
    if n_pool is not None:
        _check_n_pool(n_pool)
        grow = math.sqrt(1 + m / n_pool)
        lo, hi = max(0.0, p - (p - lo) * grow), min(1.0, p + (hi - p) * grow)
        se2 += p * (1 - p) / n_pool
    return AccuracyEstimate(p, lo, hi, math.sqrt(se2), m, method, confidence)


def _check_n_pool(n_pool: Any) -> None:
    if isinstance(n_pool, bool) or not isinstance(n_pool, int | np.integer) or n_pool < 1:
        raise ConfigError(problem(f"n_pool={n_pool!r}", allowed="an int >= 1 (the reserve's size)"))


# -- prediction-powered inference ---------------------------------------------------------------
#: Pseudo-draws in PPI's variance (see :func:`ppi_estimate`); 0 gives the plain sample variance.
PSEUDO = 4


def ppi_estimate(
    correct: Any,
    audit_confidence: Any,
    pool_confidence_mean: float,
    n_pool: int,
    *,
    weights: Any = None,
    lam: float | str = "auto",
    confidence: float = 0.95,
) -> AccuracyEstimate:
    """Prediction-powered (and, with ``weights``, importance-weighted) accuracy estimate.

    ``theta = lam * mean_R(f) + (1/m) sum_j w_j (c_j - lam f_j)`` where ``R`` is the reserve the audit
    is drawn from (``N = n_pool`` samples), ``f`` the model's confidence, ``c_j`` whether it is right
    on draw ``j`` and ``w_j = 1 / (N q_j)`` the draw's Hansen-Hurwitz weight (1 for uniform draws).
    Unbiased for any ``lam`` and any calibration of ``f``. Variance:
    ``var_j(w_j (c_j - lam f_j)) / m + theta (1 - theta) / N`` (the second term: the reserve as a
    sample of the population). The interval uses Student's t with m - 1 degrees of freedom.

    Args:
        correct: (m,) 0/1, the model's correctness on each audit draw (with repeats if drawn twice).
        audit_confidence: (m,) the model's confidence on the same draws.
        pool_confidence_mean: the mean confidence over the whole reserve R.
        n_pool: N = |R|.
        weights: (m,) ``1 / (N q_j)``, or None for uniform draws.
        lam: the power-tuning coefficient in [0, 1], or ``"auto"``: the variance-minimising value
            ``cov(w c, w f) / var(w f)`` clipped to [0, 1] (PPI++). ``lam=0`` is the plain
            (weighted) audit mean; ``lam=1`` is the original PPI.
        confidence: the interval's coverage.
    """
    confidence = _check_confidence(confidence)
    c = _as_correct(correct)
    m = c.size
    f = _as_prob(audit_confidence, "audit_confidence", (m,))
    fbar = float(pool_confidence_mean)
    if not 0 <= fbar <= 1:
        raise ConfigError(problem(f"pool_confidence_mean={fbar!r}", allowed="a number in [0, 1]"))
    _check_n_pool(n_pool)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (m,) or not np.isfinite(w).all() or (w <= 0).any():
        raise ConfigError(
            problem(f"weights of shape {w.shape}", allowed=f"({m},) positive finite numbers: 1 / (N q) per draw")
        )
    wc, wf = w * c, w * f
    if lam == "auto":
        var_f = float(np.var(wf, ddof=1)) if m > 1 else 0.0
        lam_v = float(np.clip(np.cov(wc, wf, ddof=1)[0, 1] / var_f, 0.0, 1.0)) if var_f > 1e-12 else 0.0
    elif isinstance(lam, int | float) and not isinstance(lam, bool) and 0 <= lam <= 1:
        lam_v = float(lam)
    else:
        raise ConfigError(problem(f"lam={lam!r}", allowed="'auto' or a number in [0, 1]"))
    z = wc - lam_v * wf
    theta = lam_v * fbar + float(z.mean())
    theta_c = min(max(theta, 0.0), 1.0)
    # The variance is taken with PSEUDO pseudo-draws added (half right, half wrong, at the reserve's
    # mean confidence): with few draws, all right, the sample variance of z is near 0 and the
    # interval would collapse (Agresti and Coull's "add two successes and two failures", 1998).
    half = PSEUDO // 2
    z_reg = np.concatenate([z, np.full(half, 1 - lam_v * fbar), np.full(PSEUDO - half, -lam_v * fbar)])
    var_z = float(np.var(z_reg, ddof=1))
    se = math.sqrt(var_z / m + theta_c * (1 - theta_c) / n_pool)
    t = float(stats.t.ppf(0.5 + confidence / 2, df=max(m - 1, 1)))
    return AccuracyEstimate(
        theta_c,
        max(0.0, theta - t * se),
        min(1.0, theta + t * se),
        se,
        m,
        "ppi" if weights is None else "ppi_weighted",
        confidence,
        lam_v,
    )


# -- the reserve and the audit's draws ---------------------------------------------------------
def choose_reserve(pool_ids: Any, size: int, *, random_state: RandomState) -> np.ndarray:
    """A uniformly random ``size``-subset of ``pool_ids`` (sorted): the audit's population.

    Selection must never see these ids; labels for them are bought only as audit draws.
    """
    ids = np.asarray(pool_ids, dtype=np.int64)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or not 1 <= size < ids.size:
        raise ConfigError(
            problem(
                f"reserve size {size!r} of a pool of {ids.size}",
                allowed=f"an int in [1, {ids.size - 1}]",
                fix="reserve a part of the pool (e.g. 10%) for the audit",
            )
        )
    rng = check_random_state(random_state)
    return np.sort(rng.choice(ids, size=int(size), replace=False))


def active_proposal(confidence: Any, *, mix: float = 0.5) -> np.ndarray:
    """The active audit's draw probabilities over the reserve, ``(N,)`` summing to 1.

    ``q = (1 - mix) sqrt(f (1 - f)) / sum sqrt(f (1 - f)) + mix / N``: samples the model is unsure
    of are drawn more (optimal for a calibrated ``f``, Zrnic and Candes 2024); the uniform part
    bounds every weight ``1 / (N q)`` by ``1 / mix``, so a confidently wrong sample cannot blow up
    the variance.
    """
    f = _as_prob(confidence, "confidence")
    if isinstance(mix, bool) or not isinstance(mix, int | float) or not 0 < mix <= 1:
        raise ConfigError(problem(f"mix={mix!r}", allowed="a number in (0, 1]", fix="pass e.g. 0.5"))
    s = np.sqrt(f * (1 - f))
    n = f.size
    if s.sum() <= 0:
        return np.full(n, 1.0 / n)
    q = (1 - mix) * s / s.sum() + mix / n
    return q / q.sum()


def draw_audit(q: Any, m: int, *, random_state: RandomState) -> np.ndarray:
    """``m`` positions drawn with replacement from ``q`` (N,): i.i.d. draws, as the estimators assume."""
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 1 or (q < 0).any() or not math.isclose(float(q.sum()), 1.0, rel_tol=1e-9, abs_tol=1e-9):
        raise ConfigError(
            problem(f"q of shape {q.shape} summing to {q.sum():.6g}", allowed="probabilities summing to 1")
        )
    if isinstance(m, bool) or not isinstance(m, int | np.integer) or m < 0:
        raise ConfigError(problem(f"m={m!r}", allowed="an int >= 0"))
    rng = check_random_state(random_state)
    return rng.choice(q.size, size=int(m), replace=True, p=q).astype(np.int64)


#: How an audit's draws are chosen: ``uniform`` or ``active`` (see :func:`active_proposal`).
SAMPLINGS = ("uniform", "active")

#: Estimators by name: ``fn(correct, audit_confidence, pool_confidence_mean, n_pool, weights, confidence)``.
ESTIMATORS: Registry[Callable[..., AccuracyEstimate]] = Registry("accuracy estimator")


@ESTIMATORS.register("wilson")
def _wilson(correct, audit_confidence, pool_confidence_mean, n_pool, weights, confidence):  # noqa: ANN001
    _uniform_only("wilson", weights)
    return wilson_estimate(correct, n_pool=n_pool, confidence=confidence)


@ESTIMATORS.register("exact")
def _exact(correct, audit_confidence, pool_confidence_mean, n_pool, weights, confidence):  # noqa: ANN001
    _uniform_only("exact", weights)
    return exact_estimate(correct, n_pool=n_pool, confidence=confidence)


@ESTIMATORS.register("ppi")
def _ppi(correct, audit_confidence, pool_confidence_mean, n_pool, weights, confidence):  # noqa: ANN001
    return ppi_estimate(correct, audit_confidence, pool_confidence_mean, n_pool, weights=weights, confidence=confidence)


def _uniform_only(name: str, weights: Any) -> None:
    if weights is not None and not np.allclose(weights, 1.0):
        raise ConfigError(
            problem(
                f"estimator {name!r} on an active (weighted) audit",
                allowed="'ppi' for an active audit; 'wilson' or 'exact' for a uniform one",
                fix="use estimator='ppi' or sampling='uniform'",
            )
        )


def _probs_check(probs: Any, n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n or p.shape[1] < 2 or not np.isfinite(p).all():
        raise ConfigError(
            problem(
                f"probabilities of shape {p.shape}",
                allowed=f"({n}, C) finite class probabilities, one row per reserve id in reserve order",
                fix="predict on Audit.reserve_ids",
            )
        )
    return p


class Audit:
    """The audit of one experiment: its reserve, its draws and their labels, as data.

    Args:
        reserve_ids: (N,) the pool ids set aside (:func:`choose_reserve`); selection must exclude them.
        sampling: ``"uniform"`` or ``"active"`` (draws favour samples the current model is unsure of).
        estimator: ``"ppi"`` (default), ``"wilson"`` or ``"exact"`` (the last two: uniform sampling only).
        mix: the uniform share of the active proposal (:func:`active_proposal`).
        confidence: the intervals' coverage.

    The loop calls :meth:`draw` with the current model's probabilities on the reserve to get the
    ids to buy, :meth:`record` with their labels once bought, and :meth:`estimate` with any model's
    probabilities on the reserve. A draw of an id already labeled costs nothing: :meth:`draw` only
    returns ids not yet labeled (labels are never bought twice).

    >>> import numpy as np
    >>> audit = Audit(reserve_ids=np.arange(100, 200), sampling="uniform")
    >>> probs = np.full((100, 2), 0.5); probs[:, 0] = 0.9; probs[:, 1] = 0.1
    >>> to_buy = audit.draw(probs, 20, random_state=0)
    >>> audit.record(to_buy, np.zeros(len(to_buy), dtype=int))
    >>> audit.estimate(probs).estimate
    1.0
    """

    def __init__(
        self,
        *,
        reserve_ids: Any,
        sampling: str = "uniform",
        estimator: str = "ppi",
        mix: float = 0.5,
        confidence: float = 0.95,
    ) -> None:
        ids = np.asarray(reserve_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size < 2 or np.unique(ids).size != ids.size:
            raise ConfigError(
                problem(
                    f"reserve_ids of shape {ids.shape}", allowed="at least 2 distinct ids", fix="use choose_reserve"
                )
            )
        if sampling not in SAMPLINGS:
            raise ConfigError(problem(f"sampling={sampling!r}", allowed=", ".join(SAMPLINGS)))
        ESTIMATORS.get(estimator)
        if sampling == "active" and estimator != "ppi":
            _uniform_only(estimator, np.zeros(1))
        _check_confidence(confidence)
        self.reserve_ids = ids
        self.sampling = sampling
        self.estimator = estimator
        self.mix = mix
        self.confidence = confidence
        self._pos = {int(i): k for k, i in enumerate(ids)}
        self._draw_pos: list[int] = []  # reserve positions of the draws, in draw order
        self._draw_q: list[float] = []  # each draw's probability under its proposal
        self._draw_round: list[int] = []
        self._labels: dict[int, int] = {}  # id -> label

    # -- state -------------------------------------------------------------------------------------
    @property
    def n_draws(self) -> int:
        return len(self._draw_pos)

    @property
    def n_labeled(self) -> int:
        """Distinct reserve ids labeled (what the audit cost)."""
        return len(self._labels)

    @property
    def pending_ids(self) -> np.ndarray:
        """Ids drawn but not yet labeled (the estimate waits for them)."""
        ids = self.reserve_ids[np.asarray(self._draw_pos, dtype=np.int64)]
        return np.unique([i for i in ids if int(i) not in self._labels]).astype(np.int64)

    def labeled_ids(self) -> np.ndarray:
        return np.array(sorted(self._labels), dtype=np.int64)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the audit (JSON-friendly)."""
        return {
            "reserve_ids": self.reserve_ids.tolist(),
            "params": {
                "sampling": self.sampling,
                "estimator": self.estimator,
                "mix": self.mix,
                "confidence": self.confidence,
            },
            "draw_pos": list(self._draw_pos),
            "draw_q": list(self._draw_q),
            "draw_round": list(self._draw_round),
            "labels": {str(k): v for k, v in self._labels.items()},
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Audit:
        audit = cls(reserve_ids=state["reserve_ids"], **state["params"])
        audit._draw_pos = [int(x) for x in state["draw_pos"]]
        audit._draw_q = [float(x) for x in state["draw_q"]]
        audit._draw_round = [int(x) for x in state["draw_round"]]
        audit._labels = {int(k): int(v) for k, v in state["labels"].items()}
        return audit

    # -- the loop's calls --------------------------------------------------------------------------
    def proposal(self, probs: Any | None, *, confidence: Any | None = None) -> np.ndarray:
        """(N,) the draw probabilities over the reserve for the model with ``probs`` (N, C), or
        with top-class ``confidence`` (N,) (all the proposal reads)."""
        n = self.reserve_ids.size
        if confidence is not None:
            f = _as_prob(confidence, "confidence", (n,))
        elif probs is not None:
            f = _probs_check(probs, n).max(1)
        if self.sampling == "uniform" or (probs is None and confidence is None):
            return np.full(n, 1.0 / n)
        return active_proposal(f, mix=self.mix)

    def draw(
        self,
        probs: Any | None,
        m: int,
        *,
        random_state: RandomState,
        round: int = 0,
        confidence: Any | None = None,
    ) -> np.ndarray:
        """Draw ``m`` more audit samples; returns the ids among them not labeled yet (to buy).

        ``probs``: the current model's (N, C) probabilities on the reserve, or ``confidence`` its
        (N,) top-class probabilities (needed by ``active`` sampling; both None before any model
        exists, which draws uniformly).
        """
        q = self.proposal(probs, confidence=confidence)
        pos = draw_audit(q, m, random_state=random_state)
        self._draw_pos.extend(int(p) for p in pos)
        self._draw_q.extend(float(q[p]) for p in pos)
        self._draw_round.extend([int(round)] * len(pos))
        return self.pending_ids

    def record(self, ids: Any, labels: Any) -> None:
        """Store the bought labels of drawn ids (an id is labeled once; a relabel must agree)."""
        ids = np.asarray(ids, dtype=np.int64)
        labels = np.asarray(labels)
        if ids.shape != labels.shape or ids.ndim != 1:
            raise LabelError(problem(f"ids {ids.shape} and labels {labels.shape}", allowed="two (k,) arrays"))
        drawn = {int(self.reserve_ids[p]) for p in self._draw_pos}
        for i, y in zip(ids.tolist(), labels.tolist(), strict=True):
            if i not in drawn:
                raise LabelError(
                    problem(f"id {i} was not drawn by the audit", fix="record only ids returned by Audit.draw")
                )
            if i in self._labels and self._labels[i] != int(y):
                raise LabelError(problem(f"id {i} already has audit label {self._labels[i]}, now {y}"))
            self._labels[i] = int(y)

    def relabel(self, ids: Any, labels: Any) -> np.ndarray:
        """Correct the labels of audit ids labeled before (a reviewer fixed them); returns the old ones."""
        ids = np.asarray(ids, dtype=np.int64)
        missing = [int(i) for i in ids if int(i) not in self._labels]
        if missing:
            raise LabelError(problem(f"audit ids {missing[:5]} have no label to correct"))
        before = np.array([self._labels[int(i)] for i in ids], dtype=np.int64)
        for i, y in zip(ids.tolist(), np.asarray(labels).tolist(), strict=True):
            self._labels[int(i)] = int(y)
        return before

    def estimate(
        self, probs: Any | None = None, *, predicted: Any | None = None, confidence: Any | None = None
    ) -> AccuracyEstimate:
        """The accuracy of the model with (N, C) probabilities on the reserve (or its (N,)
        ``predicted`` classes and top-class ``confidence``), from the labeled draws."""
        n = self.reserve_ids.size
        pred, conf = self._top(probs, predicted, confidence)
        pos, q = self._labeled_draws()
        if pos.size == 0:
            raise ConfigError(problem("the audit has no labeled draw yet", fix="draw and record audit labels first"))
        y = np.array([self._labels[int(self.reserve_ids[k])] for k in pos])
        weights = None if self.sampling == "uniform" else 1.0 / (n * q)
        fn = ESTIMATORS.get(self.estimator)
        return fn(pred[pos] == y, conf[pos], float(conf.mean()), n, weights, self.confidence)

    def _top(self, probs: Any, predicted: Any, confidence: Any) -> tuple[np.ndarray, np.ndarray]:
        n = self.reserve_ids.size
        if probs is not None:
            p = _probs_check(probs, n)
            return p.argmax(1), p.max(1)
        if predicted is None or confidence is None:
            raise ConfigError(problem("no predictions", fix="pass probs, or predicted and confidence"))
        pred = np.asarray(predicted, dtype=np.int64)
        if pred.shape != (n,):
            raise ConfigError(problem(f"predicted of shape {pred.shape}", allowed=f"({n},), in reserve order"))
        return pred, _as_prob(confidence, "confidence", (n,))

    def drawn_in(self, round: int) -> np.ndarray:
        """The distinct ids drawn in ``round`` (sorted)."""
        pos = [p for p, r in zip(self._draw_pos, self._draw_round, strict=True) if r == round]
        return np.unique(self.reserve_ids[np.asarray(pos, dtype=np.int64)]).astype(np.int64)

    def draws_through(self, round: int) -> int:
        """Draws made in rounds <= ``round`` (draws are made in round order)."""
        return sum(1 for r in self._draw_round if r <= round)

    def weights(self) -> np.ndarray | None:
        """(M,) the Hansen-Hurwitz weights ``1 / (N q)`` of every draw, None for a uniform audit."""
        if self.sampling == "uniform":
            return None
        return 1.0 / (self.reserve_ids.size * np.asarray(self._draw_q, dtype=np.float64))

    def draw_labels(self) -> np.ndarray:
        """(M,) each draw's label, -1 while it is not bought."""
        return np.array([self._labels.get(int(self.reserve_ids[p]), -1) for p in self._draw_pos], dtype=np.int64)

    def draw_rounds(self) -> np.ndarray:
        """(M,) the round each draw was made in."""
        return np.asarray(self._draw_round, dtype=np.int64)

    def labels_of(self, ids: Any) -> np.ndarray:
        """The audit labels of labeled ``ids``."""
        return np.array([self._labels[int(i)] for i in np.asarray(ids, dtype=np.int64)], dtype=np.int64)

    def draw_positions(self) -> np.ndarray:
        """(M,) each draw's position in the reserve, in draw order."""
        return np.asarray(self._draw_pos, dtype=np.int64)

    def _labeled_draws(self) -> tuple[np.ndarray, np.ndarray]:
        keep = [k for k, p in enumerate(self._draw_pos) if int(self.reserve_ids[p]) in self._labels]
        pos = np.asarray([self._draw_pos[k] for k in keep], dtype=np.int64)
        q = np.asarray([self._draw_q[k] for k in keep], dtype=np.float64)
        return pos, q


def estimate_rounds(
    correct: Sequence[np.ndarray] | np.ndarray,
    audit_confidence: Sequence[np.ndarray] | np.ndarray,
    pool_confidence_mean: Any,
    n_draws: Sequence[int],
    n_pool: int,
    *,
    weights: Any = None,
    estimator: str = "ppi",
    confidence: float = 0.95,
) -> tuple[list[AccuracyEstimate], np.ndarray]:
    """The estimates of T successive models on one growing audit, and their (T, T) covariance.

    Round t's model is scored on the first ``n_draws[t]`` draws (the audit only grows), so the
    estimates share draws and their errors are correlated: a learning-curve fit must know (see
    :func:`alcore.forecast.fit_learning_curve`'s ``cov``). The correlation of rounds s, t with
    ``m_s <= m_t`` is ``rho_st sqrt(m_s / m_t)``, ``rho_st`` the correlation of the estimators'
    per-draw terms ``z`` over the shared draws; the diagonal is each estimate's ``se**2``.

    Args:
        correct: (T, M) 0/1 correctness of each round's model on every draw (M = the final audit).
        audit_confidence: (T, M) each model's confidence on the draws.
        pool_confidence_mean: (T,) each model's mean confidence on the reserve.
        n_draws: (T,) non-decreasing draws available at each round, each in [1, M].
        n_pool: N, the reserve's size.
        weights: (M,) the draws' Hansen-Hurwitz weights, or None (uniform).
    """
    C = np.asarray(correct, dtype=np.float64)
    F = np.asarray(audit_confidence, dtype=np.float64)
    fbar = np.asarray(pool_confidence_mean, dtype=np.float64)
    md = np.asarray(n_draws, dtype=np.int64)
    if C.ndim != 2 or F.shape != C.shape or fbar.shape != (C.shape[0],) or md.shape != (C.shape[0],):
        raise ConfigError(
            problem(
                f"correct {C.shape}, audit_confidence {F.shape}, pool_confidence_mean {fbar.shape}, n_draws {md.shape}",
                allowed="(T, M), (T, M), (T,), (T,)",
            )
        )
    if (md < 1).any() or (md > C.shape[1]).any() or (np.diff(md) < 0).any():
        raise ConfigError(problem(f"n_draws={md.tolist()}", allowed=f"non-decreasing ints in [1, {C.shape[1]}]"))
    w = np.ones(C.shape[1]) if weights is None else np.asarray(weights, dtype=np.float64)
    fn = ESTIMATORS.get(estimator)
    T = C.shape[0]
    ests, Z = [], []
    for t in range(T):
        m = int(md[t])
        wt = None if weights is None else w[:m]
        est = fn(C[t, :m].astype(bool), F[t, :m], float(fbar[t]), n_pool, wt, confidence)
        ests.append(est)
        Z.append(w * (C[t] - est.lam * F[t]))
    # corr(theta_s, theta_t) = rho_st sqrt(m_s / m_t) for nested draws (m_s <= m_t), rho_st the
    # correlation of the per-draw terms on the shared draws; scaled by the reported standard errors
    # so that the matrix agrees with its diagonal (pseudo-draws and the reserve term included).
    se = np.array([e.se for e in ests])
    cov = np.diag(se**2)
    for s in range(T):
        for t in range(s + 1, T):
            lo, hi = (s, t) if md[s] <= md[t] else (t, s)
            k = int(md[lo])
            a, b = Z[s][:k], Z[t][:k]
            sd = float(np.std(a) * np.std(b))
            rho = float(np.mean((a - a.mean()) * (b - b.mean()))) / sd if k > 1 and sd > 0 else 0.0
            cov[s, t] = cov[t, s] = rho * math.sqrt(k / int(md[hi])) * se[s] * se[t]
    return ests, cov
