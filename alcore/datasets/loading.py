"""The dataset registry, the parameters every loader shares, and seeded stratified splitting.

A loader is a function of keyword-only parameters that returns a :class:`Dataset`. Registering it
with :func:`register_dataset` adds the common parameters (``max_pool``, ``max_test``,
``subset_seed``), checks parameter names, validates the result (non-empty splits, unique ids,
labels in the class set) and records the parameters actually used in ``Dataset.params``.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from alcore.datasets.base import Dataset, Split
from alcore.errors import ConfigError, DataError, problem
from alcore.registry import Registry

__all__ = [
    "DATASETS",
    "DatasetLoader",
    "check_bool",
    "check_fraction",
    "check_int",
    "in_memory_dataset",
    "load_dataset",
    "register_dataset",
    "stratified_split",
    "stratified_subsample",
]

DatasetLoader = Callable[..., Dataset]

#: Every dataset loader, by name.
DATASETS: Registry[DatasetLoader] = Registry("dataset")

_KW = inspect.Parameter.KEYWORD_ONLY
#: Parameters that every registered loader accepts; applied after the loader returns.
COMMON_PARAMS: tuple[inspect.Parameter, ...] = (
    inspect.Parameter("max_pool", _KW, default=None, annotation="int | None"),
    inspect.Parameter("max_test", _KW, default=None, annotation="int | None"),
    inspect.Parameter("subset_seed", _KW, default=0, annotation="int"),
)
#: Parameters that do not change the data, left out of ``Dataset.params`` (and the fingerprint).
_NOT_RECORDED = frozenset({"download"})


# --------------------------------------------------------------------------- parameter checks


def check_int(dataset: str, name: str, value: Any, *, minimum: int | None = None) -> int:
    """``value`` as an int (bools refused), at least ``minimum``; else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(
            problem(
                f"Dataset {dataset!r}: parameter {name!r} is {value!r}",
                allowed="an integer" + (f" >= {minimum}" if minimum is not None else ""),
                fix=f"set {name} to an integer",
            )
        )
    if minimum is not None and value < minimum:
        raise ConfigError(
            problem(
                f"Dataset {dataset!r}: parameter {name!r} is {value}",
                allowed=f"an integer >= {minimum}",
                fix=f"set {name} to at least {minimum}",
            )
        )
    return int(value)


def check_fraction(dataset: str, name: str, value: Any) -> float:
    """``value`` as a float strictly between 0 and 1; else :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        ok = False
    else:
        ok = 0.0 < float(value) < 1.0
    if not ok:
        raise ConfigError(
            problem(
                f"Dataset {dataset!r}: parameter {name!r} is {value!r}",
                allowed="a number strictly between 0 and 1",
                fix=f"set {name} to e.g. 0.2",
            )
        )
    return float(value)


def check_bool(dataset: str, name: str, value: Any) -> bool:
    """``value`` if it is a real bool (not the string ``"false"``); else :class:`ConfigError`."""
    if not isinstance(value, bool | np.bool_):
        raise ConfigError(
            problem(
                f"Dataset {dataset!r}: parameter {name!r} is {value!r}",
                allowed="true or false",
                fix=f"set {name} to a boolean",
            )
        )
    return bool(value)


def _bind(dataset: str, sig: inspect.Signature, params: Mapping[str, Any]) -> dict[str, Any]:
    """Match ``params`` to ``sig``: unknown or missing names raise :class:`ConfigError`."""
    allowed = ", ".join(sig.parameters) or "(none)"
    unknown = [k for k in params if k not in sig.parameters]
    if unknown:
        raise ConfigError(
            problem(
                f"Unknown parameter(s) {', '.join(map(repr, unknown))} for dataset {dataset!r}",
                allowed=allowed,
                fix="remove them or use one of the allowed parameters",
            )
        )
    bound: dict[str, Any] = {}
    for p in sig.parameters.values():
        if p.name in params:
            bound[p.name] = params[p.name]
        elif p.default is inspect.Parameter.empty:
            raise ConfigError(
                problem(
                    f"Dataset {dataset!r} needs parameter {p.name!r}, which was not given",
                    allowed=allowed,
                    fix=f"pass {p.name}=... (in params.yaml: data.{p.name})",
                )
            )
        else:
            bound[p.name] = p.default
    return bound


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# --------------------------------------------------------------------------- registration


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a loader of keyword-only parameters under ``name``.

    The registered function (also what the decorator returns) accepts the loader's parameters
    plus :data:`COMMON_PARAMS`, and returns the loader's :class:`Dataset` subsampled, validated
    and with ``name`` and ``params`` filled in.
    """

    def decorator(fn: DatasetLoader) -> DatasetLoader:
        own = inspect.signature(fn)
        for p in own.parameters.values():
            if p.kind is not _KW:
                raise TypeError(f"dataset loader {name!r}: parameter {p.name!r} must be keyword-only")
        sig = own.replace(parameters=[*own.parameters.values(), *COMMON_PARAMS])

        @functools.wraps(fn)
        def loader(**params: Any) -> Dataset:
            bound = _bind(name, sig, params)
            common = {p.name: bound.pop(p.name) for p in COMMON_PARAMS}
            max_pool = common["max_pool"]
            max_test = common["max_test"]
            if max_pool is not None:
                check_int(name, "max_pool", max_pool, minimum=1)
            if max_test is not None:
                check_int(name, "max_test", max_test, minimum=1)
            subset_seed = check_int(name, "subset_seed", common["subset_seed"], minimum=0)
            ds = fn(**bound)
            ds = _subsample(ds, max_pool, max_test, subset_seed)
            recorded = {k: _jsonable(v) for k, v in {**bound, **common}.items() if k not in _NOT_RECORDED}
            ds = dataclasses.replace(ds, name=name, params=recorded)
            validate_dataset(ds)
            return ds

        loader.__signature__ = sig  # type: ignore[attr-defined]
        DATASETS.register(name)(loader)
        return loader

    return decorator


