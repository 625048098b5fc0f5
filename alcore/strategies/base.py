"""The strategy contract: what a strategy is given, what it must return, and its registry.

A strategy is a pure scoring function plus a thin class. The class reads what it needs from a
:class:`SelectionContext` (features, the proxy's probabilities or embeddings), never trains a
model, and returns **pool ids** - never positions.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from alcore.errors import AlcoreError, ConfigError, PoolExhaustedError, problem
from alcore.registry import Extension, Registry

__all__ = [
    "EXTRAS",
    "REQUIREMENTS",
    "STRATEGIES",
    "MCScorer",
    "RandomState",
    "Scorer",
    "SelectionContext",
    "Strategy",
    "check_random_state",
    "make_strategy",
    "top_n",
]

RandomState = int | np.integer | np.random.Generator | None

#: What a strategy may declare in ``Strategy.requires``. "model": a fitted proxy in
#: ``ctx.model`` (probabilities); "embeddings": the proxy's hidden activation (implies a model);
#: "features": the pre-computed features only (always present in a context); "mc_dropout": a proxy
#: that also offers ``predict_proba_mc`` (:class:`MCScorer`, implies a model). Any other name is a
#: per-sample side array the loop must put in ``ctx.extras`` under that name (:data:`EXTRAS`).
EXTRAS = frozenset({"pretext_loss"})
REQUIREMENTS = frozenset({"model", "embeddings", "features", "mc_dropout"}) | EXTRAS


def check_random_state(random_state: RandomState) -> np.random.Generator:
    """Turn ``random_state`` into a ``numpy.random.Generator``.

    ``None`` gives fresh OS entropy (not reproducible); an int >= 0 seeds a new generator; a
    Generator is used as given (and advanced).
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        if random_state >= 0:
            return np.random.default_rng(int(random_state))
    raise ConfigError(
        problem(
            f"random_state={random_state!r} is not a valid seed",
            allowed="None, an int >= 0, or a numpy.random.Generator",
            fix="pass e.g. random_state=0",
        )
    )


def top_n(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``n`` highest ``scores``, highest first; ties broken at random by ``rng``.

    Args:
        scores: ``(U,)`` finite floats, higher = more wanted.
        n: how many, ``0 <= n <= U``.
        rng: the only source of randomness (one uniform key per score is drawn).

    Returns:
        ``(n,)`` int64 distinct indices into ``scores``.
    """
    scores = np.asarray(scores)
    if scores.ndim != 1 or not np.isfinite(scores).all():
        raise ConfigError(
            problem(
                f"scores of shape {scores.shape} (finite: {bool(np.isfinite(scores).all())})",
                allowed="a 1-D array of finite numbers",
                fix="check the scoring function for NaN or infinite values",
            )
        )
    if not _is_int(n) or not 0 <= n <= scores.size:
        raise ConfigError(problem(f"n={n!r} of {scores.size} scores", allowed=f"an int in [0, {scores.size}]"))
    keys = rng.random(scores.size)
    # lexsort sorts by the last key first: descending score, then the random key.
    order = np.lexsort((keys, -scores.astype(np.float64)))
    return order[:n].astype(np.int64, copy=False)


@runtime_checkable
class Scorer(Protocol):
    """The proxy model, as a strategy sees it. The loop trains it; a strategy never does.

    The ``X`` a method receives is read-only to it and lives only for the call: the context hands
    over slices of the features or a buffer it reuses for the next chunk of rows (keep a copy,
    never a reference)."""

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, D)`` features -> ``(n, C)`` class probabilities (rows sum to 1)."""
        ...

    def embed(self, X: np.ndarray) -> np.ndarray:
        """``(n, D)`` features -> ``(n, H)`` hidden activation (the penultimate layer)."""
        ...


@runtime_checkable
class MCScorer(Scorer, Protocol):
    """A proxy that can also sample its predictive distribution with dropout kept on (MC-dropout,
    Gal et al. 2017). Optional: only strategies requiring "mc_dropout" call it."""

    def predict_proba_mc(self, X: np.ndarray, n_samples: int, *, random_state: int) -> np.ndarray:
        """``(n, D)`` features -> ``(T, n, C)`` probabilities of ``T = n_samples`` dropout masks."""
        ...


#: Pools with fewer feature values than this run single-threaded: on small arrays the
#: OpenMP/BLAS thread hand-off costs more than the work (100x on a loaded 2-core machine).
SMALL_POOL_VALUES = 1 << 20
#: Rows that fill at least this fraction of the span between the first and the last are read as a
#: slice of the features and the few others dropped after (:func:`dense_span`).
DENSE_ROWS = 0.9
#: Most bytes of the rows one model call gets, for the calls whose outputs are per row (16 MiB:
#: below glibc's largest mmap threshold, so the buffers are reused, not mapped afresh).
GATHER_BYTES = 1 << 24


def _threads_for(ctx: SelectionContext) -> AbstractContextManager[Any]:
    if ctx.n_pool * int(ctx.features.shape[1]) >= SMALL_POOL_VALUES:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def dense_span(rows: np.ndarray) -> slice | None:
    """The slice ``rows[0] .. rows[-1]`` when ``rows`` (increasing) fill at least
    :data:`DENSE_ROWS` of it: a model or a pass reads such a slice in place faster than a gathered
    copy of the rows (a pool with few labeled rows). None otherwise."""
    if rows.size < 2 or rows[-1] <= rows[0]:
        return None
    width = int(rows[-1] - rows[0]) + 1
    if rows.size < DENSE_ROWS * width or not bool(np.all(np.diff(rows) > 0)):
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1)


