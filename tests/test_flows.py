"""The Prefect flows end to end on digits: results, MLflow content, caching, crash and resume."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from alcore.config import parse_params
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from tests._tiny import copy_stages, tiny

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, prefect_harness):
    from flows.pipeline import pipeline

    root = tmp_path_factory.mktemp("run")
    t0 = time.perf_counter()
    metrics = pipeline(parse_params(tiny()), root=str(root))
    return root, metrics, time.perf_counter() - t0


def test_pipeline_writes_every_output(first_run):
    root, metrics, _ = first_run
    L = Layout(root)
    for p in (
        L.dataset,
        L.encoder,
        L.encoder_meta,
        L.features("pool"),
        L.features("test"),
        L.features_meta,
        L.state("tiny"),
        L.final_model("tiny"),
        L.metrics,
        L.rounds_csv,
        L.accuracy_plot,
        L.cost_plot,
    ):
        assert p.is_file(), p
    assert L.accuracy_plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    st = ExperimentState.load(L.state("tiny"))
    assert st.labels.n_labeled == 30 and st.round == 3
    assert sorted(st.records) == [1, 2, 3]
    assert metrics["labels"] == 30 and metrics["label_usd"] == pytest.approx(15.0)
    assert 0 < metrics["test_accuracy"] <= 1 and metrics["compute_seconds"] > 0
    rows = st.ledger.rows()
    assert rows[0]["round"] == 0 and rows[0]["seconds_pretraining"] > 0 and rows[0]["seconds_extraction"] > 0
    assert [r["labels"] for r in rows] == [0, 10, 10, 10]
    assert rows[-1]["seconds_final_training"] > 0
    assert json.loads(L.metrics.read_text())["total_usd"] == pytest.approx(metrics["total_usd"])


def test_mlflow_run_holds_params_round_metrics_and_plots(first_run):
    import mlflow
    from mlflow.tracking import MlflowClient

    root, _, _ = first_run
    st = ExperimentState.load(Layout(root).state("tiny"))
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    c = MlflowClient()
    run = c.get_run(st.tracking["mlflow_run_id"])
    assert run.data.params["al.strategy"] == "margin" and run.data.params["encoder.arch"] == "cifar_resnet8"
    hist = c.get_metric_history(run.info.run_id, "proxy_accuracy")
    assert sorted(m.step for m in hist) == [1, 2, 3]
    assert {m.step for m in c.get_metric_history(run.info.run_id, "total_usd_cum")} == {1, 2, 3}
    assert "final_test_accuracy" in run.data.metrics
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"accuracy_vs_labels.png", "cost_breakdown.png", "rounds.csv", "metrics.json"} <= arts
    assert run.info.status == "FINISHED"


def test_rerun_is_served_from_cache_with_the_same_costs(first_run, monkeypatch):
    import alcore.steps
    from flows.pipeline import pipeline

    root, first, _ = first_run
    calls = {"encoder": 0, "oracle": 0}
    real_build, real_oracle = alcore.steps.pretrained_encoder, alcore.steps.make_oracle_for

    def count(key, fn):
        def wrapper(*a, **k):
            calls[key] += 1
            return fn(*a, **k)

        return wrapper

    monkeypatch.setattr(alcore.steps, "pretrained_encoder", count("encoder", real_build))
    monkeypatch.setattr(alcore.steps, "make_oracle_for", count("oracle", real_oracle))
    again = pipeline(parse_params(tiny()), fresh=True, root=str(root))  # state archived: the flow re-runs every round
    assert calls == {"encoder": 0, "oracle": 0}
    assert again == first  # identical labels, accuracy and (cached) compute seconds


def test_the_encoder_initialisation_is_seeded_from_the_experiment_seed(monkeypatch):
    """The same ``experiment.seed`` gives the same initial encoder whatever the global torch RNG
    says (``alcore run`` and ``dvc repro`` start from different process states); another seed,
    another one. SimCLR itself is seeded through its ``random_state``. The whole run compared
    across processes: the slow ``tests/test_dvc.py`` test."""
    import torch

    import alcore.steps
    from alcore.steps import load_data, pretrained_encoder

    monkeypatch.setattr(alcore.steps, "pretrain_simclr", lambda enc, *a, **k: enc)  # the initial weights only
    p = parse_params(tiny())
    data = load_data(p.data)

    def weights(global_seed: int, seed: int) -> list[np.ndarray]:
        torch.manual_seed(global_seed)
        enc = pretrained_encoder(p.encoder, data, seed=seed, device="cpu", progress=False)
        return [v.detach().numpy().copy() for v in enc.state_dict().values()]

    a, b, c = weights(1, 0), weights(2, 0), weights(1, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_crash_mid_run_resumes_without_buying_twice(tmp_path, tiny_stages, monkeypatch):
    import alcore.steps
    from flows.active_learning import active_learning

    params = parse_params(tiny(experiment={"name": "crash", "seed": 7}, al={"rounds": 4}))
    copy_stages(tiny_stages, tmp_path)
    real = alcore.steps.select_batch

    def crash_in_round_3(*a, **k):
        if k["round"] == 3:
            raise RuntimeError("simulated crash")
        return real(*a, **k)

    monkeypatch.setattr(alcore.steps, "select_batch", crash_in_round_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        active_learning(params, root=str(tmp_path))
    st = ExperimentState.load(Layout(tmp_path).state("crash"))
    assert st.round == 2 and st.labels.n_labeled == 20
    bought_before = set(st.labels.labeled_ids.tolist())

    asked = []
    real_oracle = alcore.steps.make_oracle_for

    class Spy:
        def __init__(self, o):
            self.o = o

        def query(self, ids):
            asked.extend(np.asarray(ids).tolist())
            return self.o.query(ids)

    monkeypatch.setattr(alcore.steps, "select_batch", real)
    monkeypatch.setattr(alcore.steps, "make_oracle_for", lambda *a, **k: Spy(real_oracle(*a, **k)))
    out = active_learning(params, root=str(tmp_path))
    st = ExperimentState.load(Layout(tmp_path).state("crash"))
    assert out["labels"] == 40 and st.round == 4
    assert len(asked) == 20 and not (set(asked) & bought_before)  # only rounds 3 and 4 were bought
    assert st.ledger.totals()["labels"] == 40


def test_sigkill_between_a_purchase_and_its_state_write_and_after_a_save(tmp_path, tiny_stages, forker):
    """Real SIGKILLs of the flow process at chosen points: once when a batch of labels has just been
    bought and the state that records it is not written yet, once just after a state write; the
    restarted run completes with every label bought from the oracle exactly once."""
    from tests._tiny import copy_stages

    d = tiny(experiment={"name": "killed", "seed": 1234}, al={"rounds": 5})  # a seed no other test buys with
    params = parse_params(d)
    root = copy_stages(tiny_stages, tmp_path / "project")
    (root / "params.yaml").write_text(yaml.safe_dump(d))
    state, asked = Layout(root).state("killed"), tmp_path / "oracle.log"
    from prefect.settings import PREFECT_API_URL

    # the children use the harness's server: a killed child leaves no temporary server behind
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "ALCORE_TEST_ORACLE_LOG": str(asked)}
    run = ["run", "--stage", "active_learning"]

    def child(mode: str, k: int) -> SimpleNamespace:
        proc = forker.spawn([mode, str(k), *run], root, env)
        out = proc.communicate(timeout=300)[0]
        return SimpleNamespace(returncode=proc.returncode, stdout=out, stderr="")

    def bought() -> list[int]:
        return [int(x) for x in asked.read_text().split()]

    r = child("bought", 2)  # round 2's labels bought, its state write not done
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr  # it did kill
    mid = ExperimentState.load(state)
    assert mid.round == 1 and mid.labels.n_labeled == 10 == mid.ledger.totals()["labels"]
    assert len(bought()) == 20  # round 2's batch was paid for, but is not in the state

    r = child("saved", 3)  # resumed: kill right after its third state write
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert "Resuming" in r.stdout
    mid = ExperimentState.load(state)
    assert mid.labels.n_labeled == sum(params.al.schedule()[: mid.round]) == mid.ledger.totals()["labels"]
    assert len(bought()) == mid.labels.n_labeled  # round 2 came from the label task's cache, not the oracle

    r = child("none", 0)
    assert r.returncode == 0, r.stdout + r.stderr
    end = ExperimentState.load(state)
    assert end.round == 5 and end.labels.n_labeled == 50 == end.ledger.totals()["labels"] and end.final
    assert sorted(bought()) == sorted(end.labels.labeled_ids.tolist())  # each label bought once, none lost
