"""Tasks of the labeling cycle: ingest annotations, predict the pre-annotations, export a job.

Ingesting and exporting change files, so they are never cached: each is idempotent instead (a
label committed again with the same value is a no-op; a job file is rewritten only if it differs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from alcore.config import DataCfg, LabelingCfg, OracleCfg
from alcore.experiment import load_data, load_features, make_oracle_for, predict_batch
from alcore.labeling import Batch, ingest_inbox
from tasks._common import CACHE


@task(name="ingest_labels", cache_policy=NO_CACHE)
def ingest_labels(state_path: str, inbox: str, *, classes: list[str], labeling: LabelingCfg) -> list[dict[str, Any]]:
    """Commit the valid rows of every annotation file in ``inbox``; one record per file."""
    return ingest_inbox(
        state_path,
        inbox,
        classes=classes,
        from_name=labeling.from_name,
        conflicts=labeling.conflicts,
        settle_seconds=labeling.settle_seconds,
    )


@task(name="predict_labels", cache_policy=CACHE - "scorer", persist_result=True)
def predict_labels(
    scorer: Any, scorer_key: str, features: dict[str, str], ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's class and probability for each of ``ids``: the job's pre-annotation."""
    return predict_batch(scorer, load_features(features["path"]), ids)


@task(name="export_batch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def export_batch(
    oracle: OracleCfg, labeling: LabelingCfg, data: DataCfg, labeling_dir: str, batch: Batch, *, seed: int
) -> list[str]:
    """Write ``batch``'s labeling job (CSV, Label Studio tasks) to ``labeling_dir/outbox``."""
    human = make_oracle_for(oracle, load_data(data), seed=seed, labeling=labeling, labeling_dir=Path(labeling_dir))
    return [str(p) for p in human.export(batch)]
