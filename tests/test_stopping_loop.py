"""The audit, the forecast and the stop rules wired into the round engine, the labeling cycle,
``alcore show``, MLflow and the report plot (issue 17, phase 2), on the tiny digits experiment."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alcore.config import parse_params
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from tests._tiny import copy_stages, tiny

pytestmark = pytest.mark.integration

AUDIT = {"reserve": 0.2, "initial": 10, "fraction": 0.5}


def audited(name: str, **al) -> dict:
    return tiny(experiment={"name": name}, al={"rounds": 5, "audit": AUDIT, **al})


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_stages) -> Path:
    return copy_stages(tiny_stages, tmp_path_factory.mktemp("stopping"))


def learner(p, root: Path, run_dir: Path | None = None):
    from alcore.rounds import ActiveLearner, PlainSteps, RunInputs

    L = Layout(root)
    inputs = RunInputs.from_layout(p, L)
    return ActiveLearner.open(p, inputs, PlainSteps(), run_dir=run_dir or L.run_dir(p.experiment.name))


def test_the_engine_stops_at_the_target_and_keeps_the_audit_apart(project):
    p = parse_params(audited("target", stop="target_accuracy", stop_params={"target": 0.3, "use": "estimate"}))
    al = learner(p, project)
    out = al.run()
    st = al.state
    last = st.records[st.round]
    assert 1 < st.round < 5 and last["stop"]["stop"], st.records  # stopped early...
    assert "the estimate reached the target 30.0%" in last["stop"]["reason"]  # ...and says why
    assert last["estimated_accuracy_lower"] <= last["estimated_accuracy"] <= last["estimated_accuracy_upper"]
    assert not any(st.records[r]["stop"]["stop"] for r in range(1, st.round))
    assert out["stop_reason"] == last["stop"]["reason"] and out["stopped_after_round"] == st.round
    assert st.final is not None and st.final["labels"] == st.labels.n_labeled == sum(p.al.schedule()[: st.round])
    assert learner(p, project).run()["labels"] == st.labels.n_labeled  # run again: still stopped, nothing bought
    # the reserve is never selected nor trained on; its labels are bought once and paid as audit labels
    reserve = st.audit.reserve_ids
    assert reserve.size == 60 and not np.intersect1d(reserve, st.labels.labeled_ids).size
    assert st.audit.n_labeled > 0 and st.ledger.totals()["audit_labels"] == st.audit.n_labeled
    assert out["label_usd"] == pytest.approx((st.labels.n_labeled + st.audit.n_labeled) * 0.5)
    rows = st.ledger.rows()
    assert [r["audit_labels"] for r in rows[1:]] == [
        int(np.isin(st.audit.drawn_in(r), st.audit.labeled_ids()).sum()) for r in range(1, st.round + 1)
    ]
    # the final network is judged on the audit too: its predictions on the reserve, every audit label
    from alcore.steps import load_data
    from alcore.training import load_classifier, predict_proba

    pool = load_data(p.data).pool
    probs = predict_proba(load_classifier(st.final["model"]), pool.subset(np.searchsorted(pool.ids, reserve)))
    want = st.audit.estimate(probs)
    assert st.final["estimated_accuracy"] == pytest.approx(want.estimate, abs=1e-5)
    assert (
        st.final["estimated_accuracy_lower"] <= st.final["estimated_accuracy"] <= st.final["estimated_accuracy_upper"]
    )
    assert st.final["audit_draws"] == want.n_audit > 0
    assert out["network_estimated_accuracy"] == st.final["estimated_accuracy"]
    # the report plot draws the band and the stop round
    from alcore.report import format_monitor, plot_accuracy, round_rows

    plot_accuracy(round_rows(st), st.final, project / "acc.png")
    assert (project / "acc.png").read_bytes()[:4] == b"\x89PNG"
    text = format_monitor(round_rows(st), st.final)
    assert f"round {st.round:>3}: STOP (target_accuracy)" in text and "95% interval" in text
    assert f"final network ({st.final['mode']}, {st.final['labels']} labels): estimated" in text


def test_stabilizing_predictions_stops_without_an_audit(project):
    p = parse_params(
        tiny(
            experiment={"name": "stable"},
            al={"rounds": 5, "stop": "stabilizing_predictions", "stop_params": {"threshold": -1.0, "window": 2}},
        )
    )
    al = learner(p, project)
    al.run(final=False)
    st = al.state
    assert st.round == 3 and st.audit is None  # the window of 2 round pairs needs 3 rounds
    assert "predictions stabilised" in st.records[3]["stop"]["reason"]
    assert len(st.monitor["stop_set"]) == 299 and "estimated_accuracy" not in st.records[3]


#: A child that runs the tiny audited loop: with fault ``bought``, SIGKILLed when round 3's labels
#: (batch and audit) are bought from the oracle and before the state that records them is written;
#: with ``none``, to the end. Every run of the test is such a child: the same process setup (torch
#: threads included), so that the uninterrupted and the resumed runs are comparable bit for bit.
_CHILD = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tests._kill_child import install
install(sys.argv[2], 3)
from alcore.config import parse_params
from alcore.layout import Layout
from alcore.rounds import ActiveLearner, PlainSteps, RunInputs
p = parse_params(json.loads(sys.argv[3]))
L = Layout(Path(sys.argv[4]))
ActiveLearner.open(p, RunInputs.from_layout(p, L), PlainSteps(), run_dir=sys.argv[5]).run(final=False)
"""


