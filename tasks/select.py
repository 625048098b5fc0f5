"""Task: choose the next batch of ids to label."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from alcore.experiment import load_features, load_pretext_losses, select_batch, stopwatch
from tasks._common import CACHE


@task(name="select", cache_policy=CACHE - "proxy" - "memory_budget" - "device", persist_result=True, retries=1)
def select(
    strategy: str,
    strategy_params: dict[str, Any],
    features: dict[str, str],
    labeled_ids: np.ndarray,
    labeled_labels: np.ndarray,
    n: int,
    *,
    n_classes: int,
    proxy: Any,
    proxy_key: str,
    seed: int,
    round: int,
    n_rounds: int | None = None,
    pretext: dict[str, str] | None = None,
    exclude: np.ndarray | None = None,
    memory_budget: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Ids of the next ``n`` samples (``proxy_key`` stands for the proxy in the cache key), never
    one of ``exclude`` (ids out with annotators). Features larger than ``memory_budget`` bytes are
    read by memory map, and the distance passes run on ``device`` (the same ids either way: neither
    is in the cache key).

    ``pretext``: a ref to the pretext-loss file, for strategies that need ``pretext_loss``.
    """
    pool = load_features(features["path"], memory_budget=memory_budget)
    extras = {"pretext_loss": load_pretext_losses(pretext["path"], pool.ids)} if pretext else None
    with stopwatch() as t:
        ids = select_batch(
            strategy,
            strategy_params,
            pool,
            labeled_ids,
            labeled_labels,
            n,
            n_classes=n_classes,
            proxy=proxy,
            seed=seed,
            round=round,
            n_rounds=n_rounds,
            extras=extras,
            exclude=exclude,
            device=device,
        )
    return {"ids": ids, "seconds": t["seconds"]}
