"""PT4AL and NTKCPL through the pipeline: the pretext stage, its cost, and selection from it."""

from __future__ import annotations

import numpy as np
import pytest

from alcore.checks import check_params
from alcore.config import parse_params
from alcore.errors import ConfigError, DataError
from alcore.layout import Layout
from alcore.pretext import read_pretext_losses
from alcore.run_state import ExperimentState
from tests._tiny import copy_stages, tiny

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_stages):
    """One project for the module: the tiny experiment's stages, then the rest of the pipeline with
    PT4AL (so the pretext stage computes)."""
    from flows.active_learning import active_learning
    from flows.pipeline import pretext, report

    root = copy_stages(tiny_stages, tmp_path_factory.mktemp("selfsup"))
    p = parse_params(tiny(al={"strategy": "pt4al"}, pretext={"epochs": 1, "batch_size": 64}))
    pretext(p, root=str(root))
    active_learning(p, root=str(root))
    report(p, root=str(root))
    return root


def test_pt4al_then_ntkcpl_through_the_flows(project):
    from flows.active_learning import active_learning

    tmp_path = project
    L = Layout(tmp_path)
    ids, losses, spec = read_pretext_losses(L.pretext)
    assert spec["computed"] and ids.size == 300 and np.isfinite(losses).all()
    st = ExperimentState.load(L.state("tiny"))
    assert st.labels.n_labeled == 30
    rows = st.ledger.rows()
    # round 0 pays for SimCLR and the rotation task
    assert rows[0]["seconds_pretraining"] >= spec["seconds"] > 0
    # round 1 is PT4AL's cold start: an even stride of the hardest third of the pool
    order = ids[np.argsort(-losses, kind="stable")][:100]
    assert set(st.labels.ids_in_round(1).tolist()) == set(order[::10].tolist())

    # NTKCPL on the same features, in the same project (no pretext needed).
    q = parse_params(tiny(experiment={"name": "tiny-ntk"}, al={"strategy": "ntkcpl"}))
    active_learning(q, root=str(tmp_path))
    st2 = ExperimentState.load(L.state("tiny-ntk"))
    assert st2.labels.n_labeled == 30 and st2.records[3]["proxy_accuracy"] > 0


def test_pretext_stage_writes_a_marker_when_not_needed(project, tmp_path):
    import shutil

    from flows.pipeline import pretext

    (tmp_path / "data").mkdir()
    shutil.copy(Layout(project).dataset, Layout(tmp_path).dataset)
    out = pretext(parse_params(tiny()), root=str(tmp_path))
    assert out == {"computed": False, "seconds": 0.0}
    ids, _, spec = read_pretext_losses(Layout(tmp_path).pretext)
    assert ids.size == 0 and not spec["computed"] and "no strategy" in spec["reason"]
    from alcore.steps import load_pretext_losses

    with pytest.raises(DataError, match="pretext.when=auto"):
        load_pretext_losses(Layout(tmp_path).pretext, np.arange(3))


def test_pt4al_with_pretext_never_is_refused_before_any_work():
    p = parse_params(tiny(al={"strategy": "pt4al"}, pretext={"when": "never"}))
    with pytest.raises(ConfigError, match="pretext.when=never"):
        check_params(p)


@pytest.mark.slow  # 12 s; tests/test_as3l.py checks the one-shot priors and prior-guided training by default
def test_as3l_flow_one_shot_priors_and_prior_guided_training(project):
    import json

    from alcore.as3l import read_priors
    from alcore.steps import priors_path
    from flows.as3l import as3l

    p = parse_params(
        tiny(
            # holdout 0: the AS3L network itself (tests/test_as3l.py tests the guard against the probe)
            train={"as3l_runs": 2, "as3l_epochs": 5, "semi_steps": 4, "semi_batch_size": 8, "semi_mu": 2, "holdout": 0},
            al={"audit": {"reserve": 0.2, "initial": 20}, "stop": "budget", "stop_params": {"max_usd": 1.0}},
        )
    )
    out = as3l(p, labels=10, root=str(project))
    L = Layout(project)
    st = ExperimentState.load(L.state("tiny-as3l-10"))
    assert st.labels.n_labeled == 10 and st.round == 1 and st.final["mode"] == "as3l"
    # the audit rides with the one round, stays out of the selection and judges the AS3L network
    assert st.audit.n_labeled > 0 and not np.intersect1d(st.audit.reserve_ids, st.labels.labeled_ids).size
    assert 0 <= out["network_estimated_accuracy_lower"] <= out["network_estimated_accuracy"] <= 1
    assert st.records[1]["stop"]["rule"] == "never"  # one round: the stop rule is dropped, and said so
    ids, priors, spec = read_priors(str(priors_path(st.final["model"])))
    assert ids.size == 300 and spec["n_labeled"] == 10
    labeled = st.labels.labeled_ids
    from alcore.idtable import IdIndex

    pos = IdIndex(ids).positions(labeled)
    np.testing.assert_array_equal(priors.labels[pos], st.labels.labels_of(labeled))  # seeds keep their labels
    saved = json.loads((L.reports / "as3l.json").read_text())
    assert 0 <= saved["prior_baseline_accuracy"] <= 1 and saved == out