def load_dataset(name: str, **params: Any) -> Dataset:
    """Load the registered dataset ``name`` with keyword ``params``.

    Raises:
        UnknownNameError: ``name`` is not registered (the message lists the valid names).
        ConfigError: a parameter is unknown, missing or of the wrong type.
        DataError: the data cannot be read or is invalid.
    """
    return DATASETS.get(name)(**params)


# --------------------------------------------------------------------------- splitting


def _allocate(counts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """How many of each class to take so the ``k`` taken follow ``counts`` (largest remainder).

    Ties between equal remainders are broken by ``rng``. Returns ``(C,)`` int64 summing to ``k``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    k = min(int(k), total)
    quota = counts * (k / total) if total else np.zeros(len(counts))
    take = np.minimum(np.floor(quota).astype(np.int64), counts)
    rest = k - int(take.sum())
    if rest > 0:
        order = np.lexsort((rng.random(len(counts)), -(quota - take)))
        order = order[take[order] < counts[order]]
        take[order[:rest]] += 1
    return take


def stratified_subsample(labels: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of ``k`` samples drawn per class in proportion to ``labels``.

    Args:
        labels: ``(N,)`` class indices.
        k: how many to keep (capped at N).
        rng: the only source of randomness.

    Returns:
        ``(min(k, N),)`` int64 positions into ``labels``, sorted ascending.
    """
    labels = np.asarray(labels)
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse)
    take = _allocate(counts, k, rng)
    by_class = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    chosen = [rng.permutation(members)[:n] for members, n in zip(by_class, take, strict=True)]
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(0, np.int64)


def stratified_split(
    labels: np.ndarray, test_fraction: float, rng: np.random.Generator, *, dataset: str = "?"
) -> tuple[np.ndarray, np.ndarray]:
    """Split positions into pool and test, each class in proportion ``test_fraction``.

    Args:
        labels: ``(N,)`` class indices.
        test_fraction: share of the samples that go to the test set, in (0, 1).
        rng: the only source of randomness.

    Returns:
        ``(pool_positions, test_positions)``: disjoint, sorted int64 arrays covering ``range(N)``.

    Raises:
        DataError: either side would be empty.
    """
    n = len(labels)
    n_test = int(round(test_fraction * n))
    if n_test == 0 or n_test == n:
        raise DataError(
            problem(
                f"Dataset {dataset!r}: splitting {n} samples with test_fraction={test_fraction} "
                f"leaves an empty {'test set' if n_test == 0 else 'pool'}",
                allowed="a split with at least one sample on each side",
                fix="add samples or change test_fraction",
            )
        )
    test = stratified_subsample(labels, n_test, rng)
    pool = np.setdiff1d(np.arange(n, dtype=np.int64), test, assume_unique=True)
    return pool, test


