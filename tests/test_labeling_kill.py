"""SIGKILL the labeling cycle anywhere: no label is lost, none is labeled or paid for twice.

Each trial, a simulated annotator (the digits' true labels) answers part of the job on disk, maybe
repeating answers already given and adding a bad row; then a cycle runs in a child process and is
killed with SIGKILL either at a random file replacement (every atomic write and every move out of
the inbox is one: before or after it) or after a random delay. After every trial the state, the
ledger and the exported jobs must agree; at the end, clean cycles run until the inbox is empty and
every answer ever given must be in the state, once, paid for once.

A few trials run in the default suite, 24 with --run-slow.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from alcore.config import parse_params
from alcore.datasets import load_dataset
from alcore.labeling import read_annotations
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from tests._tiny import copy_stages, tiny

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
NAME = "killed"
PRICE = 0.5
PARAMS = tiny(
    experiment={"name": NAME},
    oracle={"name": "human", "price_per_label": PRICE},
    al={"rounds": 5, "initial": 8, "batch": 8},
    labeling={"min_fraction": 0.75, "settle_seconds": 0},  # answers are dropped in whole (renamed)
)


def child_env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    # the children use the harness's server: a killed child leaves no temporary server behind
    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


def spawn(forker, root: Path, mode: str = "none", k: int = 0, until: str = "READY") -> tuple[Any, str]:
    """Start a cycle in a child process; return it once it has printed ``until`` (and what it said)."""
    proc = forker.spawn([mode, str(k)], root, child_env())
    said = ""
    while until not in said:
        line = proc.stdout.readline()
        if not line:
            break  # it ended (or was killed) first
        said += line
    return proc, said


class Annotator:
    """Answers from the job files on disk, with the true labels; remembers every answer given."""

    def __init__(self, root: Path, rng: np.random.Generator) -> None:
        data = load_dataset("digits", **PARAMS["data"]["params"])
        self.truth = {int(i): data.classes[c] for i, c in zip(data.pool.ids, data.pool.labels, strict=True)}
        self.root, self.rng, self.given, self.files = root, rng, {}, 0

    def answer(self) -> None:
        jobs = sorted(Layout(self.root).outbox(NAME).glob("batch-*.csv"))
        if not jobs:
            return
        with open(jobs[-1], newline="") as fh:
            ids = [int(r["sample_id"]) for r in csv.DictReader(fh)]
        fresh = [i for i in ids if i not in self.given]
        pick = (
            list(self.rng.choice(fresh, size=min(len(fresh), int(self.rng.integers(1, 9))), replace=False))
            if fresh
            else []
        )
        again = [i for i in self.given if self.rng.random() < 0.2]  # answers given before, again
        rows = [(int(i), self.truth[int(i)]) for i in pick + again]
        if self.rng.random() < 0.25:
            rows.append((10**12 + len(self.given), "3"))  # a bad row: not a pool id
        if not rows:
            return
        self.given.update((int(i), self.truth[int(i)]) for i in pick)
        inbox = Layout(self.root).inbox(NAME)
        inbox.mkdir(parents=True, exist_ok=True)
        self.files += 1
        if self.rng.random() < 0.5:
            tmp = inbox / f".answers-{self.files}.csv.tmp"
            with open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerows([("sample_id", "label"), *rows])
        else:  # a Label Studio export
            tmp = inbox / f".answers-{self.files}.json.tmp"
            tasks = [
                {
                    "id": n,
                    "data": {"sample_id": i},
                    "annotations": [{"result": [{"from_name": "label", "type": "choices", "value": {"choices": [c]}}]}],
                }
                for n, (i, c) in enumerate(rows)
            ]
            tmp.write_text(json.dumps(tasks))
        os.replace(tmp, tmp.with_name(tmp.name[1:].removesuffix(".tmp")))  # dropped in whole, never half


def check_consistent(root: Path, annotator: Annotator) -> dict[str, int]:
    """The invariants that must hold after any kill."""
    L = Layout(root)
    if not L.state(NAME, human=True).exists():
        return {"labeled": 0}
    st = ExperimentState.load(L.state(NAME, human=True))  # loads: never half-written
    sd = st.labels.state_dict()
    assert len(sd["labeled_ids"]) == len(set(sd["labeled_ids"]))  # no sample labeled twice
    st.labels.check_invariants()
    n = st.labels.n_labeled
    t = st.ledger.totals()
    assert t["labels"] == n and t["label_usd"] == pytest.approx(n * PRICE)  # paid once per label
    per_round = {r["round"]: r["labels"] for r in st.ledger.rows()}
    for r in range(1, st.labels.current_round + 1):
        assert per_round.get(r, 0) == st.labels.ids_in_round(r).size
    for i, c in zip(sd["labeled_ids"], sd["labels"], strict=True):
        assert annotator.truth[i] == str(c) and annotator.given.get(i) == str(c)  # what the annotator said
    exported = st.labeling.exported_ids()
    assert len(exported) == len(set(exported.tolist()))  # no id asked for twice
    assert set(sd["labeled_ids"]) <= set(exported.tolist())  # nothing labeled that was not asked for
    requested = set(st.labeling.requested_ids(st.labels).tolist())
    batches = {b.name: b for b in st.labeling.batches}
    for job in L.outbox(NAME).glob("batch-*.csv"):
        with open(job, newline="") as fh:
            ids = {int(r["sample_id"]) for r in csv.DictReader(fh)}
        b = batches[job.stem]  # every job on disk is a batch of the state
        assert ids == set(b.ids.tolist())
        assert ids <= set(sd["labeled_ids"]) | requested  # each id labeled, or still awaited
    for f in (L.inbox(NAME) / "done").glob("*-answers-*"):
        if f.suffix in (".csv", ".json"):  # a processed file: every answer in it is in the state
            for row in read_annotations(f):
                if row.label is not None and int(row.sample_id) in annotator.given:
                    assert st.labels.round_of(np.array([int(row.sample_id)]))[0] > 0, (f.name, row)
    return {"labeled": n}


def run_trials(
    forker: Any, root: Path, n_trials: int, seed: int, plan: list[tuple[str, int]] | None = None
) -> dict[str, int]:
    """``n_trials`` cycles with faults drawn at random, or the faults of ``plan`` in order
    (``(mode, k)``: ``before`` / ``after`` the k-th file replacement, or ``none``)."""
    rng = np.random.default_rng(seed)
    annotator = Annotator(root, rng)
    stats = {"trials": 0, "killed": 0, "at_replace": 0, "on_timer": 0, "finished": 0}
    for trial in range(len(plan) if plan else n_trials):
        annotator.answer()
        if plan or rng.random() < 0.7:  # at a file replacement: the moments where state changes
            fault, k = plan[trial] if plan else (str(rng.choice(["before", "after"])), int(rng.integers(1, 13)))
            proc, said = spawn(forker, root, fault, k)
            out = said + proc.communicate(timeout=300)[0]
        else:  # at a random moment of the cycle's work (imports done)
            fault, (proc, said) = "timer", spawn(forker, root)
            try:
                out = said + proc.communicate(timeout=float(rng.uniform(0.0, 6.0)))[0]
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                out = said + proc.communicate()[0]
        stats["trials"] += 1
        if proc.returncode == -signal.SIGKILL:
            stats["killed"] += 1
            stats["on_timer" if fault == "timer" else "at_replace"] += 1
        else:
            assert proc.returncode in (0, 1), out  # 1: a bad row was refused (the cycle did its work, and says so)
            assert proc.returncode == 0 or "not imported" in out, out
            stats["finished"] += 1
        check_consistent(root, annotator)
    # the faults are over: cycles run until every file in the inbox is processed
    inbox = Layout(root).inbox(NAME)
    for _ in range(4):
        if not [f for f in inbox.glob("*") if f.is_file() and not f.name.startswith(".")]:
            break
        proc, said = spawn(forker, root)
        out = said + proc.communicate(timeout=300)[0]
        assert proc.returncode in (0, 1), out
    final = check_consistent(root, annotator)
    st = ExperimentState.load(Layout(root).state(NAME, human=True))
    committed = dict(
        zip(st.labels.labeled_ids.tolist(), map(str, st.labels.labels_of(st.labels.labeled_ids)), strict=True)
    )
    lost = {i: c for i, c in annotator.given.items() if committed.get(i) != c}
    assert lost == {}, f"labels lost: {lost}"
    stats.update(
        answers=len(annotator.given),
        committed=final["labeled"],
        lost=len(lost),
        files=annotator.files,
        batches=len(st.labeling.batches),
        imports=len(st.labeling.imports),
    )
    return stats


def _setup(tmp_path: Path, tiny_stages: Path) -> Path:
    root = copy_stages(tiny_stages, tmp_path / "project")
    parse_params(PARAMS)
    (root / "params.yaml").write_text(yaml.safe_dump(PARAMS))
    return root


#: Kills at points each cycle is sure to reach: the first cycle's first write (the new state), the
#: next one's first (the first batch recorded, its job not yet written), a clean cycle that exports
#: the job, then a cycle killed right after it moved an answered file out of the inbox.
PLAN = [("after", 1), ("before", 1), ("none", 0), ("after", 2)]


def test_sigkill_a_few_times(tmp_path, tiny_stages, forker):
    stats = run_trials(forker, _setup(tmp_path, tiny_stages), n_trials=len(PLAN), seed=1, plan=PLAN)
    print("sigkill trials:", stats)
    assert stats["killed"] == 3 and stats["finished"] == 1  # every planned kill struck
    assert stats["lost"] == 0 and stats["committed"] == stats["answers"] > 0


@pytest.mark.slow
def test_sigkill_many_times(tmp_path, tiny_stages, forker):
    stats = run_trials(forker, _setup(tmp_path, tiny_stages), n_trials=24, seed=2024)
    print("sigkill trials:", stats)
    assert stats["killed"] >= 10 and stats["batches"] >= 3  # faults struck, and the experiment still moved on
    assert stats["lost"] == 0 and stats["committed"] == stats["answers"] > 0


def test_two_runs_at_once_one_refuses(tmp_path, tiny_stages, forker):
    root = _setup(tmp_path, tiny_stages)
    first, said = spawn(forker, root, "pause", 1, until="PAUSED")  # holds the lock, paused at its first write
    assert "PAUSED" in said, said
    second, said2 = spawn(forker, root)
    out2 = said2 + second.communicate(timeout=300)[0]
    (root / ".resume").touch()
    out1 = said + first.communicate(timeout=300)[0]
    assert first.returncode == 0, out1
    assert second.returncode == 2 and "Another run holds the experiment" in out2 and "Fix:" in out2, out2
    st = ExperimentState.load(Layout(root).state(NAME, human=True))
    assert len(st.labeling.batches) == 1 and st.labels.n_labeled == 0
