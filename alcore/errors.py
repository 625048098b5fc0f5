"""The error hierarchy of alcore.

Every error a user can cause says three things: what was given, what is allowed, and how to fix
it. Use :func:`problem` to build such a message so they all read the same way.
"""

from __future__ import annotations

__all__ = [
    "AlcoreError",
    "ConfigError",
    "UnknownNameError",
    "DataError",
    "WeightsError",
    "FeatureMismatchError",
    "LabelError",
    "LabelImportError",
    "PoolExhaustedError",
    "BudgetExceededError",
    "ExperimentLockedError",
    "StorageError",
    "StateChangedError",
    "problem",
]


def problem(what: str, allowed: str | None = None, fix: str | None = None) -> str:
    """Format an error message: the problem, what is allowed, and the fix."""
    parts = [what.rstrip(".") + "."]
    if allowed:
        parts.append(f"Allowed: {allowed.rstrip('.')}.")
    if fix:
        parts.append(f"Fix: {fix.rstrip('.')}.")
    return " ".join(parts)


class AlcoreError(Exception):
    """Base class of every error alcore raises on purpose."""


class ConfigError(AlcoreError, ValueError):
    """A parameter value is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(AlcoreError):
    """A dataset cannot be read: missing root, empty pool, unreadable file."""


class WeightsError(AlcoreError):
    """An encoder's weights cannot be had or do not fit the architecture."""


class FeatureMismatchError(AlcoreError):
    """Features were computed with a different spec than the one asked for."""


class LabelError(AlcoreError, ValueError):
    """A label event breaks an invariant: unknown id, duplicate, label outside the class set."""


class LabelImportError(LabelError):
    """A file of annotations cannot be imported."""


class PoolExhaustedError(AlcoreError):
    """More samples were asked for than remain unlabeled."""


class BudgetExceededError(AlcoreError):
    """A budget schedule asks for more labels than the pool holds."""


class ExperimentLockedError(AlcoreError):
    """Another process holds the experiment's lock."""


class StateChangedError(AlcoreError):
    """The experiment's state file vanished or was replaced while a run held the experiment."""


class StorageError(AlcoreError, OSError):
    """A file cannot be written: the disk, a quota or a file-size limit is full."""
