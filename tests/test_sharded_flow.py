"""Sharded extraction through Prefect task runners, on digits: 2 local Dask workers give the same
features as one pass, byte for byte; a worker killed mid-part has its part run again, once."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from alcore.config import parse_params
from alcore.features import read_features
from alcore.layout import Layout
from alcore.shards import parts_dir, plan_shards
from tests._tiny import tiny

pytestmark = pytest.mark.integration
HERE = Path(__file__).resolve().parent
DASK2 = {"batch_size": 64, "shards": 4, "runner": "dask", "workers": 2}


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_stages):
    """dataset.json, the encoder (the tiny experiment's) and the single-pass features (today's
    default: one task per split)."""
    from flows.pipeline import features

    root = tmp_path_factory.mktemp("single")
    for d in ("data", "models"):
        shutil.copytree(tiny_stages / d, root / d)
    features(parse_params(tiny(features={"batch_size": 64})), root=str(root))
    return root


def _project(built: Path, dest: Path) -> Path:
    for d in ("data", "models"):
        shutil.copytree(built / d, dest / d)
    return dest


def _same_content(a: Path, b: Path) -> None:
    fa, fb = read_features(a), read_features(b)
    assert fa.spec == fb.spec
    assert fa.ids.dtype == fb.ids.dtype == np.int64 and fa.X.dtype == fb.X.dtype == np.float32
    assert fa.ids.tobytes() == fb.ids.tobytes()
    assert fa.X.tobytes() == fb.X.tobytes()  # byte for byte, not allclose


@pytest.mark.slow  # a Dask cluster of two processes: 11 s; the thread runner test checks the same equality by default
def test_two_dask_workers_equal_one_pass(built, tmp_path):
    from flows.pipeline import features

    root = _project(built, tmp_path)
    out = features(parse_params(tiny(features=DASK2)), root=str(root))
    L, L1 = Layout(root), Layout(built)
    for split, n in (("pool", 300), ("test", 100)):
        _same_content(L.features(split), L1.features(split))
        plan = plan_shards(n, 4, batch_size=64)
        assert out[split]["parts"] == len(plan) and len(plan) > 1
        assert sorted(p.name for p in parts_dir(L.features(split)).iterdir()) == [
            f"part-{s.index:05d}-of-{s.of:05d}.parquet" for s in plan
        ]
        assert out[split]["seconds"] > 0


def test_killed_worker_part_runs_again_without_duplicates(built, tmp_path, monkeypatch):
    import flows.extract
    from flows.pipeline import features

    root = _project(built, tmp_path / "proj")
    mark = tmp_path / "killed"
    monkeypatch.setenv("ALCORE_TEST_KILL_MARK", str(mark))
    monkeypatch.setenv("ALCORE_TEST_KILL_PART", "1")
    real = flows.extract.task_runner

    def with_preload(cfg):
        runner = real(cfg)
        runner.cluster_kwargs["preload"] = [str(HERE / "_kill_part.py")]
        return runner

    monkeypatch.setattr(flows.extract, "task_runner", with_preload)
    params = parse_params(tiny(features=DASK2))
    features(params, root=str(root))
    assert mark.is_file()  # a worker did die, mid-part
    L, L1 = Layout(root), Layout(built)
    for split in ("pool", "test"):
        fs = read_features(L.features(split))
        assert len(np.unique(fs.ids)) == len(fs.ids)  # no id twice
        _same_content(L.features(split), L1.features(split))  # and none missing
        assert not list(parts_dir(L.features(split)).glob(".*.tmp"))  # the dead worker's half file is gone


def test_thread_runner_shards_and_cached_rerun(built, tmp_path, monkeypatch):
    """The plain runner with parts; a rerun is served from Prefect's cache, and a deleted part is redone."""
    import alcore.steps
    from flows.pipeline import features

    root = _project(built, tmp_path)
    params = parse_params(tiny(features={"batch_size": 64, "shards": 3, "workers": 2}))
    features(params, root=str(root))
    _same_content(Layout(root).features("pool"), Layout(built).features("pool"))

    calls = []
    real = alcore.steps.write_part
    monkeypatch.setattr(alcore.steps, "write_part", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    features(params, root=str(root))
    assert calls == []
    victim = sorted(parts_dir(Layout(root).features("pool")).iterdir())[1]
    victim.unlink()
    Layout(root).features("pool").unlink()
    features(params, root=str(root))
    assert [s.index for s in calls] == [1]
    _same_content(Layout(root).features("pool"), Layout(built).features("pool"))


def test_rounds_on_memory_mapped_features_buy_the_same_labels(built, tmp_path, monkeypatch):
    """The whole rounds loop with features over the memory budget: every selection really runs on
    the memory map (the budget is not in any cache key, so the cache is bypassed here), and buys
    the same labels as from memory."""
    from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings

    import alcore.steps
    from alcore.run_state import ExperimentState
    from flows.active_learning import active_learning

    root = _project(built, tmp_path)
    shutil.copytree(built / "features", root / "features")
    seen: list[tuple[str, bool]] = []
    real = alcore.steps.select_batch

    def spy(strategy, params, pool, *a, **k):
        seen.append((strategy, isinstance(pool.X, np.memmap)))
        return real(strategy, params, pool, *a, **k)

    monkeypatch.setattr(alcore.steps, "select_batch", spy)
    states = {}
    for name, budget in (("loaded", 2048), ("mapped", 0.001)):  # 0.001 MB: 300 x 16 floats do not fit
        p = parse_params(tiny(experiment={"name": name}, features={"batch_size": 64, "memory_budget_mb": budget}))
        seen.clear()
        with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: True}):  # compute, never serve
            active_learning(p, root=str(root))
        states[name] = ExperimentState.load(Layout(root).state(name))
        assert [m for _, m in seen] == [name == "mapped"] * 3, seen  # all three selections, from where they should
    assert list((root / "features").glob("pool.*.memmap.npy"))
    a, b = states["loaded"].labels, states["mapped"].labels
    assert a.labeled_ids.tolist() == b.labeled_ids.tolist() and a.n_labeled == 30
    assert [r["proxy_accuracy"] for r in states["loaded"].records.values()] == [
        r["proxy_accuracy"] for r in states["mapped"].records.values()
    ]


@pytest.mark.slow  # spawning processes that import torch and Prefect: half a minute on 2 cores
def test_process_runner_equals_one_pass(built, tmp_path):
    from flows.pipeline import features

    root = _project(built, tmp_path)
    features(parse_params(tiny(features={**DASK2, "runner": "process"})), root=str(root))
    for split in ("pool", "test"):
        _same_content(Layout(root).features(split), Layout(built).features(split))


@pytest.mark.slow  # a fresh process with its own temporary Prefect server and Dask cluster
def test_dask_workers_report_to_the_flows_temporary_server(tmp_path):
    """``alcore run`` without a server: the parts' task runs go to the flow's temporary server, not to
    one that each worker process would start for itself."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_HOME=str(tmp_path / "home"), PYTHONPATH=str(HERE.parent))
    r = subprocess.run(
        [sys.executable, str(HERE / "_api_probe.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    (flow_pid, flow_api), tasks = got["flow"], got["tasks"]
    assert all(pid != flow_pid for pid, _ in tasks)  # they did run in a worker process
    assert {api for _, api in tasks} == {flow_api}