def _subsample(ds: Dataset, max_pool: int | None, max_test: int | None, subset_seed: int) -> Dataset:
    pool, test = ds.pool, ds.test
    if max_pool is not None and max_pool < len(pool):
        rng = np.random.default_rng([subset_seed, 0])
        pool = pool.subset(stratified_subsample(pool.labels, max_pool, rng))
    if max_test is not None and max_test < len(test):
        rng = np.random.default_rng([subset_seed, 1])
        test = test.subset(stratified_subsample(test.labels, max_test, rng))
    if pool is ds.pool and test is ds.test:
        return ds
    return dataclasses.replace(ds, pool=pool, test=test)


# --------------------------------------------------------------------------- building, checking


def in_memory_dataset(
    name: str,
    classes: tuple[str, ...] | list[str],
    pool: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Dataset:
    """A :class:`Dataset` from ``(ids, labels, images)`` triples of the pool and the test set.

    ``ids`` and ``labels`` are ``(N,)`` (cast to int64), ``images`` ``(N, H, W[, C])`` uint8.
    """

    def split(ids: np.ndarray, labels: np.ndarray, images: np.ndarray) -> Split:
        return Split(
            ids=np.asarray(ids, dtype=np.int64),
            labels=np.asarray(labels, dtype=np.int64),
            images=images,
        )

    return Dataset(name=name, classes=tuple(classes), pool=split(*pool), test=split(*test))


def validate_dataset(ds: Dataset) -> None:
    """Check the invariants every dataset keeps; raise :class:`DataError` on the first broken one.

    Non-empty pool and test, ``(N,)`` int64 ids unique across both, labels in ``[0, C)`` (and -1
    in the pool: not labeled yet), one image or path per id.
    """
    for side, split in (("pool", ds.pool), ("test", ds.test)):
        n = len(split)
        if n == 0:
            raise DataError(
                problem(
                    f"Dataset {ds.name!r} has an empty {side}",
                    allowed="at least one sample in the pool and in the test set",
                    fix="check the data source, the split column or test_fraction",
                )
            )
        if split.ids.shape != (n,) or split.labels.shape != (n,):
            raise DataError(
                f"Dataset {ds.name!r} {side}: ids {split.ids.shape} and labels {split.labels.shape} must both be ({n},)"
            )
        if (split.images is None) == (split.paths is None):
            raise DataError(f"Dataset {ds.name!r} {side}: exactly one of images or paths is set")
        m = len(split.images) if split.images is not None else len(split.paths or ())
        if m != n:
            raise DataError(f"Dataset {ds.name!r} {side}: {m} images for {n} ids")
        lowest = -1 if side == "pool" else 0  # -1: a pool image nobody has labeled yet
        bad = (split.labels < lowest) | (split.labels >= ds.n_classes)
        if bad.any():
            raise DataError(
                problem(
                    f"Dataset {ds.name!r} {side}: {int(bad.sum())} label(s) outside the class set, "
                    f"e.g. {int(split.labels[bad][0])}",
                    allowed=f"labels in [0, {ds.n_classes})" + (" or -1 (unlabeled)" if side == "pool" else ""),
                    fix="fix the labels or the class list",
                )
            )
    if ds.n_classes == 0:
        raise DataError(problem(f"Dataset {ds.name!r} has no classes", fix="check the data source"))
    seen = np.concatenate([ds.pool.labels[ds.pool.labels >= 0], ds.test.labels])
    empty = np.setdiff1d(np.arange(ds.n_classes), seen)
    if empty.size:
        import warnings

        names = ", ".join(repr(ds.classes[i]) for i in empty[:10].tolist()) + (", ..." if empty.size > 10 else "")
        warnings.warn(
            f"Dataset {ds.name!r}: {empty.size} of its {ds.n_classes} classes have no image ({names}): a model "
            "would learn a class that never occurs. If the labels do not start at 0 (EMNIST letters run 1..26), "
            "pass data.params.labels=values (npz) to map the label values present onto the classes; otherwise "
            "check the labels and the class list",
            UserWarning,
            stacklevel=2,
        )
    all_ids = np.concatenate([ds.pool.ids, ds.test.ids])
    uniq, counts = np.unique(all_ids, return_counts=True)
    if len(uniq) != len(all_ids):
        raise DataError(
            problem(
                f"Dataset {ds.name!r}: {int((counts > 1).sum())} sample id(s) occur more than "
                "once, "
                f"e.g. {int(uniq[counts > 1][0])}",
                allowed="ids unique across pool and test",
                fix="give every sample its own id",
            )
        )
