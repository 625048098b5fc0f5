"""Sharded feature extraction: each split cut into parts, one ``extract_part`` task per part on a
Prefect task runner chosen by ``features.runner``, then one ``publish_features`` task per split.

The runner is a parameter, not a decorator argument: :func:`extract_all` runs the
``extract_sharded`` flow ``with_options(task_runner=task_runner(cfg))``. ``thread`` and ``process``
are Prefect's own local runners; ``dask`` is prefect-dask's ``DaskTaskRunner`` on a temporary
``LocalCluster`` of ``features.workers`` single-threaded worker processes, or on the scheduler at
``features.address``. A part whose worker dies is run again by Dask on another worker (and a part
that raises is retried by Prefect); parts are files named by their place, so a second run
overwrites, never duplicates, and the publish task checks that the ids are disjoint and complete.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from prefect import flow
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from alcore.config import DataCfg, FeaturesCfg, Params
from alcore.shards import part_path, plan_shards
from alcore.steps import load_data
from flows._util import ensure_artifact, is_fresh
from tasks.features import extract_features, extract_part, publish_features


def task_runner(cfg: FeaturesCfg) -> TaskRunner:
    """The Prefect task runner ``features.runner`` names (a new one: runners are single-use)."""
    if cfg.runner == "thread":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.runner == "process":
        return ProcessPoolTaskRunner(max_workers=cfg.workers)
    from prefect_dask import DaskTaskRunner

    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(
        cluster_class=local_cluster,
        cluster_kwargs={
            "n_workers": cfg.workers,
            "threads_per_worker": 1,  # one part at a time per worker process
            "processes": True,
            "dashboard_address": ":0",  # any free port: several clusters can share a machine
        },
    )


def local_cluster(**kwargs: Any) -> Any:
    """A ``distributed.LocalCluster`` whose workers keep glibc's default memory trimming.

    Dask's nannies set ``MALLOC_TRIM_THRESHOLD_=65536`` in their workers, which makes every large
    tensor a fresh ``mmap``: torch's convolutions then run at half speed or worse. The other
    variables Dask sets (``OMP_NUM_THREADS=1`` and the like) stay; each part sets its own torch threads.
    """
    import dask
    from distributed import LocalCluster

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return LocalCluster(**kwargs)


def part_threads(cfg: FeaturesCfg) -> int | None:
    """torch intra-op threads per part: ``features.torch_threads`` if set, else each local worker
    process gets its share of the cores.

    ``None`` (leave torch alone) otherwise: for the thread runner (one process: its threads share
    torch's pool) and for a running Dask cluster (its workers' own business).
    """
    if cfg.torch_threads:
        return cfg.torch_threads
    if cfg.runner == "thread" or cfg.address:
        return None
    return max(1, (os.cpu_count() or 1) // cfg.workers)


@contextlib.contextmanager
def shared_api() -> Iterator[None]:
    """Point task runs in other processes at this flow's Prefect API.

    Without ``PREFECT_API_URL`` the flow talks to a temporary server that its own process started;
    a Dask or process-pool worker, given the flow's settings with no URL, would start one of its
    own (seconds each, and a second writer of the same database). Inside this block the settings
    that travel with each task run name the flow's server.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with temporary_settings({PREFECT_API_URL: str(get_client(sync_client=True).api_url)}):
        yield


@flow(name="extract_sharded", validate_parameters=False)
def extract_sharded(
    weights: dict[str, str],
    data: DataCfg,
    data_fingerprint: str,
    outs: dict[str, str],
    features: FeaturesCfg,
    device: str,
) -> dict[str, dict[str, Any]]:
    """Features of each split in ``outs`` (split -> published file), in parts; returns per split the
    published ref and the compute seconds of its parts."""
    ds = load_data(data)
    plans = {s: plan_shards(len(getattr(ds, s)), features.shards, batch_size=features.batch_size) for s in outs}
    threads = part_threads(features)

    def submit(split: str, shard: Any, refresh: bool = False) -> Any:
        t = extract_part.with_options(refresh_cache=True) if refresh else extract_part
        return t.submit(
            weights,
            data,
            data_fingerprint,
            split,
            shard,
            batch_size=features.batch_size,
            device=device,
            threads=threads,
            out=str(part_path(outs[split], shard)),
        )

    with shared_api():
        futures = {s: [submit(s, sh) for sh in plan] for s, plan in plans.items()}
        parts = {s: [f.result() for f in fs] for s, fs in futures.items()}
        # a cached part whose file is gone or changed (deleted by hand, say) is extracted again
        stale = {(s, i) for s, ps in parts.items() for i, p in enumerate(ps) if not is_fresh(p["part"])}
        redo = {(s, i): submit(s, plans[s][i], refresh=True) for s, i in sorted(stale)}
        for (s, i), f in redo.items():
            parts[s][i] = f.result()
    result = {}
    for s, ps in parts.items():
        res = publish_features(ps, out=outs[s])
        if not is_fresh(res["features"]):
            res = publish_features.with_options(refresh_cache=True)(ps, out=outs[s])
        result[s] = res
    return result


def extract_all(weights: dict[str, str], p: Params, fingerprint: str, outs: dict[str, str]) -> dict[str, Any]:
    """Features of each split in ``outs`` (split -> file) with ``weights``, in this flow: one
    ``extract_features`` task per split, or parts on ``features.runner`` when ``features.sharded``.
    Returns per split the file's ref (``features``) and the compute seconds. (Sending it to the
    GPU work pool instead is :func:`flows.steps.extract`'s choice.)"""
    if p.features.sharded:
        run = extract_sharded.with_options(task_runner=task_runner(p.features))  # the runner is a parameter
        return run(weights, p.data, fingerprint, outs, p.features, p.experiment.device)
    return {
        split: ensure_artifact(
            extract_features,
            "features",
            weights,
            p.data,
            fingerprint,
            split,
            batch_size=p.features.batch_size,
            device=p.experiment.device,
            out=out,
            progress=p.experiment.progress,
        )
        for split, out in outs.items()
    }
