"""Encoders: a backbone that maps a normalised image batch to pooled features, plus its frozen config.

An :class:`Encoder` is any backbone (one of ours from :data:`ARCHS`, or any timm model) together
with an :class:`EncoderConfig` (architecture, feature dimension, preprocessing, where the weights
came from). The config travels with the weights (in the safetensors metadata written by
:func:`save_encoder`) and with every feature file computed from them, as timm's ``PretrainedCfg``
does for its models.

Weights come from one of three places:

- ``pretrained=True``: timm's model hub (needs the internet; fails with a :class:`WeightsError`
  that says how to pass a local file instead);
- ``weights=path``: a local ``.safetensors`` file, or a PyTorch checkpoint (``.pth``, ``.pt``,
  ``.th``, ...) read with ``torch.load(..., weights_only=True)``: arbitrary pickles are refused;
- neither: random initialisation (useful with self-supervised pre-training, :mod:`alcore.ssl`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alcore._io import atomic_path
from alcore.encoders.cifar_resnet import FEATURE_DIM as CIFAR_FEATURE_DIM
from alcore.encoders.cifar_resnet import cifar_resnet
from alcore.errors import ConfigError, UnknownNameError, WeightsError, problem
from alcore.preprocess import CIFAR10_MEAN, CIFAR10_STD, Preprocess
from alcore.registry import Registry

__all__ = [
    "ARCHS",
    "ArchSpec",
    "Encoder",
    "EncoderConfig",
    "create_encoder",
    "encoder_from_config",
    "load_classifier_head",
    "load_encoder",
    "read_state_dict",
    "save_encoder",
]

_METADATA_KEY = "alcore.encoder_config"
_FORMAT_KEY = "alcore.format"
_FORMAT = "alcore-encoder-v1"
_LOCAL_FILE_FIX = (
    "download the weights on a machine with internet access and pass the local file: "
    "encoder.weights=/path/to/file.safetensors (or a .pth checkpoint) with encoder.pretrained=false"
)


@dataclass(frozen=True)
class EncoderConfig:
    """The frozen description of an encoder that travels with its weights.

    Attributes:
        arch: architecture name: one of :data:`ARCHS` (``"cifar_resnet20"``, ...) or a timm model.
        feature_dim: D, the width of the pooled features ``forward`` returns.
        preprocess: the recipe that turns stored images into this encoder's input.
        source: where the weights came from: ``"random"``, ``"timm-hub"``, ``"file:<basename>"``
            or ``"simclr"``.
    """

    arch: str
    feature_dim: int
    preprocess: Preprocess
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "feature_dim": int(self.feature_dim),
            "preprocess": self.preprocess.to_dict(),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EncoderConfig:
        return cls(
            arch=str(d["arch"]),
            feature_dim=int(d["feature_dim"]),
            preprocess=Preprocess.from_dict(d["preprocess"]),
            source=str(d["source"]),
        )


class Encoder(nn.Module):
    """A backbone plus its :class:`EncoderConfig`.

    ``forward``: normalised images ``(B, 3, S, S)`` -> pooled features ``(B, feature_dim)``.
    The backbone is ``self.backbone``; its ``state_dict`` keys (without the ``backbone.``
    prefix) are what :func:`save_encoder` writes.
    """

    def __init__(self, backbone: nn.Module, config: EncoderConfig) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone(x)

    def weights_digest(self) -> str:
        """First 16 hex chars of the sha256 over every state_dict key, dtype, shape and tensor
        bytes, in sorted key order, on CPU. Same weights -> same digest, on any device."""
        h = hashlib.sha256()
        state = self.backbone.state_dict()
        for key in sorted(state):
            t = state[key].detach().to("cpu").contiguous()
            h.update(key.encode())
            h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest()[:16]

    def extra_repr(self) -> str:
        c = self.config
        return f"arch={c.arch!r}, feature_dim={c.feature_dim}, source={c.source!r}"


@dataclass(frozen=True)
class ArchSpec:
    """One of our own architectures: a backbone factory, its feature width, its default recipe.

    ``head_prefixes``: key prefixes of the classifier head in published checkpoints; they are
    dropped when such a checkpoint is loaded as an encoder.
    """

    build: Callable[[], nn.Module]
    feature_dim: int
    preprocess: Preprocess
    head_prefixes: tuple[str, ...] = ()


ARCHS: Registry[ArchSpec] = Registry("encoder architecture")
"""Our own architectures. Any timm model name works too (see :func:`create_encoder`)."""

_CIFAR_PREPROCESS = Preprocess(input_size=32, mean=CIFAR10_MEAN, std=CIFAR10_STD)
for _depth in (8, 20, 32, 44, 56):
    ARCHS.register(f"cifar_resnet{_depth}")(
        ArchSpec(
            build=lambda depth=_depth: cifar_resnet(depth),
            feature_dim=CIFAR_FEATURE_DIM,
            preprocess=_CIFAR_PREPROCESS,
            head_prefixes=("linear",),
        )
    )


# ----------------------------------------------------------------------------------------------
# Reading weight files


def _prefix_match(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _unpickler_reason(exc: BaseException) -> str:
    """The specific reason in torch's weights_only refusal, without its generic advice."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1].strip().split("\n\n", 1)[0]
    else:
        text = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return "weights_only refused it: " + " ".join(text.split())[:200]


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a weights file into a flat ``{key: tensor}`` on CPU, without the ``module.`` prefix.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``, which refuses pickled objects
    other than tensors and plain containers. A checkpoint may be a raw state_dict or a dict
    holding one under ``"state_dict"``, ``"model"`` or ``"model_state_dict"``.

    Raises:
        WeightsError: the file is missing, unreadable, or holds no state_dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            problem(
                f"Weights file {str(path)!r} does not exist",
                fix="check encoder.weights (a .safetensors or .pth file on this machine)",
            )
        )
    if path.suffix == ".safetensors":
        import safetensors.torch

        try:
            obj: Any = safetensors.torch.load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types and OSError
            raise WeightsError(
                problem(
                    f"Weights file {str(path)!r} is not a readable safetensors file ({exc})",
                    fix="re-download or re-export the file",
                )
            ) from exc
    else:
        import pickle

        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            # weights_only refuses anything but tensors and plain containers: a security rule.
            raise WeightsError(
                problem(
                    f"Weights file {str(path)!r} cannot be read safely: it is not a PyTorch "
                    f"checkpoint, or it pickles objects other than tensors "
                    f"({_unpickler_reason(exc)})",
                    allowed="a .safetensors file, or a checkpoint of tensors that loads with "
                    "torch.load(..., weights_only=True)",
                    fix="export the state_dict alone (torch.save(model.state_dict(), path)) or "
                    "convert it to .safetensors; alcore never unpickles arbitrary objects",
                )
            ) from exc
        except Exception as exc:  # truncated zip, random bytes, ...
            raise WeightsError(
                problem(
                    f"Weights file {str(path)!r} is not a readable PyTorch checkpoint "
                    f"({type(exc).__name__}: {str(exc)[:300]})",
                    fix="re-download or re-export the file",
                )
            ) from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise WeightsError(
            problem(
                f"Weights file {str(path)!r} holds no state_dict (found {type(obj).__name__})",
                allowed="a state_dict, or a dict with a 'state_dict' or 'model' entry",
                fix="save the model's state_dict",
            )
        )
    not_tensors = [str(k) for k, v in obj.items() if not isinstance(v, Tensor)]
    if not_tensors:
        raise WeightsError(
            problem(
                f"Weights file {str(path)!r} has non-tensor entries: {not_tensors[:5]}",
                fix="save the model's state_dict alone",
            )
        )
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in obj.items()}


