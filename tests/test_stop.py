"""SIGTERM and Ctrl-C stop a run promptly, its state consistent, with the command that resumes it;
the resumed run ends with the labels of a run never stopped."""

from __future__ import annotations

import os
import signal
import time

import pytest
import yaml

from alcore.config import parse_params
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from tests._tiny import copy_stages, tiny

pytestmark = pytest.mark.integration


def _env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    # the children use the harness's server: a stopped child leaves no temporary server behind
    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}


@pytest.mark.parametrize("sig", ["sigterm", pytest.param("sigint", marks=pytest.mark.slow)])  # the same path twice
def test_a_signal_mid_run_stops_it_with_the_resume_command_and_the_resume_matches_an_unstopped_run(
    sig, tmp_path, tiny_stages, forker
):
    from flows.active_learning import active_learning

    name = f"stopped-{sig}"
    d = tiny(experiment={"name": name, "seed": 77}, al={"rounds": 5})
    root = copy_stages(tiny_stages, tmp_path / "project")
    (root / "params.yaml").write_text(yaml.safe_dump(d))
    state = Layout(root).state(name)
    run = ["run", "--stage", "active_learning"]

    proc = forker.spawn([sig, "4", *run], root, _env())  # the signal lands after the 4th state write
    out = proc.communicate(timeout=300)[0]  # it exits on its own: the test would time out otherwise
    signum = signal.SIGTERM if sig == "sigterm" else signal.SIGINT
    assert proc.returncode == 128 + signum, out
    assert (
        f"stopped by {signal.Signals(signum).name}" in out and "Resume with: alcore run --stage active_learning" in out
    )
    assert "Traceback" not in out, out
    mid = ExperimentState.load(state)  # consistent: loads, every label paid once
    assert 1 <= mid.round < 5 and mid.labels.n_labeled == mid.ledger.totals()["labels"]
    assert mid.final is None

    proc = forker.spawn(["none", "0", *run], root, _env())
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0 and "Resuming" in out, out
    resumed = ExperimentState.load(state)

    other = copy_stages(tiny_stages, tmp_path / "uninterrupted")
    active_learning(parse_params(d), root=str(other))
    never_stopped = ExperimentState.load(Layout(other).state(name))
    assert resumed.round == never_stopped.round == 5
    assert resumed.labels.state_dict() == never_stopped.labels.state_dict()  # the same ids, rounds and labels


@pytest.mark.slow  # prepare and SimCLR in a child process: ~30 s on 2 busy cores
def test_sigterm_during_simclr_pretraining_stops_it_promptly(tmp_path, forker, prefect_harness):
    """The issue's case: SIGTERM while SimCLR trains the encoder. The process ends by itself with
    the resume command (a generous bound: the test only asserts that it ended)."""
    d = tiny(experiment={"name": "simclr-stop"}, encoder={"ssl": {"epochs": 500}})
    root = tmp_path / "project"
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(d))
    proc = forker.spawn(["none", "0", "run"], root, _env())  # prepare, then the encoder's SimCLR
    said = ""
    while "READY" not in said:
        said += proc.stdout.readline()
    deadline = time.time() + 120
    while not list((root / "data").glob("dataset.json")) and time.time() < deadline:  # prepare is done
        time.sleep(0.2)
    time.sleep(3)  # into the 500 epochs of SimCLR
    assert proc.poll() is None, "the encoder finished before it could be stopped"
    proc.send_signal(signal.SIGTERM)
    out = said + proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "Resume with: alcore run\n" in out, out
    assert not (root / "models" / "encoder.safetensors").exists()  # no half-trained encoder passed off as done
