"""Task: load and describe the dataset (the ``prepare`` stage)."""

from __future__ import annotations

from typing import Any

from prefect import task

from alcore.config import DataCfg
from alcore.experiment import describe_data
from tasks._common import CACHE


@task(name="prepare_data", cache_policy=CACHE, persist_result=True)
def prepare_data(data: DataCfg) -> dict[str, Any]:
    """Name, params, fingerprint, sizes and classes of the dataset ``data`` names."""
    return describe_data(data)
