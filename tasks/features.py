"""Task: extract features of one split to Parquet."""

from __future__ import annotations

from typing import Any

from prefect import task

from alcore.config import DataCfg
from alcore.experiment import extract_and_save_features, extract_with_classifier
from tasks._common import CACHE, RETRY, ref


@task(name="extract_features", cache_policy=CACHE, persist_result=True, **RETRY)
def extract_features(
    encoder: dict[str, str],
    data: DataCfg,
    data_fingerprint: str,
    split: str,
    *,
    batch_size: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Features of ``split`` with the encoder file ``encoder["path"]``; returns ref + seconds."""
    seconds = extract_and_save_features(
        encoder["path"], data, split, batch_size=batch_size, device=device, progress=progress, out=out
    )
    return {"features": ref(out), "seconds": seconds}


@task(name="extract_with_network", cache_policy=CACHE, persist_result=True, **RETRY)
def extract_with_network(
    model: dict[str, str],
    data: DataCfg,
    data_fingerprint: str,
    split: str,
    *,
    batch_size: int,
    device: str,
    out: str,
    progress: bool = False,
) -> dict[str, Any]:
    """Features of ``split`` from a fine-tuned network's encoder; returns ref + seconds."""
    seconds = extract_with_classifier(
        model["path"], data, split, batch_size=batch_size, device=device, progress=progress, out=out
    )
    return {"features": ref(out), "seconds": seconds}
