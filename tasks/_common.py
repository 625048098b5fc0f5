"""What every task shares: the one cache policy, the result options, retries, the GPU tag.

A task wraps one step of :mod:`alcore.steps` under the step's own name. Its cache key is derived,
never written by hand: :func:`alcore.keys.cache_key` of the task's name, the code of the ``alcore``
and ``tasks`` packages, and every input except those that say where and how the work runs
(:data:`alcore.keys.IGNORED_INPUTS`). Results are plain data persisted as JSON: no task result is
ever pickled. Prefect reads a stored record with the serializer *the record names* (a file planted
in ``.prefect/storage`` that names ``pickle`` would be unpickled, even by the check whether a cached
result exists), so the cache key of every cached task (:class:`DerivedKey`) checks the record stored under it first,
and moves anything but a plain-JSON record aside before Prefect looks the key up.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.filesystems import LocalFileSystem
from prefect.serializers import JSONSerializer

import alcore
import tasks
from alcore.keys import cache_key, source_digest


def code_digest() -> str:
    """Digest of the code a task runs: every source file of ``alcore`` and ``tasks``."""
    return source_digest([alcore, tasks])


@dataclass
class DerivedKey(CachePolicy):
    """The cache key of a task run: :func:`alcore.keys.cache_key` of the task's name, the code and
    the inputs (stable across processes, machines and hash seeds)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        key = cache_key(task_ctx.task.name, inputs, code=code_digest())
        refuse_unsafe_record(_stored_path(task_ctx, key))  # before Prefect looks the key up (and decodes it)
        return key


def _stored_path(task_ctx: Any, key: str) -> Path | None:
    """The file the task's result under ``key`` is kept in, when results are kept on a local disk."""
    storage = getattr(getattr(task_ctx, "result_store", None), "result_storage", None)
    if storage is None:
        from prefect.results import get_default_result_storage

        storage = get_default_result_storage(_sync=True)
    if not isinstance(storage, LocalFileSystem):
        return None  # a remote store: its access control is the guard
    return Path(storage.basepath or ".").expanduser() / key


CACHE = DerivedKey()

#: The only serializer a stored result may name: Prefect's JSON one with its own encoder and decoder.
SERIALIZER = JSONSerializer().model_dump(mode="json")


class RefusedResultError(ValueError):
    """A stored result record that alcore did not write (it could run code when decoded)."""


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    if "__class__" in d or "__exc_type__" in d:  # Prefect's decoder would import and call what it names
        raise RefusedResultError(f"it holds an encoded object ({d.get('__class__') or d.get('__exc_type__')})")
    return d


def refuse_unsafe_record(path: Path | None) -> None:
    """Leave ``path`` if it is missing or a result record as alcore's tasks write them (Prefect's
    JSON serializer, plain JSON data); else move it aside to ``<path>.refused`` (never decoded)
    and warn, naming the file and why: the task then runs again and writes its result there."""
    if path is None:
        return
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as e:  # unreadable: Prefect could not read it either
        content = str(e).encode()
    try:
        record = json.loads(content)
        serializer = record["metadata"]["serializer"] if isinstance(record, dict) else None
        if serializer != SERIALIZER:
            kind = serializer.get("type") if isinstance(serializer, dict) else serializer
            raise RefusedResultError(f"it names the serializer {kind!r}, not alcore's plain JSON")
        if not isinstance(record.get("result"), str):
            raise RefusedResultError("its result is not JSON text")
        json.loads(record["result"], object_hook=_plain)
    except RefusedResultError as e:
        reason = str(e)
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        reason = f"it is not a result record alcore wrote ({type(e).__name__})"
    else:
        return
    aside = path.with_name(path.name + ".refused")
    message = (
        f"Refused the cached result {path}: {reason}. It was not decoded (a planted file could run code) and is "
        f"kept as {aside.name} for inspection; the task runs again. Keep the result storage "
        f"({path.parent}, PREFECT_LOCAL_STORAGE_PATH) writable by you alone"
    )
    try:
        os.replace(path, aside)
    except OSError as e:  # it cannot be moved: stop rather than let Prefect decode it
        raise RefusedResultError(f"{message}. It could not be moved aside ({e}): remove it by hand") from None
    try:
        from prefect import get_run_logger

        get_run_logger().warning(message)
    except Exception:  # noqa: BLE001 - outside a run: the plain logger
        logging.getLogger("alcore.results").warning(message)


CACHED: dict[str, Any] = {"cache_policy": CACHE, "persist_result": True, "result_serializer": "json"}
"""Options of every cached task: the derived key, results persisted as JSON and read back only as
JSON (:meth:`DerivedKey.compute_key` checks the stored record first)."""

# Retries for work whose failure can be transient (I/O, a busy GPU, a preempted worker).
RETRY = {"retries": 2, "retry_delay_seconds": 5}

GPU_TAG = "gpu"
"""The tag of every task that wants a GPU (pre-training, extraction, fine-tuning): a tag concurrency
limit (``prefect concurrency-limit create gpu N``) caps how many run at once on the GPU pool's hosts."""
