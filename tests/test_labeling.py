"""The human oracle's hand-off: labeling jobs out (CSV, Label Studio), annotations in, validated."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from alcore.config import parse_params
from alcore.errors import ConfigError, LabelError, LabelImportError
from alcore.experiment import ExperimentState, open_state
from alcore.labeling import (
    Batch,
    LabelingLog,
    check_annotations,
    image_reference,
    import_annotations,
    inbox_files,
    ingest_inbox,
    read_annotations,
    render_job,
)
from alcore.oracle import HumanOracle, make_oracle
from alcore.state import LabelState

CLASSES = ["cat", "dog", "eel"]
POOL = np.arange(100, 150, dtype=np.int64)
PRICE = 0.25


def new_state(path: Path) -> ExperimentState:
    """Batch 1 (ids 100-109, 100-104 labeled) and batch 2 (110-119, open): requested = 105-119."""
    st_ = open_state(path, config_digest="t", pool_ids=POOL, n_classes=3, price_per_label=PRICE, price_per_hour=3.0)
    st_.labeling.add_batch(Batch.unpredicted(1, np.arange(100, 110)))
    st_.commit_answers(1, np.arange(100, 105), np.array([0, 1, 2, 0, 1]))
    st_.labeling.add_batch(Batch(2, np.arange(110, 120), np.full(10, 2), np.full(10, 0.5)))
    st_.save(path)
    return st_


def write_csv(path: Path, rows: list[tuple[object, object]], header=("sample_id", "label")) -> Path:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def ls_task(sid, *answers, cancelled=(), from_name="label", task_id=None, prediction=None) -> dict:
    anns = [
        {
            "id": 1000 + i,
            "was_cancelled": i in cancelled,
            "result": [{"from_name": from_name, "to_name": "image", "type": "choices", "value": {"choices": [a]}}],
            "completed_by": 1,
        }
        for i, a in enumerate(answers)
    ]
    t = {"id": task_id or sid, "data": {"image": f"/x/{sid}.png", "sample_id": sid}, "annotations": anns}
    if prediction:
        t["predictions"] = [
            {
                "result": [
                    {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [prediction]}}
                ]
            }
        ]
    return t


# ---------------------------------------------------------------- jobs out
def test_render_job_csv_and_label_studio_tasks():
    b = Batch(3, np.array([7, 9]), np.array([1, -1]), np.array([0.875, 0.0]))
    files = render_job(b, ["/img/7.png", "/img/9.png"], CLASSES)
    rows = list(csv.reader(io.StringIO(files[".csv"])))
    assert rows == [
        ["sample_id", "image", "predicted", "confidence", "label"],
        ["7", "/img/7.png", "dog", "0.8750", ""],
        ["9", "/img/9.png", "", "", ""],
    ]
    tasks = json.loads(files[".labelstudio.json"])
    assert tasks[0]["data"] == {"image": "/img/7.png", "sample_id": 7, "round": 3}
    (pred,) = tasks[0]["predictions"]
    assert pred["model_version"] == "alcore-proxy-round-2" and pred["score"] == 0.875
    assert pred["result"] == [
        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["dog"]}}
    ]
    assert "predictions" not in tasks[1]  # no guess, no pre-annotation
    assert render_job(b, ["/img/7.png", "/img/9.png"], CLASSES) == files  # a pure function: re-exports are identical


def test_export_of_an_in_memory_pool_writes_pngs_once(tmp_path):
    from alcore.datasets import load_dataset

    data = load_dataset("digits", max_pool=60, max_test=20)
    o = make_oracle("human", pool=data.pool, classes=list(data.classes), outbox=tmp_path / "out", price_per_label=0.1)
    ids = data.pool.ids[:4]
    files = o.export(Batch.unpredicted(1, ids))
    assert sorted(f.name for f in files) == ["batch-0001.csv", "batch-0001.labelstudio.json", "label-config.xml"]
    tasks = json.loads((tmp_path / "out" / "batch-0001.labelstudio.json").read_text())
    rows = list(csv.DictReader((tmp_path / "out" / "batch-0001.csv").open()))
    for t, row, sid in zip(tasks, rows, ids.tolist(), strict=True):
        png = (tmp_path / "out" / "images" / f"{sid}.png").resolve()
        # Label Studio gets the image itself (a stock server shows it); the CSV names the file
        head, b64 = t["data"]["image"].split(",", 1)
        assert head == "data:image/png;base64" and base64.b64decode(b64) == png.read_bytes()
        assert Path(row["image"]) == png and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert '<Choice value="9"/>' in (tmp_path / "out" / "label-config.xml").read_text()
    before = {f: f.stat().st_mtime_ns for f in (tmp_path / "out").rglob("*") if f.is_file()}
    o.export(Batch.unpredicted(1, ids))
    assert {f: f.stat().st_mtime_ns for f in before} == before  # idempotent: nothing rewritten
    assert not [f for f in (tmp_path / "out").rglob("*.tmp")]


def test_image_reference_templates():
    assert image_reference("{path}", path="/d/a b.png", id=3) == "/d/a b.png"
    url = image_reference("/data/local-files/?d={relpath}", path="/d/x/a b.png", id=3, image_root="/d")
    assert url == "/data/local-files/?d=x/a%20b.png"
    assert image_reference("https://s3/{file}?v={id}", path="/d/q.png", id=12) == "https://s3/q.png?v=12"
    with pytest.raises(ConfigError, match="unknown field"):
        image_reference("{path.__class__}", path="/d", id=1)
    with pytest.raises(ConfigError):
        parse_params({"labeling": {"image_url": "{nope}"}})
    with pytest.raises(ConfigError, match="image_root"):
        parse_params({"labeling": {"image_url": "/x/?d={relpath}"}})


def test_labeling_log_round_trip_and_refusals():
    log = LabelingLog()
    log.add_batch(Batch.unpredicted(1, [1, 2, 3]))
    with pytest.raises(LabelError, match="round"):
        log.add_batch(Batch.unpredicted(1, [4]))
    with pytest.raises(LabelError, match="asks again"):
        log.add_batch(Batch.unpredicted(2, [3, 4]))
    with pytest.raises(LabelError, match="duplicates"):
        Batch.unpredicted(2, [5, 5])
    back = LabelingLog.from_state_dict(log.state_dict())
    assert [b.to_json() for b in back.batches] == [b.to_json() for b in log.batches]
    labels = LabelState(np.arange(10), 3)
    labels.label([2], [0], 1)
    assert back.requested_ids(labels).tolist() == [1, 3]


# ---------------------------------------------------------------- annotations in
def test_csv_rows_are_checked_with_row_numbers(tmp_path):
    st_ = new_state(tmp_path / "state.json")
    f = write_csv(
        tmp_path / "a.csv",
        [
            (110, "cat"),  # row 2: new
            (111, ""),  # row 3: not labeled yet
            (100, "cat"),  # row 4: committed before with the same label: no-op
            (101, "eel"),  # row 5: committed before as dog: a correction
            (112, "bird"),  # row 6: not a class
            (999, "cat"),  # row 7: not in the pool
            (140, "dog"),  # row 8: in the pool, never asked for
            ("1x", "dog"),  # row 9: not an integer
            (113, "dog"),  # row 10
            (113, "eel"),  # row 11: disagrees with row 10
            (114, "dog"),  # row 12
            (114, "dog"),  # row 13: agrees with row 12: counted once
            ("", "dog"),  # row 14: no id
            (105, " eel "),  # row 15: a late label of batch 1, spaces stripped
        ],
    )
    res = check_annotations(
        read_annotations(f),
        labels=st_.labels,
        requested=st_.labeling.requested_ids(st_.labels),
        classes=CLASSES,
        file="a.csv",
    )
    assert dict(zip(res.ids.tolist(), res.labels.tolist(), strict=True)) == {110: 0, 114: 1, 105: 2}
    assert res.fixed_ids.tolist() == [101] and res.fixed_labels.tolist() == [2]
    assert res.corrections == [
        "row 5: sample 101 corrected from 'dog' to 'eel' (labeled in round 1, which it keeps; not paid again)"
    ]
    assert res.already == 1 and res.unanswered == 1
    rows = [p.split(":")[0] for p in res.problems]
    assert rows == ["row 6", "row 7", "row 8", "row 9", "row 10", "row 11", "row 14"]
    msg = res.message()
    assert "7 row(s) not imported" in msg and "3 new label(s) committed" in msg and "1 corrected" in msg
    assert "sample 113: annotators disagree (row 10: 'dog', row 11: 'eel')" in msg and "labeling.conflicts" in msg
    assert "'bird' is not a class" in msg and "unknown sample id 999" in msg and "was not asked for" in msg
    with pytest.raises(LabelImportError, match="row 6"):
        res.raise_for_problems()


def test_label_studio_csv_export_uses_sample_id_not_the_task_id(tmp_path):
    st_ = new_state(tmp_path / "state.json")
    f = write_csv(
        tmp_path / "project-1.csv",
        [("/x/110.png", 110, "dog", 1, 5001), ("/x/111.png", 111, "cat", 2, 5002)],
        header=("image", "sample_id", "label", "id", "annotation_id"),
    )
    res = check_annotations(
        read_annotations(f), labels=st_.labels, requested=np.arange(110, 120), classes=CLASSES, file="x"
    )
    assert res.ok and res.ids.tolist() == [110, 111] and res.labels.tolist() == [1, 0]


def test_label_studio_json_export(tmp_path):
    st_ = new_state(tmp_path / "state.json")
    tasks = [
        ls_task(110, "dog", prediction="eel"),
        ls_task(111, prediction="eel"),  # only a pre-annotation: never taken as a label
        ls_task(112, "cat", "eel", cancelled=(0,)),  # the cancelled annotation does not count
        ls_task(113, "cat", "dog"),  # annotators disagree
        ls_task(114, "dog", "dog"),  # two annotators agree
        ls_task(115, "cat", from_name="choice"),  # answers under another control name
        {"data": {"image": "/x/1.png"}, "annotations": [{"result": []}]},  # not ours, unanswered
        "nonsense",
    ]
    f = tmp_path / "export.json"
    f.write_text(json.dumps(tasks))
    res = check_annotations(
        read_annotations(f), labels=st_.labels, requested=np.arange(110, 120), classes=CLASSES, file="x"
    )
    assert dict(zip(res.ids.tolist(), res.labels.tolist(), strict=True)) == {110: 1, 112: 2, 114: 1}
    assert [p.split(":")[0] for p in res.problems] == [
        "task 4 (Label Studio id 113), annotation 1000",
        "task 4 (Label Studio id 113), annotation 1001",
        "task 6 (Label Studio id 115)",
        "task 8",
    ]
    assert "disagree" in res.problems[0] and "labeling.from_name" in res.problems[2]
    assert res.unanswered == 2


def test_label_studio_json_min_export(tmp_path):
    st_ = new_state(tmp_path / "state.json")
    f = tmp_path / "min.json"
    f.write_text(
        json.dumps(
            [
                {"image": "/x/110.png", "sample_id": 110, "id": 1, "label": "eel", "annotator": 1},
                {"image": "/x/111.png", "sample_id": 111, "id": 2, "label": {"choices": ["cat"]}},
                {"image": "/x/112.png", "sample_id": 112, "id": 3},
                {"image": "/x/113.png", "id": 4, "label": "cat"},
            ]
        )
    )
    res = check_annotations(
        read_annotations(f), labels=st_.labels, requested=np.arange(110, 120), classes=CLASSES, file="x"
    )
    assert res.ids.tolist() == [110, 111] and res.labels.tolist() == [2, 0] and res.unanswered == 1
    assert len(res.problems) == 1 and "no sample_id" in res.problems[0]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("a.csv", b"", "is empty"),
        ("a.csv", b"\xef\xbb\xbf \n", "is empty"),
        (
            "a.csv",
            "sample_id,label\n110,caf\u00e9\n".encode("latin-1"),
            r"not UTF-8: byte 0xe9 at offset \d+ \(line 2\)",
        ),
        ("a.csv", "sample_id,label\n110,cat\n".encode("utf-16"), "NUL byte"),
        ("a.csv", b"image,predicted\n/x.png,cat\n", "lacks 'sample_id' \\(or 'id'\\) and 'label'"),
        ("a.csv", b"sample_id,label,label\n1,cat,dog\n", "appears 2 times"),
        ("a.json", b'{"tasks": []}', "holds a JSON dict"),
        ("a.json", b'[{"data": ', "not valid JSON"),
        ("a.json", b"[" * 100000, "JSON"),
        ("a.xlsx", b"PK\x03\x04", "unsupported file type"),
        ("a", b"1,2", "unsupported file type"),
    ],
)
def test_unreadable_files_are_refused_whole(tmp_path, name, content, match):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(LabelImportError, match=match):
        read_annotations(f)


def test_a_byte_order_mark_and_crlf_are_fine(tmp_path):
    f = tmp_path / "excel.csv"
    f.write_bytes(b"\xef\xbb\xbfSample_ID,Label\r\n110,dog\r\n\r\n111,cat\r\n")
    rows = read_annotations(f)
    assert [(r.where, r.sample_id, r.label) for r in rows] == [("row 2", "110", "dog"), ("row 4", "111", "cat")]


# ---------------------------------------------------------------- the inbox
def test_ingest_commits_pays_moves_and_is_idempotent(tmp_path):
    state = tmp_path / "state.json"
    new_state(state)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_csv(inbox / "a.csv", [(110, "dog"), (111, "cat"), (140, "cat")])
    (inbox / ".hidden.csv").write_text("x")
    (inbox / "copying.csv.part").write_text("x")
    recs = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert [(r["file"], r["committed"], r["rejected"]) for r in recs] == [("a.csv", 2, 1)]
    assert "row 4: sample 140 was not asked for" in recs[0]["message"]
    st_ = ExperimentState.load(state)
    assert st_.labels.round_of(np.array([110, 111])).tolist() == [2, 2]
    assert st_.ledger.totals()["labels"] == 7 == st_.labels.n_labeled
    assert st_.ledger.totals()["label_usd"] == pytest.approx(7 * PRICE)
    assert inbox_files(inbox) == [] and (inbox / ".hidden.csv").exists()  # hidden and partial files are skipped
    (done,) = [f for f in (inbox / "done").iterdir() if f.suffix == ".csv"]
    assert done.name.endswith("-a.csv")
    assert "row 4" in (inbox / "done" / (done.name + ".problems.txt")).read_text()
    # the same answers again, and one more: only the new one is paid for
    write_csv(inbox / "b.csv", [(110, "dog"), (111, "cat"), (112, "eel")])
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert (rec["committed"], rec["already"], rec["rejected"], rec["message"]) == (1, 2, 0, None)
    st_ = ExperimentState.load(state)
    assert st_.ledger.totals()["labels"] == 8 == st_.labels.n_labeled
    assert [r["file"] for r in st_.labeling.imports] == ["a.csv", "b.csv"]


def test_ingest_interrupted_before_the_move_commits_nothing_twice(tmp_path, monkeypatch):
    import alcore.labeling

    state = tmp_path / "state.json"
    new_state(state)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    write_csv(inbox / "a.csv", [(110, "dog"), (111, "cat")])

    def crash(*a, **k):
        raise KeyboardInterrupt  # the process dies after the state was saved, before the move

    monkeypatch.setattr(alcore.labeling, "_move_done", crash)
    with pytest.raises(KeyboardInterrupt):
        ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert ExperimentState.load(state).labels.n_labeled == 7 and (inbox / "a.csv").exists()
    monkeypatch.undo()
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert (rec["committed"], rec["already"]) == (0, 2)
    st_ = ExperimentState.load(state)
    assert st_.labels.n_labeled == 7 == st_.ledger.totals()["labels"] and not (inbox / "a.csv").exists()


def test_an_unreadable_file_is_reported_and_moved(tmp_path):
    state = tmp_path / "state.json"
    new_state(state)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert rec["committed"] == 0 and "NUL byte" in rec["message"]
    assert ExperimentState.load(state).labels.n_labeled == 5


def test_query_exports_and_answers_what_was_labeled(tmp_path):
    from alcore.datasets import load_dataset

    data = load_dataset("digits", max_pool=60, max_test=20)
    inbox = tmp_path / "in"
    o = HumanOracle(pool=data.pool, classes=list(data.classes), outbox=tmp_path / "out", inbox=inbox)
    ids = data.pool.ids[:3]
    assert len(o.query(ids)) == 0
    (job,) = (tmp_path / "out").glob("query-*.csv")
    rows = list(csv.DictReader(job.open()))
    inbox.mkdir()
    write_csv(inbox / "x.csv", [(rows[0]["sample_id"], "4"), (data.pool.ids[10], "1")])  # the second is not asked here
    b = o.query(ids)
    assert b.ids.tolist() == [int(rows[0]["sample_id"])] and b.labels.tolist() == [4]
    write_csv(inbox / "y.csv", [(rows[0]["sample_id"], "5")])
    with pytest.raises(LabelImportError, match="annotators disagree"):
        o.query(ids)


# ---------------------------------------------------------------- generated bad files (hypothesis)
IDS = st.one_of(
    st.sampled_from(POOL.tolist()),  # in the pool (requested, labeled or neither)
    st.integers(-(2**70), 2**70),  # mostly unknown, some beyond int64
    st.text(max_size=6),  # anything
)
LABELS = st.one_of(st.none(), st.sampled_from(CLASSES), st.text(max_size=5))
ROWS = st.lists(st.tuples(IDS, LABELS), max_size=25)


def _expected(rows, labels: LabelState, requested: set[int]):
    """An independent model of check_annotations (conflicts=refuse):
    (commit {id: label}, corrections {id: label}, already, problems, unanswered)."""
    idx = {c: i for i, c in enumerate(CLASSES)}
    firsts: dict[int, list[int]] = {}
    problems = unanswered = 0
    for sid, lab in rows:
        lab = lab.strip() if isinstance(lab, str) else lab
        if lab in (None, ""):
            unanswered += 1
            continue
        s = str(sid).strip()
        ok_int = s.lstrip("-").isascii() and s.lstrip("-").isdigit() and s.count("-") <= int(s.startswith("-"))
        v = int(s) if ok_int else None
        if v is None or not (-(2**63) <= v < 2**63) or v not in set(POOL.tolist()) or lab not in idx:
            problems += 1
            continue
        firsts.setdefault(v, []).append(idx[lab])
    commit, corrections, already = {}, {}, 0
    for v, ls in firsts.items():
        if len(set(ls)) > 1:  # disagreeing rows: all refused
            problems += len(ls)
            continue
        # agreeing rows count once
        if labels.round_of(np.array([v]))[0]:
            if labels.labels_of(np.array([v]))[0] == ls[0]:
                already += 1
            else:
                corrections[v] = ls[0]
        elif v in requested:
            commit[v] = ls[0]
        else:
            problems += 1
    return commit, corrections, already, problems, unanswered


def _write(path: Path, rows, fmt: str) -> None:
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["sample_id", "image", "label"])
        for sid, lab in rows:
            w.writerow([sid, "/x.png", "" if lab is None else lab])
        path.write_text(buf.getvalue(), encoding="utf-8")
    else:
        tasks = [ls_task(sid, *([] if lab is None else [lab])) for sid, lab in rows]
        path.write_text(json.dumps(tasks), encoding="utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=ROWS, fmt=st.sampled_from(["csv", "json"]))
def test_generated_rows_commit_exactly_the_valid_ones(rows, fmt):
    # CSV cells are text: an all-blank row is a blank line, and a label of spaces is no label
    if fmt == "csv":
        rows = [(s, lab) for s, lab in rows if "\x00" not in str(s) + str(lab or "")]
    with tempfile.TemporaryDirectory() as d:
        state = Path(d) / "state.json"
        before = new_state(state)
        inbox = Path(d) / "inbox"
        inbox.mkdir()
        _write(inbox / f"answers.{fmt}", rows, fmt)
        try:
            parsed = read_annotations(inbox / f"answers.{fmt}")
        except LabelImportError:
            parsed = None
        (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
        after = ExperimentState.load(state)
        new = {
            int(i): int(c)
            for i, c in zip(
                after.labels.labeled_ids, after.labels.labels_array()[after.labels.labeled_mask], strict=True
            )
        }
        old = {
            int(i): int(c)
            for i, c in zip(
                before.labels.labeled_ids, before.labels.labels_array()[before.labels.labeled_mask], strict=True
            )
        }
        committed = {k: v for k, v in new.items() if k not in old}
        assert after.ledger.totals()["labels"] == len(new)  # paid exactly for what is labeled
        assert after.ledger.check_paid(after.labels.counts_per_round()) is None  # each in its round
        event(f"{fmt}: " + ("refused whole" if parsed is None else "some committed" if committed else "none committed"))
        if parsed is None:  # refused whole: nothing committed, nothing changed
            assert committed == {} and rec["rejected"] == 1 and {k: new[k] for k in old} == old
            return
        model_rows = [(r.sample_id, r.label) for r in parsed if r.problem is None]
        want, fixed, already, problems, _ = _expected(model_rows, before.labels, set(range(105, 120)))
        assert {k: new[k] for k in old} == {**old, **fixed}  # only corrections change what was committed
        assert committed == want and rec["already"] == already and rec["corrected"] == len(fixed)
        assert rec["rejected"] == problems + sum(r.problem is not None for r in parsed)
        assert set(committed) <= set(range(105, 120))
        rounds = {int(i): int(r) for i, r in zip(after.labels.pool_ids, after.labels.labeled_round, strict=True)}
        assert all(rounds[k] == before.labels.round_of(np.array([k]))[0] for k in fixed)  # corrections keep rounds
        assert [c["id"] for c in after.labeling.corrections] == list(fixed)


BAD_BYTES = st.sampled_from([b"\xff", b"\xc3\x28", b"\x00", b"\xe9", b"\xed\xa0\x80", b"\x80\x80"])


@settings(max_examples=300, deadline=None)
@given(
    rows=ROWS,
    fmt=st.sampled_from(["csv", "json"]),
    corruption=st.sampled_from(["bad_bytes", "truncate", "empty", "utf16", "latin1", "junk_header"]),
    where=st.floats(0, 1),
    bad=BAD_BYTES,
)
def test_corrupted_files_never_crash_and_never_commit_garbage(rows, fmt, corruption, where, bad):
    with tempfile.TemporaryDirectory() as d:
        state = Path(d) / "state.json"
        before = new_state(state)
        f = Path(d) / f"answers.{fmt}"
        _write(f, [(s, lab) for s, lab in rows if "\x00" not in str(s) + str(lab or "")], fmt)
        raw = f.read_bytes()
        cut = int(where * len(raw))
        raw = {
            "bad_bytes": raw[:cut] + bad + raw[cut:],
            "truncate": raw[:cut],
            "empty": b"",
            "utf16": raw.decode("utf-8").encode("utf-16"),
            "latin1": raw.decode("utf-8").encode("latin-1", errors="replace") + "\u00e9".encode("latin-1"),
            "junk_header": b"\x01\x02;;;\n" + raw,
        }[corruption]
        f.write_bytes(raw)
        requested = before.labeling.requested_ids(before.labels)
        try:
            res = import_annotations(f, labels=before.labels, requested=requested, classes=CLASSES)
        except LabelImportError as e:
            assert "Allowed" in str(e) or "Fix" in str(e)
            res = None
        event(f"{corruption}: " + ("refused whole" if res is None else "read"))
        if res is not None:
            # whatever survived the corruption: only requested, unlabeled ids with real classes
            assert set(res.ids.tolist()) <= set(range(105, 120)) and set(res.labels.tolist()) <= {0, 1, 2}
            for p in res.problems:
                assert p.startswith(("row ", "task ")), p  # every problem names its row
        inbox = Path(d) / "inbox"
        inbox.mkdir()
        os.replace(f, inbox / f.name)
        ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
        after = ExperimentState.load(state)
        after.labels.check_invariants()
        assert after.ledger.totals()["labels"] == after.labels.n_labeled
        assert not list(inbox.glob("*.csv")) + list(inbox.glob("*.json"))  # processed and moved, never stuck


# ---------------------------------------------------------------- your own unlabeled images
def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    from PIL import Image

    for r in rows[1:]:
        f = tmp_path / r.split(",")[0]
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(f)
    m = tmp_path / "m.csv"
    m.write_text("\n".join(rows) + "\n")
    return m


def test_a_manifest_may_leave_pool_labels_empty(tmp_path):
    from alcore.datasets import load_dataset
    from alcore.errors import DataError

    rows = ["path,label,split", "a.png,,pool", "b.png,,pool", "c.png,cat,test", "d.png,dog,test"]
    m = _manifest(tmp_path, rows)
    ds = load_dataset("image_folder", root=str(tmp_path), manifest=str(m), classes=["cat", "dog"])
    assert ds.pool.labels.tolist() == [-1, -1] and ds.test.labels.tolist() == [0, 1]
    ds = load_dataset("image_folder", root=str(tmp_path), manifest=str(m))  # classes from the labeled rows
    assert ds.classes == ("cat", "dog")
    m.write_text("path,label,split\na.png,,pool\nc.png,,test\nd.png,dog,test\n")
    with pytest.raises(DataError, match=r"test row\(s\) without a label, e.g. data row\(s\) \[2\]"):
        load_dataset("image_folder", root=str(tmp_path), manifest=str(m))
    m.write_text("path,label\na.png,\nc.png,cat\n")
    with pytest.raises(DataError, match="no split column"):
        load_dataset("image_folder", root=str(tmp_path), manifest=str(m))
    m.write_text("path,label,split\na.png,,pool\nc.png,0,test\n")
    with pytest.raises(DataError, match="classes"):
        load_dataset("image_folder", root=str(tmp_path), manifest=str(m))
