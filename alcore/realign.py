"""Feature realignment for ASVP: when do pre-computed features stop serving the labeled task?

Wen et al., "Feature Alignment: Rethinking Efficient Active Learning via Proxy in the Context of
Pre-trained Models", TMLR 2024, names an indicator "based on LogME and/or PED" without code; this
module builds it as pluggable triggers:

- ``logme_drop``: LogME of the labeled set on the current features stops improving (or falls by
  more than ``tolerance``) between rounds;
- ``ped_gap``: LogME(PED(Z_L)) - LogME(Z_L) exceeds ``threshold`` (a large gap says fine-tuning
  would move the features a lot);
- ``schedule``: at fixed label counts; ``never`` (= SVPp); ``every_round``.

LogME: You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning",
ICML 2021. PED: Li et al., "Exploring Model Transferability through the Lens of Potential Energy",
ICCV 2023. Both are implemented from the equations in ``../shared/METHODS.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from alcore.errors import ConfigError, problem
from alcore.registry import Each, Extension, Integral, Interval, Real, Registry

__all__ = ["logme", "ped", "TRIGGERS", "Trigger", "Decision", "make_trigger"]


def logme(F: np.ndarray, y: np.ndarray, *, tol: float = 1e-3, max_iter: int = 100) -> float:
    """LogME of features ``F`` (n, D) for labels ``y`` (n,): mean over classes of evidence / n.

    One thin SVD of F serves every class; each class's fixed-point iteration on (alpha, beta) then
    costs O(min(n, D)). Higher = the features fit the labels better (with a linear model).
    """
    F = np.asarray(F, dtype=np.float64)
    y = np.asarray(y)
    if F.ndim != 2 or y.ndim != 1 or len(F) != len(y):
        raise ConfigError(problem(f"logme on F {F.shape}, y {y.shape}", "F (n, D) and y (n,)"))
    n, D = F.shape
    if n < 2:
        raise ConfigError(problem(f"logme on {n} sample(s)", "at least 2"))
    U, sigma, _ = np.linalg.svd(F, full_matrices=False)
    s = sigma**2  # eigenvalues of F^T F on its range; the other D - r are 0
    r = len(s)
    evidences = []
    for k in np.unique(y):
        t = (y == k).astype(np.float64)
        x = U.T @ t  # projection of t on the range of F
        t2, x2 = float(t @ t), float(x @ x)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            denom = alpha + beta * s
            gamma = float(np.sum(beta * s / denom))
            m2 = float(np.sum((beta * sigma * x / denom) ** 2))  # m^T m
            res2 = max(t2 - x2, 0.0) + float(np.sum((alpha * x / denom) ** 2))  # ||F m - t||^2
            new_alpha = gamma / max(m2, 1e-12)
            new_beta = (n - gamma) / max(res2, 1e-12)
            done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        denom = alpha + beta * s
        m2 = float(np.sum((beta * sigma * x / denom) ** 2))
        res2 = max(t2 - x2, 0.0) + float(np.sum((alpha * x / denom) ** 2))
        logdet = float(np.sum(np.log(denom))) + (D - r) * np.log(alpha)
        ev = (
            n / 2 * np.log(beta)
            + D / 2 * np.log(alpha)
            - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res2
            - alpha / 2 * m2
            - 0.5 * logdet
        )
        evidences.append(ev / n)
    return float(np.mean(evidences))


def ped(
    F: np.ndarray, y: np.ndarray, *, step_scale: float = 0.5 * 0.1**2, max_steps: int = 6, stop_ratio: float = 0.5
) -> np.ndarray:
    """Potential-energy decline: standardise, then push overlapping classes apart (n, D).

    Each class c has mean mu_c and radius R_c = sqrt(sum of per-dimension variances). For each
    class pair, overlap o = max(2 R_i + 2 R_j - ||mu_i - mu_j||, 0) pushes the two classes apart
    along (mu_i - mu_j)/d by min(step_scale * o, o) each; every sample moves by its class's summed
    displacement. Up to ``max_steps`` steps, stopping when a step moves less than ``stop_ratio``
    times the first step. Memory: O(C^2 + n D).
    """
    F = np.asarray(F, dtype=np.float64)
    y = np.asarray(y)
    mean, std = F.mean(0), F.std(0)
    Z = (F - mean) / np.where(std > 0, std, 1.0)
    classes, inv = np.unique(y, return_inverse=True)
    C = len(classes)
    if C < 2:
        return Z
    first = None
    for _ in range(max_steps):
        mu = np.stack([Z[inv == c].mean(0) for c in range(C)])
        R = np.sqrt(np.stack([Z[inv == c].var(0).sum() for c in range(C)]))
        diff = mu[:, None, :] - mu[None, :, :]  # (C, C, D): mu_i - mu_j
        d = np.linalg.norm(diff, axis=2)
        o = np.maximum(2 * R[:, None] + 2 * R[None, :] - d, 0.0)
        np.fill_diagonal(o, 0.0)
        push = np.minimum(step_scale * o, o)
        unit = np.divide(diff, d[:, :, None], out=np.zeros_like(diff), where=d[:, :, None] > 0)
        disp = (push[:, :, None] * unit).sum(1)  # (C, D): class i moves away from every j
        moved = float(np.linalg.norm(disp, axis=1).sum())
        if first is None:
            first = moved
        if moved == 0.0:
            break
        Z = Z + disp[inv]
        if moved < stop_ratio * first and moved != first:
            break
    return Z


@dataclass(frozen=True)
class Decision:
    """Whether to realign now, and the indicator values behind the decision (logged per round)."""

    fire: bool
    indicators: dict[str, float] = field(default_factory=dict)
    reason: str = ""


class Trigger(Extension):
    """Decides after each round whether ASVP should fine-tune and re-extract the features.

    ``decide`` gets the labeled features on the *current* features, the history of earlier
    decisions since the last realignment (a new feature version starts a new history: indicators
    of other features do not compare), and ``fired_at``: the label counts at which the trigger
    fired before, in any feature version.
    """

    name: ClassVar[str]
    needs_features: ClassVar[bool] = True

    def decide(
        self,
        *,
        round: int,
        n_labeled: int,
        X: np.ndarray | None,
        y: np.ndarray | None,
        history: list[dict[str, Any]],
        fired_at: tuple[int, ...] = (),
    ) -> Decision:
        raise NotImplementedError


TRIGGERS: Registry[type[Trigger]] = Registry("realignment trigger", where="al.trigger_params")


@TRIGGERS.register("never")
class Never(Trigger):
    """Never realign: ASVP becomes SVPp."""

    name = "never"
    needs_features = False

    def decide(self, **kw: Any) -> Decision:
        return Decision(False, {}, "never")


@TRIGGERS.register("every_round")
class EveryRound(Trigger):
    """Realign after every round (an upper bound on ASVP's cost)."""

    name = "every_round"
    needs_features = False

    def decide(self, **kw: Any) -> Decision:
        return Decision(True, {}, "every round")


@TRIGGERS.register("schedule")
class Schedule(Trigger):
    """Realign when the labeled set first reaches each count in ``at`` (the reference scripts
    hard-code one update)."""

    name = "schedule"
    needs_features = False
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "at": [Each(Interval(Integral, 1, None, closed="left"), min_len=1)]
    }

    def __init__(self, *, at: tuple[int, ...] | list[int] = (500,)) -> None:
        self.at = at

    def decide(
        self, *, n_labeled: int, history: list[dict[str, Any]], fired_at: tuple[int, ...] = (), **kw: Any
    ) -> Decision:
        at = sorted(int(a) for a in self.at)
        if any(a < 1 for a in at):
            raise ConfigError(problem(f"schedule at={self.at!r}", "label counts >= 1"))
        crossed = [a for a in at if a <= n_labeled]
        # a count is done once fired, whatever features it fired on (a realignment starts a new history)
        fires = [h.get("n_labeled_at_fire", 0) for h in history if h.get("fired")] + [int(n) for n in fired_at]
        done = max(fires, default=0)
        due = [a for a in crossed if a > done]
        return Decision(bool(due), {"n_labeled": float(n_labeled)}, f"reached {due}" if due else "")


