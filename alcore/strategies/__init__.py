"""Selection strategies: one registry, one contract (:class:`Strategy`), pure scoring functions.

>>> from alcore.strategies import STRATEGIES, make_strategy
>>> "margin" in STRATEGIES
True
"""

from __future__ import annotations

from alcore.strategies.activeft import ActiveFT, activeft_select
from alcore.strategies.as3l import AS3L
from alcore.strategies.badge import Badge, badge_select, badge_select_materialised
from alcore.strategies.bald import Bald, bald_scores
from alcore.strategies.base import (
    EXTRAS,
    REQUIREMENTS,
    STRATEGIES,
    MCScorer,
    Scorer,
    SelectionContext,
    Strategy,
    check_random_state,
    make_strategy,
    top_n,
)
from alcore.strategies.checks import StrategyContractError, check_strategy
from alcore.strategies.cluster_margin import ClusterMargin
from alcore.strategies.coreset import Coreset, kcenter_greedy
from alcore.strategies.kmeans import KMeansDiversity, nearest_to_centroids
from alcore.strategies.ntkcpl import NTKCPL, init_ntk_mlp, ntk_kernel, ntk_outputs, ntkcpl_select
from alcore.strategies.probcover import ProbCover, delta_from_purity, probcover_select, radius_graph
from alcore.strategies.pt4al import PT4AL, pt4al_batches, pt4al_order
from alcore.strategies.random import Random
from alcore.strategies.typiclust import TypiClust, typicality
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
    "AS3L",
    "EXTRAS",
    "NTKCPL",
    "PT4AL",
    "REQUIREMENTS",
    "STRATEGIES",
    "ActiveFT",
    "Badge",
    "Bald",
    "ClusterMargin",
    "Coreset",
    "Entropy",
    "KMeansDiversity",
    "LeastConfidence",
    "MCScorer",
    "Margin",
    "ProbCover",
    "Random",
    "TypiClust",
    "Scorer",
    "SelectionContext",
    "Strategy",
    "UncertaintySampling",
    "activeft_select",
    "badge_select",
    "badge_select_materialised",
    "bald_scores",
    "StrategyContractError",
    "check_random_state",
    "check_strategy",
    "delta_from_purity",
    "entropy_scores",
    "kcenter_greedy",
    "least_confidence_scores",
    "make_strategy",
    "margin_scores",
    "nearest_to_centroids",
    "init_ntk_mlp",
    "ntk_kernel",
    "ntk_outputs",
    "ntkcpl_select",
    "pt4al_batches",
    "pt4al_order",
    "probcover_select",
    "radius_graph",
    "top_n",
    "typicality",
]