@dataclass(eq=False)
class SelectionContext:
    """Everything a strategy may read in one round. Shapes are checked on construction.

    Attributes:
        pool_ids: ``(N,)`` int64 global sample ids, unique, aligned with ``features``.
        features: ``(N, D)`` pre-computed features (float; may be a ``numpy.memmap``, never
            copied whole).
        labels: ``(N,)`` int64, ``-1`` = unlabeled, else the class known to the learner.
        n_classes: number of classes C >= 2.
        model: the fitted proxy, or None before any is trained.
        round: the round being selected for (1 = first).
        chunk_size: rows per ``model.predict_proba_mc`` call (one seed each); per
            ``predict_proba`` / ``embed`` call at most, and no more than :data:`GATHER_BYTES` of
            feature rows.
        extras: per-sample side arrays by name, each ``(N,)`` aligned with ``pool_ids`` (e.g.
            ``"pretext_loss"``: the rotation pretext loss PT4AL sorts by).
        n_rounds: the number of rounds the loop will run, when known (PT4AL splits the pool
            into that many batches).
        device: where the strategies' distance passes and GEMMs run: ``None`` or ``"cpu"``
            (numpy on the CPU), or an accelerator such as ``"cuda"`` (torch there; the pipeline
            passes its encoder's device). The same seed picks the same ids on either, up to float
            rounding in exact near-ties.

    The helpers ``probs()`` and ``embeddings()`` run the model over the *unlabeled* rows only, in
    the order of ``unlabeled_positions()``, and cache the result; ``embeddings_of(positions)``
    embeds any rows (uncached) and ``probs_mc(T, rng)`` samples MC-dropout probabilities.
    """

    pool_ids: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    n_classes: int
    model: Scorer | None = None
    round: int = 1
    chunk_size: int = 16384
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)
    n_rounds: int | None = None
    device: str | None = None
    _cache: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        ids = np.asarray(self.pool_ids)
        if ids.ndim != 1 or not (ids.dtype.kind in "iu" or ids.size == 0):
            raise ConfigError(
                problem(
                    f"pool_ids has shape {ids.shape} and dtype {ids.dtype}",
                    allowed="a 1-D integer array",
                    fix="pass the pool's sample ids as an int64 array",
                )
            )
        self.pool_ids = ids.astype(np.int64, copy=False)
        n = ids.shape[0]
        uniq, counts = np.unique(self.pool_ids, return_counts=True)
        if uniq.size != n:
            raise ConfigError(
                problem(
                    f"pool_ids holds duplicates, e.g. {uniq[counts > 1][:5].tolist()}",
                    allowed="unique ids",
                    fix="remove the duplicated samples from the pool",
                )
            )
        shape = getattr(self.features, "shape", None)
        if shape is None or len(shape) != 2 or shape[0] != n:
            raise ConfigError(
                problem(
                    f"features has shape {shape}, pool_ids has {n} ids",
                    allowed="features of shape (N, D) aligned with pool_ids",
                    fix="pass the feature rows in the order of pool_ids",
                )
            )
        labels = np.asarray(self.labels)
        if labels.shape != (n,) or not (labels.dtype.kind in "iu" or n == 0):
            raise ConfigError(
                problem(
                    f"labels has shape {labels.shape} and dtype {labels.dtype}",
                    allowed=f"a 1-D integer array of length {n} (-1 = unlabeled)",
                    fix="pass LabelState.labels_array()",
                )
            )
        if not _is_int(self.n_classes) or self.n_classes < 2:
            raise ConfigError(
                problem(
                    f"n_classes={self.n_classes!r}",
                    allowed="an int >= 2",
                    fix="pass the dataset's number of classes",
                )
            )
        labels = labels.astype(np.int64, copy=False)
        bad = (labels < -1) | (labels >= self.n_classes)
        if bad.any():
            raise ConfigError(
                problem(
                    f"labels outside [-1, {self.n_classes}) at ids {self.pool_ids[bad][:5].tolist()}",
                    allowed=f"-1 (unlabeled) or a class in [0, {self.n_classes})",
                    fix="pass LabelState.labels_array()",
                )
            )
        self.labels = labels
        for name in ("round", "chunk_size", "n_rounds"):
            value = getattr(self, name)
            if name == "n_rounds" and value is None:
                continue
            if not _is_int(value) or value < 1:
                raise ConfigError(problem(f"{name}={value!r}", allowed="an int >= 1", fix=f"pass a valid {name}"))
        extras = {}
        for key, value in dict(self.extras).items():
            arr = np.asarray(value)
            if arr.shape != (n,) or not np.isfinite(arr).all():
                raise ConfigError(
                    problem(
                        f"extras[{key!r}] has shape {arr.shape} (finite: {bool(np.isfinite(arr).all())})",
                        allowed=f"a finite 1-D array of length {n}, aligned with pool_ids",
                        fix="pass one value per pool sample, in the order of pool_ids",
                    )
                )
            extras[key] = arr
        self.extras = extras

    # -- label helpers --------------------------------------------------------------------------
    @property
    def n_pool(self) -> int:
        return int(self.pool_ids.shape[0])

    @property
    def labeled_mask(self) -> np.ndarray:
        """``(N,)`` bool, True where a label is known."""
        if "labeled_mask" not in self._cache:
            self._cache["labeled_mask"] = self.labels >= 0
        return self._cache["labeled_mask"]

    @property
    def n_labeled(self) -> int:
        return int(np.count_nonzero(self.labeled_mask))

    @property
    def n_unlabeled(self) -> int:
        return self.n_pool - self.n_labeled

    def labeled_positions(self) -> np.ndarray:
        """``(L,)`` int64 positions (rows of ``features``) of the labeled samples, ascending."""
        if "labeled_positions" not in self._cache:
            self._cache["labeled_positions"] = np.flatnonzero(self.labeled_mask)
        return self._cache["labeled_positions"]

    def unlabeled_positions(self) -> np.ndarray:
        """``(U,)`` int64 positions (rows of ``features``) of the unlabeled samples, ascending."""
        if "unlabeled_positions" not in self._cache:
            self._cache["unlabeled_positions"] = np.flatnonzero(~self.labeled_mask)
        return self._cache["unlabeled_positions"]

    # -- model helpers --------------------------------------------------------------------------
    def require_model(self, who: str) -> Scorer:
        """The model, or ConfigError naming ``who`` needs it."""
        if self.model is None:
            raise ConfigError(
                problem(
                    f"{who} needs a trained proxy model but the context has none",
                    allowed="a context with model= set, or a cold-start strategy",
                    fix="train the proxy on the labeled set first, or use a cold-start strategy "
                    "(e.g. 'random') for the first round",
                )
            )
        return self.model

    def _run_model(
        self, method: str, width: int | None, positions: np.ndarray | None = None, **kwargs: Any
    ) -> np.ndarray:
        model = self.require_model(f"SelectionContext.{method}")
        fn = getattr(model, method, None)
        if fn is None:
            raise ConfigError(
                problem(
                    f"the model {type(model).__name__} has no method {method}()",
                    allowed="a model following the Scorer protocol (predict_proba, embed; "
                    "predict_proba_mc for MC-dropout strategies)",
                    fix="wrap the model so that it has these methods",
                )
            )
        positions = self.unlabeled_positions() if positions is None else positions
        reduce = kwargs.pop("reduce", None)
        seeds = kwargs.pop("seeds", None)
        parts = []
        buf: np.ndarray | None = None  # the gathered rows of every chunk: one array, its pages faulted in once
        step = self.chunk_size
        per_row = method != "predict_proba_mc"  # outputs per row (MC draws one seed per chunk)
        if per_row and isinstance(self.features, np.ndarray):
            # per-row outputs: any chunking gives the same result; a gather buffer of at most
            # GATHER_BYTES stays on the heap (glibc maps larger blocks afresh, page faults and all)
            step = max(1, min(step, GATHER_BYTES // max(1, self.features.shape[1] * self.features.itemsize)))
        for i, start in enumerate(range(0, positions.size, step)):
            rows = positions[start : start + step]
            if seeds is not None:
                kwargs["random_state"] = int(seeds[i])
            span = dense_span(rows) if per_row else None
            if span is None and isinstance(self.features, np.ndarray):
                if buf is None:
                    shape = (min(step, positions.size), self.features.shape[1])
                    buf = np.empty(shape, dtype=self.features.dtype)
                xb = np.take(self.features, rows, axis=0, out=buf[: rows.size], mode="clip")
                out = np.asarray(fn(xb, **kwargs))
                if np.may_share_memory(out, buf):  # a model that returns (a view of) its input
                    out = out.copy()
            elif span is None:
                out = np.asarray(fn(np.asarray(self.features[rows]), **kwargs))
            else:  # a slice of nearly only these rows: read in place, the few others dropped after
                out = np.asarray(fn(np.asarray(self.features[span]), **kwargs))
                given = span.stop - span.start
                if out.ndim != 2 or out.shape[0] != given:
                    raise ConfigError(
                        problem(
                            f"model.{method} returned shape {out.shape} for {given} rows",
                            allowed=f"shape ({given}, {width if width else 'H'})",
                            fix="check the model's output layer and the number of classes",
                        )
                    )
                out = out[rows - span.start]
            if method == "predict_proba_mc":
                if out.ndim != 3 or out.shape[1:] != (rows.size, width):
                    raise ConfigError(
                        problem(
                            f"model.predict_proba_mc returned shape {out.shape} for {rows.size} rows",
                            allowed=f"shape (T, {rows.size}, {width})",
                            fix="check the model's output layer and the number of classes",
                        )
                    )
                if reduce is not None:
                    out = np.asarray(reduce(out))
                parts.append(out)
                continue
            if out.ndim != 2 or out.shape[0] != rows.size or (width and out.shape[1] != width):
                want = f"({rows.size}, {width if width else 'H'})"
                raise ConfigError(
                    problem(
                        f"model.{method} returned shape {out.shape} for {rows.size} rows",
                        allowed=f"shape {want}",
                        fix="check the model's output layer and the number of classes",
                    )
                )
            parts.append(out)
        if not parts:
            return np.empty((0, width or 0), dtype=np.float32)
        return np.concatenate(parts, axis=1 if method == "predict_proba_mc" and reduce is None else 0)

    def probs(self) -> np.ndarray:
        """``(U, C)`` class probabilities of the unlabeled rows, ``unlabeled_positions()`` order."""
        if "probs" not in self._cache:
            self._cache["probs"] = self._run_model("predict_proba", self.n_classes)
        return self._cache["probs"]

    def embeddings(self) -> np.ndarray:
        """``(U, H)`` hidden activations of the unlabeled rows (``unlabeled_positions()`` order)."""
        if "embeddings" not in self._cache:
            self._cache["embeddings"] = self._run_model("embed", None)
        return self._cache["embeddings"]

    def probs_at(self, idx: np.ndarray) -> np.ndarray:
        """``probs()[idx]`` (``idx``: indices into the unlabeled rows), computed for those rows
        only unless every row's are cached: a strategy that scores a sample of the pool pays for
        the sample."""
        return self._unlabeled_at("probs", "predict_proba", self.n_classes, idx)

    def embeddings_at(self, idx: np.ndarray) -> np.ndarray:
        """``embeddings()[idx]``, computed for those rows only unless every row's are cached."""
        return self._unlabeled_at("embeddings", "embed", None, idx)

    def _unlabeled_at(self, key: str, method: str, width: int | None, idx: np.ndarray) -> np.ndarray:
        if key in self._cache:
            return self._cache[key][idx]
        return self._run_model(method, width, self.unlabeled_positions()[idx])

    def embeddings_of(self, positions: np.ndarray) -> np.ndarray:
        """``(len(positions), H)`` hidden activations of any rows (labeled ones too), uncached."""
        return self._run_model("embed", None, np.asarray(positions, dtype=np.int64))

    def offers_consistent_masks(self) -> bool:
        """Whether the model's ``predict_proba_mc`` takes ``consistent`` (one set of T masks for
        every row); False when it has no ``predict_proba_mc``."""
        fn = getattr(self.require_model("SelectionContext.probs_mc"), "predict_proba_mc", None)
        return fn is not None and "consistent" in inspect.signature(fn).parameters

    def _check_consistent_masks(self) -> None:
        fn = getattr(self.require_model("SelectionContext.probs_mc"), "predict_proba_mc", None)
        if fn is not None and not self.offers_consistent_masks():
            raise ConfigError(
                problem(
                    f"consistent MC-dropout masks asked of a {type(self.model).__name__}, whose "
                    "predict_proba_mc takes no 'consistent' argument",
                    allowed="a model whose predict_proba_mc(X, n_samples, *, random_state, consistent) draws "
                    "one set of T masks for every row when consistent=True (ProxyMLP, HeadScorer)",
                    fix="use masks='independent', or add the argument to the model",
                )
            )

    def probs_mc(
        self,
        n_samples: int,
        rng: np.random.Generator,
        *,
        reduce: Callable[[np.ndarray], np.ndarray] | None = None,
        consistent: bool = False,
    ) -> np.ndarray:
        """MC-dropout probabilities of the unlabeled rows (``unlabeled_positions()`` order).

        Calls ``model.predict_proba_mc(X_chunk, n_samples, random_state=seed)`` per chunk of
        ``chunk_size`` rows, one seed per chunk drawn from ``rng`` (uncached: each call samples).

        Args:
            n_samples: T, the number of dropout masks.
            rng: the source of the per-chunk seeds.
            reduce: if given, maps each chunk's ``(T, c, C)`` to ``(c,)`` scores, so that only
                ``T x chunk_size x C`` floats are alive at once.
            consistent: the same T masks for every row ("consistent MC dropout", Kirsch et al.,
                "BatchBALD", NeurIPS 2019): one seed for every chunk and ``consistent=True`` passed
                to the model, so the result does not depend on ``chunk_size``.

        Returns:
            ``(T, U, C)`` probabilities, or the ``(U,)`` reduced scores.
        """
        if not _is_int(n_samples) or n_samples < 1:
            raise ConfigError(problem(f"n_samples={n_samples!r}", allowed="an int >= 1", fix="pass e.g. 20"))
        n_chunks = -(-self.n_unlabeled // self.chunk_size)
        extra: dict[str, Any] = {}
        if consistent:
            seeds = np.full(n_chunks, rng.integers(0, 2**63 - 1))
            extra["consistent"] = True
            self._check_consistent_masks()
        else:
            seeds = rng.integers(0, 2**63 - 1, size=n_chunks)
        out = self._run_model(
            "predict_proba_mc", self.n_classes, None, n_samples=int(n_samples), reduce=reduce, seeds=seeds, **extra
        )
        if out.size == 0:
            return np.empty((0,) if reduce is not None else (n_samples, 0, self.n_classes), dtype=np.float32)
        return out


class Strategy(Extension, ABC):
    """Base class of every selection strategy.

    Subclasses set ``name``, ``requires`` and ``cold_start``, take their parameters as keyword-only
    ``__init__`` arguments stored untouched under the same names, declare what each accepts in
    ``_parameter_constraints`` (:mod:`alcore.registry`), and implement :meth:`_select_positions`.
    The public :meth:`select` validates the parameters and the request, checks what the strategy
    requires, and checks the answer, so no strategy repeats that work.
    """

    name: ClassVar[str]
    #: Subset of :data:`REQUIREMENTS`. The loop reads it to know whether to train a proxy.
    requires: ClassVar[frozenset[str]] = frozenset()
    #: True if the strategy can pick with no label and no model (round 1).
    cold_start: ClassVar[bool] = False

    def select(self, ctx: SelectionContext, n: int, *, random_state: RandomState) -> np.ndarray:
        """Pick ``n`` unlabeled samples.

        Args:
            ctx: the round's context.
            n: how many to pick, an int >= 1.
            random_state: seed or Generator; every random choice (tie-breaks included) draws
                from it, so the same seed gives the same ids.

        Returns:
            ``(n,)`` int64 pool ids, distinct, all unlabeled in ``ctx``, in selection order
            (most wanted first where the strategy ranks).

        Raises:
            ConfigError: ``n`` is not an int >= 1, or the context lacks what the strategy needs.
            PoolExhaustedError: ``n`` is larger than the number of unlabeled samples.
        """
        self._validate_params()
        if not _is_int(n) or n < 1:
            raise ConfigError(
                problem(
                    f"n={n!r} samples asked of strategy {self.name!r}",
                    allowed="an int >= 1",
                    fix="ask for a positive number of samples",
                )
            )
        n = int(n)
        n_unlabeled = ctx.n_unlabeled
        if n > n_unlabeled:
            raise PoolExhaustedError(
                problem(
                    f"strategy {self.name!r} was asked for {n} samples but only {n_unlabeled} remain unlabeled",
                    allowed=f"n <= {n_unlabeled}",
                    fix="lower the budget of this round or stop the loop",
                )
            )
        self._check_requirements(ctx)
        rng = check_random_state(random_state)
        with _threads_for(ctx):
            positions = np.asarray(self._select_positions(ctx, n, rng), dtype=np.int64)
        self._check_answer(ctx, n, positions)
        return ctx.pool_ids[positions]

    def _check_requirements(self, ctx: SelectionContext) -> None:
        if not self.cold_start and ctx.n_labeled == 0:
            raise ConfigError(
                problem(
                    f"strategy {self.name!r} needs labeled samples but the context has none",
                    allowed="a cold-start strategy (e.g. 'random') in the first round",
                    fix="use random initial labels (the loop does so in round 1) or a cold-start strategy",
                )
            )
        if self.requires & {"model", "embeddings", "mc_dropout"}:
            ctx.require_model(f"strategy {self.name!r}")
        missing = sorted((self.requires & EXTRAS) - set(ctx.extras))
        if missing:
            raise ConfigError(
                problem(
                    f"strategy {self.name!r} needs {', '.join(missing)} but the context has no such extras",
                    allowed="a context with extras={name: (N,) array} for each",
                    fix="run the pretext stage first (the pipeline does so when the strategy needs it)",
                )
            )

    def _check_answer(self, ctx: SelectionContext, n: int, positions: np.ndarray) -> None:
        # A strategy bug, not a user error: say which strategy broke the contract.
        ok = (
            positions.shape == (n,)
            and (n == 0 or (positions.min() >= 0 and positions.max() < ctx.n_pool))
            and np.unique(positions).size == n
        )
        if ok:
            ok = not ctx.labeled_mask[positions].any()
        if not ok:
            raise AlcoreError(
                f"strategy {self.name!r} broke its contract: it must return {n} distinct positions of unlabeled samples"
            )

    @abstractmethod
    def _select_positions(self, ctx: SelectionContext, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` distinct positions (rows of ``ctx.features``) of unlabeled samples.

        Called only after :meth:`select` checked ``1 <= n <= ctx.n_unlabeled`` and the
        requirements.
        """


STRATEGIES: Registry[type[Strategy]] = Registry("strategy", where="al.strategy_params")


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build the strategy registered as ``name`` with ``params`` (checked against what it declares).

    >>> make_strategy("margin")
    Margin()
    """
    return STRATEGIES.create(name, **params)
