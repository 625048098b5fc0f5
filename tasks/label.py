"""Task: buy labels from the oracle.

Cached on the ids asked for: a re-run, or a run resumed after a crash, gets the same answers back
without asking (and paying) the oracle again.
"""

from __future__ import annotations

import numpy as np
from prefect import task

from alcore.config import DataCfg, OracleCfg
from alcore.experiment import load_data, make_oracle_for
from tasks._common import CACHE, RETRY


@task(name="label", cache_policy=CACHE, persist_result=True, **RETRY)
def label(
    oracle: OracleCfg, data: DataCfg, data_fingerprint: str, ids: np.ndarray, *, seed: int
) -> dict[str, np.ndarray]:
    """The oracle's answers for ``ids``: ``{"ids": ..., "labels": ...}`` (a human may answer fewer)."""
    batch = make_oracle_for(oracle, load_data(data), seed=seed).query(np.asarray(ids, dtype=np.int64))
    return {"ids": np.asarray(batch.ids, dtype=np.int64), "labels": np.asarray(batch.labels, dtype=np.int64)}
