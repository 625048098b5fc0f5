"""Cache keys derived from canonical inputs: the same inputs give the same key in any process, on
any machine; any input that can change a result changes the key.

A key is the SHA-256 of a canonical byte encoding of the inputs (never Python's ``hash()``, never a
pickle): numpy arrays by dtype, shape and bytes; pydantic models by their JSON dump with sorted
keys; file references (:func:`ref`) by the digest of their content; mappings by sorted key; the
code by the digest of its source files. An input with no canonical form raises ``TypeError``
instead of being keyed by something that varies between processes.

The inputs that must not change a result are left out here, in one place: :data:`IGNORED_INPUTS`.

>>> import numpy as np
>>> cache_key("select", {"ids": np.arange(3), "seed": 1}) == cache_key("select", {"seed": 1, "ids": np.arange(3)})
True
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from alcore._io import file_digest

__all__ = ["IGNORED_INPUTS", "cache_key", "canonical_bytes", "is_ref", "ref", "source_digest"]

IGNORED_INPUTS = frozenset({"device", "progress", "memory_budget", "threads"})
"""Inputs that say *where and how* a step runs, never *what* it computes: the device (CPU or a
GPU), progress bars, the memory budget above which features are read by memory map, and the torch
thread count of an extraction part. Every cache key leaves them out; nothing else is left out."""


def ref(path: str | os.PathLike[str]) -> dict[str, str]:
    """An artifact reference: a file's path and the SHA-256 of its content.

    In a cache key a reference stands for its content alone: the same file content under another
    path (another project folder, another machine) gives the same key.
    """
    return {"path": str(path), "sha256": file_digest(path)}


def is_ref(obj: Any) -> bool:
    """Whether ``obj`` is an artifact reference made by :func:`ref`."""
    return isinstance(obj, Mapping) and set(obj) == {"path", "sha256"}


def _feed(h: Any, obj: Any) -> None:  # noqa: C901 - one branch per canonical type, in one place
    """Update ``h`` with the canonical encoding of ``obj`` (type-tagged, length-prefixed)."""

    def put(tag: bytes, payload: bytes) -> None:
        h.update(tag + len(payload).to_bytes(8, "little") + payload)

    if obj is None:
        put(b"N", b"")
    elif isinstance(obj, bool | np.bool_):
        put(b"B", b"1" if obj else b"0")
    elif isinstance(obj, int | np.integer):
        put(b"I", str(int(obj)).encode())
    elif isinstance(obj, float | np.floating):
        f = float(obj)
        put(b"F", b"nan" if math.isnan(f) else f.hex().encode())
    elif isinstance(obj, str):
        put(b"S", obj.encode("utf-8"))
    elif isinstance(obj, bytes):
        put(b"Y", obj)
    elif isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype.hasobject:
            raise TypeError("an object array has no canonical form; pass a numeric array")
        put(b"A", f"{a.dtype.str}|{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    elif is_ref(obj):
        put(b"R", str(obj["sha256"]).encode())
    elif _is_pydantic(obj):
        put(b"M", f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        put(b"J", json.dumps(obj.model_dump(mode="json"), sort_keys=True).encode())
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        put(b"D", f"{type(obj).__module__}.{type(obj).__qualname__}".encode())
        _feed(h, {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)})
    elif isinstance(obj, Mapping):
        items = sorted(((str(k), v) for k, v in obj.items()), key=lambda kv: kv[0])
        put(b"{", str(len(items)).encode())
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, list | tuple):
        put(b"[", str(len(obj)).encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, set | frozenset):
        _feed(h, sorted(obj, key=lambda v: canonical_bytes(v)))
    elif isinstance(obj, Path):
        put(b"P", str(obj).encode())
    else:
        raise TypeError(
            f"{type(obj).__module__}.{type(obj).__qualname__} has no canonical form for a cache key; "
            "pass plain data (numbers, strings, arrays, pydantic models, file refs) instead"
        )


def _is_pydantic(obj: Any) -> bool:
    return hasattr(obj, "model_dump") and hasattr(obj, "model_dump_json") and not isinstance(obj, type)


def canonical_bytes(obj: Any) -> bytes:
    """The SHA-256 digest (raw bytes) of ``obj``'s canonical encoding."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.digest()


def cache_key(step: str, inputs: Mapping[str, Any], *, code: str = "") -> str:
    """The key of ``step`` run on ``inputs`` by the code whose digest is ``code``.

    :data:`IGNORED_INPUTS` are dropped; every other input is keyed canonically (``TypeError`` for
    one that has no canonical form).
    """
    h = hashlib.sha256()
    _feed(h, {"step": step, "code": code, "inputs": {k: v for k, v in inputs.items() if k not in IGNORED_INPUTS}})
    return h.hexdigest()


@functools.lru_cache(maxsize=8)
def _tree_digest(root: str) -> str:
    h = hashlib.sha256()
    base = Path(root)
    for p in sorted(base.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        _feed(h, str(p.relative_to(base).as_posix()))
        _feed(h, p.read_bytes())
    return h.hexdigest()


def source_digest(packages: Iterable[ModuleType]) -> str:
    """Digest of every ``.py`` file of ``packages`` (by path relative to each package and content):
    a change to any of them changes every key built with it. Memoised per process."""
    h = hashlib.sha256()
    for pkg in packages:
        root = Path(pkg.__file__ or "").parent
        _feed(h, pkg.__name__)
        _feed(h, _tree_digest(str(root)))
    return h.hexdigest()[:16]
