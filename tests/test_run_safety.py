"""A run's footing: its lock survives the deletion of its folder, a run whose state vanished or
was replaced stops before it buys more, and what a killed atomic write left is cleaned up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from alcore.config import parse_params
from alcore.errors import ExperimentLockedError
from alcore.layout import Layout
from alcore.run_state import experiment_lock
from tests._tiny import copy_stages, tiny

TRY_LOCK = (
    "import sys; from alcore.run_state import experiment_lock\n"
    "from alcore.errors import ExperimentLockedError\n"
    "try:\n  with experiment_lock(sys.argv[1]): print('RAN')\n"
    "except ExperimentLockedError as e: print('LOCKED', e); sys.exit(3)\n"
)


def test_deleting_the_run_folder_under_a_held_lock_still_keeps_a_second_run_out(tmp_path):
    L = Layout(tmp_path)
    run_dir = L.run_dir("lk")
    second = [sys.executable, "-c", TRY_LOCK, str(run_dir)]  # the default place: the project's .alcore/locks
    with experiment_lock(run_dir):
        shutil.rmtree(L.runs)  # rm -rf runs/, or dvc repro deleting its output
        r = subprocess.run(second, capture_output=True, text=True)
        assert r.returncode == 3 and "Another run holds the experiment" in r.stdout, r.stdout + r.stderr
        assert f"pid {os.getpid()}" in r.stdout  # the refusal names the holder
        with pytest.raises(ExperimentLockedError):
            with experiment_lock(run_dir):
                pass
    assert list(L.locks.glob("lk-*.lock"))  # where no command deletes it
    r = subprocess.run(second, capture_output=True, text=True)
    assert r.returncode == 0 and "RAN" in r.stdout, r.stdout + r.stderr


def test_stale_temporary_files_of_our_own_pattern_only_are_removed(tmp_path):
    from alcore._io import remove_stale_temps

    ours = [tmp_path / ".state.json.0123abcd.tmp", tmp_path / "proxies" / ".proxy-r0001-v0.safetensors.deadbeef.tmp"]
    theirs = [
        tmp_path / "notes.tmp",
        tmp_path / ".state.json.tmp",
        tmp_path / ".state.json.XYZXYZXY.tmp",
        tmp_path / ".state.json.0123abcd.tmp.bak",
        tmp_path / "state.json",
    ]
    for f in ours + theirs:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / ".keep.json.00000000.tmp").write_text("not ours to remove")
    (tmp_path / "link").symlink_to(outside)  # a link to a folder is not followed
    (tmp_path / ".link.json.11111111.tmp").symlink_to(outside / ".keep.json.00000000.tmp")
    assert remove_stale_temps(tmp_path) == [ours[0]]  # not recursive: the top folder only
    assert sorted(remove_stale_temps(tmp_path, recursive=True)) == [ours[1]]
    assert all(f.exists() for f in theirs) and (outside / ".keep.json.00000000.tmp").exists()
    young = tmp_path / ".rounds.csv.abcdef01.tmp"
    young.write_text("being written")
    assert remove_stale_temps(tmp_path, min_age=60) == [] and young.exists()
    os.utime(young, (time.time() - 120, time.time() - 120))
    assert remove_stale_temps(tmp_path, min_age=60) == [young]


@pytest.fixture
def project(tmp_path, tiny_stages) -> Path:
    return copy_stages(tiny_stages, tmp_path)


def test_a_run_cleans_what_a_killed_run_left_in_its_folder_and_reports(project):
    from flows.active_learning import active_learning

    L = Layout(project)
    run_dir, reports = L.run_dir("tmpclean"), L.reports
    left = [run_dir / ".state.json.0a1b2c3d.tmp", run_dir / "networks" / ".net-10.safetensors.00ff00ff.tmp"]
    old_report = reports / ".rounds.csv.12345678.tmp"
    keep = [run_dir / "my-notes.tmp", reports / "notes.txt", reports / ".plot.png.tmp"]
    for f in [*left, old_report, *keep]:
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("left behind")
    os.utime(old_report, (time.time() - 600, time.time() - 600))
    active_learning(parse_params(tiny(experiment={"name": "tmpclean"}, al={"rounds": 1})), root=str(project))
    assert not any(f.exists() for f in [*left, old_report])
    assert all(f.exists() for f in keep)


def _learner(project: Path, name: str):
    from alcore.rounds import ActiveLearner, PlainSteps, RunInputs

    p = parse_params(tiny(experiment={"name": name}, al={"rounds": 3}))
    L = Layout(project)
    return ActiveLearner.open(p, RunInputs.from_layout(p, L), PlainSteps(), run_dir=L.run_dir(name))


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_run_whose_state_vanished_or_was_replaced_stops_before_buying_more(project, how):
    from alcore.errors import StateChangedError

    learner = _learner(project, f"vanish-{how}")
    asked = []
    label = learner.steps.label

    def spy(oracle, data, fingerprint, ids, **kw):
        asked.append(np.asarray(ids).tolist())
        return label(oracle, data, fingerprint, ids, **kw)

    learner.steps.label = spy

    def after_round(r: int) -> None:
        if r == 1:
            if how == "deleted":
                shutil.rmtree(learner.run_dir)  # rm -rf runs/NAME, dvc repro
            else:  # another writer's state in its place
                path = learner.state_path
                copy = path.with_name("other.json")
                shutil.copy(path, copy)
                os.replace(copy, path)

    learner.on_round = after_round
    with pytest.raises(
        StateChangedError, match=f"{'was deleted' if how == 'deleted' else 'was replaced'}.*after round 1"
    ):
        learner.run()
    assert len(asked) == 1  # round 2's labels were never bought
