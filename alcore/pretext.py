"""The rotation pretext task: a 4-way rotation predictor trained on the unlabeled pool, and the
per-image pretext loss that PT4AL sorts the pool by.

Gidaris, Singh & Komodakis, "Unsupervised Representation Learning by Predicting Image Rotations",
ICLR 2018; used for active learning by Yi et al., "Using Self-Supervised Pretext Tasks for Active
Learning", ECCV 2022 (PT4AL, code johnsk95/PT4AL). Labels are never read: the targets are the
rotations the code applies (0, 90, 180, 270 degrees).

The per-image loss is the mean cross entropy over the image's 4 rotations, computed in eval mode
without augmentation (PT4AL's ``rotation_loss.txt``). Losses are stored per sample id in Parquet
(``id`` int64, ``loss`` float32) with their provenance in the footer, like the feature store.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alcore._loop import cosine_epochs
from alcore.datasets.base import Split
from alcore.device import autocast, resolve_device
from alcore.encoders import Encoder
from alcore.errors import ConfigError, DataError, problem
from alcore.idtable import read_id_table, write_id_table
from alcore.training import _augment

__all__ = [
    "RotationNet",
    "read_pretext_losses",
    "rotate4",
    "rotation_losses",
    "train_rotation",
    "write_pretext_losses",
]

META_KEY = b"alcore.pretext_spec"


def rotate4(x: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, C, H, W)`` square images -> ``(4B, C, H, W)`` = every image at 0, 90, 180, 270
    degrees (rotation-major: all 0-degree views first) and the ``(4B,)`` rotation targets."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ConfigError(problem(f"images of shape {tuple(x.shape)}", allowed="square (B, C, H, W) images"))
    views = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(4)])
    targets = torch.arange(4, device=x.device).repeat_interleave(x.shape[0])
    return views, targets


class RotationNet(nn.Module):
    """An encoder plus a linear 4-way rotation head."""

    def __init__(self, encoder: Encoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.feature_dim), 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x))


def train_rotation(
    encoder: Encoder,
    split: Split,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 0.05,
    weight_decay: float = 5e-4,
    augment: bool = True,
    device: str | torch.device = "cpu",
    random_state: int = 0,
    progress: bool = True,
    loss_history: list[float] | None = None,
) -> RotationNet:
    """Train a rotation predictor on the images of ``split`` (labels are never read).

    Each step takes ``batch_size`` images, makes their 4 rotations (a batch of ``4 x batch_size``)
    and minimises the cross entropy of the rotation. SGD (momentum 0.9, nesterov) with a per-step
    cosine decay of ``lr`` to 0; bf16 autocast on CUDA.

    Args:
        encoder: the backbone to start from (random, pre-trained, or SimCLR). Not modified:
            training runs on a copy.
        epochs: passes over ``split`` in a seeded random order.
        augment: random shifts before rotating (PT4AL trains with crops).
        loss_history: if given, the mean loss of every epoch is appended.

    Returns:
        The :class:`RotationNet`, on CPU, in eval mode.
    """
    n = len(split)
    if epochs < 1 or batch_size < 1 or lr <= 0 or weight_decay < 0:
        raise ConfigError(
            problem(
                f"rotation pretext got epochs={epochs}, batch_size={batch_size}, lr={lr}, weight_decay={weight_decay}",
                allowed="epochs >= 1, batch_size >= 1, lr > 0, weight_decay >= 0",
                fix="set pretext.* in params.yaml",
            )
        )
    if n < 1:
        raise DataError(problem("the split to train the rotation task on is empty", fix="check the dataset"))
    dev = resolve_device(device)
    preprocess = encoder.config.preprocess
    n_batches = math.ceil(n / batch_size)
    gen = torch.Generator().manual_seed(int(random_state))
    fork_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(random_state))
        model = RotationNet(copy.deepcopy(encoder)).to(dev).train()
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)

        def batch_loss(positions: np.ndarray) -> Tensor:
            x = split.load_batch(positions, preprocess).to(dev)
            if augment:
                x = _augment(x, "crop", gen)  # shifts only: flips would blur the rotation targets
            views, targets = rotate4(x)
            with autocast(dev):
                logits = model(views)
            return F.cross_entropy(logits.float(), targets)

        cosine_epochs(
            opt,
            batch_loss,
            n=n,
            n_batches=n_batches,
            epochs=epochs,
            gen=gen,
            desc="rotation",
            fix="lower pretext.lr",
            progress=progress,
            loss_history=loss_history,
        )
    model = model.to("cpu").eval()
    model.encoder.config = dataclasses.replace(encoder.config, source=f"{encoder.config.source}+rotation")
    return model


@torch.inference_mode()
def rotation_losses(
    model: RotationNet, split: Split, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> np.ndarray:
    """``(N,)`` float32 pretext loss of every image of ``split``: the mean cross entropy of the
    rotation over its 4 rotations, in eval mode, without augmentation."""
    n = len(split)
    if n == 0:
        raise DataError(problem("the split to score is empty", fix="check the dataset"))
    dev = resolve_device(device)
    model = model.eval().to(dev)
    preprocess = model.encoder.config.preprocess
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, batch_size):
        pos = np.arange(start, min(start + batch_size, n))
        views, targets = rotate4(split.load_batch(pos, preprocess).to(dev))
        with autocast(dev):
            logits = model(views)
        ce = F.cross_entropy(logits.float(), targets, reduction="none").view(4, len(pos))
        out[start : start + len(pos)] = ce.mean(dim=0).cpu().numpy()
    if not np.isfinite(out).all():
        raise DataError(problem("the rotation model produced non-finite losses", fix="lower pretext.lr"))
    return out


def write_pretext_losses(
    path: str | os.PathLike[str], ids: np.ndarray, losses: np.ndarray, spec: dict[str, Any]
) -> None:
    """Write ``ids`` (N,) and ``losses`` (N,) with ``spec`` (JSON-able provenance), atomically."""
    write_id_table(path, ids, {"loss": np.asarray(losses, dtype=np.float32)}, spec, key=META_KEY)


def read_pretext_losses(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(ids, losses, spec)`` of a pretext-loss file written by :func:`write_pretext_losses`."""
    ids, cols, spec = read_id_table(path, ("loss",), key=META_KEY, what="pretext-loss", stage="pretext stage")
    return ids, cols["loss"].astype(np.float32), spec
