"""Self-supervised pre-training of an encoder on the unlabeled pool, for users without weights.

SimCLR: Chen, Kornblith, Norouzi and Hinton (2020), "A Simple Framework for Contrastive Learning
of Visual Representations", ICML. Two random views of every image go through the encoder and a
projection MLP; the NT-Xent loss pulls the two views of an image together and pushes the other
``2B - 2`` views of the batch away.

The augmentations run on whole batches with torch ops (one ``grid_sample`` for crop, resize and
flip; colour ops as per-sample blends), so they cost little next to the network. Their random
parameters are drawn from one CPU ``torch.Generator`` seeded by ``random_state``, so a run is
reproducible on CPU whatever the global RNG state.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alcore._loop import cosine_epochs
from alcore.datasets.base import Split
from alcore.device import autocast, resolve_device
from alcore.encoders import Encoder
from alcore.errors import ConfigError, problem

__all__ = ["SimCLRAugment", "nt_xent_loss", "pretrain_simclr"]

_GRAY = (0.299, 0.587, 0.114)


def _gray(x: Tensor) -> Tensor:
    w = torch.tensor(_GRAY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _per_sample(v: Tensor) -> Tensor:
    return v.view(-1, 1, 1, 1)


@dataclasses.dataclass(frozen=True)
class SimCLRAugment:
    """SimCLR's augmentation on a batch ``(B, 3, S, S)`` in [0, 1] -> a new view, same shape.

    Random resized crop (area ``scale``, aspect ``ratio``) back to S x S, horizontal flip (p=0.5),
    colour jitter (brightness, contrast, saturation, hue; applied with ``p_jitter``, in that
    fixed order), grayscale (``p_gray``). The defaults are the paper's CIFAR-10 settings (colour
    strength 0.5) with the crop scale (0.2, 1) of later reproductions. No blur: the paper drops it
    for 32x32 images.
    """

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p_jitter: float = 0.8
    p_gray: float = 0.2

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        b = x.shape[0]

        def u(lo: float, hi: float) -> Tensor:  # B uniforms on CPU, moved to x's device
            r = torch.rand(b, generator=generator, dtype=torch.float32)
            return (lo + (hi - lo) * r).to(x.device)

        # Crop + resize + flip as one affine resampling. Sizes are fractions of the side.
        area = u(*self.scale)
        log_r = u(math.log(self.ratio[0]), math.log(self.ratio[1]))
        w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
        h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
        cx = (u(-1.0, 1.0)) * (1.0 - w)
        cy = (u(-1.0, 1.0)) * (1.0 - h)
        flip = torch.where(u(0.0, 1.0) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = w * flip
        theta[:, 0, 2] = cx
        theta[:, 1, 1] = h
        theta[:, 1, 2] = cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # Colour jitter, per sample, with probability p_jitter.
        jit = _per_sample(u(0.0, 1.0) < self.p_jitter).to(x.dtype)
        bri = _per_sample(u(1 - self.brightness, 1 + self.brightness))
        con = _per_sample(u(1 - self.contrast, 1 + self.contrast))
        sat = _per_sample(u(1 - self.saturation, 1 + self.saturation))
        hue = u(-self.hue, self.hue)
        y = (x * bri).clamp(0, 1)
        mean = _gray(y).mean(dim=(2, 3), keepdim=True)
        y = (mean + con * (y - mean)).clamp(0, 1)
        y = (_gray(y) + sat * (y - _gray(y))).clamp(0, 1)
        y = _hue_rotate(y, hue).clamp(0, 1)
        x = jit * y + (1 - jit) * x

        gray = _per_sample(u(0.0, 1.0) < self.p_gray).to(x.dtype)
        x = gray * _gray(x).expand_as(x) + (1 - gray) * x
        return x.contiguous()


def _hue_rotate(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate hue by ``shift`` turns (per sample, in [-0.5, 0.5]) in the YIQ colour space."""
    to_yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
        dtype=x.dtype,
        device=x.device,
    )
    from_yiq = torch.linalg.inv(to_yiq)
    a = 2 * math.pi * shift.to(x.dtype)
    cos, sin = torch.cos(a), torch.sin(a)
    rot = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    m = from_yiq @ rot @ to_yiq  # (B, 3, 3)
    return torch.einsum("bij,bjhw->bihw", m, x)


