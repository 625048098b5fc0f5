"""The strategy contract as a check anyone can run on their own strategy (scikit-learn's
``check_estimator``): :func:`check_strategy`.

>>> from alcore.strategies import Margin
>>> check_strategy(Margin)   # silent when the contract holds; StrategyContractError names the breach
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from alcore.errors import AlcoreError, ConfigError, PoolExhaustedError
from alcore.registry import param_names
from alcore.strategies.base import REQUIREMENTS, SelectionContext, Strategy

__all__ = ["SoftmaxScorer", "StrategyContractError", "check_strategy", "make_context"]

N_POOL, N_DIM, N_CLASSES, N_LABELED = 300, 16, 4, 40


class StrategyContractError(AlcoreError, AssertionError):
    """A strategy breaks the contract every strategy keeps; the message names the check."""


class SoftmaxScorer:
    """A tiny multinomial logistic regression fitted by gradient descent (the Scorer protocol)."""

    def __init__(self, X: np.ndarray, y: np.ndarray, n_classes: int, steps: int = 200) -> None:
        self.mean = X.mean(axis=0)
        Xc = X - self.mean
        W = np.zeros((X.shape[1], n_classes))
        b = np.zeros(n_classes)
        onehot = np.eye(n_classes)[y]
        for _ in range(steps):
            p = self._softmax(Xc @ W + b)
            W -= 0.1 * (Xc.T @ (p - onehot) / len(y) + 1e-2 * W)
            b -= 0.1 * (p - onehot).mean(axis=0)
        self.W, self.b = W, b

    @staticmethod
    def _softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return self._softmax((X - self.mean) @ self.W + self.b)

    def embed(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, dtype=np.float32)

    def predict_proba_mc(self, X: np.ndarray, n_samples: int, *, random_state: int) -> np.ndarray:
        """MC-dropout on the input: ``(T, n, C)``."""
        rng = np.random.default_rng(random_state)
        Xc = X - self.mean
        keep = rng.random((n_samples, *X.shape)) >= 0.25
        return np.stack([self._softmax((Xc * k / 0.75) @ self.W + self.b) for k in keep])


def make_context(
    pool_ids: np.ndarray | None = None, n_labeled: int = N_LABELED, with_model: bool = True, features: Any = None
) -> SelectionContext:
    """A seeded synthetic round: 300 points in 4 Gaussian blobs (16-D), ``n_labeled`` of them
    labeled, a fitted :class:`SoftmaxScorer`, pretext losses, 4 rounds. ``features`` replaces the
    feature array (a memory map of the same values, say)."""
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=3.0, size=(N_CLASSES, N_DIM))
    truth = rng.integers(0, N_CLASSES, size=N_POOL)
    X = (centers[truth] + rng.normal(size=(N_POOL, N_DIM))).astype(np.float32)
    labels = np.full(N_POOL, -1, dtype=np.int64)
    labeled = rng.choice(N_POOL, size=n_labeled, replace=False)
    labels[labeled] = truth[labeled]
    model = None
    if with_model and n_labeled:
        model = SoftmaxScorer(X[labeled], truth[labeled], N_CLASSES)
    ids = np.arange(N_POOL, dtype=np.int64) if pool_ids is None else pool_ids
    return SelectionContext(
        pool_ids=ids,
        features=X if features is None else features,
        labels=labels,
        n_classes=N_CLASSES,
        model=model,
        chunk_size=64,
        extras={"pretext_loss": rng.gamma(2.0, size=N_POOL)},
        n_rounds=4,
    )


def _fail(cls: type, check: str, detail: str) -> None:
    raise StrategyContractError(f"strategy {getattr(cls, 'name', cls.__name__)!r} fails {check!r}: {detail}")


def _raises(fn: Any, error: type[Exception]) -> bool:
    try:
        fn()
    except error:
        return True
    return False


def check_strategy(cls: type[Strategy], params: dict[str, Any] | None = None) -> None:
    """Run the contract every registered strategy keeps on ``cls`` (built with ``params``).

    Checks: it derives from :class:`Strategy` and declares ``name``, ``requires`` and
    ``cold_start``; its parameters are keyword-only, stored untouched (``get_params`` builds a
    twin) and each has declared constraints; ``select`` returns ``n`` distinct unlabeled pool ids
    (int64) and leaves the context alone; the same seed gives the same ids (an int or a Generator);
    it answers in ids, not positions; it picks from a memory map as from memory; asking for more
    than the unlabeled rows raises :class:`PoolExhaustedError`, a bad ``n`` :class:`ConfigError`;
    a warm strategy refuses a round without labels, a cold-start one needs nothing.

    Raises:
        StrategyContractError: naming the first check that fails.
    """
    params = dict(params or {})
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        _fail(cls, "is a Strategy", "derive it from alcore.strategies.Strategy")
    if not isinstance(getattr(cls, "name", None), str):
        _fail(cls, "declares its name", "set the class attribute name = '...'")
    if not (isinstance(cls.requires, frozenset) and cls.requires <= REQUIREMENTS):
        _fail(cls, "declares what it requires", f"requires must be a frozenset of {sorted(REQUIREMENTS)}")
    if not isinstance(cls.cold_start, bool):
        _fail(cls, "declares cold_start", "set cold_start = True or False")
    import inspect

    init = cls.__init__
    sig = inspect.signature(init)
    for p in [] if init is object.__init__ else list(sig.parameters.values())[1:]:
        if p.kind is not p.KEYWORD_ONLY:
            _fail(cls, "takes keyword-only parameters", f"make {p.name!r} keyword-only (def __init__(self, *, ...))")
    undeclared = sorted(set(param_names(cls)) - set(cls._parameter_constraints))
    if undeclared:
        _fail(cls, "declares its parameter constraints", f"add {undeclared} to _parameter_constraints")
    strategy = cls(**params)
    got = strategy.get_params()
    if any(got.get(k) is not v for k, v in params.items()) or type(strategy)(**got).get_params() != got:
        _fail(cls, "stores its parameters untouched", "assign each __init__ argument to self.<name> as given")

    def select(ctx: SelectionContext, n: Any, seed: Any = 0) -> np.ndarray:
        return cls(**params).select(ctx, n, random_state=seed)

    ctx = make_context()
    before = ctx.labels.copy()
    unlabeled = set(ctx.pool_ids[ctx.labels < 0].tolist())
    for n in (1, 7, 50):
        try:
            ids = select(ctx, n)
        except AlcoreError as e:  # Strategy.select's own check of what _select_positions returned
            _fail(cls, "returns n distinct unlabeled pool ids", f"asked for {n}: {e}")
        if ids.dtype != np.int64 or ids.shape != (n,) or np.unique(ids).size != n or not set(ids.tolist()) <= unlabeled:
            _fail(cls, "returns n distinct unlabeled pool ids", f"asked for {n}, got {ids!r}")
    if not np.array_equal(ctx.labels, before):
        _fail(cls, "leaves the context alone", "select changed ctx.labels")
    a, b = select(make_context(), 20, 123), select(make_context(), 20, 123)
    g = select(make_context(), 20, np.random.default_rng(123))
    if not (np.array_equal(a, b) and np.array_equal(a, g)):
        _fail(cls, "is deterministic under a seed", "draw every random choice from the given random_state")
    big = 10**12 + 7 * np.arange(N_POOL, dtype=np.int64)[::-1]
    if not np.array_equal(select(make_context(pool_ids=big), 25, 5), big[select(make_context(), 25, 5)]):
        _fail(cls, "speaks ids, not positions", "return ctx.pool_ids[positions]: Strategy.select does it for you")
    with tempfile.TemporaryDirectory() as tmp:
        X = make_context().features
        mm = np.lib.format.open_memmap(Path(tmp) / "f.npy", mode="w+", dtype=np.float32, shape=X.shape)
        mm[:] = X
        same = np.array_equal(select(make_context(features=mm), 20, 3), select(make_context(), 20, 3))
        del mm
    if not same:
        _fail(cls, "picks the same ids from a memory map", "index ctx.features; never depend on its type")
    n_unl = len(unlabeled)
    if set(select(make_context(), n_unl).tolist()) != unlabeled:
        _fail(cls, "can take every unlabeled sample", f"n={n_unl} must return all unlabeled ids")
    if not _raises(lambda: select(make_context(), n_unl + 1), PoolExhaustedError):
        _fail(cls, "refuses an exhausted pool", "Strategy.select raises PoolExhaustedError: do not override select")
    if not _raises(lambda: select(make_context(), 0), ConfigError):
        _fail(cls, "refuses a bad n", "Strategy.select raises ConfigError: do not override select")
    empty = make_context(n_labeled=0, with_model=False)
    if cls.cold_start:
        try:
            ids = select(empty, 10)
        except AlcoreError as e:
            _fail(cls, "starts cold", f"a cold-start strategy picks with no label and no model, but: {e}")
        if ids.shape != (10,) or np.unique(ids).size != 10:
            _fail(cls, "starts cold", "a cold-start strategy picks with no label and no model")
    elif not _raises(lambda: select(empty, 5), ConfigError):
        _fail(cls, "refuses a round without labels", "set cold_start = True, or let Strategy.select refuse")
