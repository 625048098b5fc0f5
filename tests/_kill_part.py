"""Dask worker preload for tests: the first attempt at part ``ALCORE_TEST_KILL_PART`` kills its worker.

``LocalCluster(preload=[this file])`` imports it in every worker process at start-up. The marker
file (``ALCORE_TEST_KILL_MARK``) makes the kill happen once across all workers and restarts: the
part's next attempt, on whichever worker Dask gives it to, runs normally.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path

import alcore.steps

# Dask may import a preload file more than once (into the same module): keep the real function once.
_real = getattr(alcore.steps, "_unpatched_extract_part", alcore.steps.extract_part)
alcore.steps._unpatched_extract_part = _real


@functools.wraps(_real)  # Prefect binds the task's parameters to this signature
def _kill_once(*args, **kwargs):
    bound = inspect.signature(_real).bind(*args, **kwargs).arguments
    shard = bound["shard"]
    mark = Path(os.environ["ALCORE_TEST_KILL_MARK"])
    if shard.index == int(os.environ["ALCORE_TEST_KILL_PART"]):
        try:
            fd = os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # exactly one attempt wins
        except FileExistsError:
            return _real(*args, **kwargs)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        # half a part on disk, as a worker killed mid-write leaves it
        out = Path(bound["out"])
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / f".{out.name}.killed.tmp").write_bytes(b"PAR1 half a file")
        os._exit(1)  # no cleanup, no exception: the process is gone, as under SIGKILL or OOM
    return _real(*args, **kwargs)


# The task reaches the worker pickled; its function, the library step, is pickled by reference,
# so it is looked up here.
alcore.steps.extract_part = _kill_once
