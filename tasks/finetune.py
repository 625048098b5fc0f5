"""Task: train the real network (LP / FT / LP-FT) on the labeled set."""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import task

from alcore.config import DataCfg, TrainCfg
from alcore.experiment import fine_tune_and_save
from alcore.training import read_training_record
from tasks._common import CACHE, GPU_TAG, RETRY, ref


@task(name="fine_tune", cache_policy=CACHE, persist_result=True, tags=[GPU_TAG], **RETRY)
def fine_tune(
    encoder: dict[str, str],
    data: DataCfg,
    data_fingerprint: str,
    ids: np.ndarray,
    labels: np.ndarray,
    train: TrainCfg,
    *,
    mode: str,
    seed: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune from the encoder file on ``ids``; writes the model to ``out``; returns ref, seconds,
    the mode trained (``auto`` resolved) and its held-out evidence (also in the file's metadata)."""
    seconds = fine_tune_and_save(
        encoder["path"], data, ids, labels, train, mode=mode, seed=seed, device=device, progress=progress, out=out
    )
    record = read_training_record(out)
    return {"model": ref(out), "seconds": seconds, "mode": record.get("mode", mode), "evidence": record}