def _load_into(backbone: nn.Module, state: dict[str, Tensor], *, path: Path, arch: str, drop: tuple[str, ...]) -> None:
    """Load ``state`` into ``backbone`` strictly, after dropping classifier-head keys in ``drop``
    that the backbone does not have. Anything else that does not fit -> WeightsError."""
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or not any(_prefix_match(k, p) for p in drop)}
    # BatchNorm fills a missing num_batches_tracked itself (old checkpoints lack it).
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        details = []
        for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                details.append(f"{len(keys)} {name}: {', '.join(keys[:5])}{more}")
        raise WeightsError(
            problem(
                f"Weights file {str(path)!r} does not fit architecture {arch!r}: " + "; ".join(details),
                fix=f"pass the checkpoint of a {arch} model, or set encoder.arch to the "
                "architecture the file was saved from",
            )
        )
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            problem(
                f"Weights file {str(path)!r} does not load into {arch!r}: {str(exc)[:500]}",
                fix="pass a checkpoint saved from this architecture",
            )
        ) from exc


def load_classifier_head(path: str | os.PathLike[str], prefix: str = "linear") -> tuple[Tensor, Tensor]:
    """The classifier head stored in a checkpoint: weight ``(C, D)`` and bias ``(C,)``.

    Encoders drop the head when they load a checkpoint; this reads it back, e.g. to check a
    CIFAR-10 ResNet checkpoint (``prefix="linear"``) classifies correctly.
    """
    state = read_state_dict(path)
    try:
        return state[f"{prefix}.weight"], state[f"{prefix}.bias"]
    except KeyError:
        raise WeightsError(
            problem(
                f"Weights file {str(path)!r} has no classifier head {prefix!r}",
                allowed=", ".join(sorted({k.rsplit(".", 1)[0] for k in state if "." in k})[:20]),
                fix="pass the prefix of the head's weight and bias keys",
            )
        ) from None


