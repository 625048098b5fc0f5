"""Tasks: extract features of one split to Parquet, whole or in parts, and publish the parts."""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from alcore.config import DataCfg
from alcore.experiment import extract_and_save_features, extract_and_save_part
from alcore.shards import Shard, publish_parts, remove_stale_parts
from tasks._common import CACHE, GPU_TAG, RETRY, ref


@task(name="extract_features", cache_policy=CACHE, persist_result=True, tags=[GPU_TAG], **RETRY)
def extract_features(
    weights: dict[str, str],
    data: DataCfg,
    data_fingerprint: str,
    split: str,
    *,
    batch_size: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Features of ``split`` with an encoder file or a fine-tuned network file; returns ref + seconds."""
    seconds = extract_and_save_features(
        weights["path"], data, split, batch_size=batch_size, device=device, progress=progress, out=out
    )
    return {"features": ref(out), "seconds": seconds}


@task(
    name="extract_part",
    task_run_name="extract_part-{split}-{shard.index}",
    cache_policy=CACHE - "threads",  # the thread count does not change the floats
    persist_result=True,
    tags=[GPU_TAG],
    **RETRY,
)
def extract_part(
    weights: dict[str, str],
    data: DataCfg,
    data_fingerprint: str,
    split: str,
    shard: Shard,
    *,
    batch_size: int,
    device: str,
    threads: int | None,
    out: str,
) -> dict[str, Any]:
    """Part ``shard`` of ``split``'s features, written to ``out``; returns ref + seconds."""
    seconds = extract_and_save_part(
        weights["path"], data, split, shard, batch_size=batch_size, device=device, threads=threads, out=out
    )
    return {"part": ref(out), "seconds": seconds}


@task(name="publish_features", cache_policy=CACHE, persist_result=True, **RETRY)
def publish_features(parts: list[dict[str, Any]], *, out: str) -> dict[str, Any]:
    """Check the parts of one split (one spec, ids disjoint and complete) and write them as ``out``.

    ``seconds`` is the extraction's compute: the parts' seconds summed (what a ledger charges),
    not the wall time of the parallel run.
    """
    t0 = time.perf_counter()
    paths = [p["part"]["path"] for p in parts]
    publish_parts(paths, out)
    remove_stale_parts(out, keep=paths)
    return {
        "features": ref(out),
        "seconds": sum(p["seconds"] for p in parts),
        "parts": len(parts),
        "publish_seconds": time.perf_counter() - t0,
    }
