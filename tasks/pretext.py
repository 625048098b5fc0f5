"""Task: the rotation pretext task on the pool, and every pool image's pretext loss (PT4AL)."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED, RETRY

pretext_losses = task(steps.pretext_losses, name="pretext_losses", **CACHED, **RETRY)
