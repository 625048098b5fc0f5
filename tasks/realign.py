"""Task: ask the realignment trigger whether ASVP should fine-tune and re-extract now."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED

decide_realign = task(steps.decide_realign, name="decide_realign", **CACHED)
