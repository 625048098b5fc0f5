"""What comes back from people: Label Studio's export formats with several annotators, conflicts,
corrections of committed labels, and an inbox that holds files still being written, hostile names,
pipes, huge sparse files and links (issue 16)."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from alcore.errors import LabelImportError
from alcore.experiment import ExperimentState
from alcore.labeling import (
    MAX_FILE_BYTES,
    check_annotations,
    describe_import,
    ingest_inbox,
    parse_annotations,
    read_annotations,
)
from tests.test_labeling import CLASSES, PRICE, new_state, write_csv

REQUESTED = np.arange(110, 120)


@pytest.fixture
def box(tmp_path) -> tuple[Path, Path]:
    """An experiment state (see ``new_state``) and an empty inbox."""
    state = tmp_path / "state.json"
    new_state(state)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    return state, inbox


# ---------------------------------------------------------------- Label Studio exports, several annotators
def ls_exports(answers: dict[int, list[str]]) -> dict[str, bytes]:
    """The three exports Label Studio 1.23 writes for tasks answered by several annotators, as it
    writes them (JSON: a task with its annotations; JSON_MIN and CSV: one record per annotation,
    a task's newest annotation first; the image column holds the data: URI the task had)."""
    tasks, flat, ann_id = [], [], 0
    for task_id, (sid, given) in enumerate(answers.items(), start=1):
        anns = []
        for label in given:
            ann_id += 1
            anns.append(
                {
                    "id": ann_id,
                    "completed_by": 1,
                    "result": [
                        {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [label]}}
                    ],
                    "was_cancelled": False,
                }
            )
        data = {"image": "data:image/png;base64,iVBORw0KGgo=", "sample_id": sid, "round": 2}
        tasks.append({"id": task_id, "annotations": anns, "predictions": [], "data": data})
        for a in reversed(anns):
            flat.append(
                {
                    **data,
                    "id": task_id,
                    "label": a["result"][0]["value"]["choices"][0],
                    "annotator": 1,
                    "annotation_id": a["id"],
                }
            )
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["annotation_id", "annotator", "id", "image", "label", "round", "sample_id"])
    w.writeheader()
    w.writerows(flat)
    return {
        "export.json": json.dumps(tasks).encode(),
        "export-min.json": json.dumps(flat).encode(),
        "export.csv": buf.getvalue().encode(),
    }


def check(raw: bytes, name: str, st, **kw):
    rows = parse_annotations(raw, name)
    return check_annotations(rows, labels=st.labels, requested=REQUESTED, classes=CLASSES, file=name, **kw)


@pytest.mark.parametrize("fmt", ["export.json", "export-min.json", "export.csv"])
def test_agreeing_annotators_commit_once_in_every_export_format(tmp_path, fmt):
    st = new_state(tmp_path / "state.json")
    raw = ls_exports({110: ["dog", "dog"], 111: ["cat"], 112: ["eel", "eel", "eel"]})[fmt]
    res = check(raw, fmt, st)
    assert res.ok, res.problems
    assert dict(zip(res.ids.tolist(), res.labels.tolist(), strict=True)) == {110: 1, 111: 0, 112: 2}
    assert res.conflicts == []


@pytest.mark.parametrize("fmt", ["export.json", "export-min.json", "export.csv"])
def test_disagreeing_annotators_follow_the_chosen_policy(tmp_path, fmt):
    st = new_state(tmp_path / "state.json")
    # 110: two say dog, one cat; 111: a tie, cat answered first; 112: all agree
    raw = ls_exports({110: ["cat", "dog", "dog"], 111: ["cat", "eel"], 112: ["eel"]})[fmt]

    refuse = check(raw, fmt, st)
    assert dict(zip(refuse.ids.tolist(), refuse.labels.tolist(), strict=True)) == {112: 2}
    assert len(refuse.problems) == 5 and all("annotators disagree" in p for p in refuse.problems)
    assert "set labeling.conflicts to majority or first" in refuse.problems[0]

    majority = check(raw, fmt, st, conflicts="majority")
    assert dict(zip(majority.ids.tolist(), majority.labels.tolist(), strict=True)) == {110: 1, 112: 2}
    assert len(majority.problems) == 2 and "no majority" in majority.problems[0]  # the tie is refused
    assert len(majority.conflicts) == 1 and "took 'dog', the majority" in majority.conflicts[0]

    first = check(raw, fmt, st, conflicts="first")  # the earliest annotation, whatever the file order
    assert dict(zip(first.ids.tolist(), first.labels.tolist(), strict=True)) == {110: 0, 111: 0, 112: 2}
    assert first.ok and len(first.conflicts) == 2 and "the first answer" in first.conflicts[0]


