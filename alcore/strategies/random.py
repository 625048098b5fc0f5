"""Random sampling: the baseline every active-learning paper compares with, and round 1's rule."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy

__all__ = ["Random"]


@STRATEGIES.register("random")
class Random(Strategy):
    """``n`` unlabeled samples uniformly at random, without replacement.

    Needs neither labels nor a model (cold start).
    """

    name = "random"
    requires: ClassVar[frozenset[str]] = frozenset()
    cold_start: ClassVar[bool] = True

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(ctx.unlabeled_positions(), size=n, replace=False)
