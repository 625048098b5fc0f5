"""Every random choice of a run derives from ``experiment.seed``: one seed per purpose and round."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

__all__ = ["derive_seed", "torch_seeded"]


def derive_seed(seed: int, *keys: int | str) -> int:
    """A stable 31-bit seed for (experiment seed, purpose, round, ...): the same in every process."""
    ss = np.random.SeedSequence(
        [int(seed)] + [k if isinstance(k, int) else sum(map(ord, k)) * 7919 + len(k) for k in keys]
    )
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


@contextlib.contextmanager
def torch_seeded(seed: int) -> Iterator[None]:
    """Run the body with torch's global generators seeded by ``seed`` and restore them after.

    For code that draws from torch's global generator with no way to pass one: a module's weight
    initialisation (``nn.Linear``, ``nn.Conv2d``, timm's builders). The caller's random state is
    left as it was.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield
