"""BALD with MC-dropout: the mutual information between the prediction and the model parameters.

Houlsby et al., "Bayesian Active Learning for Classification and Preference Learning", 2011
(BALD); Gal, Islam & Ghahramani, "Deep Bayesian Active Learning with Image Data", ICML 2017
(estimated with T MC-dropout passes).

    I(y; w | x) ~= H[ mean_t p_t(y|x) ] - mean_t H[ p_t(y|x) ]

Memory: ``T x chunk_size x C`` floats alive at once (the context reduces chunk by chunk) plus the
``(U,)`` scores.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from alcore.errors import ConfigError, problem
from alcore.registry import Integral, Interval, Options
from alcore.strategies.base import STRATEGIES, SelectionContext, Strategy, top_n

__all__ = ["Bald", "bald_scores"]


def _entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    logp = np.log(np.clip(p, 1e-30, None))
    return 0.0 - (p * logp).sum(axis=axis)


def bald_scores(probs_mc: np.ndarray) -> np.ndarray:
    """Mutual information from MC samples.

    Args:
        probs_mc: ``(T, U, C)`` probabilities of T stochastic passes.

    Returns:
        ``(U,)`` float64 >= 0 (natural log); 0 when all passes agree, at most ``log C``.
    """
    p = np.asarray(probs_mc, dtype=np.float64)
    if p.ndim != 3 or p.shape[0] < 1 or p.shape[2] < 2 or not np.isfinite(p).all():
        raise ConfigError(
            problem(
                f"MC probabilities of shape {p.shape}",
                allowed="a finite (T, U, C) array with T >= 1, C >= 2",
                fix="pass the output of predict_proba_mc",
            )
        )
    mi = _entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0)
    return np.maximum(mi, 0.0)


@STRATEGIES.register("bald")
class Bald(Strategy):
    """Highest BALD score first (Gal et al. 2017), from ``n_samples`` MC-dropout passes of the proxy.

    Args:
        n_samples: T, the number of dropout masks (default 20).
        masks: ``"auto"`` (default): ``"consistent"`` when the model's ``predict_proba_mc`` takes a
            ``consistent`` argument (:class:`~alcore.proxy.ProxyMLP`, the fine-tuned head), else
            ``"independent"``. ``"consistent"``: T masks shared by every row ("consistent MC
            dropout", Kirsch et al., BatchBALD, NeurIPS 2019: T networks drawn from the dropout
            posterior, each applied to the whole pool). Each row still sees T independent masks,
            so its mutual-information estimate has the same distribution as with
            ``"independent"`` (a fresh mask for every row and pass); only the rows' estimates
            become correlated. With consistent masks the T passes of the last layer are one
            product and ``T x H`` random numbers, so the scoring runs at the proxy's GEMM rate
            (``bench/selection.py``: 1.5x its bound at 10^6 rows); independent masks draw ``T x U x H``
            random numbers (at 10^6 rows, T = 20, H = 256: 5 x 10^9, 6-8x the GEMMs). Other masks,
            other probabilities: the two pick different ids.

    Needs a proxy with ``predict_proba_mc`` (:class:`~alcore.proxy.ProxyMLP` has it: its own
    dropout rate, or 0.25 on the hidden layer when trained without dropout).
    """

    name = "bald"
    requires: ClassVar[frozenset[str]] = frozenset({"model", "mc_dropout"})
    cold_start: ClassVar[bool] = False
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {
        "n_samples": [Interval(Integral, 1, None, closed="left")],
        "masks": [Options(("auto", "independent", "consistent"))],
    }

    def __init__(self, *, n_samples: int = 20, masks: str = "auto") -> None:
        self.n_samples = n_samples
        self.masks = masks

    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        consistent = ctx.offers_consistent_masks() if self.masks == "auto" else self.masks == "consistent"
        scores = ctx.probs_mc(int(self.n_samples), rng, reduce=bald_scores, consistent=consistent)
        return ctx.unlabeled_positions()[top_n(scores, n, rng)]
