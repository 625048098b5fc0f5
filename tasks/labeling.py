"""Tasks of the labeling cycle: ingest annotations, predict the pre-annotations, export a job.

Ingesting and exporting change files, so they are never cached: each is idempotent instead (a
label committed again with the same value is a no-op; a job file is rewritten only if it differs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from alcore import steps
from alcore.config import DataCfg, LabelingCfg, OracleCfg
from alcore.labeling import ingest_inbox
from alcore.run_state import Batch
from tasks._common import CACHED


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


predict_labels = task(steps.predict_labels, name="predict_labels", **CACHED)


@task(name="export_batch", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def export_batch(
    oracle: OracleCfg, labeling: LabelingCfg, data: DataCfg, labeling_dir: str, batch: Batch, *, seed: int
) -> list[str]:
    """Write ``batch``'s labeling job (CSV, Label Studio tasks) to ``labeling_dir/outbox``."""
    human = steps.make_oracle_for(
        oracle, steps.load_data(data), seed=seed, labeling=labeling, labeling_dir=Path(labeling_dir)
    )
    return [str(p) for p in human.export(batch)]
