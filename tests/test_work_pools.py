"""The README recipe for work pools, for real: a Prefect server, a CPU and a GPU process pool with one
worker each, ``prefect deploy --all`` from the generated prefect.yaml, and one run of the pipeline
deployment, whose GPU steps must run as flow runs on the GPU pool."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alcore.config import parse_params
from flows._server import free_port, wait_healthy
from tests._tiny import tiny

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]


def _flow_runs(env: dict[str, str]) -> list[tuple[str, str, str | None, str | None]]:
    code = (
        "import asyncio\nfrom prefect.client.orchestration import get_client\n"
        "async def main():\n    async with get_client() as c:\n        for fr in await c.read_flow_runs():\n"
        "            f = await c.read_flow(fr.flow_id)\n"
        "            print(f.name, fr.state_type.value, fr.parameters.get('step'), fr.work_pool_name, sep='|')\n"
        "asyncio.run(main())\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return [tuple(None if x == "None" else x for x in line.split("|")) for line in r.stdout.split()]


def test_pipeline_deployment_sends_gpu_steps_to_the_gpu_pool(tmp_path):
    root = tmp_path / "project"
    for name in ("alcore", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    p = parse_params(tiny(experiment={"name": "pools"}, orchestration={"dispatch": "pools"}))
    (root / "params.yaml").write_text(yaml.safe_dump(p.model_dump(mode="json")))
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": api,
        "ALCORE_ROOT": str(root),  # the pull step's directory: the project on the worker's host
        "PREFECT_LOCAL_STORAGE_PATH": str(root / ".prefect" / "storage"),  # results both pools can read
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PYTHONPATH": str(root),
    }
    env.pop("PREFECT_LOGGING_LEVEL", None)
    bin_ = Path(sys.executable).parent
    procs = []

    def start(*args: str) -> None:
        procs.append(
            subprocess.Popen(
                [str(bin_ / "prefect"), *args],
                cwd=tmp_path,
                env=env,
                stdout=open(tmp_path / f"{args[0]}-{args[-1]}.log", "w"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def run(*args: str, cwd: Path = tmp_path) -> str:
        r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"{args}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    try:
        start("server", "start", "--host", "127.0.0.1", "--port", api.split(":")[-1].split("/")[0])
        wait_healthy(api)
        prefect = str(bin_ / "prefect")
        run(sys.executable, "-m", "flows.deploy", cwd=root)  # prefect.yaml from params.yaml
        for pool in (p.orchestration.cpu_pool, p.orchestration.gpu_pool):
            run(prefect, "work-pool", "create", pool, "--type", "process")
            start("worker", "start", "--pool", pool)
        run(prefect, "--no-prompt", "deploy", "--all", cwd=root)
        out = run(prefect, "deployment", "run", f"alcore-run/{p.orchestration.cpu_pool}", "--watch")
        assert "Completed" in out, out
        runs = _flow_runs(env)
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    cpu, gpu = p.orchestration.cpu_pool, p.orchestration.gpu_pool
    assert ("alcore-run", "COMPLETED", None, cpu) in runs
    gpu_steps = sorted(step for name, state, step, pool in runs if name == "alcore-gpu" and pool == gpu)
    assert gpu_steps == ["build_encoder", "extract", "fine_tune"], runs  # svpp: one fine-tune, the final one
    assert all(state == "COMPLETED" for _, state, _, _ in runs), runs
    assert (root / "runs" / "pools" / "model.safetensors").is_file() and (root / "features" / "pool.parquet").is_file()
