"""Training modes for the real network: LP, FT and LP-FT, and evaluation on the test set.

Wen et al., TMLR 2024 (METHODS.md section 1); LP-FT after Kumar et al., "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution", ICLR 2022.

- ``lp``: linear probe. The backbone is frozen in eval mode, so its features of the labeled images
  are computed once and only the head is trained on them (the same result as running the frozen
  backbone every epoch without augmentation, at a fraction of the cost).
- ``ft``: fine-tune everything, backbone and head as two parameter groups (``backbone_lr``,
  ``head_lr``), SGD momentum 0.9 Nesterov, step decay x0.1 at ``milestones`` (fractions of the epochs),
  restarting from the pre-trained weights each time (never a warm start).
- ``lpft``: ``lp`` for ``lp_epochs``, then ``ft`` for ``ft_epochs`` from that head with the backbone
  at ``lpft_backbone_lr``.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from alcore.datasets.base import Split
from alcore.device import autocast, resolve_device
from alcore.errors import ConfigError, problem
from alcore.features import extract_features

Mode = Literal["lp", "ft", "lpft"]
MODES: tuple[str, ...] = ("lp", "ft", "lpft")
#: Modes that also learn from the unlabeled pool (:mod:`alcore.semi`; ``experiment.fine_tune``).
SEMI_MODES: tuple[str, ...] = ("fixmatch", "as3l")


def resolve_mode(mode: str, n_labeled: int, auto_threshold: int = 500) -> str:
    """``auto``: LP-FT below ``auto_threshold`` labels (few labels distort features least with a
    probed head first), FT from there on; any explicit mode is returned as given."""
    if mode == "auto":
        return "lpft" if n_labeled < auto_threshold else "ft"
    if mode not in MODES + SEMI_MODES:
        raise ConfigError(
            problem(f"training mode {mode!r}", "auto, " + ", ".join(MODES + SEMI_MODES), "set train.mode")
        )
    return mode


@dataclass(frozen=True)
class TrainConfig:
    """Settings of LP / FT / LP-FT (defaults sized for small CPU runs; the reference CIFAR-10
    ResNet-18 recipe is LP 80 epochs, FT 40 epochs, backbone lr 1e-4, head lr 0.1)."""

    lp_epochs: int = 50
    ft_epochs: int = 30
    batch_size: int = 64
    head_lr: float = 0.1
    backbone_lr: float = 0.01
    lpft_backbone_lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    augment: Literal["none", "crop", "crop_flip"] = "crop"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


class Classifier(nn.Module):
    """Encoder + linear head: ``(B, 3, S, S) -> (B, C)`` logits."""

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.feature_dim), n_classes)

    @property
    def config(self) -> Any:
        return self.encoder.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@dataclass
class TrainResult:
    model: Classifier
    mode: str
    history: list[dict[str, float]] = field(default_factory=list)


def _augment(x: torch.Tensor, how: str, gen: torch.Generator) -> torch.Tensor:
    """Batched light augmentation on normalised images: random shifts (pad 4, crop), flips."""
    if how == "none":
        return x
    b, _, h, w = x.shape
    pad = max(1, h // 8)
    xp = torch.nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
    rows = (dy.view(b, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(b, 1) + torch.arange(w).view(1, w)).to(x.device)
    bi = torch.arange(b, device=x.device).view(b, 1, 1)
    out = xp.permute(0, 2, 3, 1)[bi, rows.view(b, h, 1), cols.view(b, 1, w)].permute(0, 3, 1, 2)
    if how == "crop_flip":
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
        out = torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)
    return out.contiguous()


def _validate(mode: str, cfg: TrainConfig, labels: np.ndarray, n_classes: int) -> None:
    if mode not in MODES:
        raise ConfigError(problem(f"training mode {mode!r}", ", ".join(MODES), "set train.mode"))
    if cfg.augment not in ("none", "crop", "crop_flip"):
        raise ConfigError(problem(f"augment={cfg.augment!r}", "none, crop, crop_flip"))
    if len(labels) == 0:
        raise ConfigError(problem("training on an empty labeled set", fix="label samples first"))
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ConfigError(problem(f"labels outside [0, {n_classes})"))


def _fit_head_on_features(
    head: nn.Linear, Z: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, epochs: int, gen: torch.Generator
) -> list[dict[str, float]]:
    opt = torch.optim.SGD(
        head.parameters(), lr=cfg.head_lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    n = len(y)
    steps = max(1, -(-n // cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * steps))
    hist = []
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen).to(Z.device)
        total = 0.0
        for s in range(steps):
            idx = perm[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(head(Z[idx]), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        hist.append({"phase": 0.0, "epoch": float(ep), "loss": total / n})
    return hist


def _fine_tune(
    model: Classifier,
    split: Split,
    positions: np.ndarray,
    y: torch.Tensor,
    cfg: TrainConfig,
    *,
    epochs: int,
    backbone_lr: float,
    device: torch.device,
    gen: torch.Generator,
    progress: bool,
) -> list[dict[str, float]]:
    params = [
        {"params": model.encoder.parameters(), "lr": backbone_lr},
        {"params": model.head.parameters(), "lr": cfg.head_lr},
    ]
    opt = torch.optim.SGD(params, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    n = len(positions)
    bs = min(cfg.batch_size, n)
    steps = max(1, n // bs) if n > 1 else 1  # drop a ragged tail of 1: BatchNorm needs 2
    milestones = sorted({max(1, int(round(m * epochs * steps))) for m in cfg.milestones})
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    preprocess = model.encoder.config.preprocess
    # Labeled images are few: hold them preprocessed (un-augmented) on the device once.
    X = split.load_batch(positions, preprocess).to(device)
    model.train()
    hist = []
    for ep in tqdm(range(epochs), desc="fine-tune", leave=False, disable=not progress):
        perm = torch.randperm(n, generator=gen).to(device)
        total = 0.0
        for s in range(steps):
            idx = perm[s * bs : (s + 1) * bs]
            xb = _augment(X[idx], cfg.augment, gen)
            opt.zero_grad(set_to_none=True)
            with autocast(device):
                loss = nn.functional.cross_entropy(model(xb).float(), y[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        hist.append({"phase": 1.0, "epoch": float(ep), "loss": total / max(1, steps * bs)})
    model.eval()
    return hist


def train_classifier(
    encoder: nn.Module,
    split: Split,
    positions: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    mode: str = "lpft",
    config: TrainConfig | None = None,
    device: str | torch.device = "auto",
    random_state: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh :class:`Classifier` on ``split`` rows ``positions`` with ``labels``.

    ``encoder`` is the pre-trained encoder; it is deep-copied, never modified, so every call
    restarts from the pre-trained weights.

    Args:
        positions: ``(n,)`` row positions in ``split`` of the labeled samples.
        labels: ``(n,)`` int class indices.
    """
    cfg = config or TrainConfig()
    positions = np.asarray(positions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    _validate(mode, cfg, labels, n_classes)
    dev = resolve_device(device)
    torch.manual_seed(int(random_state))
    gen = torch.Generator().manual_seed(int(random_state))
    model = Classifier(copy.deepcopy(encoder), n_classes).to(dev)
    y = torch.from_numpy(labels).to(dev)
    history: list[dict[str, float]] = []
    if mode in ("lp", "lpft"):
        Z = extract_features(model.encoder, split.subset(positions), batch_size=256, device=dev, progress=False)
        history += _fit_head_on_features(model.head, torch.from_numpy(Z).to(dev), y, cfg, cfg.lp_epochs, gen)
    if mode in ("ft", "lpft"):
        history += _fine_tune(
            model,
            split,
            positions,
            y,
            cfg,
            epochs=cfg.ft_epochs,
            backbone_lr=cfg.backbone_lr if mode == "ft" else cfg.lpft_backbone_lr,
            device=dev,
            gen=gen,
            progress=progress,
        )
    model.eval()
    return TrainResult(model=model, mode=mode, history=history)


@torch.inference_mode()
def predict_proba(
    model: Classifier,
    split: Split,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = False,
) -> np.ndarray:
    """Softmax outputs ``(N, C)`` of ``model`` on every row of ``split``."""
    dev = resolve_device(device)
    model.eval().to(dev)
    n = len(split)
    out = np.empty((n, model.head.out_features), dtype=np.float32)
    pre = model.encoder.config.preprocess
    for s in tqdm(range(0, n, batch_size), desc="predict", leave=False, disable=not progress):
        pos = np.arange(s, min(s + batch_size, n))
        with autocast(dev):
            logits = model(split.load_batch(pos, pre).to(dev))
        out[s : s + len(pos)] = torch.softmax(logits.float(), dim=1).cpu().numpy()
    return out


def evaluate(model: Classifier, split: Split, **kwargs: Any) -> dict[str, float]:
    """Accuracy of ``model`` on ``split`` (its true labels): ``{"accuracy": ..., "n": ...}``."""
    probs = predict_proba(model, split, **kwargs)
    acc = float((probs.argmax(1) == split.labels).mean())
    return {"accuracy": acc, "n": float(len(split))}


def save_classifier(model: Classifier, path: Any) -> None:
    """Write encoder + head to a safetensors file with the encoder config in its metadata."""
    import json

    from safetensors.torch import save_file

    from alcore._io import atomic_path

    meta = {
        "encoder_config": json.dumps(model.encoder.config.to_dict()),
        "n_classes": str(model.head.out_features),
        "format": "alcore.classifier/1",
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_classifier(path: Any) -> Classifier:
    """Read a file written by :func:`save_classifier`."""
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from alcore.encoders import EncoderConfig, encoder_from_config
    from alcore.errors import WeightsError

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise WeightsError(
            problem(f"Cannot read the model file {path}: {e}", fix="re-run the fine_tune step")
        ) from None
    if meta.get("format") != "alcore.classifier/1":
        raise WeightsError(problem(f"{path} is not an alcore classifier file", fix="pass a file written by alcore"))
    enc = encoder_from_config(EncoderConfig.from_dict(json.loads(meta["encoder_config"])))
    model = Classifier(enc, int(meta["n_classes"]))
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def load_any_encoder(path: Any) -> nn.Module:
    """The encoder in an encoder file, or the (fine-tuned) encoder of a classifier file."""
    from safetensors import safe_open

    from alcore.encoders import load_encoder

    try:
        with safe_open(str(path), framework="pt") as fh:
            is_classifier = (fh.metadata() or {}).get("format") == "alcore.classifier/1"
    except Exception:  # noqa: BLE001 - load_encoder gives the clear error for an unreadable file
        is_classifier = False
    return load_classifier(path).encoder if is_classifier else load_encoder(path)


class HeadScorer:
    """A trained linear head as a selection scorer on its encoder's features (Standard AL).

    ``predict_proba(Z) = softmax(Z W^T + b)`` and ``embed(Z) = Z``: exactly the classifier's outputs
    when ``Z`` are the features its own (fine-tuned) encoder computed.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.asarray(weight, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)

    @classmethod
    def from_file(cls, path: Any) -> HeadScorer:
        from safetensors import safe_open

        with safe_open(str(path), framework="np") as fh:
            return cls(fh.get_tensor("head.weight"), fh.get_tensor("head.bias"))

    def predict_proba(self, Z: np.ndarray) -> np.ndarray:
        logits = np.asarray(Z, dtype=np.float32) @ self.weight.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def embed(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(Z, dtype=np.float32)

    def predict(self, Z: np.ndarray) -> np.ndarray:
        return self.predict_proba(Z).argmax(axis=1)

    def predict_proba_mc(
        self,
        Z: np.ndarray,
        n_samples: int = 20,
        *,
        random_state: int | np.random.Generator = 0,
        mc_dropout: float = 0.25,
        consistent: bool = False,
    ) -> np.ndarray:
        """MC-dropout probabilities ``(T, n, C)``: dropout at ``mc_dropout`` on the head's input
        features, T masks (Gal et al., ICML 2017; dropout before the last layer), for BALD.
        ``consistent``: one set of T masks for every row (as :meth:`ProxyMLP.predict_proba_mc`),
        the T passes one product with the T masked copies of the head."""
        if not 0 < mc_dropout < 1:
            raise ConfigError(problem(f"mc_dropout={mc_dropout!r}", "a rate in (0, 1)"))
        rng = random_state if isinstance(random_state, np.random.Generator) else np.random.default_rng(random_state)
        Z = np.asarray(Z, dtype=np.float32)
        if consistent:
            keep = (rng.random((n_samples, Z.shape[1]), dtype=np.float32) >= mc_dropout) / np.float32(1.0 - mc_dropout)
            W_all = (keep[:, :, None] * self.weight.T[None]).transpose(1, 0, 2).reshape(Z.shape[1], -1)
            logits = (Z @ W_all).reshape(len(Z), n_samples, -1) + self.bias
            logits -= logits.max(axis=2, keepdims=True)
            e = np.exp(logits)
            return np.ascontiguousarray((e / e.sum(axis=2, keepdims=True)).transpose(1, 0, 2))
        out = np.empty((n_samples, len(Z), len(self.bias)), dtype=np.float32)
        for t in range(n_samples):
            keep = rng.random(Z.shape, dtype=np.float32) >= mc_dropout
            out[t] = self.predict_proba(Z * keep / (1.0 - mc_dropout))
        return out
