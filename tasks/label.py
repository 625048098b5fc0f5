"""Task: buy labels from the oracle.

Cached on everything it is asked (the ids above all): a re-run, or a run resumed after a crash,
gets the same answers back without asking (and paying) the oracle again.
"""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED, RETRY

label = task(steps.label, name="label", **CACHED, **RETRY)
