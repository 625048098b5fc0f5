"""The one base of every extension point: a registry of named entries, each declaring the
parameters it takes and the constraints on them, checked before any work starts.

Extension points are strategies, realignment triggers, oracles, pipelines (classes deriving from
:class:`Extension`), datasets (loader functions) and encoder architectures. An entry declares
``_parameter_constraints`` (scikit-learn's manner): parameter name -> a list of accepted forms,
any one of which may hold: an :class:`Interval`, an :class:`Options` set, ``"boolean"``, a type,
:class:`Each` (a list of such), or ``None``. :meth:`Registry.check` validates a name and its
parameters without building anything (``alcore check``, the first second of ``alcore run``);
:meth:`Registry.create` checks, then builds.

>>> strategies = Registry("strategy", where="al.strategy_params")
>>> @strategies.register("random")
... class Random(Extension): ...
>>> strategies.get("random")
<class 'alcore.registry.Random'>
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, ClassVar, Generic, TypeVar

from alcore.errors import ConfigError, UnknownNameError, problem

__all__ = [
    "Each",
    "Extension",
    "Integral",
    "Interval",
    "Options",
    "Real",
    "Registry",
    "check_params",
    "describe_constraints",
    "param_names",
]

T = TypeVar("T")


# ---------------------------------------------------------------- constraints
@dataclass(frozen=True)
class Interval:
    """Numbers of ``kind`` (``Integral`` or ``Real``) between ``low`` and ``high`` (``None``:
    unbounded); ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``."""

    kind: type
    low: float | None
    high: float | None
    closed: str = "both"

    def accepts(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.kind):
            return False
        if self.kind is Real and not math.isfinite(float(v)):
            return False
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return bool(lo_ok and hi_ok)

    def __str__(self) -> str:
        what = "an int" if self.kind is Integral else "a number"
        if self.low is not None and self.high is not None:
            left = "[" if self.closed in ("both", "left") else "("
            right = "]" if self.closed in ("both", "right") else ")"
            return f"{what} in {left}{self.low}, {self.high}{right}"
        if self.low is not None:
            return f"{what} {'>=' if self.closed in ('both', 'left') else '>'} {self.low}"
        if self.high is not None:
            return f"{what} {'<=' if self.closed in ('both', 'right') else '<'} {self.high}"
        return what


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def accepts(self, v: Any) -> bool:
        return any(v == o and type(v) is type(o) for o in self.values)

    def __str__(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


@dataclass(frozen=True)
class Each:
    """A list (or tuple) whose every item satisfies ``item``."""

    item: Any
    min_len: int = 0

    def accepts(self, v: Any) -> bool:
        return isinstance(v, list | tuple) and len(v) >= self.min_len and all(_accepts(self.item, x) for x in v)

    def __str__(self) -> str:
        return f"a list of {_describe(self.item)}" + (f" (at least {self.min_len})" if self.min_len else "")


def _accepts(c: Any, v: Any) -> bool:
    if c is None:
        return v is None
    if c == "boolean":
        return type(v) is bool or type(v).__name__ == "bool_"
    if isinstance(c, type):
        return isinstance(v, c) and not (c is not bool and isinstance(v, bool) and c in (int, float))
    return bool(c.accepts(v))


def _describe(c: Any) -> str:
    if c is None:
        return "null"
    if c == "boolean":
        return "true or false"
    if isinstance(c, type):
        return {str: "a string", int: "an int", float: "a number", dict: "a mapping", list: "a list"}.get(c, c.__name__)
    return str(c)


def describe_constraints(constraints: list[Any]) -> str:
    """The accepted forms as a person reads them: ``"a number in (0, 1], or null"``."""
    return ", or ".join(_describe(c) for c in constraints)


# ---------------------------------------------------------------- the base of extension classes
def param_names(target: Any) -> list[str]:
    """Keyword parameters a class's ``__init__`` or a function takes, in signature order."""
    fn = target.__init__ if isinstance(target, type) else target
    if fn is object.__init__:
        return []
    sig = inspect.signature(fn)
    return [
        p.name
        for p in sig.parameters.values()
        if p.name != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]


def check_params(target: Any, params: Mapping[str, Any], *, what: str, where: str) -> None:
    """Refuse unknown parameter names and values outside the declared constraints of ``target``
    (a class or a function; its ``_parameter_constraints``). ``what`` names the entry in the
    message (``"strategy 'probcover'"``), ``where`` where the user sets the parameters."""
    allowed = param_names(target)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ConfigError(
            problem(
                f"{what} takes no parameter {', '.join(map(repr, unknown))}",
                allowed=", ".join(allowed) if allowed else "no parameters",
                fix=f"remove or rename the parameter in {where}",
            )
        )
    constraints: Mapping[str, list[Any]] = getattr(target, "_parameter_constraints", {}) or {}
    for name, value in params.items():
        forms = constraints.get(name)
        if forms is not None and not any(_accepts(c, value) for c in forms):
            raise ConfigError(
                problem(
                    f"{what}: {name}={value!r}",
                    allowed=describe_constraints(list(forms)),
                    fix=f"set {name} in {where}",
                )
            )


class Extension:
    """The base of every extension class (strategies, triggers, oracles, pipelines), with
    scikit-learn manners: ``__init__`` takes keyword-only parameters and stores each one untouched
    under its own name; ``get_params()`` reads them back (it feeds MLflow); ``_parameter_constraints``
    declares what each parameter accepts, checked by :meth:`_validate_params` (at start-up through
    :meth:`Registry.check`, and again when the work starts)."""

    name: ClassVar[str]
    _parameter_constraints: ClassVar[dict[str, list[Any]]] = {}

    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the keyword parameters of ``__init__``, in signature order."""
        return param_names(cls)

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters: ``type(self)(**self.get_params())`` builds a twin."""
        return {name: getattr(self, name) for name in self.param_names()}

    def _validate_params(self) -> None:
        who = getattr(type(self), "name", type(self).__name__)
        check_params(type(self), self.get_params(), what=repr(who), where="its parameters")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


# ---------------------------------------------------------------- the registry
class Registry(Generic[T]):
    """A named collection of extension entries (classes or factory functions).

    ``kind`` names the extension point in messages; ``where`` says where a user sets an entry's
    parameters (``"al.strategy_params"``).
    """

    def __init__(self, kind: str, *, where: str = "its parameters") -> None:
        self.kind = kind
        self.where = where
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                problem(
                    f"Unknown {self.kind} {name!r}",
                    allowed=", ".join(sorted(self._entries)) or "(none registered)",
                    fix=f"use one of the registered {self.kind} names",
                )
            ) from None

    def check(self, name: str, params: Mapping[str, Any] | None = None) -> T:
        """The entry ``name``, after checking ``params`` against what it declares (nothing is built).

        Raises:
            UnknownNameError: ``name`` is not registered (the message lists the valid names).
            ConfigError: an unknown parameter, or a value outside its declared constraints.
        """
        entry = self.get(name)
        check_params(entry, dict(params or {}), what=f"{self.kind} {name!r}", where=self.where)
        return entry

    def create(self, name: str, **params: Any) -> Any:
        """Check ``params`` (see :meth:`check`), then build the entry ``name`` with them."""
        return self.check(name, params)(**params)  # type: ignore[operator]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
