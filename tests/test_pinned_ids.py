"""Every registered strategy picks exactly the ids it picked when this file was pinned.

Refactors and speed-ups must not change what a strategy selects. The pinned ids live in
``tests/data/pinned_ids.json``; a strategy added later is pinned by running
``ALCORE_REPIN=1 pytest tests/test_pinned_ids.py`` (which rewrites the file: review the diff).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from alcore.strategies import STRATEGIES, make_strategy
from tests.test_strategies import make_context

PINNED = Path(__file__).parent / "data" / "pinned_ids.json"
CASES = [("warm", 10, 7), ("warm", 25, 11), ("cold", 10, 3)]


def _select(name: str, kind: str, n: int, seed: int) -> list[int]:
    ctx = make_context() if kind == "warm" else make_context(n_labeled=0, with_model=False)
    return make_strategy(name).select(ctx, n, random_state=seed).tolist()


def _cases(name: str) -> list[tuple[str, int, int]]:
    cold = STRATEGIES.get(name).cold_start
    return [c for c in CASES if c[0] == "warm" or cold]


def _key(kind: str, n: int, seed: int) -> str:
    return f"{kind}-n{n}-seed{seed}"


def test_repin_when_asked() -> None:
    if not os.environ.get("ALCORE_REPIN"):
        pytest.skip("set ALCORE_REPIN=1 to rewrite the pinned ids")
    old = json.loads(PINNED.read_text()) if PINNED.exists() else {}
    for name in STRATEGIES.names():
        old[name] = {_key(*c): _select(name, *c) for c in _cases(name)}
    lines = [
        f"  {json.dumps(name)}: {{"
        + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(old[name].items()))
        + "}"
        for name in sorted(old)
    ]
    PINNED.write_text("{\n" + ",\n".join(lines) + "\n}\n")


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_same_ids_as_pinned(name: str) -> None:
    pinned = json.loads(PINNED.read_text())
    assert name in pinned, f"{name} is not pinned yet: run ALCORE_REPIN=1 pytest {__file__}"
    for case in _cases(name):
        got = _select(name, *case)
        assert got == pinned[name][_key(*case)], f"{name} {_key(*case)} picks other ids than pinned"


def test_pinned_ids_are_distinct_and_in_range() -> None:
    """The pins themselves are sane (guards a bad re-pin)."""
    for name, cases in json.loads(PINNED.read_text()).items():
        for key, ids in cases.items():
            assert len(set(ids)) == len(ids), (name, key)
            assert np.all((np.asarray(ids) >= 0) & (np.asarray(ids) < 300)), (name, key)
