"""PT4AL: the pool sorted by a self-supervised pretext loss, one batch per cycle.

Yi, Seo, Park & Choi, "Using Self-Supervised Pretext Tasks for Active Learning", ECCV 2022 (code:
johnsk95/PT4AL); METHODS.md section 3.

1. Every pool image has a pretext loss (the rotation task's mean cross entropy over its 4
   rotations: :mod:`alcore.pretext`), in ``ctx.extras["pretext_loss"]``.
2. Sort the pool by that loss, highest first, and split it into ``T = ctx.n_rounds`` consecutive
   batches, one per cycle (cycle ``c`` = round ``c + 1``).
3. Cycle 0 (cold start, no model): an even-stride subsample of batch 0 (every 5th for 1,000 of
   5,000).
4. Cycle ``c > 0``: the ``b`` least confident (lowest max softmax of the proxy) unlabeled samples
   of batch ``c``; the rest of batch ``c`` is never revisited.

Where a batch holds fewer unlabeled samples than asked (a budget larger than ``N / T``, or more
rounds than batches), the picks continue into the next batches in sorted order, then wrap around:
a batch is never shrunk silently.

``faithful=True`` reproduces a defect of the reference code: it writes the losses as text and
sorts the *lines* (``sorted(..., reverse=True)`` on strings), so ``"9.1" > "10.2"`` and some of the
easiest images land in the first batch. It is offered only to reproduce the published numbers.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from alcore.errors import ConfigError, problem
from alcore.registry import Integral, Interval
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy
from alcore.strategies.uncertainty import least_confidence_scores

__all__ = ["PT4AL", "pt4al_batches", "pt4al_order"]


def pt4al_order(losses: np.ndarray, *, faithful: bool = False) -> np.ndarray:
    """Positions sorted by pretext loss, highest first (stable: equal losses keep pool order).

    ``faithful=True``: the reference's order, a descending sort of ``str(loss)`` texts.
    """
    losses = np.asarray(losses, dtype=np.float64)
    if faithful:
        texts = [str(float(v)) for v in losses]
        return np.asarray(sorted(range(losses.size), key=lambda i: texts[i], reverse=True), dtype=np.int64)
    return np.argsort(-losses, kind="stable").astype(np.int64)


def pt4al_batches(losses: np.ndarray, n_batches: int, *, faithful: bool = False) -> list[np.ndarray]:
    """The sorted pool split into ``n_batches`` consecutive batches of positions (sizes differ by
    at most one, the larger first)."""
    return [b.astype(np.int64) for b in np.array_split(pt4al_order(losses, faithful=faithful), n_batches)]


@STRATEGIES.register("pt4al")
class PT4AL(Strategy):
    """PT4AL (Yi et al. 2022). Needs ``ctx.extras["pretext_loss"]`` and ``ctx.n_rounds``; from
    the second round on, a proxy model (least confidence within the cycle's batch).

    Args:
        faithful: sort the losses as text like the reference code (a known defect; see the
            module docstring). Default False: numeric sort.
        n_batches: number of batches; None (default) = ``ctx.n_rounds``, one per round.
    """

    name = "pt4al"
    requires: ClassVar[frozenset[str]] = frozenset({"pretext_loss"})
    cold_start: ClassVar[bool] = True
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "faithful": ["boolean"],
        "n_batches": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(self, *, faithful: bool = False, n_batches: int | None = None) -> None:
        self.faithful = faithful
        self.n_batches = n_batches

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        t = self.n_batches if self.n_batches is not None else ctx.n_rounds
        if not isinstance(t, int | np.integer) or isinstance(t, bool) or t < 1:
            raise ConfigError(
                problem(
                    f"pt4al needs the number of batches, got n_batches={self.n_batches!r}, ctx.n_rounds={ctx.n_rounds!r}",
                    allowed="an int >= 1",
                    fix="pass n_rounds in the SelectionContext (the pipeline does) or set n_batches",
                )
            )
        batches = pt4al_batches(ctx.extras["pretext_loss"], min(int(t), ctx.n_pool), faithful=self.faithful)
        cycle = min(ctx.round - 1, len(batches) - 1)
        labeled = ctx.labeled_mask
        picks: list[np.ndarray] = []
        need = n
        for step in range(len(batches)):
            batch = batches[(cycle + step) % len(batches)]
            free = batch[~labeled[batch]]
            if free.size == 0:
                continue
            take = min(need, free.size)
            if step == 0 and cycle == 0 and ctx.model is None:
                chosen = free[np.floor(np.arange(take) * (free.size / take)).astype(np.int64)]
            else:
                chosen = self._least_confident(ctx, free, take, rng)
            picks.append(chosen)
            need -= take
            if need == 0:
                break
        return np.concatenate(picks)

    @staticmethod
    def _least_confident(ctx: SelectionContext, positions: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        ctx.require_model("strategy 'pt4al' after its first cycle")
        where = np.searchsorted(ctx.unlabeled_positions(), positions)
        scores = least_confidence_scores(ctx.probs()[where])
        keys = rng.random(positions.size)
        return positions[np.lexsort((keys, -scores))[:n]]
