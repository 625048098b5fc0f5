import numpy as np
import pytest
import torch

from alcore.datasets import load_dataset
from alcore.encoders import create_encoder
from alcore.errors import ConfigError, WeightsError
from alcore.training import TrainConfig, evaluate, load_classifier, save_classifier, train_classifier

CFG = TrainConfig(lp_epochs=5, ft_epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def setup():
    data = load_dataset("digits", max_pool=300, max_test=100)
    return data, create_encoder("cifar_resnet8").eval()


def _digest(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


@pytest.mark.parametrize("mode", ["lp", "ft", "lpft"])
def test_modes_train_and_never_touch_the_pretrained_encoder(setup, mode):
    data, enc = setup
    before = enc.weights_digest()
    pos = np.arange(100)
    res = train_classifier(
        enc, data.pool, pos, data.pool.labels[pos], n_classes=10, mode=mode, config=CFG, device="cpu", progress=False
    )
    assert enc.weights_digest() == before
    ev = evaluate(res.model, data.test, device="cpu")
    assert 0.0 <= ev["accuracy"] <= 1.0 and ev["n"] == len(data.test)
    changed = res.model.encoder.weights_digest() != before
    assert changed == (mode != "lp")  # lp freezes the backbone; ft and lpft move it


def test_lp_learns_something(setup):
    data, enc = setup
    pos = np.arange(200)
    res = train_classifier(
        enc,
        data.pool,
        pos,
        data.pool.labels[pos],
        n_classes=10,
        mode="lp",
        config=TrainConfig(lp_epochs=30),
        device="cpu",
        progress=False,
    )
    assert evaluate(res.model, data.test, device="cpu")["accuracy"] > 0.3  # chance is 0.1, even on random features


def test_deterministic_under_seed(setup):
    data, enc = setup
    pos = np.arange(40)
    kw = dict(n_classes=10, mode="lpft", config=CFG, device="cpu", progress=False, random_state=5)
    a = train_classifier(enc, data.pool, pos, data.pool.labels[pos], **kw).model
    b = train_classifier(enc, data.pool, pos, data.pool.labels[pos], **kw).model
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(v, w), k


def test_save_load_classifier(tmp_path, setup):
    data, enc = setup
    pos = np.arange(30)
    m = train_classifier(
        enc, data.pool, pos, data.pool.labels[pos], n_classes=10, mode="lp", config=CFG, device="cpu", progress=False
    ).model
    save_classifier(m, tmp_path / "m.safetensors")
    m2 = load_classifier(tmp_path / "m.safetensors")
    x = data.test.load_batch(np.arange(8), enc.config.preprocess)
    torch.testing.assert_close(m(x), m2(x))
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(WeightsError, match="Cannot read"):
        load_classifier(tmp_path / "junk.safetensors")


def test_bad_mode_and_labels(setup):
    data, enc = setup
    with pytest.raises(ConfigError, match="lp, ft, lpft"):
        train_classifier(enc, data.pool, np.arange(4), np.zeros(4, int), n_classes=10, mode="full")
    with pytest.raises(ConfigError, match="outside"):
        train_classifier(enc, data.pool, np.arange(4), np.full(4, 12), n_classes=10, mode="lp")


def test_head_scorer_is_the_classifier_on_its_own_features(setup, tmp_path):
    from alcore.features import extract_features
    from alcore.training import HeadScorer

    data, enc = setup
    pos = np.arange(30)
    m = train_classifier(
        enc, data.pool, pos, data.pool.labels[pos], n_classes=10, mode="ft", config=CFG, device="cpu", progress=False
    ).model
    save_classifier(m, tmp_path / "m.safetensors")
    scorer = HeadScorer.from_file(tmp_path / "m.safetensors")
    Z = extract_features(m.encoder, data.test, device="cpu", progress=False)
    x = data.test.load_batch(np.arange(len(data.test)), enc.config.preprocess)
    with torch.no_grad():
        direct = torch.softmax(m(x), 1).numpy()
    np.testing.assert_allclose(scorer.predict_proba(Z), direct, atol=1e-4)
    mc = scorer.predict_proba_mc(Z, 5, random_state=0)
    assert mc.shape == (5, len(Z), 10) and np.allclose(mc.sum(2), 1, atol=1e-4)
    np.testing.assert_array_equal(mc, scorer.predict_proba_mc(Z, 5, random_state=0))
    assert not np.allclose(mc[0], mc[1])  # the masks differ


def test_library_fine_tune_resolves_auto(setup):
    from alcore.config import TrainCfg
    from alcore.steps import train_network

    data, enc = setup
    ids = data.pool.ids[:20]
    m = train_network(
        enc,
        data,
        ids,
        data.pool.labels[:20],
        TrainCfg(mode="auto", auto_threshold=10, ft_epochs=1),
        mode="auto",
        seed=0,
        device="cpu",
        progress=False,
    )
    assert m.encoder.weights_digest() != enc.weights_digest()  # 20 >= 10 labels: ft moved the backbone