@TRIGGERS.register("logme_drop")
class LogMEDrop(Trigger):
    """Realign when LogME of the labeled set stops improving between rounds.

    Fires when LogME_t - LogME_{t-1} < ``tolerance`` (0: any non-improvement fires; negative:
    only a fall by more than |tolerance|), compared only within one feature version, and not
    before ``min_labels`` labels.
    """

    name = "logme_drop"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "tolerance": [Interval(Real, None, None)],
        "min_labels": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, *, tolerance: float = 0.0, min_labels: int = 50) -> None:
        self.tolerance = tolerance
        self.min_labels = min_labels

    def decide(
        self, *, n_labeled: int, X: np.ndarray | None, y: np.ndarray | None, history: list[dict[str, Any]], **kw: Any
    ) -> Decision:
        assert X is not None and y is not None
        cur = logme(X, y)
        prev = [h["logme"] for h in history if "logme" in h]
        ind = {"logme": cur}
        if not prev or n_labeled < self.min_labels:
            return Decision(False, ind, "no previous round" if not prev else f"fewer than {self.min_labels} labels")
        delta = cur - prev[-1]
        ind["logme_delta"] = delta
        fire = delta < self.tolerance
        return Decision(fire, ind, f"LogME change {delta:+.4f} < {self.tolerance}" if fire else "")


@TRIGGERS.register("ped_gap")
class PEDGap(Trigger):
    """Realign when LogME(PED(Z_L)) - LogME(Z_L) exceeds ``threshold``.

    Both sides are measured on standardised features (PED's starting point), so the gap is what
    the simulated class separation alone buys.
    """

    name = "ped_gap"
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "threshold": [Interval(Real, None, None)],
        "min_labels": [Interval(Integral, 2, None, closed="left")],
    }

    def __init__(self, *, threshold: float = 0.5, min_labels: int = 50) -> None:
        self.threshold = threshold
        self.min_labels = min_labels

    def decide(
        self, *, n_labeled: int, X: np.ndarray | None, y: np.ndarray | None, history: list[dict[str, Any]], **kw: Any
    ) -> Decision:
        assert X is not None and y is not None
        base = logme(ped(X, y, max_steps=0), y)  # the standardised features PED starts from
        moved = logme(ped(X, y), y)
        gap = moved - base
        ind = {"logme": base, "logme_ped": moved, "ped_gap": gap}
        if n_labeled < self.min_labels:
            return Decision(False, ind, f"fewer than {self.min_labels} labels")
        fire = gap > self.threshold
        return Decision(fire, ind, f"PED gap {gap:.4f} > {self.threshold}" if fire else "")


def make_trigger(name: str, **params: Any) -> Trigger:
    """The registered trigger ``name`` (unknown names and parameters raise with the valid ones)."""
    return TRIGGERS.create(name, **params)