# ----------------------------------------------------------------------------------------------
# timm


def _timm_classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    clf = cfg.get("classifier")
    if not clf:
        return ()
    return (clf,) if isinstance(clf, str) else tuple(clf)


def _build_timm(arch: str, *, pretrained: bool, input_size: int | None) -> nn.Module:
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0}
    if input_size is not None:
        cfg = timm.models.get_pretrained_cfg(arch)
        # Models with position embeddings (ViTs) must be built for the size they will see.
        if cfg is not None and getattr(cfg, "fixed_input_size", False):
            kwargs["img_size"] = input_size
    if not pretrained:
        return timm.create_model(arch, pretrained=False, **kwargs)
    try:
        return timm.create_model(arch, pretrained=True, **kwargs)
    except Exception as exc:  # hub/network errors come in many types (OSError, HTTP, Runtime)
        raise WeightsError(
            problem(
                f"The pretrained weights of timm model {arch!r} could not be downloaded "
                f"({type(exc).__name__}: {str(exc)[:300]})",
                fix=_LOCAL_FILE_FIX,
            )
        ) from exc


def _is_timm_model(arch: str) -> bool:
    import timm

    return bool(timm.is_model(arch))


def _timm_preprocess(model: nn.Module, input_size: int | None) -> Preprocess:
    import timm.data

    dc = timm.data.resolve_model_data_config(model)
    size = int(input_size) if input_size is not None else int(dc["input_size"][-1])
    interp = str(dc.get("interpolation", "bilinear"))
    if interp not in ("bilinear", "bicubic", "nearest"):
        interp = "bilinear"
    return Preprocess(
        input_size=size,
        mean=tuple(float(m) for m in dc["mean"]),  # type: ignore[arg-type]
        std=tuple(float(s) for s in dc["std"]),  # type: ignore[arg-type]
        interpolation=interp,
    )


# ----------------------------------------------------------------------------------------------
# The public factory


def create_encoder(
    arch: str,
    *,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
) -> Encoder:
    """Build an encoder: one of :data:`ARCHS`, or any timm model name (``timm.list_models()``).

    Args:
        arch: ``"cifar_resnet20"`` (and 8/32/44/56), or a timm model name such as ``"resnet18"``
            or ``"vit_small_patch16_224.augreg_in21k"``. timm models are built with
            ``num_classes=0`` (pooled features, no classifier).
        pretrained: download timm's pretrained weights from its hub (needs network access).
        weights: a local weights file (``.safetensors``, or a torch checkpoint read with
            ``weights_only=True``), loaded strictly into the backbone. A classifier head in the
            file (``linear.*`` for the CIFAR ResNets, timm's ``classifier`` entry) is dropped:
            read it with :func:`load_classifier_head` if needed.
        input_size: overrides the preprocessing size (the default is the architecture's).

    Returns:
        An :class:`Encoder` in eval mode on CPU.

    Raises:
        UnknownNameError: ``arch`` is neither ours nor a timm model.
        WeightsError: the weights cannot be downloaded, read, or do not fit ``arch``.
        ConfigError: both ``pretrained`` and ``weights``, or a bad ``input_size``.
    """
    if pretrained and weights is not None:
        raise ConfigError(
            problem(
                f"Both pretrained=True and weights={str(weights)!r} were given",
                fix="pass a local weights file with pretrained=false, or pretrained=true alone",
            )
        )
    if input_size is not None and (isinstance(input_size, bool) or int(input_size) < 1):
        raise ConfigError(problem(f"input_size={input_size!r}", "a positive integer"))

    if arch in ARCHS:
        spec = ARCHS.get(arch)
        if pretrained:
            raise WeightsError(
                problem(
                    f"Architecture {arch!r} has no weights to download (pretrained=True is for timm models)",
                    fix=f"pass a local checkpoint: encoder.weights=/path/to/{arch}.th with "
                    "encoder.pretrained=false, or pre-train one with SimCLR",
                )
            )
        backbone = spec.build()
        feature_dim = spec.feature_dim
        preprocess = spec.preprocess
        if input_size is not None:
            preprocess = Preprocess(
                input_size=int(input_size),
                mean=preprocess.mean,
                std=preprocess.std,
                interpolation=preprocess.interpolation,
            )
        drop = spec.head_prefixes
    elif _is_timm_model(arch):
        backbone = _build_timm(arch, pretrained=pretrained, input_size=input_size)
        feature_dim = int(backbone.num_features)
        preprocess = _timm_preprocess(backbone, input_size)
        drop = _timm_classifier_prefixes(backbone)
    else:
        raise UnknownNameError(
            problem(
                f"Unknown encoder architecture {arch!r}",
                allowed=f"{', '.join(ARCHS.names())}, or any timm model name (see timm.list_models())",
                fix="check the spelling of encoder.arch",
            )
        )

    source = "timm-hub" if pretrained else "random"
    if weights is not None:
        path = Path(weights)
        _load_into(backbone, read_state_dict(path), path=path, arch=arch, drop=drop)
        source = f"file:{path.name}"
    config = EncoderConfig(arch=arch, feature_dim=feature_dim, preprocess=preprocess, source=source)
    return Encoder(backbone, config).eval()


