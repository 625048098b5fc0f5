"""Task: choose the next batch of ids to label."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED

select = task(steps.select, name="select", retries=1, **CACHED)
