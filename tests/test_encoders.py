"""Encoders: our CIFAR ResNets against the real checkpoints, timm models, weight files, errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from alcore.encoders import (
    ARCHS,
    Encoder,
    EncoderConfig,
    create_encoder,
    encoder_from_config,
    load_classifier_head,
    load_encoder,
    save_encoder,
)
from alcore.errors import ConfigError, UnknownNameError, WeightsError
from alcore.preprocess import CIFAR10_MEAN, CIFAR10_STD, Preprocess

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CKPT_DIR = SHARED / "weights" / "cifar10-resnet"
CIFAR_NPZ = SHARED / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"


pytestmark = pytest.mark.usefixtures("one_thread")


def _ckpt(depth: int) -> Path:
    found = sorted(CKPT_DIR.glob(f"resnet{depth}-*.th")) if CKPT_DIR.is_dir() else []
    if not found:
        pytest.skip(f"no shared resnet{depth} checkpoint under {CKPT_DIR}")
    return found[0]


# ---------------------------------------------------------------------------------------------
# Our CIFAR ResNets


@pytest.mark.parametrize("depth", [8, 20, 32, 44, 56])
def test_cifar_resnet_random_init_shapes(depth: int) -> None:
    enc = create_encoder(f"cifar_resnet{depth}")
    assert isinstance(enc, Encoder) and not enc.training
    assert enc.config.feature_dim == 64 and enc.config.source == "random"
    assert enc.config.preprocess == Preprocess(32, CIFAR10_MEAN, CIFAR10_STD)
    n_blocks = sum(1 for k in enc.backbone.state_dict() if k.endswith("conv1.weight")) - 1
    assert n_blocks == 3 * ((depth - 2) // 6)
    with torch.no_grad():
        assert enc(torch.randn(2, 3, 32, 32)).shape == (2, 64)


def test_archs_registry_lists_ours() -> None:
    assert {"cifar_resnet8", "cifar_resnet20", "cifar_resnet32", "cifar_resnet44"} <= set(ARCHS)
    assert "cifar_resnet56" in ARCHS


@pytest.mark.parametrize("depth", [20, 32, 44, 56])
def test_shared_checkpoints_load_strictly(depth: int) -> None:
    path = _ckpt(depth)
    enc = create_encoder(f"cifar_resnet{depth}", weights=path)
    assert enc.config.source == f"file:{path.name}"
    raw = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    own = enc.backbone.state_dict()
    backbone_keys = {k.removeprefix("module.") for k in raw} - {"linear.weight", "linear.bias"}
    assert backbone_keys == {k for k in own if not k.endswith("num_batches_tracked")}
    for k in backbone_keys:  # every backbone tensor came from the file
        assert torch.equal(own[k], raw[f"module.{k}"].float())
    with torch.no_grad():
        z = enc(torch.randn(3, 3, 32, 32))
    assert z.shape == (3, 64) and torch.isfinite(z).all()


def test_resnet20_checkpoint_classifies_real_cifar10() -> None:
    path = _ckpt(20)
    if not CIFAR_NPZ.is_file():
        pytest.skip(f"no CIFAR-10 subset at {CIFAR_NPZ}")
    data = np.load(CIFAR_NPZ)
    x_u8, y = data["test_x"][:200], data["test_y"][:200]
    enc = create_encoder("cifar_resnet20", weights=path)
    w, b = load_classifier_head(path)
    assert w.shape == (10, 64) and b.shape == (10,)
    x = enc.config.preprocess(x_u8)  # uint8 (B, 32, 32, 3) -> normalised (B, 3, 32, 32)
    with torch.no_grad():
        pred = (enc(x) @ w.T + b).argmax(1).numpy()
    acc = float((pred == np.asarray(y)).mean())
    assert acc >= 0.80, acc


def test_load_classifier_head_missing_prefix(tmp_path: Path) -> None:
    path = _ckpt(20)
    with pytest.raises(WeightsError, match="no classifier head"):
        load_classifier_head(path, prefix="fc")


# ---------------------------------------------------------------------------------------------
# Bad weight files


def test_wrong_architecture_lists_keys() -> None:
    path = _ckpt(56)
    with pytest.raises(WeightsError) as err:
        create_encoder("cifar_resnet20", weights=path)
    msg = str(err.value)
    assert path.name in msg and "cifar_resnet20" in msg and "unexpected" in msg
    assert "layer1.3." in msg and "Fix:" in msg


def test_shape_mismatch_is_reported(tmp_path: Path) -> None:
    state = create_encoder("cifar_resnet8").backbone.state_dict()
    state["conv1.weight"] = torch.zeros(8, 3, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"conv1\.weight \(8, 3, 3, 3\)"):
        create_encoder("cifar_resnet8", weights=path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".th"])
def test_corrupt_file(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError, match="not a readable|cannot be read"):
        create_encoder("cifar_resnet8", weights=path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="does not exist"):
        create_encoder("cifar_resnet8", weights=tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="does not exist"):
        load_encoder(tmp_path / "nope.safetensors")


class _Payload:
    """Unpickling this would write a marker file: weights_only must refuse it first."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # noqa: ANN204
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    state = create_encoder("cifar_resnet8").backbone.state_dict()
    torch_file = tmp_path / "evil.pth"
    torch.save({"state_dict": state, "extra": _Payload(str(marker))}, torch_file)
    plain_pickle = tmp_path / "evil.pkl"
    plain_pickle.write_bytes(pickle.dumps(_Payload(str(marker))))
    for path in (torch_file, plain_pickle):
        with pytest.raises(WeightsError, match="weights_only"):
            create_encoder("cifar_resnet8", weights=path)
    assert not marker.exists()


