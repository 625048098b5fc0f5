"""AS3L's one-shot selection as a strategy (Wen et al., Neurocomputing 2024; :mod:`alcore.as3l`).

Round 1 (no label): all ``n`` samples at once, the medoids of the clusters on which ``n_runs``
k-means runs agree, on ``f_fine``. Later rounds: the same with ``|L| + n`` clusters, skipping the
clusters that already hold a labeled sample.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from alcore.registry import Integral, Interval
from alcore.strategies._common import seed_from
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["AS3L"]


@STRATEGIES.register("as3l")
class AS3L(Strategy):
    """AS3L one-shot selection on the pre-computed features; a cold-start strategy.

    Args:
        n_runs: k-means runs, both for the pseudo-labels of ``f_fine`` and for the overlaps (5).
        epochs: epochs of the linear layer that gives ``f_fine`` (30).
        dim: its width (None = the features' dimension).
    """

    name = "as3l"
    requires: ClassVar[frozenset[str]] = frozenset({"features"})
    cold_start: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_runs": [Interval(Integral, 1, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "dim": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, *, n_runs: int = 5, epochs: int = 30, dim: int | None = None) -> None:
        self.n_runs = n_runs
        self.epochs = epochs
        self.dim = dim

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        from alcore.as3l import fine_features, one_shot_select

        k = min(ctx.n_pool, max(2, ctx.n_labeled + n))
        F = fine_features(
            ctx.features, k, n_runs=int(self.n_runs), dim=self.dim, epochs=int(self.epochs), random_state=seed_from(rng)
        )
        return one_shot_select(F, n, n_runs=int(self.n_runs), exclude=ctx.labeled_positions(), random_state=rng)
