"""One explicit registry per extension point (strategies, datasets, encoders, oracles, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from alcore.errors import UnknownNameError, problem

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of factories.

    >>> strategies = Registry("strategy")
    >>> @strategies.register("random")
    ... class Random: ...
    >>> strategies.get("random")
    <class 'alcore.registry.Random'>
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
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

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
