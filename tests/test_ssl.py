"""SimCLR pre-training: runs, learns, is reproducible under a seed, leaves its input alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alcore.datasets.base import Split
from alcore.encoders import create_encoder, load_encoder, save_encoder
from alcore.errors import ConfigError
from alcore.ssl import SimCLRAugment, nt_xent_loss, pretrain_simclr

pytestmark = pytest.mark.usefixtures("one_thread")


def _digits_like(n: int = 128, seed: int = 0) -> Split:
    """Small 8x8 grey 'digits': a blurred stroke pattern per class plus noise, uint8."""
    rng = np.random.default_rng(seed)
    protos = rng.random((10, 8, 8)) > 0.6
    labels = rng.integers(0, 10, n)
    images = protos[labels] * 200.0 + rng.normal(0, 25, (n, 8, 8))
    return Split(
        ids=np.arange(1000, 1000 + n),
        labels=labels.astype(np.int64),
        images=np.clip(images, 0, 255).astype(np.uint8),
    )


def test_augment_shapes_range_and_seed() -> None:
    x = torch.rand(6, 3, 16, 16)
    aug = SimCLRAugment()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_nt_xent_known_answers() -> None:
    z = torch.eye(4)
    # identical views, orthogonal negatives: loss = -log(e^{1/T} / (e^{1/T} + 6 e^0))
    t = 0.5
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 6))
    assert nt_xent_loss(z, z, t).item() == pytest.approx(expected, rel=1e-5)
    # swapping the views of two images makes them wrong positives: higher loss
    assert nt_xent_loss(z, z[[1, 0, 2, 3]], t) > nt_xent_loss(z, z, t)


def test_simclr_trains_and_is_deterministic(tmp_path) -> None:
    split = _digits_like(256)
    enc = create_encoder("cifar_resnet8", input_size=16)
    before = enc.weights_digest()
    hist1: list[float] = []
    out1 = pretrain_simclr(enc, split, epochs=3, batch_size=64, progress=False, random_state=7, loss_history=hist1)
    assert enc.weights_digest() == before  # the input encoder is not touched
    assert out1.config.source == "simclr" and out1.config.arch == "cifar_resnet8"
    assert out1.config.preprocess == enc.config.preprocess
    assert not out1.training and next(out1.parameters()).device.type == "cpu"
    assert out1.weights_digest() != before
    assert len(hist1) == 3 and all(np.isfinite(hist1))
    assert hist1[-1] < hist1[0]

    torch.manual_seed(12345)  # the global RNG state must not matter
    hist2: list[float] = []
    out2 = pretrain_simclr(enc, split, epochs=3, batch_size=64, progress=False, random_state=7, loss_history=hist2)
    assert out2.weights_digest() == out1.weights_digest() and hist2 == hist1

    x = split.load_batch(np.arange(8), out1.config.preprocess)
    with torch.no_grad():
        assert out1(x).shape == (8, 64)
    save_encoder(out1, tmp_path / "simclr.safetensors")
    assert load_encoder(tmp_path / "simclr.safetensors").weights_digest() == out1.weights_digest()


def test_simclr_other_seed_differs() -> None:
    split = _digits_like(32)
    enc = create_encoder("cifar_resnet8", input_size=16)
    a = pretrain_simclr(enc, split, epochs=1, batch_size=16, progress=False, random_state=0)
    b = pretrain_simclr(enc, split, epochs=1, batch_size=16, progress=False, random_state=1)
    assert a.weights_digest() != b.weights_digest()


def test_simclr_odd_sizes_never_make_a_batch_of_one() -> None:
    split = _digits_like(9)
    enc = create_encoder("cifar_resnet8", input_size=16)
    hist: list[float] = []
    pretrain_simclr(enc, split, epochs=1, batch_size=4, progress=False, loss_history=hist)
    assert len(hist) == 1 and np.isfinite(hist[0])


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 1}, {"temperature": 0.0}, {"lr": -1.0}])
def test_simclr_bad_params(kwargs) -> None:
    params = {"epochs": 1} | kwargs
    with pytest.raises(ConfigError):
        pretrain_simclr(create_encoder("cifar_resnet8"), _digits_like(8), progress=False, **params)


def test_simclr_needs_two_images() -> None:
    with pytest.raises(ConfigError, match="at least 2"):
        pretrain_simclr(create_encoder("cifar_resnet8"), _digits_like(1), epochs=1, progress=False)
