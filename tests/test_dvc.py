"""``dvc repro`` in a temporary copy of the project: reproduces, then does nothing, then reruns
only what a changed parameter touches."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from alcore.config import parse_params
from tests._tiny import tiny

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]
DVC = shutil.which("dvc") or str(Path(os.sys.executable).with_name("dvc"))


def _run(cmd, cwd, env):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("dvcproj")
    for name in ("alcore", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    full = parse_params(tiny(experiment={"name": "dvc"})).model_dump(mode="json")  # DVC needs every section
    (root / "params.yaml").write_text(yaml.safe_dump(full))
    env = {**os.environ, "PYTHONPATH": str(root), "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}"}
    for k in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "MLFLOW_TRACKING_URI", "ALCORE_MLFLOW_ARTIFACTS"):
        env.pop(k)  # the project's own defaults (.prefect/, mlflow.db inside the copy)
    _run(["git", "init", "-q"], root, env)
    _run([DVC, "init", "-q"], root, env)
    return root, env


def test_repro_then_nothing_then_only_what_changed(project):
    root, env = project
    out = _run([DVC, "repro"], root, env)
    for stage in ("prepare", "encoder", "features", "pretext", "active_learning", "report"):
        assert f"Running stage '{stage}'" in out
    assert (root / "reports" / "metrics.json").is_file() and (root / "runs" / "dvc" / "state.json").is_file()
    assert (root / "mlflow.db").is_file() and (root / ".prefect").is_dir()  # project-local stores

    out = _run([DVC, "repro"], root, env)
    assert "Running stage" not in out

    metrics = _run([DVC, "metrics", "show", "--json"], root, env)
    assert "total_usd" in metrics

    p = yaml.safe_load((root / "params.yaml").read_text())
    p["al"]["rounds"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    out = _run([DVC, "repro"], root, env)
    assert "Running stage 'active_learning'" in out and "Running stage 'report'" in out
    for stage in ("prepare", "encoder", "features"):
        assert f"Running stage '{stage}'" not in out
    import json

    assert json.loads((root / "reports" / "metrics.json").read_text())["labels"] == 40
