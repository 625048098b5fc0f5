"""Tasks: train the proxy MLP on the labeled features; measure it on the test features."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from alcore.config import ProxyCfg
from alcore.experiment import load_features, proxy_accuracy, stopwatch
from alcore.experiment import train_proxy as _train_proxy
from tasks._common import CACHE


@task(name="train_proxy", cache_policy=CACHE - "memory_budget", persist_result=True, retries=1)
def train_proxy(
    features: dict[str, str],
    ids: np.ndarray,
    labels: np.ndarray,
    proxy: ProxyCfg,
    *,
    n_classes: int,
    seed: int,
    device: str,
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """A fresh proxy trained on the labeled ids; returns it and the seconds it took (features larger
    than ``memory_budget`` bytes are read by memory map: only the labeled rows are loaded)."""
    pool = load_features(features["path"], memory_budget=memory_budget)
    with stopwatch() as t:
        model = _train_proxy(pool, ids, labels, proxy, n_classes=n_classes, seed=seed, device=device)
    return {"proxy": model, "seconds": t["seconds"]}


@task(name="evaluate_proxy", cache_policy=CACHE - "model", persist_result=True)
def evaluate_proxy(model: Any, model_key: str, test_features: dict[str, str], test_labels: np.ndarray) -> float:
    """Test accuracy of the proxy (``model_key`` names the proxy's training inputs for the cache)."""
    return proxy_accuracy(model, load_features(test_features["path"]), test_labels)
