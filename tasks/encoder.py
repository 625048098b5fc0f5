"""Task: build the pre-trained encoder (timm hub, local file, or SimCLR on the pool)."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED, GPU_TAG, RETRY

build_encoder = task(steps.build_encoder, name="build_encoder", tags=[GPU_TAG], **CACHED, **RETRY)