def test_non_tensor_entries_refused(tmp_path: Path) -> None:
    path = tmp_path / "odd.pth"
    torch.save({"conv1.weight": [1, 2, 3]}, path)
    with pytest.raises(WeightsError, match="non-tensor"):
        create_encoder("cifar_resnet8", weights=path)


def test_pretrained_with_weights_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_encoder("cifar_resnet8", pretrained=True, weights=tmp_path / "x.pth")


def test_pretrained_for_our_arch_says_how_to_pass_a_file() -> None:
    with pytest.raises(WeightsError, match="encoder.weights="):
        create_encoder("cifar_resnet20", pretrained=True)


def test_unknown_arch() -> None:
    with pytest.raises(UnknownNameError) as err:
        create_encoder("not_a_model_anywhere")
    msg = str(err.value)
    assert "cifar_resnet20" in msg and "timm" in msg


# ---------------------------------------------------------------------------------------------
# Saving, loading, digests


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = create_encoder("cifar_resnet8", input_size=24)
    enc.train()
    with torch.no_grad():  # move the BN statistics away from their defaults
        enc(torch.randn(16, 3, 24, 24))
    enc.eval()
    path = tmp_path / "sub" / "enc.safetensors"
    save_encoder(enc, path)
    assert [p.name for p in path.parent.iterdir()] == ["enc.safetensors"]  # no temp files left
    back = load_encoder(path)
    assert back.config == enc.config and not back.training
    assert back.weights_digest() == enc.weights_digest()
    x = torch.randn(4, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(back(x), enc(x))
    # The file is also a plain weights file.
    again = create_encoder("cifar_resnet8", weights=path)
    assert again.weights_digest() == enc.weights_digest()
    assert again.config.source == "file:enc.safetensors"


def test_encoder_from_config_is_a_skeleton() -> None:
    enc = create_encoder("cifar_resnet8", input_size=20)
    skel = encoder_from_config(enc.config)
    assert skel.config == enc.config and not skel.training
    assert skel.backbone.state_dict().keys() == enc.backbone.state_dict().keys()
    skel.load_state_dict(enc.state_dict(), strict=True)
    assert skel.weights_digest() == enc.weights_digest()
    with pytest.raises(UnknownNameError):
        encoder_from_config(EncoderConfig("no_such_arch", 8, Preprocess(32), "random"))


def test_load_encoder_refuses_plain_safetensors(tmp_path: Path) -> None:
    import safetensors.torch

    path = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"a": torch.zeros(2)}, str(path))
    with pytest.raises(WeightsError, match="without an alcore encoder config"):
        load_encoder(path)


def test_weights_digest_tracks_weights() -> None:
    torch.manual_seed(0)
    a = create_encoder("cifar_resnet8")
    torch.manual_seed(0)
    b = create_encoder("cifar_resnet8")
    assert a.weights_digest() == b.weights_digest()
    assert len(a.weights_digest()) == 16
    with torch.no_grad():
        b.backbone.conv1.weight[0, 0, 0, 0] += 1e-3
    assert a.weights_digest() != b.weights_digest()


def test_config_dict_round_trip() -> None:
    cfg = EncoderConfig("resnet18", 512, Preprocess(224, interpolation="bicubic"), "file:x.pth")
    assert EncoderConfig.from_dict(cfg.to_dict()) == cfg


# ---------------------------------------------------------------------------------------------
# timm


def test_timm_random_init() -> None:
    enc = create_encoder("resnet18", input_size=64)
    assert enc.config.feature_dim == 512 and enc.config.source == "random"
    assert enc.config.preprocess.input_size == 64
    with torch.no_grad():
        assert enc(torch.randn(2, 3, 64, 64)).shape == (2, 512)


def test_timm_pretrained_offline_fails_fast_with_a_fix(monkeypatch, tmp_path: Path) -> None:
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)  # read at import time
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # nothing cached
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError) as err:
        create_encoder("resnet18", pretrained=True)
    msg = str(err.value)
    assert "could not be downloaded" in msg
    assert "encoder.weights=" in msg and "pretrained=false" in msg


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_timm_weights_from_local_file(tmp_path: Path, fmt: str) -> None:
    import safetensors.torch
    import timm

    torch.manual_seed(1)
    model = timm.create_model("resnet18", num_classes=10).eval()  # with a classifier head
    state = model.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "r18.safetensors"
        safetensors.torch.save_file(state, str(path))
    else:  # a DataParallel training checkpoint
        path = tmp_path / "r18.pth"
        torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in state.items()}}, path)
    enc = create_encoder("resnet18", weights=path, input_size=64)
    assert enc.config.source == f"file:{path.name}"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(enc(x), expected, atol=1e-5)
    # and the round trip through our own format
    save_encoder(enc, tmp_path / "enc.safetensors")
    back = load_encoder(tmp_path / "enc.safetensors")
    assert back.weights_digest() == enc.weights_digest() and back.config == enc.config


def test_timm_wrong_file(tmp_path: Path) -> None:
    path = tmp_path / "c8.pth"
    torch.save(create_encoder("cifar_resnet8").backbone.state_dict(), path)
    with pytest.raises(WeightsError, match="does not fit architecture 'resnet18'"):
        create_encoder("resnet18", weights=path)
