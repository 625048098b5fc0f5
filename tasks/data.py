"""Task: describe the dataset (the ``prepare`` stage).

Never cached: its input is the data on disk (image files, a manifest), which no key of its
parameters can stand for; describing it is what computes the fingerprint every later key holds.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from alcore import steps

describe_data = task(steps.describe_data, name="describe_data", cache_policy=NO_CACHE)