def test_a_settled_conflict_is_reported_in_the_import_record(box, tmp_path):
    state, inbox = box
    (inbox / "export.csv").write_bytes(ls_exports({110: ["cat", "dog", "dog"]})["export.csv"])
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, conflicts="majority", settle_seconds=0)
    assert rec["committed"] == 1 and rec["rejected"] == 0 and "the majority" in rec["conflicts"][0]
    assert "1 disagreement(s) settled" in describe_import(rec)


# ---------------------------------------------------------------- corrections
def test_a_corrected_label_is_accepted_keeps_its_round_and_is_never_paid_twice(tmp_path):
    state = tmp_path / "state.json"
    new_state(state)  # 100-104 labeled in round 1 (100: cat, 101: dog)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    before = ExperimentState.load(state)
    digest = before.labels.digest()
    # Label Studio exports everything annotated so far: the reviewer's fix of 101 and a new label
    write_csv(inbox / "export-1.csv", [(100, "cat"), (101, "eel"), (110, "dog")])
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert (rec["committed"], rec["corrected"], rec["already"], rec["rejected"]) == (1, 1, 1, 0)
    assert "sample 101 corrected from 'dog' to 'eel' (labeled in round 1" in rec["corrections"][0]
    st = ExperimentState.load(state)
    assert st.labels.labels_of(np.array([101])).tolist() == [2] and st.labels.round_of(np.array([101])).tolist() == [1]
    assert st.ledger.totals()["labels"] == 6 == st.labels.n_labeled  # the new label only
    assert st.ledger.totals()["label_usd"] == pytest.approx(6 * PRICE)
    assert st.labels.digest() != digest  # what a run compares to see that its labels changed
    (c,) = st.labeling.corrections
    assert {k: c[k] for k in ("id", "from", "to", "round", "file")} == {
        "id": 101,
        "from": 1,
        "to": 2,
        "round": 1,
        "file": "export-1.csv",
    }

    # the next export says the same: nothing changes, nothing is paid, no cycle fails on the row
    write_csv(inbox / "export-2.csv", [(100, "cat"), (101, "eel"), (110, "dog")])
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert (rec["committed"], rec["corrected"], rec["already"], rec["rejected"]) == (0, 0, 3, 0)

    # the first file dropped again (the same bytes) never undoes a later correction
    write_csv(inbox / "export-1.csv", [(100, "cat"), (101, "eel"), (110, "dog")])
    write_csv(inbox / "fix-101.csv", [(101, "cat")])
    ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    write_csv(inbox / "again.csv", [(100, "cat"), (101, "eel"), (110, "dog")])  # = export-1.csv's bytes
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert rec["corrected"] == 0 and "an old file does not undo a correction" in rec["problems"][0]
    st = ExperimentState.load(state)
    assert st.labels.labels_of(np.array([101])).tolist() == [0] and len(st.labeling.corrections) == 2
    assert st.ledger.totals()["labels"] == 6


def test_one_bad_row_does_not_stop_the_others(box, tmp_path):
    state, inbox = box
    write_csv(inbox / "a.csv", [(110, "dog"), (111, "bird"), (112, "cat")])
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert (rec["committed"], rec["rejected"]) == (2, 1) and rec["moved_to"]


# ---------------------------------------------------------------- files still being written
def test_a_growing_file_is_waited_for_and_read_whole(box, tmp_path):
    state, inbox = box
    f = inbox / "slow.csv"
    f.write_text("sample_id,label\n110,dog\n")
    done = threading.Event()

    def writer():  # an annotation tool still writing: two more rows within the next 0.6 s
        for sid in (111, 112):
            time.sleep(0.3)
            with open(f, "a") as fh:
                fh.write(f"{sid},cat\n")
        done.set()

    t = threading.Thread(target=writer)
    t.start()
    try:
        recs = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=1.0)
    finally:
        t.join()
    assert done.is_set()
    if recs[0].get("skipped"):  # it changed while the cycle waited: left whole for the next cycle
        assert f.exists() and ExperimentState.load(state).labels.n_labeled == 5
        time.sleep(1.0)
        recs = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=1.0)
    (rec,) = recs
    assert rec["committed"] == 3 and not f.exists()  # every row, the tail included


