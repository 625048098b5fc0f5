"""``dvc repro`` in a temporary copy of the project. By default: the first stage reproduces, then
does nothing, and an edit to any library file marks every stage changed. Slow: every stage
reproduces, then does nothing, then sees only the stages a changed parameter touches; ``alcore
run`` elsewhere gets the same ids and accuracies, and a changed parameter reruns only its stages.

The stage processes use the session's Prefect server (a temporary server per process costs more
than the stage itself) and the project's own result storage, so nothing is served from another
project's cache."""

from __future__ import annotations

import json
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


def _copy_project(root: Path, env_base: dict[str, str]) -> tuple[Path, dict[str, str]]:
    for name in ("alcore", "tasks", "flows"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    full = parse_params(tiny(experiment={"name": "dvc"})).model_dump(mode="json")  # DVC needs every section
    (root / "params.yaml").write_text(yaml.safe_dump(full))
    env = {**env_base, "PYTHONPATH": str(root)}
    return root, env


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PATH": f"{Path(os.sys.executable).parent}:{os.environ['PATH']}",
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),  # the session's server
    }
    for k in ("PREFECT_HOME", "PREFECT_LOCAL_STORAGE_PATH", "MLFLOW_TRACKING_URI", "ALCORE_MLFLOW_ARTIFACTS"):
        env.pop(k)  # the project's own defaults (.prefect/, mlflow.db inside the copy)
    root, env = _copy_project(tmp_path_factory.mktemp("dvcproj"), env)
    _run(["git", "init", "-q"], root, env)
    _run([DVC, "init", "-q"], root, env)
    return root, env


@pytest.mark.slow  # six stage processes, each importing torch, Prefect and MLflow: 75-90 s on 2 cores
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

    # a changed parameter: DVC sees the stages that read it, and only those (the slow test below
    # reproduces them and checks that `alcore run` elsewhere gets the same ids and accuracies)
    p = yaml.safe_load((root / "params.yaml").read_text())
    before = yaml.safe_dump(p)
    p["al"]["rounds"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    try:
        out = _run([DVC, "status"], root, env)
    finally:
        (root / "params.yaml").write_text(before)
    assert "active_learning:" in out and "modified:" in out and "al" in out, out
    for stage in ("prepare", "encoder", "features", "pretext"):
        assert f"{stage}:" not in out, out


@pytest.mark.slow  # two more stage processes and a whole `alcore run`: a minute on 2 cores
def test_alcore_run_agrees_with_dvc_repro_and_a_changed_parameter_reruns_only_its_stages(project):
    root, env = project
    _run([DVC, "repro"], root, env)
    # the same parameters through `alcore run` in another folder (its own cache): the same run
    other, env2 = _copy_project(root.parent / "alcore-run", env)
    _run([os.sys.executable, "-m", "alcore.cli", "run"], other, env2)
    a, b = (json.loads((r / "runs" / "dvc" / "state.json").read_text()) for r in (root, other))
    assert a["labels"] == b["labels"]  # the same ids, labels and rounds
    assert a["records"] == b["records"]  # the same proxy accuracies
    assert a["final"]["accuracy"] == b["final"]["accuracy"]  # the same network, seeded from the start

    p = yaml.safe_load((root / "params.yaml").read_text())
    p["al"]["rounds"] = 4
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    out = _run([DVC, "repro"], root, env)
    assert "Running stage 'active_learning'" in out and "Running stage 'report'" in out
    for stage in ("prepare", "encoder", "features"):
        assert f"Running stage '{stage}'" not in out
    assert json.loads((root / "reports" / "metrics.json").read_text())["labels"] == 40


def test_an_edit_to_any_library_file_changes_every_stage(project):
    root, env = project
    # one stage reproduced for real (every stage: the slow test above), then nothing to do
    _run([DVC, "repro", "prepare"], root, env)
    assert "Running stage" not in _run([DVC, "repro", "prepare"], root, env)
    assert "Data and pipelines are up to date" in _run([DVC, "status", "prepare"], root, env)
    lib = root / "alcore" / "cluster.py"  # a file no stage names by itself
    before = lib.read_text()
    try:
        lib.write_text(before + "\n# an edit\n")
        out = _run([DVC, "status"], root, env)
    finally:
        lib.write_text(before)
    for stage in ("prepare", "encoder", "features", "pretext", "active_learning", "report"):
        assert f"{stage}:" in out, out
    assert "modified:" in out and "alcore" in out, out
    assert "Data and pipelines are up to date" in _run([DVC, "status", "prepare"], root, env)


@pytest.mark.slow  # two labeling cycles and a forced `dvc repro` of every stage: a minute or two on 2 cores
def test_dvc_repro_keeps_every_label_people_gave(project):
    """The issue's case: people label the experiment of the default name (the one `make demo`
    rebuilds) and `dvc repro` runs again, forced (DVC deletes every output before its stage runs):
    every label, the state and the returned annotation files are still there, and `alcore show`
    (the demo's second command) reports the automated run beside them."""
    import csv

    from alcore.datasets import load_dataset
    from alcore.layout import Layout
    from alcore.run_state import ExperimentState

    root, env = project
    _run([DVC, "repro"], root, env)
    people = ["--set", "oracle.name=human", "--set", "labeling.settle_seconds=0"]
    cycle = [os.sys.executable, "-m", "flows.labeling", *people]
    _run(cycle, root, env)  # the first batch goes out
    L = Layout(root)
    job = L.outbox("dvc") / "batch-0001.csv"
    data = load_dataset("digits", max_pool=300, max_test=100)
    truth = {int(i): data.classes[c] for i, c in zip(data.pool.ids, data.pool.labels, strict=True)}
    with open(job, newline="") as fh:
        rows = list(csv.DictReader(fh))
    L.inbox("dvc").mkdir(parents=True, exist_ok=True)
    with open(L.inbox("dvc") / "answers.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{**r, "label": truth[int(r["sample_id"])]} for r in rows])
    _run(cycle, root, env)  # people's answers committed, batch 2 goes out
    state = L.state("dvc", human=True)
    bought = ExperimentState.load(state)
    assert bought.labels.n_labeled == len(rows) > 0
    done = sorted(p.name for p in (L.inbox("dvc") / "done").iterdir())
    before = state.read_bytes()

    out = _run([DVC, "repro", "--force"], root, env)  # every stage again: DVC deletes runs/ and the rest first
    assert "Running stage 'active_learning'" in out
    assert state.read_bytes() == before  # every label people gave, untouched
    assert sorted(p.name for p in (L.inbox("dvc") / "done").iterdir()) == done  # and the files they returned
    assert (L.outbox("dvc") / "batch-0002.csv").is_file()
    assert ExperimentState.load(L.state("dvc")).final is not None  # the automated run beside them
    shown = _run([os.sys.executable, "-m", "alcore.cli", "show"], root, env)
    assert "Final network" in shown and "state          runs/dvc/state.json\n" in shown
    shown = _run([os.sys.executable, "-m", "alcore.cli", "show", *people], root, env)
    assert "state          labels/dvc/state.json  (labels people gave: in no DVC output)" in shown