def nt_xent_loss(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy) of two views ``(B, P)`` each.

    For each of the 2B projections the positive is the other view of the same image; the 2B - 2
    other projections are negatives. Cosine similarities divided by ``temperature``.
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)
    return F.cross_entropy(sim, target)


def pretrain_simclr(
    encoder: Encoder,
    split: Split,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    temperature: float = 0.5,
    projection_dim: int = 128,
    device: str | torch.device = "cpu",
    random_state: int = 0,
    progress: bool = True,
    augment: SimCLRAugment | None = None,
    loss_history: list[float] | None = None,
) -> Encoder:
    """Pre-train ``encoder`` with SimCLR on the images of ``split`` (labels are never read).

    Each step takes a batch of images (``split.load_batch_unnormalized`` at the encoder's input
    size), makes two views with ``augment``, normalises them with the encoder's preprocessing,
    projects the encoder's features with an MLP ``D -> D -> projection_dim`` (ReLU) and minimises
    :func:`nt_xent_loss`. Adam with a per-step cosine decay of ``lr`` to 0. bf16 autocast on CUDA.

    Args:
        encoder: the starting point (random or pre-trained). It is not modified: training runs on
            a copy.
        split: the images (typically the unlabeled pool). Batches of at least 2 images.
        epochs: passes over ``split``; each visits every image once, in a seeded random order.
        batch_size: images per step (each gives 2 views); the last batch is evened out, never
            smaller than 2.
        loss_history: if a list is given, the mean loss of every epoch is appended to it.

    Returns:
        The trained encoder, on CPU, in eval mode, with ``config.source == "simclr"``; the
        projection head is discarded.
    """
    n = len(split)
    if epochs < 1 or batch_size < 2 or temperature <= 0 or projection_dim < 1 or lr <= 0:
        raise ConfigError(
            problem(
                f"SimCLR got epochs={epochs}, batch_size={batch_size}, lr={lr}, "
                f"temperature={temperature}, projection_dim={projection_dim}",
                "epochs >= 1, batch_size >= 2, lr > 0, temperature > 0, projection_dim >= 1",
            )
        )
    if n < 2:
        raise ConfigError(problem(f"SimCLR needs at least 2 images, the split has {n}", fix="use a larger pool"))
    dev = resolve_device(device)
    augment = augment or SimCLRAugment()
    preprocess = encoder.config.preprocess
    dim = int(encoder.config.feature_dim)
    n_batches = math.ceil(n / min(batch_size, n))
    if n // n_batches < 2:
        n_batches = n // 2

    gen = torch.Generator().manual_seed(int(random_state))
    fork_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(int(random_state))  # head init and any dropout in the backbone
        model = copy.deepcopy(encoder).to(dev).train()
        head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, projection_dim))
        head = head.to(dev).train()
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)

        def batch_loss(positions: np.ndarray) -> Tensor:
            x = split.load_batch_unnormalized(positions, preprocess).to(dev)
            v1 = preprocess.normalize(augment(x, gen))
            v2 = preprocess.normalize(augment(x, gen))
            with autocast(dev):
                z = head(model(torch.cat([v1, v2])))
            z1, z2 = z.float().chunk(2)
            return nt_xent_loss(z1, z2, temperature)

        cosine_epochs(
            opt,
            batch_loss,
            n=n,
            n_batches=n_batches,
            epochs=epochs,
            gen=gen,
            desc="SimCLR",
            fix="lower lr",
            progress=progress,
            loss_history=loss_history,
        )

    model = model.to("cpu").eval()
    model.config = dataclasses.replace(encoder.config, source="simclr")
    return model
