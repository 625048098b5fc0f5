"""Standard AL, SVPp and ASVP through the flows, and the compare flow, on tiny digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alcore.config import parse_params
from alcore.errors import ConfigError
from alcore.experiment import ExperimentState
from alcore.features import read_features
from alcore.layout import Layout
from alcore.training import resolve_mode
from tests._tiny import tiny

pytestmark = pytest.mark.integration


def _params(name, pipeline, train=None, **al):
    return parse_params(
        tiny(
            experiment={"name": name},
            al={"pipeline": pipeline, "rounds": 3, **al},
            train={"mode": "auto", **(train or {})},
        )
    )


@pytest.fixture(scope="module")
def root(tmp_path_factory, prefect_harness):
    from flows.pipeline import encoder, features, prepare

    root = tmp_path_factory.mktemp("pipelines")
    p = _params("setup", "svpp")
    for stage in (prepare, encoder, features):
        stage(p, root=str(root))
    return root


def test_resolve_mode_checks_and_leaves_auto_to_the_evidence():
    assert resolve_mode("auto") == "auto" and resolve_mode("lp") == "lp"
    with pytest.raises(ConfigError, match="auto, lp"):
        resolve_mode("finetune")


def test_asvp_realigns_into_new_feature_files_and_keeps_the_labels(root):
    from flows.active_learning import active_learning

    unguarded = {"mode": "lpft", "holdout": 0}  # the encoder always moves
    s = active_learning(_params("asvp", "asvp", unguarded, trigger="every_round"), root=str(root))
    st = ExperimentState.load(Layout(root).state("asvp"))
    assert s["labels"] == 30 and st.labels.n_labeled == 30
    assert len(st.versions) == 3  # v0 + a realignment after rounds 1 and 2 (never after the last)
    v0, v2 = st.versions[0], st.versions[2]
    base = read_features(v0["pool"]["path"])
    new = read_features(v2["pool"]["path"])
    np.testing.assert_array_equal(base.ids, new.ids)
    assert base.spec.weights_digest != new.spec.weights_digest  # a new spec, a new file ...
    assert (root / "features" / "pool.parquet").is_file()  # ... and the old one stays
    assert [st.records[r]["trigger"]["fired"] for r in (1, 2, 3)] == [True, True, False]
    assert "last round" in st.records[3]["trigger"]["reason"]
    t = st.ledger.totals()
    assert t["seconds_fine_tuning"] > 0 and t["seconds_reextraction"] > 0 and t["seconds_extraction"] > 0


def test_asvp_keeps_its_features_when_fine_tuning_loses_to_the_probe(root):
    from flows.active_learning import active_learning

    wrecked = {"mode": "ft", "backbone_lr": 5.0, "head_lr": 5.0}  # loses to the probe on held-out labels
    active_learning(_params("asvp-lp", "asvp", wrecked, trigger="every_round"), root=str(root))
    st = ExperimentState.load(Layout(root).state("asvp-lp"))
    assert len(st.versions) == 1  # nothing re-extracted: the encoder did not move
    for r in (1, 2):
        assert st.records[r]["trigger"]["fired"] and not st.records[r]["trigger"]["reextracted"]
        assert st.records[r]["networks"][0]["mode"] == "lp"
    t = st.ledger.totals()
    assert t["seconds_fine_tuning"] > 0 and t["seconds_reextraction"] == 0


def test_asvp_with_trigger_never_selects_like_svpp(root):
    from flows.active_learning import active_learning

    active_learning(_params("svpp", "svpp"), root=str(root))
    active_learning(_params("asvp-never", "asvp", trigger="never"), root=str(root))
    a = ExperimentState.load(Layout(root).state("svpp")).labels
    b = ExperimentState.load(Layout(root).state("asvp-never")).labels
    np.testing.assert_array_equal(a.labeled_round, b.labeled_round)


def test_standard_fine_tunes_and_scores_every_round(root):
    from flows.active_learning import active_learning

    active_learning(_params("standard", "standard"), root=str(root))
    st = ExperimentState.load(Layout(root).state("standard"))
    rows = {r["round"]: r for r in st.ledger.rows()}
    assert rows[0]["seconds_extraction"] == 0  # standard never uses the pre-computed features
    assert rows[1]["seconds_fine_tuning"] == 0  # round 1 is random
    assert rows[2]["seconds_fine_tuning"] > 0 and rows[3]["seconds_fine_tuning"] > 0
    assert rows[2]["seconds_scoring"] > 0 and rows[3]["seconds_proxy_training"] == 0
    # auto chose on held-out labels; the choice and its evidence are in the state, per round and final
    ev = st.final["evidence"]
    assert st.final["mode"] == ev["mode"] in ("lp", "lpft", "ft") and ev["requested"] == "auto"
    assert set(ev["candidates"]) == {"lp", "lpft", "ft"} and ev["held_out"] >= 4
    nets = st.records[3]["networks"]  # round 3 selected with a network fine-tuned on round 2's 20 labels
    assert [n["labels"] for n in nets] == [20] and nets[0]["evidence"]["requested"] == "auto"


def test_compare_writes_tables_plots_and_ratios(root):
    from flows.compare import compare

    p = parse_params(
        {
            **tiny(experiment={"name": "cmp"}, al={"rounds": 2}, train={"mode": "lp"}),
            "compare": {"pipelines": ["standard", "svpp"], "strategies": ["margin"], "seeds": [0, 1]},
        }
    )
    summary = compare(p, root=str(root))
    out = Layout(root).compare
    for f in ("summary.json", "tables.md", "accuracy_vs_labels.png", "cost_plane.png"):
        assert (out / f).is_file(), f
    data = json.loads((out / "summary.json").read_text())
    assert len(data["runs"]) == 4 and {r["pipeline"] for r in data["runs"]} == {"standard", "svpp"}
    assert all(len(r["curve"]) == 2 for r in data["runs"])  # tested at both budgets
    ratio = next(r for r in summary["ratios"] if r["pipeline"] == "svpp")
    assert ratio["sampling_ratio"] > 1  # svpp's loop is cheaper than fine-tuning every round
    md = (out / "tables.md").read_text()
    assert "standard/margin" in md and "labels to target" in md
    assert (root / "compare" / "runs" / "cmp-svpp-margin-s1" / "state.json").is_file()
