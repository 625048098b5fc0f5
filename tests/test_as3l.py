"""AS3L: one-shot selection, f_fine, priors, the semi-supervised trainer, and proof that no code
path reads the hidden labels of unlabeled samples."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from alcore.as3l import fine_features, one_shot_select, prior_labels, read_priors, train_on_priors, write_priors
from alcore.errors import ConfigError
from alcore.semi import SemiConfig, train_semi

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n_per: int = 40, k: int = 6, d: int = 8, seed: int = 0, scale: float = 12.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=scale, size=(k, d))
    y = np.repeat(np.arange(k), n_per)
    return (centers[y] + rng.normal(size=(y.size, d))).astype(np.float32), y, centers


def test_one_shot_picks_one_central_sample_per_blob() -> None:
    X, y, centers = blobs()
    F = fine_features(X, 6, n_runs=3, epochs=20, random_state=0)
    assert F.shape == X.shape and np.allclose(np.linalg.norm(F, axis=1), 1, atol=1e-5)
    picks = one_shot_select(F, 6, n_runs=3, random_state=0)
    assert np.unique(picks).size == 6
    assert sorted(y[picks].tolist()) == list(range(6))  # one per blob
    # each pick is a medoid: nearer its blob's centre than most of its blob
    for p in picks:
        members = np.flatnonzero(y == y[p])
        d = np.linalg.norm(X[members] - centers[y[p]], axis=1)
        assert np.linalg.norm(X[p] - centers[y[p]]) <= np.quantile(d, 0.5)


def test_one_shot_is_seeded_and_skips_covered_clusters() -> None:
    X, y, _ = blobs(k=8)
    F = fine_features(X, 8, n_runs=3, epochs=20, random_state=1)
    a = one_shot_select(F, 4, n_runs=3, random_state=5)
    b = one_shot_select(F, 4, n_runs=3, random_state=np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)
    labeled = np.array([np.flatnonzero(y == c)[0] for c in range(4)])  # blobs 0-3 already labeled
    more = one_shot_select(F, 4, n_runs=3, exclude=labeled, random_state=0)
    assert sorted(y[more].tolist()) == [4, 5, 6, 7] and not np.isin(more, labeled).any()
    with pytest.raises(ConfigError, match="asked for"):
        one_shot_select(F, X.shape[0], exclude=labeled)


def test_priors_propagate_the_seed_labels() -> None:
    X, y, _ = blobs(k=5)
    seeds = np.array([np.flatnonzero(y == c)[3] for c in range(5)])
    pr = prior_labels(X, seeds, y[seeds], 5, random_state=0)
    assert (pr.labels == y).mean() == 1.0
    assert np.all(pr.confidence[seeds] == 1.0) and np.all((pr.confidence > 0) & (pr.confidence <= 1))
    # a seed labeled "wrongly" keeps its label: the prior follows the human, not the geometry
    wrong = y[seeds].copy()
    wrong[0] = 1
    pr2 = prior_labels(X, seeds, wrong, 5, random_state=0)
    assert pr2.labels[seeds[0]] == 1


def test_priors_file_round_trip_and_the_prior_baseline(tmp_path) -> None:
    X, y, _ = blobs(k=3)
    seeds = np.array([0, 40, 80])
    pr = prior_labels(X, seeds, y[seeds], 3, random_state=0)
    ids = np.arange(1000, 1000 + len(y))
    write_priors(str(tmp_path / "p.parquet"), ids, pr, {"n_labeled": 3})
    got_ids, got, spec = read_priors(str(tmp_path / "p.parquet"))
    np.testing.assert_array_equal(got_ids, ids)
    np.testing.assert_array_equal(got.labels, pr.labels)
    np.testing.assert_allclose(got.confidence, pr.confidence)
    assert spec == {"n_labeled": 3}
    clf = train_on_priors(X, pr, 3, hidden=16, epochs=20, device="cpu")
    assert (clf.predict(X) == y).mean() > 0.95


def _digits_data():
    from alcore.datasets import load_dataset

    return load_dataset("digits", max_pool=200, max_test=50)


def _garbage(data, keep: np.ndarray):
    """The same dataset with every pool label replaced by garbage, except at positions ``keep``."""
    rng = np.random.default_rng(99)
    labels = rng.integers(0, data.n_classes, size=len(data.pool))
    labels[keep] = data.pool.labels[keep]
    return dataclasses.replace(data, pool=dataclasses.replace(data.pool, labels=labels))


def test_no_code_path_reads_hidden_labels() -> None:
    from alcore.config import TrainCfg
    from alcore.encoders import create_encoder
    from alcore.steps import as3l_priors, compute_features, select_batch

    data = _digits_data()
    enc = create_encoder("cifar_resnet8", input_size=16)
    pool = compute_features(enc, data, "pool", batch_size=128, device="cpu", progress=False)
    empty = np.empty(0, dtype=np.int64)
    ids = select_batch("as3l", {"epochs": 5}, pool, empty, empty, 10, n_classes=10, proxy=None, seed=0, round=1)
    pos = np.searchsorted(data.pool.ids, ids)
    labels = data.pool.labels[pos]  # what the oracle reveals
    cfg = TrainCfg(as3l_runs=2, as3l_epochs=5, semi_steps=3, semi_batch_size=4, semi_mu=2)
    runs = []
    for d in (data, _garbage(data, pos)):
        sel = select_batch(
            "as3l",
            {"epochs": 5},
            compute_features(enc, d, "pool", batch_size=128, device="cpu", progress=False),
            empty,
            empty,
            10,
            n_classes=10,
            proxy=None,
            seed=0,
            round=1,
        )
        pr = as3l_priors(enc, d, pos, labels, cfg, seed=0, device="cpu")
        model = train_semi(
            enc,
            d.pool,
            pos,
            labels,
            n_classes=10,
            priors=(pr.labels, pr.confidence),
            config=cfg.semi_config(),
            device="cpu",
            random_state=0,
            progress=False,
        ).model
        runs.append((sel, pr, torch.cat([p.detach().flatten() for p in model.parameters()])))
    (s1, p1, w1), (s2, p2, w2) = runs
    np.testing.assert_array_equal(s1, s2)
    np.testing.assert_array_equal(p1.labels, p2.labels)
    np.testing.assert_array_equal(p1.confidence, p2.confidence)
    assert torch.equal(w1, w2)
    # ... while the labels the oracle returns do matter (the test can fail):
    p3 = as3l_priors(enc, data, pos, (labels + 1) % 10, cfg, seed=0, device="cpu")
    assert not np.array_equal(p3.labels, p1.labels)


def test_semi_training_modes_learn_and_switch() -> None:
    data = _digits_data()
    from alcore.encoders import create_encoder

    enc = create_encoder("cifar_resnet8", input_size=16)
    pos = np.arange(20)
    labels = data.pool.labels[pos]
    prior = (np.asarray(data.pool.labels) * 0, np.ones(len(data.pool), dtype=np.float32))  # a constant prior
    cfg = SemiConfig(steps=8, batch_size=8, mu=2, switch=0.5)
    res = train_semi(enc, data.pool, pos, labels, n_classes=10, priors=prior, config=cfg, device="cpu", progress=False)
    assert res.mode == "as3l" and not res.model.training
    masks = [h["mask"] for h in res.history]
    assert masks[0] == 1.0  # prior-guided phase: every unlabeled image is used
    again = train_semi(
        enc, data.pool, pos, labels, n_classes=10, priors=prior, config=cfg, device="cpu", progress=False
    )
    assert res.history == again.history  # seeded
    seen = []

    def cb(done: int, model) -> dict:
        seen.append((done, model.training))
        return {"test_accuracy": 0.5}

    fm = train_semi(
        enc,
        data.pool,
        pos,
        labels,
        n_classes=10,
        config=cfg,
        device="cpu",
        progress=False,
        callback=cb,
        callback_every=3,
    )
    assert fm.mode == "fixmatch" and fm.history[0]["mask"] <= 1.0
    assert seen == [(3, False), (6, False), (8, False)]  # every 3 steps and at the end, in eval mode
    assert [h["step"] for h in fm.history if "test_accuracy" in h] == [3.0, 6.0, 8.0]


def test_semi_head_starts_at_the_probe_when_asked() -> None:
    from alcore.encoders import create_encoder
    from alcore.features import extract_features
    from alcore.training import fit_linear_probe

    data = _digits_data()
    enc = create_encoder("cifar_resnet8", input_size=16)
    pos, labels = np.arange(30), np.asarray(data.pool.labels)[:30]
    probe = fit_linear_probe(extract_features(enc, data.pool.subset(pos), device="cpu", progress=False), labels, 10)
    heads = {}
    for init in ("probe", "random"):  # lr ~ 0: the head after one step is the head it started from
        cfg = SemiConfig(steps=1, batch_size=8, mu=2, lr=1e-12, head_init=init)
        res = train_semi(enc, data.pool, pos, labels, n_classes=10, config=cfg, device="cpu", progress=False)
        heads[init] = res.model.head.weight.detach().numpy()
    np.testing.assert_allclose(heads["probe"], probe.weight, atol=1e-6)
    assert not np.allclose(heads["random"], probe.weight, atol=1e-3)


@pytest.mark.parametrize(
    "bad",
    [dict(steps=0), dict(threshold=0.0), dict(switch=1.5), dict(augment="rotate"), dict(lr=-1.0), dict(head_init="x")],
)
def test_semi_config_errors_are_named(bad: dict) -> None:
    with pytest.raises(ConfigError, match="semi-supervised"):
        SemiConfig(**bad).check()


def test_semi_refuses_bad_priors_and_a_fully_labeled_pool() -> None:
    data = _digits_data()
    from alcore.encoders import create_encoder

    enc = create_encoder("cifar_resnet8", input_size=16)
    with pytest.raises(ConfigError, match="priors"):
        train_semi(enc, data.pool, [0], [1], n_classes=10, priors=(np.zeros(3, dtype=int), np.ones(3)))
    with pytest.raises(ConfigError, match="no unlabeled"):
        train_semi(enc, data.pool, np.arange(len(data.pool)), data.pool.labels, n_classes=10)


def test_semi_guard_hands_over_the_probe_unless_the_mode_beats_it() -> None:
    """The guard's choice follows the held-out evidence: a 'mode' that saw every label (so it gets
    the held-out ones right) beats the probe; one with a random head loses to it."""
    from alcore.encoders import create_encoder
    from alcore.features import extract_features
    from alcore.semi import semi_guard
    from alcore.training import Classifier, TrainConfig, fit_linear_probe

    data = _digits_data()
    enc = create_encoder("cifar_resnet8", input_size=16)
    pos, labels = np.arange(40), np.asarray(data.pool.labels)[:40]
    Z = extract_features(enc, data.pool.subset(pos), device="cpu", progress=False)
    calls = []

    def knows_all(p, y, s, desc):  # a head fitted on every label, held-out ones included
        calls.append((p.size, desc))
        net = Classifier(enc, 10)
        fit_linear_probe(Z, labels, 10, C=100.0).set_head(net.head)
        return net.eval()

    def random_head(p, y, s, desc):
        torch.manual_seed(s)
        return Classifier(enc, 10).eval()

    cfg = TrainConfig(holdout=0.2, min_holdout=40)
    chosen, ev = semi_guard(knows_all, enc, data.pool, pos, labels, n_classes=10, mode="as3l", config=cfg, device="cpu")
    assert chosen == "as3l" and ev["folds"] == len(calls) == 5 and 30 < ev["held_out"] <= 40
    assert all(n < 40 and "fold" in d for n, d in calls)  # each fold trains on the rest only
    c = ev["candidates"]
    assert c["as3l"]["accuracy"] == 1.0 > c["lp"]["accuracy"] and c["as3l"]["beats_probe"]
    chosen, ev = semi_guard(
        random_head, enc, data.pool, pos, labels, n_classes=10, mode="fixmatch", config=cfg, device="cpu"
    )
    assert chosen == "lp" and not ev["candidates"]["fixmatch"]["beats_probe"]
    one_each = np.array([int(np.flatnonzero(data.pool.labels == k)[0]) for k in range(10)])
    chosen, ev = semi_guard(
        knows_all, enc, data.pool, one_each, data.pool.labels[one_each], n_classes=10, mode="as3l", config=cfg
    )
    assert chosen == "lp" and "none can be held out" in ev["rule"]
    with pytest.raises(ConfigError, match="holdout"):
        semi_guard(knows_all, enc, data.pool, pos, labels, n_classes=10, mode="as3l", config=TrainConfig(holdout=0))


def test_train_network_guards_the_semi_modes() -> None:
    """train.mode=fixmatch through the library: with holdout > 0 the record carries the evidence and
    the network handed over is the mode's or the probe's; holdout=0 skips the guard."""
    from alcore.config import TrainCfg
    from alcore.encoders import create_encoder
    from alcore.steps import train_network

    data = _digits_data()
    enc = create_encoder("cifar_resnet8", input_size=16)
    ids, labels = data.pool.ids[:30], np.asarray(data.pool.labels)[:30]
    small = dict(semi_steps=2, semi_batch_size=4, semi_mu=1, min_holdout=6)
    m = train_network(
        enc,
        data,
        ids,
        labels,
        TrainCfg(mode="fixmatch", **small),
        mode="fixmatch",
        seed=0,
        device="cpu",
        progress=False,
    )
    rec = m.training_record
    assert rec["requested"] == "fixmatch" and rec["mode"] in ("lp", "fixmatch") and rec["held_out"] >= 6
    assert set(rec["candidates"]) == {"lp", "fixmatch"} and rec["seconds_evidence"] > 0
    if rec["mode"] == "lp":  # the probe was handed over: the encoder is the pre-trained one, untouched
        assert all(
            torch.equal(a, b) for a, b in zip(m.encoder.state_dict().values(), enc.state_dict().values(), strict=True)
        )
    raw = train_network(
        enc,
        data,
        ids,
        labels,
        TrainCfg(mode="fixmatch", holdout=0, **small),
        mode="fixmatch",
        seed=0,
        device="cpu",
        progress=False,
    )
    assert raw.training_record["mode"] == "fixmatch" and "without the guard" in raw.training_record["rule"]
