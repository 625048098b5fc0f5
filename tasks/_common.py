"""What every task shares: the one cache policy, the result options, retries, the GPU tag.

A task wraps one step of :mod:`alcore.steps` under the step's own name. Its cache key is derived,
never written by hand: :func:`alcore.keys.cache_key` of the task's name, the code of the ``alcore``
and ``tasks`` packages, and every input except those that say where and how the work runs
(:data:`alcore.keys.IGNORED_INPUTS`). Results are plain data persisted as JSON: no task result is
ever pickled, so nothing in ``.prefect/storage`` can run code when it is read back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect.cache_policies import CachePolicy

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
        return cache_key(task_ctx.task.name, inputs, code=code_digest())


CACHE = DerivedKey()

CACHED: dict[str, Any] = {"cache_policy": CACHE, "persist_result": True, "result_serializer": "json"}
"""Options of every cached task: the derived key, results persisted as JSON."""

# Retries for work whose failure can be transient (I/O, a busy GPU, a preempted worker).
RETRY = {"retries": 2, "retry_delay_seconds": 5}

GPU_TAG = "gpu"
"""The tag of every task that wants a GPU (pre-training, extraction, fine-tuning): a tag concurrency
limit (``prefect concurrency-limit create gpu N``) caps how many run at once on the GPU pool's hosts."""
