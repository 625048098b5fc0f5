"""alcore against a real Label Studio (issue 16), slow: a project created through its API, the job
alcore exported imported as it is (images embedded: no serving, no storage), annotated through the
API by several annotators (agreeing, disagreeing, one label fixed later by a reviewer), exported as
JSON, JSON-MIN and CSV, and ingested by labeling cycles up to the final network. Also checks the
local-files recipe `alcore label setup` prints.

Needs Label Studio in its own environment: ``make label-studio`` (or ALCORE_LABEL_STUDIO=path of
a ``label-studio`` executable). Run: ``make test-label-studio``.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

import numpy as np
import pytest

from alcore.config import parse_params
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from flows._server import free_port
from tests._label_studio import executable, label_studio
from tests._tiny import copy_stages, tiny
from tests.test_labeling_flow import truth_of

pytestmark = [pytest.mark.slow, pytest.mark.integration]
PRICE = 0.5


def drop(root, name, file, raw: bytes) -> None:
    inbox = Layout(root).inbox(name)
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / file).write_bytes(raw)


def test_a_real_label_studio_from_import_to_final_network(tmp_path, tiny_stages):
    from flows.labeling import labeling_cycle

    exe = executable()
    if exe is None:
        pytest.skip("no Label Studio: run `make label-studio` (or set ALCORE_LABEL_STUDIO)")
    root = copy_stages(tiny_stages, tmp_path / "project")
    name = "ls"
    p = parse_params(
        tiny(
            experiment={"name": name},
            oracle={"name": "human", "price_per_label": PRICE},
            al={"initial": 10, "batch": 10, "rounds": 2},
            labeling={"settle_seconds": 0, "conflicts": "first"},
        )
    )
    truth, L = truth_of(p), Layout(root)
    wrong = {sid: str((int(c) + 1) % 10) for sid, c in truth.items()}  # digits: classes "0".."9"
    assert labeling_cycle(p, root=str(root))["did"] == "selected batch 1 (10 samples)"
    outbox = L.outbox(name)

    with label_studio(exe, tmp_path / "ls-data", document_root=tmp_path, port=free_port()) as ls:
        project = ls.create_project("alcore digits", (outbox / "label-config.xml").read_text())

        # batch 1, imported exactly as exported: the images travel inside the tasks
        ls.import_tasks(project, json.loads((outbox / "batch-0001.labelstudio.json").read_text()))
        tasks = {t["data"]["sample_id"]: t for t in ls.tasks(project)}
        assert len(tasks) == 10
        for sid, t in tasks.items():
            head, b64 = t["data"]["image"].split(",", 1)
            assert head == "data:image/png;base64"
            assert base64.b64decode(b64) == (outbox / "images" / f"{sid}.png").read_bytes()
        ids = sorted(tasks)
        first = {}
        for sid in ids:
            label = wrong[sid] if sid == ids[2] else truth[sid]  # ids[2]: a mistake, fixed later
            first[sid] = ls.annotate(tasks[sid]["id"], label)
        ls.annotate(tasks[ids[0]]["id"], truth[ids[0]])  # a second annotator agrees
        ls.annotate(tasks[ids[1]]["id"], wrong[ids[1]])  # a second annotator disagrees, later

        # JSON-MIN: one record per annotation; agreeing ones commit once, the disagreement is
        # settled by labeling.conflicts=first (the earliest annotation) and reported
        drop(root, name, "export-1.json", ls.export(project, "JSON_MIN"))
        out = labeling_cycle(p, root=str(root))
        (rec,) = out["imports"]
        assert (rec["committed"], rec["corrected"], rec["rejected"]) == (10, 0, 0), rec
        assert len(rec["conflicts"]) == 1 and "the first answer" in rec["conflicts"][0]
        assert out["did"] == "selected batch 2 (10 samples)" and out["refused"] == []

        # a reviewer fixes the mistake; batch 2 is imported and annotated; the CSV export holds all 20
        ls.change(first[ids[2]], truth[ids[2]])
        ls.import_tasks(project, json.loads((outbox / "batch-0002.labelstudio.json").read_text()))
        for t in ls.tasks(project):
            if t["data"]["round"] == 2:
                ls.annotate(t["id"], truth[t["data"]["sample_id"]])
        drop(root, name, "export-2.csv", ls.export(project, "CSV"))
        out = labeling_cycle(p, root=str(root))
        (rec,) = out["imports"]
        assert (rec["committed"], rec["corrected"], rec["already"], rec["rejected"]) == (10, 1, 9, 0), rec
        assert f"sample {ids[2]} corrected from" in rec["corrections"][0]
        assert out["did"].startswith("all 2 rounds labeled; final network") and out["finished"]

        # the full JSON export of everything: nothing new, nothing paid, no cycle fails
        drop(root, name, "export-3.json", ls.export(project, "JSON"))
        out = labeling_cycle(p, root=str(root))
        (rec,) = out["imports"]
        assert (rec["committed"], rec["corrected"], rec["already"], rec["rejected"]) == (0, 0, 20, 0), rec
        assert out["did"] == "finished"

        # the local-files recipe of `alcore label setup`: with its two variables set at start and a
        # Local Files storage on the folder, Label Studio serves a /data/local-files/?d= reference
        ls.call("POST", "/api/storages/localfiles", {"project": project, "path": str(outbox / "images"), "title": "x"})
        rel = (outbox / "images" / f"{ids[0]}.png").relative_to(tmp_path).as_posix()
        png = ls.call("GET", "/data/local-files/?d=" + urllib.parse.quote(rel), raw=True)
        assert png == (outbox / "images" / f"{ids[0]}.png").read_bytes()

    st = ExperimentState.load(L.state(name, human=True))
    labeled = st.labels.labeled_ids
    assert st.labels.n_labeled == 20 == st.ledger.totals()["labels"]
    assert st.ledger.totals()["label_usd"] == pytest.approx(20 * PRICE)  # each label paid once
    got = st.labels.labels_of(labeled)
    assert all(truth[int(i)] == str(c) for i, c in zip(labeled, got, strict=True))  # the fix is in
    assert [(c["id"], c["round"]) for c in st.labeling.corrections] == [(ids[2], 1)]
    assert np.array_equal(st.labels.round_of(np.array(ids)), np.ones(10))
