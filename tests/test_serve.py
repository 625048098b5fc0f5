"""``alcore serve``: the labeling cycle as a deployment on a cron schedule, against a real
``prefect server start`` on 127.0.0.1 (triggered by hand, then by the schedule itself)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from alcore.cli import main
from alcore.config import parse_params
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from flows._server import free_port, prefect_server, stop
from tests._tiny import copy_stages, tiny

pytestmark = pytest.mark.integration


def api_call(api: str, path: str, body: dict | None = None, method: str | None = None) -> dict | list:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{api}{path}",
        data=data,
        method=method or ("POST" if body is not None else "GET"),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wait_for(what: str, fn, timeout: float, every: float = 2.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            out = fn()
        except OSError:
            out = None
        if out:
            return out
        time.sleep(every)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s")


def test_serve_needs_a_server_and_says_how_to_start_one(tmp_path, monkeypatch, capsys):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny(oracle={"name": "human"})))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")  # nobody listens there
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "No Prefect server answers" in err and "alcore ui prefect" in err


@pytest.mark.slow
def test_served_cycle_runs_when_triggered_and_on_its_cron_schedule(tmp_path, tiny_stages):
    # the scheduler looks for due deployments every 5 s instead of every 60 s
    with prefect_server(tmp_path / "prefect-home", PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="5") as api:
        serve_and_check(api, tmp_path, tiny_stages)


def listening(pid: int) -> list[str]:
    """The TCP ports that process ``pid`` and its children listen on, as ``"PID NAME IP:PORT"``."""
    import psutil

    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True)
    out = []
    for p in procs:
        try:
            conns = p.net_connections(kind="inet")
        except psutil.Error:
            continue
        out += [f"{p.pid} {p.name()} {c.laddr.ip}:{c.laddr.port}" for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def serve_and_check(api: str, tmp_path: Path, tiny_stages: Path) -> None:
    root = copy_stages(tiny_stages, tmp_path / "project")
    d = tiny(experiment={"name": "served"}, oracle={"name": "human"})
    parse_params(d)
    (root / "params.yaml").write_text(yaml.safe_dump(d))
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_RUNNER_POLL_FREQUENCY": "2"}
    serve = subprocess.Popen(
        [sys.executable, "-m", "alcore.cli", "serve", "--cron", "* * * * *", "--name", "every-minute"],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        dep = wait_for("the deployment", lambda: api_call(api, "/deployments/name/labeling_cycle/every-minute"), 180)
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["* * * * *"]
        assert all(s["active"] for s in dep["schedules"])
        assert dep["parameters"]["params"]["oracle"]["name"] == "human"

        # a run triggered by hand (as from the UI's "Quick run")
        run = api_call(api, f"/deployments/{dep['id']}/create_flow_run", {})

        def finished(run_id: str):
            fr = api_call(api, f"/flow_runs/{run_id}")
            if fr["state_type"] in ("FAILED", "CRASHED", "CANCELLED"):
                stop(serve)
                pytest.fail(f"{fr['state']['message']}\n{serve.stdout.read()}")
            return fr if fr["state_type"] == "COMPLETED" else None

        wait_for("the triggered run", lambda: finished(run["id"]), 300)
        # what the README says: no web server; Prefect's runner listens on one loopback port of its
        # own (its token-authenticated control channel to the flow-run processes it starts)
        ports = listening(serve.pid)
        assert len(ports) <= 1 and all(" 127.0.0.1:" in p for p in ports), ports
        st = ExperimentState.load(Layout(root).state("served", human=True))
        assert st.labeling.open_batch.round == 1
        assert (Layout(root).outbox("served") / "batch-0001.csv").is_file()

        # and runs that the cron schedule created on its own
        def scheduled_and_completed():
            runs = api_call(
                api,
                "/flow_runs/filter",
                {
                    "deployments": {"id": {"any_": [dep["id"]]}},
                    "flow_runs": {"tags": {"all_": ["auto-scheduled"]}, "state": {"type": {"any_": ["COMPLETED"]}}},
                },
            )
            return runs or None

        (auto, *_) = wait_for("a run of the cron schedule", scheduled_and_completed, 200, every=5)
        assert auto["deployment_id"] == dep["id"] and auto["parameters"]["params"]["experiment"]["name"] == "served"
    finally:
        stop(serve)
        out = serve.stdout.read() if serve.stdout else ""
    assert "labeling_cycle/every-minute" in out or "every-minute" in out, out
