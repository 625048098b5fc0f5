"""Selection strategies: one registry, one contract (:class:`Strategy`), pure scoring functions.

>>> from alcore.strategies import STRATEGIES, make_strategy
>>> "margin" in STRATEGIES
True
"""

from __future__ import annotations

from alcore.strategies.base import (
    REQUIREMENTS,
    STRATEGIES,
    Scorer,
    SelectionContext,
    Strategy,
    check_random_state,
    make_strategy,
    top_n,
)
from alcore.strategies.random import Random
from alcore.strategies.uncertainty import (
    Entropy,
    LeastConfidence,
    Margin,
    UncertaintySampling,
    entropy_scores,
    least_confidence_scores,
    margin_scores,
)

__all__ = [
    "REQUIREMENTS",
    "STRATEGIES",
    "Entropy",
    "LeastConfidence",
    "Margin",
    "Random",
    "Scorer",
    "SelectionContext",
    "Strategy",
    "UncertaintySampling",
    "check_random_state",
    "entropy_scores",
    "least_confidence_scores",
    "make_strategy",
    "margin_scores",
    "top_n",
]
