"""Uncertainty sampling: margin, entropy and least confidence of the proxy's probabilities.

Every scoring function maps ``(U, C)`` probabilities to ``(U,)`` scores where **higher means more
informative**, so one selection rule (:func:`~alcore.strategies.base.top_n`) serves them all.

References:
    Settles, "Active Learning Literature Survey", 2009 (least confidence, margin, entropy).
    Scheffer et al., "Active Hidden Markov Models for Information Extraction", 2001 (margin).
    Wen et al., "Feature Alignment: Rethinking Efficient Active Learning via Proxy in the Context
    of Pre-trained Models", TMLR 2024 (margin is the default strategy of the reference code).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from alcore.errors import ConfigError, problem
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy, top_n

__all__ = [
    "Entropy",
    "LeastConfidence",
    "Margin",
    "UncertaintySampling",
    "check_probs",
    "entropy_scores",
    "least_confidence_scores",
    "margin_scores",
    "top_n",
]

_SUM_TOLERANCE = 1e-3


def check_probs(probs: np.ndarray) -> np.ndarray:
    """Validate ``(U, C)`` probabilities: 2-D, C >= 2, finite, in [0, 1], rows summing to ~1."""
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 2 or p.dtype.kind not in "fiu":
        raise ConfigError(
            problem(
                f"probabilities of shape {p.shape} and dtype {p.dtype}",
                allowed="a 2-D float array (U, C) with C >= 2",
                fix="pass the proxy's predict_proba output",
            )
        )
    if p.dtype.kind != "f":
        p = p.astype(np.float64)
    if p.size:
        bad_value = ~np.isfinite(p).all(axis=1) | (p < 0).any(axis=1)
        bad_sum = np.abs(p.sum(axis=1, dtype=np.float64) - 1.0) > _SUM_TOLERANCE
        bad = np.flatnonzero(bad_value | bad_sum)
        if bad.size:
            raise ConfigError(
                problem(
                    f"{bad.size} probability rows are not distributions, e.g. rows {bad[:5].tolist()}",
                    allowed=f"finite non-negative rows summing to 1 (+/- {_SUM_TOLERANCE})",
                    fix="apply softmax to the logits before scoring",
                )
            )
    return p


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """Negative margin ``-(p_1 - p_2)`` between the two most probable classes.

    Args:
        probs: ``(U, C)`` class probabilities.

    Returns:
        ``(U,)`` float64 in ``[-1, 0]``; 0 (a tie between the top two classes) is the most
        informative.
    """
    p = check_probs(probs)
    top2 = np.partition(p, p.shape[1] - 2, axis=1)[:, -2:]
    return (top2[:, 0] - top2[:, 1]).astype(np.float64)


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy ``-sum_c p_c log p_c`` (natural log, ``0 log 0 = 0``).

    Args:
        probs: ``(U, C)`` class probabilities.

    Returns:
        ``(U,)`` float64 in ``[0, log C]``; the uniform distribution scores ``log C``.
    """
    p = check_probs(probs)
    positive = p > 0
    plogp = np.zeros_like(p)
    np.multiply(p, np.log(p, where=positive, out=np.zeros_like(p)), out=plogp, where=positive)
    return 0.0 - plogp.sum(axis=1, dtype=np.float64)  # 0.0 - x: no -0.0 for certain rows


def least_confidence_scores(probs: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c``.

    Args:
        probs: ``(U, C)`` class probabilities.

    Returns:
        ``(U,)`` float64 in ``[0, 1 - 1/C]``.
    """
    p = check_probs(probs)
    return 1.0 - p.max(axis=1).astype(np.float64)


class UncertaintySampling(Strategy):
    """Pick the ``n`` unlabeled samples whose proxy probabilities score highest.

    Subclasses only say which scoring function to use. Ties are broken at random through
    ``random_state``.
    """

    requires: ClassVar[frozenset[str]] = frozenset({"model"})
    cold_start: ClassVar[bool] = False

    @abstractmethod
    def scores(self, probs: np.ndarray) -> np.ndarray:
        """``(U, C)`` probabilities -> ``(U,)`` scores, higher = more informative."""

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        chosen = top_n(self.scores(ctx.probs()), n, rng)
        return ctx.unlabeled_positions()[chosen]


@STRATEGIES.register("margin")
class Margin(UncertaintySampling):
    """Smallest margin between the two most probable classes first (:func:`margin_scores`)."""

    name = "margin"

    def scores(self, probs: np.ndarray) -> np.ndarray:
        return margin_scores(probs)


@STRATEGIES.register("entropy")
class Entropy(UncertaintySampling):
    """Highest predictive entropy first (:func:`entropy_scores`)."""

    name = "entropy"

    def scores(self, probs: np.ndarray) -> np.ndarray:
        return entropy_scores(probs)


@STRATEGIES.register("least_confidence")
class LeastConfidence(UncertaintySampling):
    """Lowest top-class probability first (:func:`least_confidence_scores`)."""

    name = "least_confidence"

    def scores(self, probs: np.ndarray) -> np.ndarray:
        return least_confidence_scores(probs)
