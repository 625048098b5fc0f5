"""Task: ask the realignment trigger whether ASVP should fine-tune and re-extract now."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from alcore.experiment import decide_realign as _decide
from alcore.experiment import load_features
from tasks._common import CACHE


@task(name="decide_realign", cache_policy=CACHE - "memory_budget", persist_result=True)
def decide_realign(
    trigger: str,
    trigger_params: dict[str, Any],
    features: dict[str, str],
    ids: np.ndarray,
    labels: np.ndarray,
    *,
    round: int,
    history: list[dict[str, Any]],
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """``{"fire": bool, "reason": str, <indicator>: float, ...}`` (logged per round)."""
    pool = load_features(features["path"], memory_budget=memory_budget)
    return _decide(trigger, trigger_params, pool, ids, labels, round=round, history=history)
