"""Task: train the real network (LP / FT / LP-FT, or semi-supervised) on the labeled set."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED, GPU_TAG, RETRY

fine_tune = task(steps.fine_tune, name="fine_tune", tags=[GPU_TAG], **CACHED, **RETRY)
