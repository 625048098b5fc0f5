"""Preprocessing: the frozen recipe that turns stored images into an encoder's input tensor.

A :class:`Preprocess` travels with the encoder's config and with every feature file, so features
computed with a different recipe are refused (see :mod:`alcore.features`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass(frozen=True)
class Preprocess:
    """Resize to ``input_size`` x ``input_size``, force 3 channels, scale to [0, 1], normalise.

    Works on whole batches of uint8 arrays at once (no per-image Python), which is what keeps
    feature extraction close to a bare inference loop.
    """

    input_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            input_size=int(d["input_size"]),
            mean=tuple(float(x) for x in d["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in d["std"]),  # type: ignore[arg-type]
            interpolation=str(d.get("interpolation", "bilinear")),
        )

    def to_float(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, H, W)`` or ``(B, H, W, C)`` -> float ``(B, 3, S, S)`` in [0, 1], not normalised."""
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(-1)
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, H, W[, C]), got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 4:
            x = x[:, :3]
        elif x.shape[1] != 3:
            raise ValueError(f"expected 1, 3 or 4 channels, got {x.shape[1]}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            kw = {"align_corners": False, "antialias": True} if self.interpolation != "nearest" else {}
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation, **kw)
        return x.clamp(0.0, 1.0).contiguous()  # not in place: x may be an expanded view

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def __call__(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 batch -> normalised float ``(B, 3, S, S)``."""
        return self.normalize(self.to_float(images))
