"""What every task shares: the cache policy (inputs + task code + alcore's code) and artifact refs."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

import alcore
from alcore._io import file_digest


@functools.lru_cache(maxsize=1)
def library_digest() -> str:
    """Digest of every alcore source file: a library change invalidates every cached result."""
    h = hashlib.sha256()
    root = Path(alcore.__file__).parent
    for p in sorted(root.rglob("*.py")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class LibrarySource(CachePolicy):
    """Cache-key component: the alcore library's source (TASK_SOURCE covers only the task body)."""

    def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str:
        return library_digest()


CACHE = INPUTS + TASK_SOURCE + LibrarySource()
"""Keyed on the task's inputs, the task's code and the library's code."""

# Retries for work whose failure can be transient (I/O, a busy GPU, a preempted worker).
RETRY = {"retries": 2, "retry_delay_seconds": 5}

GPU_TAG = "gpu"
"""The tag of every task that wants a GPU (pre-training, extraction, fine-tuning): a tag concurrency
limit (``prefect concurrency-limit create gpu N``) caps how many run at once on the GPU pool's hosts."""


def ref(path: str | Path) -> dict[str, str]:
    """An artifact reference: its path and content digest (so the digest keys downstream caches)."""
    return {"path": str(path), "sha256": file_digest(path)}
