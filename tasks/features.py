"""Task: extract features of one split to Parquet."""

from __future__ import annotations

from typing import Any

from prefect import task

from alcore.config import DataCfg
from alcore.experiment import extract_and_save_features
from tasks._common import CACHE, RETRY, ref


@task(name="extract_features", cache_policy=CACHE, persist_result=True, **RETRY)
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
