"""The labeling cycle with people as the oracle: export, partial answers, bad files, the lock."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from alcore.config import parse_params
from alcore.datasets import load_dataset
from alcore.errors import ConfigError, ExperimentLockedError
from alcore.layout import Layout
from alcore.run_state import ExperimentState, experiment_lock
from tests._tiny import copy_stages, tiny

pytestmark = pytest.mark.integration
PRICE = 0.5


def human(name: str, labeling: dict | None = None, **al) -> dict:
    # the answer files are written just before each cycle: no need to wait for them to settle
    return tiny(
        experiment={"name": name},
        oracle={"name": "human"},
        al={"rounds": 3, **al},
        labeling={"settle_seconds": 0, **(labeling or {})},
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_stages) -> Path:
    """prepare, encoder and features of the tiny digits experiment, shared by the tests here."""
    return copy_stages(tiny_stages, tmp_path_factory.mktemp("people"))


def truth_of(params) -> dict[int, str]:
    data = load_dataset(params.data.name, **params.data.params)
    return {int(i): data.classes[c] for i, c in zip(data.pool.ids, data.pool.labels, strict=True)}


def open_job(root: Path, name: str) -> tuple[int, list[dict[str, str]]]:
    st = ExperimentState.load(Layout(root).state(name, human=True))
    b = st.labeling.open_batch
    with open(Layout(root).outbox(name) / f"{b.name}.csv", newline="") as fh:
        return b.round, list(csv.DictReader(fh))


def answer_csv(root: Path, name: str, truth: dict[int, str], rows: list[dict[str, str]], file: str) -> None:
    inbox = Layout(root).inbox(name)
    inbox.mkdir(parents=True, exist_ok=True)
    with open(inbox / file, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows([{**r, "label": truth[int(r["sample_id"])]} for r in rows])


def answer_label_studio(root: Path, name: str, truth: dict[int, str], file: str, only: set[int] | None = None) -> None:
    """What Label Studio exports after annotators worked on the imported task JSON."""
    st = ExperimentState.load(Layout(root).state(name, human=True))
    tasks = json.loads((Layout(root).outbox(name) / f"{st.labeling.open_batch.name}.labelstudio.json").read_text())
    for i, t in enumerate(tasks):
        t["id"] = 500 + i
        sid = t["data"]["sample_id"]
        if only is None or sid in only:
            value = {"choices": [truth[sid]]}
            t["annotations"] = [
                {"id": i, "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": value}]}
            ]
    inbox = Layout(root).inbox(name)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / file).write_text(json.dumps(tasks))


def test_cycles_from_first_batch_to_final_network(project, monkeypatch, capsys):
    from alcore.cli import main
    from flows.labeling import labeling_cycle

    p = parse_params(human("people"))
    truth, L = truth_of(p), Layout(project)
    out = labeling_cycle(p, root=str(project))
    assert out["did"] == "selected batch 1 (10 samples)" and out["labels"] == 0
    rnd, rows = open_job(project, "people")
    assert rnd == 1 and len(rows) == 10 and all(r["predicted"] == "" and r["label"] == "" for r in rows)
    assert (L.outbox("people") / "batch-0001.labelstudio.json").is_file()
    assert (L.outbox("people") / "label-config.xml").is_file()

    # nobody has answered yet: nothing changes
    again = labeling_cycle(p, root=str(project))
    assert again["did"] == "waiting for labels" and again["open_round"] == 1 and again["labels"] == 0

    # six answers in a spreadsheet: committed and paid for, the batch stays open
    answer_csv(project, "people", truth, rows[:6], "first.csv")
    out = labeling_cycle(p, root=str(project))
    assert (
        out["did"] == "waiting for labels" and out["open_labeled"] == 6 and out["label_usd"] == pytest.approx(6 * PRICE)
    )

    # the rest from Label Studio: the batch is complete, round 1 is measured, batch 2 goes out with guesses
    answer_label_studio(project, "people", truth, "project-1-at-2024.json")
    out = labeling_cycle(p, root=str(project))
    assert out["did"] == "selected batch 2 (10 samples)" and out["labels"] == 10
    rnd, rows2 = open_job(project, "people")
    assert rnd == 2 and all(r["predicted"] in truth.values() and 0 < float(r["confidence"]) <= 1 for r in rows2)
    assert not {r["sample_id"] for r in rows2} & {r["sample_id"] for r in rows}
    tasks = json.loads((L.outbox("people") / "batch-0002.labelstudio.json").read_text())
    assert tasks[0]["predictions"][0]["result"][0]["value"]["choices"] == [rows2[0]["predicted"]]

    # a file with mistakes: the good rows count, the bad ones come back with row numbers, and the
    # cycle goes on and completes (the refused rows are in its result, its log and the CLI's exit status)
    bad = [{**r} for r in rows2] + [
        {"sample_id": "999999", "image": "", "predicted": "", "confidence": "", "label": "3"}
    ]
    answer_csv(project, "people", truth, rows2, "second.csv")
    path = L.inbox("people") / "second.csv"
    text = path.read_text().splitlines()
    text[3] = text[3].rsplit(",", 1)[0] + ",cat"  # row 4: not a class
    path.write_text("\n".join(text + [",".join(bad[-1].values())]) + "\n")
    monkeypatch.chdir(project)
    (project / "params.yaml").write_text(yaml.safe_dump(human("people")))
    assert main(["label", "check", str(path)]) == 2  # what the file would do, without committing it
    out = capsys.readouterr()
    assert "9 new label(s), 0 correction(s), 0 known" in out.out and "row 4: label 'cat' is not a class" in out.err
    out = labeling_cycle(p, root=str(project))
    (msg,) = out["refused"]
    assert "row 4: label 'cat' is not a class" in msg and "row 12: unknown sample id 999999" in msg
    st = ExperimentState.load(L.state("people", human=True))
    assert st.labels.n_labeled == 19 and st.labeling.open_batch.round == 2  # 9 good rows in, one open
    done = sorted((L.inbox("people") / "done").glob("*.problems.txt"))
    assert len(done) == 1 and "row 4" in done[0].read_text()
    assert main(["label", "status"]) == 0
    status = capsys.readouterr().out
    assert "open batch 2: 9/10 labeled; 1 requested id(s) await labels" in status
    assert (
        "second.csv: 9 committed, 0 corrected, 0 known, 2 refused" in status
        and "row 12: unknown sample id 999999" in status
    )

    # the fixed row, then batch 3, then the final network
    fix = [r for r in rows2 if r["sample_id"] == text[3].split(",")[0]]
    answer_csv(project, "people", truth, fix, "fix.csv")
    assert labeling_cycle(p, root=str(project))["did"] == "selected batch 3 (10 samples)"
    answer_label_studio(project, "people", truth, "third.json")
    out = labeling_cycle(p, root=str(project))
    assert out["did"].startswith("all 3 rounds labeled; final network") and out["finished"]
    assert labeling_cycle(p, root=str(project))["did"] == "finished"
    st = ExperimentState.load(L.state("people", human=True))
    paid, trained = st.ledger.totals()["label_usd"], st.final

    # a reviewer fixes a label in Label Studio after the final network: the fix is accepted (its round
    # kept, nothing paid), the final network is trained again, and so is it when the fix is undone
    sid = int(st.labels.labeled_ids[0])
    rnd = int(st.labels.round_of(np.array([sid]))[0])
    right = truth[sid]
    wrong = next(c for c in sorted(set(truth.values())) if c != right)
    for label, file in ((wrong, "review.csv"), (right, "review-undone.csv")):
        answer_csv(project, "people", {sid: label}, [{"sample_id": str(sid), "image": "", "label": ""}], file)
        out = labeling_cycle(p, root=str(project))
        assert out["did"].startswith("all 3 rounds labeled; final network") and out["refused"] == []
        assert out["imports"][0]["corrected"] == 1 and out["label_usd"] == pytest.approx(paid)
        assert ExperimentState.load(L.state("people", human=True)).final["labels_digest"] != trained.get(
            "labels_digest"
        )
        trained = ExperimentState.load(L.state("people", human=True)).final
    assert labeling_cycle(p, root=str(project))["did"] == "finished"

    st = ExperimentState.load(L.state("people", human=True))
    assert [(c["id"], c["round"]) for c in st.labeling.corrections] == [(sid, rnd), (sid, rnd)]
    assert st.labels.round_of(np.array([sid]))[0] == rnd  # the round it was bought in, kept
    assert st.labels.n_labeled == 30 == st.ledger.totals()["labels"]
    assert st.ledger.totals()["label_usd"] == pytest.approx(30 * PRICE)
    assert [r["labels"] for r in st.ledger.rows()] == [0, 10, 10, 10]
    assert sorted(st.records) == [1, 2, 3] and st.final["labels"] == 30
    labels = st.labels.labels_of(st.labels.labeled_ids)
    assert all(truth[int(i)] == str(c) for i, c in zip(st.labels.labeled_ids, labels, strict=True))
    assert [b.round for b in st.labeling.batches] == [1, 2, 3]


def test_min_fraction_moves_on_and_late_labels_are_still_welcome(project):
    from flows.labeling import labeling_cycle

    p = parse_params(human("partial", labeling={"min_fraction": 0.5}, rounds=3))
    truth = truth_of(p)
    labeling_cycle(p, root=str(project))
    _, rows1 = open_job(project, "partial")
    answer_csv(project, "partial", truth, rows1[:5], "half.csv")
    assert labeling_cycle(p, root=str(project))["did"] == "selected batch 2 (10 samples)"
    _, rows2 = open_job(project, "partial")
    assert not {r["sample_id"] for r in rows2} & {
        r["sample_id"] for r in rows1
    }  # out with annotators: not chosen again
    answer_csv(project, "partial", truth, rows1[5:] + rows2[:2], "late.csv")
    out = labeling_cycle(p, root=str(project))
    assert out["did"] == "waiting for labels" and out["labels"] == 12 and out["requested"] == 8
    st = ExperimentState.load(Layout(project).state("partial", human=True))
    late = np.array([int(r["sample_id"]) for r in rows1[5:]])
    assert (st.labels.round_of(late) == 2).all()  # labels are recorded in the round they came in


def test_a_second_run_on_the_same_experiment_refuses(project):
    from flows.labeling import labeling_cycle

    p = parse_params(human("locked"))
    labeling_cycle(p, root=str(project))
    state = Layout(project).state("locked", human=True)
    before = state.read_bytes()
    with experiment_lock(Layout(project).run_dir("locked", human=True)):
        with pytest.raises(ExperimentLockedError, match="Another run holds the experiment in .*locked.*Fix: wait"):
            labeling_cycle(p, root=str(project))
    assert state.read_bytes() == before


def test_a_refusal_reaches_the_user_as_one_line_with_the_traceback_in_a_log(project, monkeypatch, capfd):
    from alcore.cli import main

    monkeypatch.chdir(project)
    (project / "params.yaml").write_text(yaml.safe_dump(human("refused")))
    assert main(["label", "cycle"]) == 0
    capfd.readouterr()
    with experiment_lock(Layout(project).run_dir("refused", human=True)):
        assert main(["label", "cycle"]) == 2
    out = capfd.readouterr()
    err = out.err + out.out
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith("error: Another run holds the experiment") and "Fix: wait" in lines[0], err
    log = Path(os.environ["PREFECT_HOME"]) / "alcore-errors.log"
    assert lines[1] == f"(the traceback is in {log})" and len(lines) == 2, err
    assert "Traceback" in log.read_text() and "ExperimentLockedError" in log.read_text()


def test_oracles_and_flows_must_match(project):
    from flows.active_learning import active_learning
    from flows.labeling import labeling_cycle

    with pytest.raises(ConfigError, match="alcore label cycle"):
        active_learning(parse_params(human("mismatch")), root=str(project))
    with pytest.raises(ConfigError, match="oracle.name=human"):
        labeling_cycle(parse_params(tiny(experiment={"name": "mismatch"})), root=str(project))


def test_your_own_unlabeled_images(tmp_path, prefect_harness):
    """An image folder whose pool nobody has labeled: the manifest leaves those labels empty."""
    from PIL import Image

    from flows.labeling import labeling_cycle
    from flows.pipeline import pipeline

    digits = load_dataset("digits", max_pool=40, max_test=20)
    root = tmp_path / "images"
    rows, truth = ["path,label,split"], {}
    for split, part in (("pool", digits.pool), ("test", digits.test)):
        for i, (img, y) in enumerate(zip(part.images, part.labels, strict=True)):
            rel = f"{split}/img {i:03d}.png"
            (root / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel)
            truth[rel] = digits.classes[y]
            rows.append(f"{rel},{'' if split == 'pool' else digits.classes[y]},{split}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    classes = list(digits.classes)
    d = human(
        "mine",
        labeling={"image_url": "/data/local-files/?d={relpath}", "image_root": str(tmp_path)},
        initial=5,
        batch=5,
        rounds=2,
    ) | {
        "data": {
            "name": "image_folder",
            "params": {"root": str(root), "manifest": str(root / "manifest.csv"), "classes": classes},
        },
    }
    p = parse_params(d)
    data = load_dataset("image_folder", **d["data"]["params"])
    assert (data.pool.labels == -1).all() and (data.test.labels >= 0).all()
    with pytest.raises(ConfigError, match="simulated oracle reveals true labels, but 40 pool image"):
        pipeline(parse_params(d | {"oracle": {"name": "simulated"}}), root=str(tmp_path / "project"))

    pipeline(p, root=str(tmp_path / "project"))  # prepare, encoder, features, the first cycle, report
    project = tmp_path / "project"
    tasks = json.loads((Layout(project).outbox("mine") / "batch-0001.labelstudio.json").read_text())
    assert len(tasks) == 5 and all(
        t["data"]["image"].startswith("/data/local-files/?d=images/pool/img%20") for t in tasks
    )
    by_id = dict(zip(data.pool.ids.tolist(), data.pool.paths, strict=True))
    answers = {
        t["data"]["sample_id"]: truth[str(Path(by_id[t["data"]["sample_id"]]).relative_to(root.resolve()))]
        for t in tasks
    }
    _, rows1 = open_job(project, "mine")
    answer_csv(project, "mine", answers, rows1, "mine.csv")
    out = labeling_cycle(p, root=str(project))
    assert out["did"] == "selected batch 2 (5 samples)" and out["labels"] == 5


def _label_one_batch(project: Path, name: str) -> ExperimentState:
    """Two cycles: the first batch goes out, people answer it all, the second cycle commits it."""
    from flows.labeling import labeling_cycle

    p = parse_params(human(name))
    labeling_cycle(p, root=str(project))
    _, rows = open_job(project, name)
    answer_csv(project, name, truth_of(p), rows, "answers.csv")
    labeling_cycle(p, root=str(project))
    return ExperimentState.load(Layout(project).state(name, human=True))


def test_labels_people_gave_live_outside_every_output_and_fresh_refuses_to_drop_them(project):
    """The state, the jobs and the answer files of a people-labeled experiment are under labels/,
    which no DVC stage declares and no command deletes; --fresh refuses to start it over unless told."""
    from flows.labeling import labeling_cycle

    L = Layout(project)
    st = _label_one_batch(project, "kept")
    assert st.labels.n_labeled == 10
    assert L.state("kept", human=True).is_file() and (L.inbox("kept") / "done").is_dir()
    assert L.inbox("kept").is_relative_to(L.labels) and not L.run_dir("kept").exists()
    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    outs = [str(o if isinstance(o, str) else next(iter(o))) for s in stages.values() for o in s.get("outs", [])]
    assert not [o for o in outs if Path(o).parts[0] in ("labels", ".alcore")], outs

    before = L.state("kept", human=True).read_bytes()
    with pytest.raises(ConfigError, match=r"--fresh would start 'kept' over without the 10 label.*--discard-labels"):
        labeling_cycle(parse_params(human("kept")), fresh=True, root=str(project))
    assert L.state("kept", human=True).read_bytes() == before  # refused before anything changed
    labeling_cycle(parse_params(human("kept")), fresh=True, discard_labels=True, root=str(project))
    archived = list(L.run_dir("kept", human=True).glob("state.archived-*.json"))
    assert len(archived) == 1 and archived[0].read_bytes() == before  # told to: the labels are kept aside


def test_people_labeled_experiment_left_in_runs_by_an_older_alcore_moves_out_of_dvcs_way(project):
    import shutil

    from flows.labeling import labeling_cycle

    L = Layout(project)
    _label_one_batch(project, "legacy")
    old = L.run_dir("legacy")
    shutil.move(L.run_dir("legacy", human=True), old)  # where an older alcore kept it
    out = labeling_cycle(parse_params(human("legacy")), root=str(project))
    assert out["labels"] == 10 and not old.exists()
    assert ExperimentState.load(L.state("legacy", human=True)).labels.n_labeled == 10


def test_the_mlflow_run_of_a_labeling_cycle_ends_with_the_automated_flows_plots(project, tmp_path, monkeypatch):
    """Each cycle that logged to MLflow ends its run (FINISHED, never left RUNNING) and logs the
    per-round table, metrics and plots, as the report stage does for the automated flow."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())  # a file store of its own
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps it in maintenance mode
    monkeypatch.setenv("ALCORE_MLFLOW_ARTIFACTS", str(tmp_path / "artifacts"))
    st = _label_one_batch(project, "tracked")
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    run = client.get_run(st.tracking["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["alcore.labeling"] == "waiting for labels"
    assert {"accuracy_vs_labels.png", "cost_breakdown.png", "rounds.csv", "metrics.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)
    }
    assert "proxy_accuracy" in run.data.metrics
    assert (Layout(project).run_dir("tracked", human=True) / "reports" / "rounds.csv").is_file()
