"""Tasks: extract features of one split to Parquet, whole or in parts, and publish the parts."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED, GPU_TAG, RETRY

extract_features = task(steps.extract_features, name="extract_features", tags=[GPU_TAG], **CACHED, **RETRY)
extract_part = task(
    steps.extract_part,
    name="extract_part",
    task_run_name="extract_part-{split}-{shard.index}",
    tags=[GPU_TAG],
    **CACHED,
    **RETRY,
)
publish_features = task(steps.publish_features, name="publish_features", **CACHED, **RETRY)