# ----------------------------------------------------------------------------------------------
# Saving and loading our own files


def save_encoder(encoder: Encoder, path: str | os.PathLike[str]) -> None:
    """Write ``encoder``'s backbone weights to a safetensors file, atomically.

    The :class:`EncoderConfig` is stored as JSON in the file's metadata, so :func:`load_encoder`
    rebuilds the same encoder. The file is also a plain state_dict that
    ``create_encoder(arch, weights=path)`` accepts.
    """
    import safetensors.torch

    state = {k: v.detach().to("cpu").contiguous() for k, v in encoder.backbone.state_dict().items()}
    # safetensors refuses tensors that share memory (tied weights): give each its own copy.
    seen: set[int] = set()
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else -1
        if ptr in seen:
            state[k] = v.clone()
        elif ptr != -1:
            seen.add(ptr)
    metadata = {_FORMAT_KEY: _FORMAT, _METADATA_KEY: json.dumps(encoder.config.to_dict())}
    with atomic_path(path) as tmp:
        safetensors.torch.save_file(state, str(tmp), metadata=metadata)


def encoder_from_config(config: EncoderConfig) -> Encoder:
    """The architecture of ``config`` with fresh random weights (nothing is downloaded or read),
    carrying ``config`` as is: the skeleton to load a saved state_dict into."""
    if config.arch in ARCHS:
        backbone = ARCHS.get(config.arch).build()
    elif _is_timm_model(config.arch):
        backbone = _build_timm(config.arch, pretrained=False, input_size=config.preprocess.input_size)
    else:
        raise UnknownNameError(
            problem(
                f"Unknown encoder architecture {config.arch!r}",
                allowed=f"{', '.join(ARCHS.names())}, or any timm model name",
                fix="install the timm version the weights were saved with",
            )
        )
    return Encoder(backbone, config).eval()


def load_encoder(path: str | os.PathLike[str]) -> Encoder:
    """Read an encoder written by :func:`save_encoder`: same config, same weights, eval mode."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(problem(f"Encoder file {str(path)!r} does not exist", fix="check the path"))
    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:
        raise WeightsError(
            problem(
                f"Encoder file {str(path)!r} is not a readable safetensors file ({exc})",
                fix="re-create it with alcore.encoders.save_encoder",
            )
        ) from exc
    if _METADATA_KEY not in meta:
        raise WeightsError(
            problem(
                f"{str(path)!r} is a safetensors file without an alcore encoder config",
                fix="load plain weight files with create_encoder(arch, weights=path)",
            )
        )
    try:
        config = EncoderConfig.from_dict(json.loads(meta[_METADATA_KEY]))
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            problem(f"Encoder file {str(path)!r} has a broken config ({exc})", fix="re-create it")
        ) from exc
    encoder = encoder_from_config(config)
    _load_into(encoder.backbone, read_state_dict(path), path=path, arch=config.arch, drop=())
    return encoder.eval()
