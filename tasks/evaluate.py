"""Task: test accuracy of a trained network."""

from __future__ import annotations

from typing import Any

from prefect import task

from alcore.config import DataCfg
from alcore.experiment import evaluate_saved_model
from tasks._common import CACHE, RETRY


@task(name="evaluate", cache_policy=CACHE, persist_result=True, **RETRY)
def evaluate(
    model: dict[str, str], data: DataCfg, data_fingerprint: str, *, device: str, progress: bool = False
) -> dict[str, Any]:
    """``{"accuracy": ..., "n": ..., "seconds": ...}`` of the model file on the test split."""
    return evaluate_saved_model(model["path"], data, device=device, progress=progress)
