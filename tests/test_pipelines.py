"""Standard AL, SVPp and ASVP through the flows, and the compare flow, on tiny digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from alcore.config import parse_params
from alcore.errors import ConfigError
from alcore.features import read_features
from alcore.layout import Layout
from alcore.run_state import ExperimentState
from alcore.training import resolve_mode
from tests._tiny import copy_stages, tiny

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
def root(tmp_path_factory, tiny_stages):
    """The tiny experiment's stage outputs (the training mode does not change them)."""
    return copy_stages(tiny_stages, tmp_path_factory.mktemp("pipelines"))


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


def test_asvp_schedule_realigns_once_per_count_across_feature_versions(root):
    from flows.active_learning import active_learning

    unguarded = {"mode": "lpft", "holdout": 0}  # the encoder always moves
    p = _params("asvp-sched", "asvp", unguarded, trigger="schedule", trigger_params={"at": [10]})
    active_learning(p, root=str(root), final=False)
    st = ExperimentState.load(Layout(root).state("asvp-sched"))
    assert len(st.versions) == 2  # once at 10 labels, not again on the new features
    assert [st.records[r]["trigger"]["fired"] for r in (1, 2, 3)] == [True, False, False]


def test_asvp_keeps_its_features_when_fine_tuning_loses_to_the_probe(root, capsys):
    from flows.active_learning import active_learning

    wrecked = {"mode": "ft", "backbone_lr": 5.0, "head_lr": 5.0}  # loses to the probe on held-out labels
    active_learning(_params("asvp-lp", "asvp", wrecked, trigger="every_round"), root=str(root))
    out = capsys.readouterr().out
    assert "no realignment after round 1" in out and "realigned after round" not in out
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
    active_learning(_params("asvp-never", "asvp", trigger="never"), root=str(root), final=False)
    a, b = (ExperimentState.load(Layout(root).state(n)) for n in ("svpp", "asvp-never"))
    np.testing.assert_array_equal(a.labels.labeled_round, b.labels.labeled_round)
    assert a.final is not None and b.final is None  # final=False: the rounds, no final network


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
    # the paired counts the rule judged are kept, and go to MLflow with the held-out accuracies
    from flows.common import network_metrics

    c = ev["candidates"]
    for m in ("lpft", "ft"):
        assert c[m]["wins"] + c[m]["losses"] <= ev["held_out"]
        assert c[m]["beats_probe"] == (c[m]["wins"] - c[m]["losses"] > 0.75 * np.sqrt(c[m]["wins"] + c[m]["losses"]))
    met = network_metrics(ev, "final_")
    assert met["final_heldout_ft_wins"] == c["ft"]["wins"] and met["final_heldout_lpft_losses"] == c["lpft"]["losses"]
    assert (st.final["mode"] == "lp") == (not c["lpft"]["beats_probe"] and not c["ft"]["beats_probe"])


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


def test_logme_trigger_compares_only_within_one_feature_version(root):
    """After a realignment the trigger starts a new history: round 3's LogME, measured on the new
    features, is never compared with round 2's, measured on the old ones."""
    from flows.active_learning import active_learning

    unguarded = {"mode": "lpft", "holdout": 0}  # the encoder always moves: a realignment changes the features
    p = _params(
        "logme", "asvp", unguarded, rounds=4, trigger="logme_drop", trigger_params={"tolerance": 10.0, "min_labels": 2}
    )
    active_learning(p, root=str(root))
    st = ExperimentState.load(Layout(root).state("logme"))
    t = {r: st.records[r]["trigger"] for r in (1, 2, 3, 4)}
    assert not t[1]["fired"] and t[1]["reason"] == "no previous round"
    assert t[2]["fired"] and t[2]["version"] == 0  # any LogME change < 10 fires: v0 -> v1
    assert t[3]["version"] == 1 and not t[3]["fired"] and t[3]["reason"] == "no previous round"
    assert "logme_delta" not in t[3]  # nothing on v1 to compare with
    assert t[4]["version"] == 1 and "logme_delta" in t[4]  # compared with round 3, on the same features
    assert [st.records[r]["version"] for r in (1, 2, 3, 4)] == [0, 1, 1, 1]


def test_a_realignment_that_cannot_change_the_features_is_refused():
    from alcore.checks import check_params
    from alcore.errors import ConfigError

    with pytest.raises(ConfigError, match="train.mode=lp freezes it.*Fix: set train.mode=auto"):
        check_params(parse_params(tiny(al={"pipeline": "asvp"}, train={"mode": "lp"})))
    check_params(parse_params(tiny(al={"pipeline": "svpp"}, train={"mode": "lp"})))


def test_every_proxy_setting_reaches_the_results(root):
    """The same experiment again with a useless proxy (2 hidden units, 1 epoch, lr 1e-6): every
    proxy is trained again and the accuracies are the useless proxy's, not served from the cache."""
    from flows.active_learning import active_learning

    active_learning(_params("probe", "svpp"), root=str(root))
    good = ExperimentState.load(Layout(root).state("probe")).records
    useless = parse_params({**_params("probe", "svpp").model_dump(), "proxy": {"hidden": 2, "epochs": 1, "lr": 1e-6}})
    active_learning(useless, fresh=True, root=str(root))
    bad = ExperimentState.load(Layout(root).state("probe")).records
    assert [bad[r]["proxy_accuracy"] for r in (1, 2, 3)] != [good[r]["proxy_accuracy"] for r in (1, 2, 3)]
    assert max(bad[r]["proxy_accuracy"] for r in (1, 2, 3)) < 0.3 < good[3]["proxy_accuracy"]
