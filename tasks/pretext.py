"""Task: the rotation pretext task on the pool, and every pool image's pretext loss (PT4AL)."""

from __future__ import annotations

from typing import Any

from prefect import task

from alcore.config import DataCfg, PretextCfg
from alcore.experiment import pretext_and_save
from tasks._common import CACHE, RETRY, ref


@task(name="pretext_losses", cache_policy=CACHE, persist_result=True, **RETRY)
def pretext_losses(
    encoder: dict[str, str],
    data: DataCfg,
    data_fingerprint: str,
    cfg: PretextCfg,
    *,
    seed: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the pretext losses to ``out``; returns their ref and the seconds it took."""
    seconds = pretext_and_save(encoder["path"], data, cfg, seed=seed, device=device, progress=progress, out=out)
    return {"pretext": ref(out), "seconds": seconds}