def test_a_file_that_changes_while_it_is_read_is_not_committed_or_moved(box, tmp_path, monkeypatch):
    import alcore.labeling as lab

    state, inbox = box
    f = write_csv(inbox / "a.csv", [(110, "dog")])
    real = lab.read_file_bounded

    def read_then_grow(path):
        out = real(path)
        with open(path, "a") as fh:  # the writer appends right after we read
            fh.write("111,cat\n")
        return out

    monkeypatch.setattr(lab, "read_file_bounded", read_then_grow)
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert "changed while it was read" in rec["skipped"] and f.exists()
    assert ExperimentState.load(state).labels.n_labeled == 5
    monkeypatch.undo()
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert rec["committed"] == 2 and not f.exists()


@pytest.mark.parametrize("name", ["a.csv.partial", "a.csv.part", "a.csv.tmp", ".a.csv", "a.csv.crdownload"])
def test_files_being_copied_in_are_left_alone(box, tmp_path, name):
    state, inbox = box
    write_csv(inbox / name, [(110, "dog")])
    assert ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0) == []
    assert (inbox / name).exists()


# ---------------------------------------------------------------- hostile inbox entries
def test_a_240_character_name_is_committed_and_moved(box, tmp_path):
    state, inbox = box
    name = "é" * 5 + "x" * 231 + ".csv"  # 240 characters, 245 bytes: fine in the inbox, too long with a prefix
    assert len(name) == 240
    write_csv(inbox / name, [(110, "dog"), (999, "cat")])  # one refused row: a problems.txt beside it
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert rec["committed"] == 1 and rec["moved_to"] and rec["left"] is None
    moved = Path(rec["moved_to"])
    assert moved.is_file() and moved.suffix == ".csv" and len(moved.name.encode()) <= 255
    assert moved.with_name(moved.name + ".problems.txt").is_file()
    assert ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0) == []  # nothing left to crash on


def test_a_file_that_cannot_be_moved_stays_and_the_cycle_goes_on(box, tmp_path, monkeypatch):
    import alcore.labeling as lab

    state, inbox = box
    write_csv(inbox / "a.csv", [(110, "dog")])

    def refuse(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lab, "_move_done", refuse)
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert rec["committed"] == 1 and rec["moved_to"] is None and "could not be moved" in rec["left"]
    monkeypatch.undo()
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert (rec["committed"], rec["already"]) == (0, 1) and rec["moved_to"]


def test_a_fifo_does_not_hang_the_cycle(box, tmp_path):
    state, inbox = box
    os.mkfifo(inbox / "pipe.csv")
    write_csv(inbox / "z.csv", [(110, "dog")])
    out: list = []
    t = threading.Thread(target=lambda: out.append(ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)))
    t.daemon = True
    t.start()
    t.join(30)
    assert not t.is_alive(), "the cycle hangs on a named pipe"
    recs = {r["file"]: r for r in out[0]}
    assert "is a named pipe" in recs["pipe.csv"]["message"] and recs["z.csv"]["committed"] == 1
    with pytest.raises(LabelImportError, match="named pipe"):
        read_annotations(Path(recs["pipe.csv"]["moved_to"]))


def test_a_huge_sparse_file_is_refused_by_its_size_before_a_byte_is_read(box, tmp_path, monkeypatch):
    import alcore.labeling as lab

    state, inbox = box
    with open(inbox / "big.csv", "wb") as fh:
        fh.truncate(1 << 30)  # 1 GiB, sparse: no disk used
    reads = []
    real_read = os.read
    monkeypatch.setattr(lab.os, "read", lambda fd, n: reads.append(n) or real_read(fd, n))
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert f"has {1 << 30} bytes" in rec["message"] and f"at most {MAX_FILE_BYTES} bytes" in rec["message"]
    assert reads == []  # refused by its size, never read


def test_a_done_link_never_moves_files_out_of_the_inbox(box, tmp_path):
    state, inbox = box
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (inbox / "done").symlink_to(outside)
    write_csv(inbox / "a.csv", [(110, "dog")])
    with pytest.raises(LabelImportError, match="done is a symbolic link to .*elsewhere.*Fix: remove it"):
        ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert list(outside.iterdir()) == [] and (inbox / "a.csv").exists()
    assert ExperimentState.load(state).labels.n_labeled == 5  # refused before anything was committed
    (inbox / "done").unlink()
    (rec,) = ingest_inbox(state, inbox, classes=CLASSES, settle_seconds=0)
    assert rec["committed"] == 1 and Path(rec["moved_to"]).parent == inbox / "done"