def test_a_process_killed_mid_round_resumes_to_the_same_decisions(project, tmp_path):
    """SIGKILL with round 3's labels and audit answers in hand, not yet recorded: the restarted run
    buys them again and ends with the uninterrupted run's labels, audit, estimates and decisions."""
    import subprocess
    import sys

    d = audited("resume", rounds=4, stop="stabilizing_predictions", stop_params={"threshold": 0.999})
    repo = Path(__file__).resolve().parents[1]

    def start(fault: str, run_dir: Path) -> subprocess.Popen:
        args = [sys.executable, "-c", _CHILD, str(repo), fault, json.dumps(d), str(project), str(run_dir)]
        return subprocess.Popen(args, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    # the uninterrupted reference and the run to be killed side by side (separate run folders)
    whole, killed = start("none", tmp_path / "whole"), start("bought", tmp_path / "split")
    err_whole, err_killed = whole.communicate(timeout=300)[1], killed.communicate(timeout=300)[1]
    assert whole.returncode == 0, err_whole[-2000:]
    assert killed.returncode == -9, err_killed[-2000:]  # it was killed, not finished or failed
    mid = ExperimentState.load(tmp_path / "split" / "state.json")
    assert mid.round == 2 and 3 not in mid.records  # killed inside round 3, after round 2's save
    again = start("none", tmp_path / "split")  # the same command again: it resumes
    err = again.communicate(timeout=300)[1]
    assert again.returncode == 0, err[-2000:]

    a = ExperimentState.load(tmp_path / "whole" / "state.json")
    b = ExperimentState.load(tmp_path / "split" / "state.json")
    assert a.round == b.round == 4
    assert np.array_equal(a.labels.labeled_ids, b.labels.labeled_ids)
    assert a.audit.state_dict() == b.audit.state_dict() and a.monitor == b.monitor
    keys = ("estimated_accuracy", "estimated_accuracy_lower", "estimated_accuracy_upper", "audit_draws", "stop")
    assert [{k: a.records[r][k] for k in keys} for r in a.records] == [
        {k: b.records[r][k] for k in keys} for r in b.records
    ]
    assert b.ledger.totals()["audit_labels"] == a.ledger.totals()["audit_labels"] == a.audit.n_labeled


def test_the_flow_logs_the_estimate_and_show_prints_it(project, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from alcore.cli import main
    from flows.active_learning import active_learning
    from tasks.tracking import tracking_uri

    d = audited("shown", rounds=4, stop="budget", stop_params={"max_usd": 25.0})
    d["al"]["audit"] = {**AUDIT, "target": 0.5}
    out = active_learning(parse_params(d), root=str(project))
    st = ExperimentState.load(Layout(project).state("shown"))
    assert "past the budget $25.00" in out["stop_reason"] and st.round == 3  # $10, $15, $22 spent; $7.50 a round

    run = MlflowClient(tracking_uri()).get_run(st.tracking["mlflow_run_id"])
    hist = MlflowClient(tracking_uri()).get_metric_history(run.info.run_id, "estimated_accuracy")
    assert sorted(m.step for m in hist) == list(range(1, st.round + 1))
    for k in ("estimated_accuracy_lower", "estimated_accuracy_upper", "audit_labels_total", "stop"):
        assert k in run.data.metrics, k
    assert run.data.tags["stop.rule"] == "budget" and run.data.tags["stop.reason"] == out["stop_reason"]
    # the final network's estimate on the audit (through the cached evaluate task) reaches MLflow
    assert run.data.metrics["final_network_estimated_accuracy"] == pytest.approx(st.final["estimated_accuracy"])
    assert out["network_estimated_accuracy_lower"] <= out["network_estimated_accuracy"]

    (project / "params.yaml").write_text(json.dumps(d))
    monkeypatch.chdir(project)
    capsys.readouterr()
    main(["show"])
    text = capsys.readouterr().out
    assert "Accuracy estimate (audit), forecast and stop rule, per round:" in text
    assert f"round {st.round:>3}: STOP (budget)" in text
    est = st.records[1]["estimated_accuracy"]
    assert f"{100 * est:.1f}%" in text
    assert f"final network ({st.final['mode']}, {st.final['labels']} labels): estimated" in text


def test_the_labeling_cycle_sends_audit_rows_to_people_and_stops_by_the_rule(project):
    from flows.labeling import labeling_cycle
    from tests.test_labeling_flow import PRICE, answer_csv, human, open_job, truth_of

    d = human(
        "audited-people", audit=AUDIT, stop="stabilizing_predictions", stop_params={"threshold": -1.0, "window": 1}
    )
    p = parse_params(d)
    truth = truth_of(p)
    labeling_cycle(p, root=str(project))
    st = ExperimentState.load(Layout(project).state("audited-people", human=True))
    _, rows = open_job(project, "audited-people")
    audit_rows = [r for r in rows if r["audit"] == "yes"]
    n_audit = len(audit_rows)
    assert len(rows) == 10 + n_audit and 5 <= n_audit <= 10  # 10 uniform draws (with replacement) ride along
    assert {int(r["sample_id"]) for r in audit_rows} <= set(st.audit.reserve_ids.tolist())
    answer_csv(project, "audited-people", truth, rows, "one.csv")
    out = labeling_cycle(p, root=str(project))  # round 1 measured, judged; batch 2 goes out
    assert out["labels"] == 10 and out["audit_labels"] == n_audit and out["open_round"] == 2
    assert out["label_usd"] == pytest.approx((10 + n_audit) * PRICE)
    st = ExperimentState.load(Layout(project).state("audited-people", human=True))
    assert not np.intersect1d(st.labels.labeled_ids, st.audit.reserve_ids).size  # never a training label
    assert "estimated_accuracy" in st.records[1] and not st.records[1]["stop"]["stop"]
    _, rows2 = open_job(project, "audited-people")
    answer_csv(project, "audited-people", truth, rows2, "two.csv")
    answer_csv(project, "audited-people", truth, rows, "one-again.csv")  # Label Studio re-exports: no-ops
    out = labeling_cycle(p, root=str(project))
    assert out["did"].startswith("stopped after round 2: predictions stabilised") and out["finished"], out["did"]
    assert not out["refused"] and out["audit_labels"] == n_audit and out["labels"] == 20
    assert out["stopped"] and "predictions stabilised" in out["stopped"]


def test_half_width_grows_the_audit_from_the_last_estimate(project):
    from alcore.monitor import draws_for_width

    p = parse_params(tiny(experiment={"name": "width"}, al={"rounds": 3, "audit": {"reserve": 0.2, "half_width": 0.2}}))
    al = learner(p, project)
    al.run(final=False)
    st = al.state
    assert st.audit.draws_through(1) == 13  # round 1: half of what a coin flip needs for +-20 points (12.005)
    assert st.audit.draws_through(2) > 13  # the first estimate was wider than asked: round 2 bought more
    for r in (2, 3):
        assert st.audit.draws_through(r) == max(st.audit.draws_through(r - 1), draws_for_width(st, p.al, r))
    assert st.ledger.totals()["audit_labels"] == st.audit.n_labeled > 13
