"""Reading weights files: a flat ``{key: tensor}`` state dict from ``.safetensors`` or a PyTorch
checkpoint, never unpickling arbitrary objects. Shared by the encoder registry
(:mod:`alcore.encoders.core`) and the offline package weights (:mod:`alcore.encoders.pretrained`)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alcore.errors import WeightsError, problem

__all__ = ["read_state_dict"]


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
