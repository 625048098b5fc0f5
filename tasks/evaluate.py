"""Task: test accuracy of a trained network."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED, RETRY

evaluate = task(steps.evaluate, name="evaluate", **CACHED, **RETRY)
