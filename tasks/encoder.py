"""Task: build the pre-trained encoder (timm hub, local file, or SimCLR on the pool)."""

from __future__ import annotations

from typing import Any

from prefect import task

from alcore.config import DataCfg, EncoderCfg
from alcore.experiment import build_and_save_encoder
from tasks._common import CACHE, GPU_TAG, RETRY, ref


@task(name="build_encoder", cache_policy=CACHE, persist_result=True, tags=[GPU_TAG], **RETRY)
def build_encoder(
    encoder: EncoderCfg,
    data: DataCfg,
    data_fingerprint: str,
    *,
    seed: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the encoder to ``out``; returns its ref and the seconds it took."""
    seconds = build_and_save_encoder(encoder, data, seed=seed, device=device, progress=progress, out=out)
    return {"encoder": ref(out), "seconds": seconds}
