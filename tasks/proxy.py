"""Tasks: train the proxy MLP on the labeled features (written to a file); measure it on the test features."""

from __future__ import annotations

from prefect import task

from alcore import steps
from tasks._common import CACHED

train_proxy = task(steps.train_proxy, name="train_proxy", retries=1, **CACHED)
evaluate_proxy = task(steps.evaluate_proxy, name="evaluate_proxy", **CACHED)
