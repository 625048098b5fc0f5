"""The flow against a real ``prefect server start`` on 127.0.0.1 (the way a user watches runs)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from alcore.config import parse_params
from tests._tiny import tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(api: str, seconds: float = 120) -> None:
    """Wait for a Prefect server's API to answer; fail the test after ``seconds``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"prefect server did not start within {seconds:.0f} s")


def test_pipeline_runs_against_a_prefect_server(tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_API_URL": api}
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_healthy(api)
        (tmp_path / "params.yaml").write_text(
            yaml.safe_dump(parse_params(tiny(experiment={"name": "served"})).model_dump(mode="json"))
        )
        r = subprocess.run(
            [sys.executable, "-m", "alcore.cli", "run"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        code = (
            "import asyncio\nfrom prefect.client.orchestration import get_client\n"
            "async def main():\n    async with get_client() as c:\n"
            "        runs = await c.read_flow_runs()\n"
            "        print(sorted({(await c.read_flow(fr.flow_id)).name + ':' + fr.state_type.value for fr in runs}))\n"
            "asyncio.run(main())\n"
        )
        q = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        names = q.stdout
        for flow in ("alcore-pipeline", "prepare", "encoder", "features", "active_learning", "report"):
            assert f"'{flow}:COMPLETED'" in names, names + q.stderr
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
