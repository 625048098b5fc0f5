import json
import subprocess
import sys

import numpy as np
import pytest

from alcore.checks import check_budget
from alcore.config import parse_params
from alcore.errors import BudgetExceededError, ConfigError, ExperimentLockedError, LabelError
from alcore.idtable import IdIndex
from alcore.run_state import experiment_lock, open_state
from alcore.seeding import derive_seed
from alcore.steps import round_strategy

IDS = np.arange(100, 200, dtype=np.int64)


def _state(tmp_path, digest="abc"):
    return open_state(
        tmp_path / "state.json",
        config_digest=digest,
        pool_ids=IDS,
        n_classes=3,
        price_per_label=0.5,
        price_per_hour=3.6,
    )


def test_commit_save_load_round_trip(tmp_path):
    st = _state(tmp_path)
    st.ledger.record(0, "extraction", 10.0)
    st.commit(1, np.array([101, 150]), np.array([0, 2]), {"scoring": 1.0})
    st.records[1] = {"proxy_accuracy": 0.5}
    st.save(tmp_path / "state.json")
    back = _state(tmp_path)
    assert back.round == 1 and back.labels.n_labeled == 2
    assert back.records == {1: {"proxy_accuracy": 0.5}}
    assert back.ledger.totals() == st.ledger.totals()
    t = back.ledger.totals()
    assert t["label_usd"] == pytest.approx(1.0) and t["compute_usd"] == pytest.approx(11.0 * 3.6 / 3600)


def test_commit_refuses_duplicates_and_out_of_order_rounds_without_changing_anything(tmp_path):
    st = _state(tmp_path)
    st.commit(1, np.array([101]), np.array([0]), {})
    before = json.dumps(st.state_dict(), sort_keys=True)
    with pytest.raises(LabelError):
        st.commit(2, np.array([101]), np.array([1]), {})  # bought already
    with pytest.raises(ConfigError, match="round 3"):
        st.commit(3, np.array([102]), np.array([1]), {})
    assert json.dumps(st.state_dict(), sort_keys=True) == before


def test_resume_refuses_state_of_other_parameters(tmp_path):
    _state(tmp_path).save(tmp_path / "state.json")
    with pytest.raises(ConfigError, match="other parameters.*--fresh"):
        _state(tmp_path, digest="other")


def test_budget_larger_than_pool_is_refused():
    al = parse_params({"al": {"initial": 50, "batch": 30, "rounds": 3}}).al
    check_budget(al, 110)
    with pytest.raises(BudgetExceededError, match="110 labels.*pool holds 100"):
        check_budget(al, 100)


def test_round_one_is_random_unless_cold_start():
    al = parse_params({"al": {"strategy": "margin"}}).al
    assert round_strategy(al, 1) == ("random", {})
    assert round_strategy(al, 2) == ("margin", {})


def test_positions_and_seeds():
    np.testing.assert_array_equal(IdIndex(IDS).positions(np.array([150, 100])), [50, 0])
    with pytest.raises(ConfigError, match="not in this feature set"):
        IdIndex(IDS).positions(np.array([5]), where="this feature set")
    assert derive_seed(0, "select", 1) == derive_seed(0, "select", 1) != derive_seed(0, "select", 2)


def test_second_process_is_locked_out(tmp_path):
    tmp_path = tmp_path / "runs" / "x"  # the lock is kept in the project's .alcore/locks, two levels up
    code = (
        "import sys; from alcore.run_state import experiment_lock\n"
        "from alcore.errors import ExperimentLockedError\n"
        f"try:\n  with experiment_lock({str(tmp_path)!r}): pass\n"
        "except ExperimentLockedError as e: print('LOCKED', e); sys.exit(3)\n"
    )
    with experiment_lock(tmp_path):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert r.returncode == 3 and "Another run holds" in r.stdout
        with pytest.raises(ExperimentLockedError):
            with experiment_lock(tmp_path):
                pass
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_features_of_another_encoder_are_refused(tmp_path):
    from alcore.checks import check_features_match_encoder
    from alcore.datasets import load_dataset
    from alcore.encoders import create_encoder, save_encoder
    from alcore.errors import FeatureMismatchError
    from alcore.steps import compute_features

    data = load_dataset("digits", max_pool=40, max_test=20)
    a, b = create_encoder("cifar_resnet8"), create_encoder("cifar_resnet8")
    save_encoder(b, tmp_path / "b.safetensors")
    spec = compute_features(a, data, "test", batch_size=32, device="cpu", progress=False).spec
    with pytest.raises(FeatureMismatchError, match="re-extract"):
        check_features_match_encoder(tmp_path / "b.safetensors", spec)
    save_encoder(a, tmp_path / "a.safetensors")
    check_features_match_encoder(tmp_path / "a.safetensors", spec)


def test_the_encoders_initial_weights_come_from_the_experiment_seed():
    """SimCLR starts from these weights: whatever ran before in the process, the same seed gives
    the same encoder, and the caller's random state is left alone."""
    import torch

    from alcore.config import EncoderCfg
    from alcore.datasets import load_dataset
    from alcore.steps import pretrained_encoder

    cfg = EncoderCfg(arch="cifar_resnet8", ssl={"method": "none"})
    data = load_dataset("digits", max_pool=20, max_test=10)
    torch.manual_seed(123)
    a = pretrained_encoder(cfg, data, seed=0, device="cpu", progress=False)
    torch.rand(7)  # other work drew from the global generator in between
    state = torch.get_rng_state()
    b = pretrained_encoder(cfg, data, seed=0, device="cpu", progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    c = pretrained_encoder(cfg, data, seed=1, device="cpu", progress=False)
    assert a.weights_digest() == b.weights_digest() != c.weights_digest()
