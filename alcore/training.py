"""Training the real network: LP, FT and LP-FT, each held to its own linear probe, and ``auto``.

Wen et al., TMLR 2024 (METHODS.md section 1); LP-FT after Kumar et al., "Fine-Tuning can Distort
Pretrained Features and Underperform Out-of-Distribution", ICLR 2022.

- ``lp``: linear probe. The frozen encoder (eval mode) computes the labeled images' features once;
  the head is the L2-regularised multinomial logistic regression on the standardised features,
  solved to convergence by full-batch L-BFGS (:func:`fit_linear_probe`: the objective of
  scikit-learn's ``LogisticRegression(C=lp_C)``, intercept unpenalised). The standardisation is
  folded into the ``Linear`` head, so the model stays encoder + Linear.
- ``ft``: fine-tune the encoder and a fresh head as two parameter groups (``backbone_lr``,
  ``head_lr``), SGD momentum 0.9 Nesterov, restarting from the pre-trained weights every time.
- ``lpft``: ``ft`` starting from the converged probe (``lpft_backbone_lr``, ``lpft_head_lr``).
- ``auto``: the probe or one of ``auto_modes``, whichever is most accurate on held-out folds of the
  labeled set (never a fixed label count).

Schedules count optimiser steps: ``clip(ceil(ft_epochs * n / batch_size), ft_min_steps,
ft_max_steps)`` for ``n`` labels (cosine decay, or x0.1 at ``milestones``), so 100 labels get the
steps they need instead of ``epochs x 100 / 64``. Batches are drawn from consecutive shuffles of
the labeled set (every label is seen equally; no ragged tail). BatchNorm: ``bn="train"`` uses batch
statistics and updates the running ones; ``"frozen"`` keeps the pre-trained running statistics
(the layers stay in eval mode, their affine parameters train); ``"auto"`` trains them when a batch
holds at least ``bn_min_batch`` images and freezes them otherwise (statistics of a handful of
images are noise).

**The guard** (issue 13 measured why it is needed: too few steps, and on a shifted domain
train-mode BatchNorm first wipes the probe the head was fitted to). ``ft`` and ``lpft`` compare
themselves with the probe on held-out folds of the labeled set and return the probe when they
lose; ``auto`` compares the probe with every mode of ``auto_modes``. Folds
(:func:`evidence_folds`): the labeled set is split, stratified, into ``round(1 / holdout)`` groups
(a class with one label is never held out); groups are held out one at a time until at least
``min_holdout`` labels were held out (one fold when the set is large, k-fold when it is small).
Each candidate trains on the rest and predicts the held-out group. **The rule**
(:func:`choose_mode`): the probe stays unless a mode beats it beyond noise on the same held-out
labels: it gets ``wins`` labels right that the probe gets wrong and ``losses`` the other way, and
replaces the probe only when ``wins - losses > auto_margin * sqrt(wins + losses)`` (a paired sign
test; ``auto_margin`` standard errors, 0.75 by default, 0: any net win). Of the modes that pass, the
most accurate wins (ties to the cheaper: lp, lpft, ft) and is trained again on every label.
Issue 13 measured why: on the CIFAR-10 subset at 300 labels, ``ft`` won a 58-label fold by one
label (9 won, 8 lost) and was 5.5 points below the probe on the test set. Documented rule when nothing can be
held out (no class has two labels): the probe.
``holdout=0`` turns the guard off (``ft`` and ``lpft`` are returned as trained; ``auto`` refuses).
All of it is in the seconds a call takes, so the ledger pays for the evidence. The chosen mode and
the evidence travel with the model (:attr:`Classifier.training_record`, saved in the file).
"""

from __future__ import annotations

import copy
import math
import time
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
#: Cheapest first: the order that breaks ties between modes equally accurate on the held-out folds
#: (the semi-supervised modes meet only the probe, in :func:`alcore.semi.semi_guard`).
COST_ORDER: tuple[str, ...] = ("lp", "lpft", "ft", "fixmatch", "as3l")
#: auto's margin: a mode replaces the probe only beyond this many standard errors (issue 13's sweep;
#: ``train.auto_margin`` in params.yaml carries the same default).
AUTO_MARGIN = 0.75
#: Labeled images held preprocessed on the device up to this many bytes; beyond, loaded per batch.
_HOLD_BYTES = 1 << 30


def resolve_mode(mode: str) -> str:
    """Check a ``train.mode`` and return it: ``auto`` is decided by :func:`train_classifier` on
    held-out evidence, not by a label count."""
    if mode != "auto" and mode not in MODES + SEMI_MODES:
        raise ConfigError(
            problem(f"training mode {mode!r}", "auto, " + ", ".join(MODES + SEMI_MODES), "set train.mode")
        )
    return mode


@dataclass(frozen=True)
class TrainConfig:
    """Settings of LP / FT / LP-FT and of the guard (module docstring). The reference CIFAR-10
    ResNet-18 LP-FT recipe is LP 80 epochs then FT 40 epochs, backbone lr 1e-4, head lr 0.1."""

    lp_C: float = 1.0
    lp_max_iter: int = 1000
    ft_epochs: float = 30.0
    ft_min_steps: int = 300
    ft_max_steps: int = 3000
    batch_size: int = 64
    head_lr: float = 0.1
    backbone_lr: float = 0.01
    lpft_head_lr: float = 0.01
    lpft_backbone_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step"] = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    bn: Literal["auto", "train", "frozen"] = "auto"
    bn_min_batch: int = 16
    augment: Literal["none", "crop", "crop_flip"] = "crop"
    holdout: float = 0.2
    min_holdout: int = 40
    auto_modes: tuple[str, ...] = ("lpft", "ft")
    auto_margin: float = AUTO_MARGIN

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"], d["auto_modes"] = list(self.milestones), list(self.auto_modes)
        return d

    def steps(self, n: int) -> int:
        """Optimiser steps of a fine-tune on ``n`` labels: ``ft_epochs`` passes, clipped to
        ``[ft_min_steps, ft_max_steps]``."""
        return int(min(self.ft_max_steps, max(self.ft_min_steps, math.ceil(self.ft_epochs * n / self.batch_size))))

    def check(self) -> None:
        """Raise :class:`ConfigError` naming every value out of range."""
        bad = []
        if not self.lp_C > 0 or self.lp_max_iter < 1:
            bad.append(f"lp_C={self.lp_C} (> 0), lp_max_iter={self.lp_max_iter} (>= 1)")
        if self.ft_epochs < 0 or not 1 <= self.ft_min_steps <= self.ft_max_steps or self.batch_size < 1:
            bad.append(
                f"ft_epochs={self.ft_epochs} (>= 0), ft_min_steps={self.ft_min_steps} <= "
                f"ft_max_steps={self.ft_max_steps} (both >= 1), batch_size={self.batch_size} (>= 1)"
            )
        lrs = (self.head_lr, self.backbone_lr, self.lpft_head_lr, self.lpft_backbone_lr)
        if min(lrs) <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            bad.append(f"learning rates {lrs} (> 0), weight_decay={self.weight_decay}, momentum={self.momentum}")
        if self.schedule not in ("cosine", "step") or not all(0 < m < 1 for m in self.milestones):
            bad.append(f"schedule={self.schedule!r} (cosine, step), milestones={self.milestones} (in (0, 1))")
        if self.bn not in ("auto", "train", "frozen") or self.bn_min_batch < 2:
            bad.append(f"bn={self.bn!r} (auto, train, frozen), bn_min_batch={self.bn_min_batch} (>= 2)")
        if self.augment not in ("none", "crop", "crop_flip"):
            bad.append(f"augment={self.augment!r} (none, crop, crop_flip)")
        if not 0 <= self.holdout <= 0.5 or self.min_holdout < 1:
            bad.append(f"holdout={self.holdout} (in [0, 0.5]), min_holdout={self.min_holdout} (>= 1)")
        if not self.auto_margin >= 0:
            bad.append(f"auto_margin={self.auto_margin} (>= 0: standard errors a mode must beat the probe by)")
        if not set(self.auto_modes) <= {"lp", "lpft", "ft"}:
            bad.append(f"auto_modes={list(self.auto_modes)} (lpft, ft; the probe always takes part)")
        if bad:
            raise ConfigError(problem("training got " + "; ".join(bad), fix="set these under train in params.yaml"))


class Classifier(nn.Module):
    """Encoder + linear head: ``(B, 3, S, S) -> (B, C)`` logits.

    ``training_record`` says how it was trained (the chosen mode and the held-out evidence); it is
    saved with the weights by :func:`save_classifier`.
    """

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.feature_dim), n_classes)
        self.training_record: dict[str, Any] = {}

    @property
    def config(self) -> Any:
        return self.encoder.config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@dataclass
class TrainResult:
    """The trained model, the mode it was trained with (``auto`` resolved), the loss history and
    the evidence behind the choice (:func:`train_classifier`)."""

    model: Classifier
    mode: str
    history: list[dict[str, float]] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)


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


# ---------------------------------------------------------------- the linear probe
@dataclass(frozen=True)
class LinearProbe:
    """A solved probe on raw features: ``logits = Z @ weight.T + bias`` (standardisation folded in).

    ``weight`` ``(C, D)`` and ``bias`` ``(C,)`` float32; a class without labels gets zero weights
    and a bias 10 below every logit the labeled features produced (it is never predicted).
    """

    weight: np.ndarray
    bias: np.ndarray
    n_iter: int
    converged: bool

    def predict_proba(self, Z: np.ndarray) -> np.ndarray:
        logits = np.asarray(Z, dtype=np.float64) @ self.weight.T.astype(np.float64) + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def set_head(self, head: nn.Linear) -> None:
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(self.weight))
            head.bias.copy_(torch.from_numpy(self.bias))


def fit_linear_probe(
    Z: np.ndarray, y: np.ndarray, n_classes: int, *, C: float = 1.0, max_iter: int = 1000, tol: float = 1e-6
) -> LinearProbe:
    """Multinomial logistic regression on standardised features, solved by full-batch L-BFGS.

    Minimises ``mean_i CE(W s(z_i) + b, y_i) + ||W||^2 / (2 C n)`` with ``s`` the standardisation
    of ``Z`` (mean and std of these rows): scikit-learn's ``LogisticRegression(C=C)`` objective
    (``C sum_i CE + ||W||^2 / 2``) divided by ``C n``, so both have the same solution. Convex: the
    answer does not depend on a learning rate, a batch size or the number of labels.

    Args:
        Z: ``(n, D)`` features; y: ``(n,)`` int labels in ``[0, n_classes)``.
        tol: stop when every gradient entry of the objective is below it.
    """
    Z = np.asarray(Z, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n, d = Z.shape
    mu = Z.mean(axis=0)
    sd = Z.std(axis=0)
    sd = np.where(sd > 1e-12, sd, 1.0)  # a constant feature carries nothing: leave it at 0 after centring
    present = np.unique(y)
    k = len(present)
    Zs = torch.from_numpy((Z - mu) / sd)
    yi = torch.from_numpy(np.searchsorted(present, y))
    W = torch.zeros(k, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    lam = 1.0 / (C * n)
    n_iter, converged = 0, True
    if k > 1:
        opt = torch.optim.LBFGS(
            [W, b],
            lr=1.0,
            max_iter=max_iter,
            tolerance_grad=tol,
            tolerance_change=1e-12,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def objective() -> torch.Tensor:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(Zs @ W.T + b, yi) + 0.5 * lam * (W * W).sum()
            loss.backward()
            return loss

        opt.step(objective)
        n_iter = int(opt.state[W]["n_iter"])
        objective()
        converged = max(float(W.grad.abs().max()), float(b.grad.abs().max())) <= 10 * tol
    Wf = W.detach().numpy() / sd  # fold the standardisation into the head: W s(z) + b = (W / sd) z + b'
    bf = b.detach().numpy() - Wf @ mu
    weight = np.zeros((n_classes, d))
    bias = np.full(n_classes, float((Z @ Wf.T + bf).min()) - 10.0)
    weight[present], bias[present] = Wf, bf
    return LinearProbe(weight.astype(np.float32), bias.astype(np.float32), n_iter, converged)


# ---------------------------------------------------------------- fine-tuning
class _Images:
    """The labeled images by row: preprocessed once and held on the device when they fit in
    ``_HOLD_BYTES``, else loaded per batch."""

    def __init__(self, split: Split, positions: np.ndarray, preprocess: Any, device: torch.device) -> None:
        self.split, self.positions, self.preprocess, self.device = split, positions, preprocess, device
        size = len(positions) * 3 * int(preprocess.input_size) ** 2 * 4
        self.X = split.load_batch(positions, preprocess).to(device) if size <= _HOLD_BYTES else None

    def batch(self, rows: np.ndarray) -> torch.Tensor:
        if self.X is not None:
            return self.X[torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)]
        return self.split.load_batch(self.positions[rows], self.preprocess).to(self.device)


def _freeze_bn(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _batches(rows: np.ndarray, bs: int, gen: torch.Generator) -> Any:
    """Endless batches of ``bs`` rows from consecutive shuffles of ``rows``."""
    buf = np.empty(0, dtype=np.int64)
    while True:
        while len(buf) < bs:
            buf = np.concatenate([buf, rows[torch.randperm(len(rows), generator=gen).numpy()]])
        yield buf[:bs]
        buf = buf[bs:]


def _fine_tune(
    model: Classifier,
    images: _Images,
    rows: np.ndarray,
    y: torch.Tensor,
    cfg: TrainConfig,
    *,
    steps: int,
    backbone_lr: float,
    head_lr: float,
    gen: torch.Generator,
    progress: bool,
    desc: str,
) -> tuple[list[dict[str, float]], bool]:
    """``steps`` SGD steps on the labeled ``rows`` (``y`` holds every row's label); returns the
    loss history and False when the loss stopped being finite (the model is then unusable)."""
    dev = images.device
    params = [
        {"params": model.encoder.parameters(), "lr": backbone_lr},
        {"params": model.head.parameters(), "lr": head_lr},
    ]
    opt = torch.optim.SGD(params, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay)
    if cfg.schedule == "cosine":
        sched: Any = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    else:
        milestones = sorted({max(1, round(m * steps)) for m in cfg.milestones})
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)
    bs = min(cfg.batch_size, len(rows))
    bn_train = bs >= 2 and (cfg.bn == "train" or (cfg.bn == "auto" and bs >= cfg.bn_min_batch))
    model.train()
    if not bn_train:
        _freeze_bn(model)
    hist: list[dict[str, float]] = []
    every = max(1, steps // 20)
    batches = _batches(rows, bs, gen)
    ok, running = True, 0.0
    with tqdm(total=steps, desc=desc, unit="step", leave=False, disable=not progress) as bar:
        for k in range(steps):
            idx = next(batches)
            xb = _augment(images.batch(idx), cfg.augment, gen)
            with autocast(dev):
                loss = nn.functional.cross_entropy(model(xb).float(), y[torch.from_numpy(idx).to(dev)])
            if not torch.isfinite(loss):
                ok = False
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = float(loss.detach()) if k == 0 else 0.9 * running + 0.1 * float(loss.detach())
            if (k + 1) % every == 0 or k == steps - 1:
                hist.append({"step": float(k + 1), "loss": running})
                bar.set_postfix(loss=f"{running:.3f}", refresh=False)
            bar.update()
    model.eval()
    return hist, ok


@torch.inference_mode()
def _predict_rows(model: Classifier, images: _Images, rows: np.ndarray) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(rows), 256):
        with autocast(images.device):
            logits = model(images.batch(rows[s : s + 256]))
        out.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
    return np.concatenate(out).astype(np.float64)


# ---------------------------------------------------------------- the guard and auto
def evidence_folds(
    labels: np.ndarray, *, holdout: float, min_holdout: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Disjoint held-out row sets of the labeled set (module docstring, "the guard").

    The rows are split, stratified, into ``round(1 / holdout)`` groups; a class with a single
    label is never held out, so every training part keeps every labeled class. Groups are taken
    (in random order) until they hold at least ``min_holdout`` rows, or all are taken.

    Returns:
        A list of ``(m_k,)`` int64 row arrays; empty when no class has two labels.
    """
    labels = np.asarray(labels)
    n_groups = max(2, round(1.0 / holdout))
    group = np.full(len(labels), -1, dtype=np.int64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        if len(rows) < 2:
            continue
        rows = rows[rng.permutation(len(rows))]
        group[rows] = (int(rng.integers(n_groups)) + np.arange(len(rows))) % n_groups
    folds, held = [], 0
    for g in rng.permutation(n_groups):
        rows = np.flatnonzero(group == g)
        if rows.size:
            folds.append(rows)
            held += rows.size
        if held >= min_holdout:
            break
    return folds


class _Trainer:
    """Everything the candidates of one call share: the encoder, the labeled images and their
    frozen features, the labels, the settings."""

    def __init__(
        self,
        encoder: nn.Module,
        images: _Images,
        Z: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        cfg: TrainConfig,
        progress: bool,
    ) -> None:
        self.encoder, self.images, self.Z, self.labels = encoder, images, Z, labels
        self.n_classes, self.cfg, self.progress = n_classes, cfg, progress
        self.y = torch.from_numpy(labels).to(images.device)

    def probe(self, rows: np.ndarray) -> LinearProbe:
        cfg = self.cfg
        return fit_linear_probe(self.Z[rows], self.labels[rows], self.n_classes, C=cfg.lp_C, max_iter=cfg.lp_max_iter)

    def fit(self, mode: str, rows: np.ndarray, seed: int, desc: str) -> tuple[Classifier, bool, list[dict[str, float]]]:
        """A fresh model of ``mode`` trained on ``rows``; False when fine-tuning diverged."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # the fresh head's initialisation
            model = Classifier(copy.deepcopy(self.encoder), self.n_classes).to(self.images.device)
        if mode in ("lp", "lpft"):
            self.probe(rows).set_head(model.head)
        if mode == "lp":
            return model.eval(), True, []
        cfg = self.cfg
        hist, ok = _fine_tune(
            model,
            self.images,
            rows,
            self.y,
            cfg,
            steps=cfg.steps(len(rows)),
            backbone_lr=cfg.backbone_lr if mode == "ft" else cfg.lpft_backbone_lr,
            head_lr=cfg.head_lr if mode == "ft" else cfg.lpft_head_lr,
            gen=torch.Generator().manual_seed(seed),
            progress=self.progress,
            desc=desc,
        )
        return model, ok, hist

    def held_out_probs(self, mode: str, train: np.ndarray, held: np.ndarray, seed: int, desc: str) -> np.ndarray | None:
        """Probabilities ``(m, C)`` on ``held`` of ``mode`` trained on ``train``; None if it diverged."""
        if mode == "lp":  # the frozen encoder: its features are already known
            return self.probe(train).predict_proba(self.Z[held])
        model, ok, _ = self.fit(mode, train, seed, desc)
        return _predict_rows(model, self.images, held) if ok else None


def _seed(random_state: int, *keys: int) -> int:
    return int(np.random.SeedSequence([int(random_state), *keys]).generate_state(1)[0] & 0x7FFFFFFF)


def _validate(mode: str, cfg: TrainConfig, labels: np.ndarray, positions: np.ndarray, n_classes: int) -> None:
    if mode != "auto" and mode not in MODES:
        raise ConfigError(problem(f"training mode {mode!r}", "auto, " + ", ".join(MODES), "set train.mode"))
    cfg.check()
    if len(labels) == 0:
        raise ConfigError(problem("training on an empty labeled set", fix="label samples first"))
    if labels.shape != positions.shape:
        raise ConfigError(problem(f"{positions.size} labeled positions, {labels.size} labels", "one label each"))
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ConfigError(problem(f"labels outside [0, {n_classes})"))
    if mode == "auto" and cfg.holdout == 0:
        raise ConfigError(
            problem("train.mode=auto with train.holdout=0", "holdout in (0, 0.5]", "auto decides on held-out labels")
        )


def train_classifier(
    encoder: nn.Module,
    split: Split,
    positions: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    mode: str = "auto",
    config: TrainConfig | None = None,
    device: str | torch.device = "auto",
    random_state: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train a fresh :class:`Classifier` on ``split`` rows ``positions`` with ``labels``, guarded
    by its linear probe (module docstring).

    ``encoder`` is the pre-trained encoder; it is deep-copied, never modified, so every call
    restarts from the pre-trained weights.

    Args:
        positions: ``(n,)`` row positions in ``split`` of the labeled samples.
        labels: ``(n,)`` int class indices.
        mode: ``lp``, ``ft``, ``lpft``, or ``auto``.

    Returns:
        :class:`TrainResult` whose ``mode`` is the mode actually trained (``lp`` when the probe won)
        and whose ``evidence`` (JSON-able) holds each candidate's held-out accuracy, log loss and
        seconds, the folds, the rule applied and the seconds of the evidence and the final fit.
    """
    cfg = config or TrainConfig()
    positions = np.asarray(positions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    _validate(mode, cfg, labels, positions, n_classes)
    dev = resolve_device(device)
    t0 = time.perf_counter()
    images = _Images(split, positions, encoder.config.preprocess, dev)
    Z = extract_features(
        encoder, split.subset(positions), batch_size=256, device=dev, progress=progress, desc="probe features"
    )
    tr = _Trainer(encoder, images, Z, labels, n_classes, cfg, progress)
    every = np.arange(len(labels))
    n = len(labels)
    ev: dict[str, Any] = {"requested": mode, "n_labeled": n}
    if mode == "lp":
        chosen, ev["rule"] = "lp", "lp: the converged linear probe"
    elif cfg.holdout == 0:
        chosen, ev["rule"] = mode, "holdout=0: fine-tuned without the guard"
    else:
        cands = ["lp"] + [m for m in COST_ORDER if m != "lp" and m in (cfg.auto_modes if mode == "auto" else (mode,))]
        folds = evidence_folds(
            labels, holdout=cfg.holdout, min_holdout=cfg.min_holdout, rng=np.random.default_rng(_seed(random_state, 1))
        )
        if not folds:
            chosen, ev["rule"] = "lp", "no class has two labels, so none can be held out: the probe"
        else:

            def held_out(m: str, m_i: int, f_i: int, train: np.ndarray, held: np.ndarray) -> np.ndarray | None:
                desc = f"{m} evidence, fold {f_i + 1}/{len(folds)}"
                return tr.held_out_probs(m, train, held, _seed(random_state, 2, m_i, f_i), desc)

            chosen, scores = fold_evidence(cands, folds, labels, held_out, margin=cfg.auto_margin)
            ev.update(
                rule=(
                    f"the probe unless a mode gets more held-out labels right than it loses against the probe, "
                    f"by more than {cfg.auto_margin:g} x sqrt(wins + losses); of those, the most accurate "
                    "(ties to the cheaper: lp, lpft, ft)"
                ),
                folds=len(folds),
                held_out=sum(len(h) for h in folds),
                candidates=scores,
            )
    ev["seconds_evidence"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    model, ok, history = tr.fit(chosen, every, _seed(random_state, 3), f"{chosen} on {n} labels")
    if not ok:
        if cfg.holdout == 0:
            raise FloatingPointError(
                problem(f"{chosen} diverged (non-finite loss)", fix="lower train.backbone_lr / head_lr")
            )
        model, _, history = tr.fit("lp", every, 0, "")
        ev["rule"] += f"; {chosen} diverged on all labels: the probe"
        chosen = "lp"
    ev.update(mode=chosen, steps=0 if chosen == "lp" else cfg.steps(n), seconds_final=time.perf_counter() - t1)
    model.training_record = ev
    return TrainResult(model=model, mode=chosen, history=history, evidence=ev)


def fold_evidence(
    cands: list[str],
    folds: list[np.ndarray],
    labels: np.ndarray,
    held_out: Any,
    *,
    margin: float = AUTO_MARGIN,
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Every candidate on every held-out fold, then :func:`choose_mode`: the guard's evidence loop
    (:func:`train_classifier`; :func:`alcore.semi.semi_guard`).

    Args:
        cands: ``"lp"`` first, then the modes to hold to it.
        folds: held-out row sets of ``labels`` (:func:`evidence_folds`).
        held_out: ``held_out(mode, mode_index, fold_index, train_rows, held_rows)`` returns the
            mode's probabilities ``(m, C)`` on ``held_rows`` after training on ``train_rows``, or
            None when its training diverged (the mode then loses to the probe).

    Returns:
        ``(chosen, {mode: {"accuracy", "log_loss", "seconds", "diverged"}})``, each mode but the
        probe also with ``wins``, ``losses`` and ``beats_probe``.
    """
    every = np.arange(len(labels))
    m_held = sum(len(h) for h in folds)
    scores: dict[str, dict[str, Any]] = {}
    right: dict[str, np.ndarray | None] = {}
    for m_i, m in enumerate(cands):
        t = time.perf_counter()
        ok_items, nll, diverged = [], 0.0, False
        for f_i, held in enumerate(folds):
            p = held_out(m, m_i, f_i, np.setdiff1d(every, held), held)
            if p is None:
                diverged = True
                break
            ok_items.append(p.argmax(1) == labels[held])
            nll += float(-np.log(np.clip(p[np.arange(len(held)), labels[held]], 1e-12, None)).sum())
        right[m] = None if diverged else np.concatenate(ok_items)
        scores[m] = {
            "accuracy": 0.0 if diverged else float(right[m].mean()),
            "log_loss": None if diverged else nll / m_held,
            "seconds": time.perf_counter() - t,
            "diverged": diverged,
        }
    chosen, paired = choose_mode(right, margin=margin)
    for m, st in paired.items():
        scores[m].update(st)
    return chosen, scores


def beats_probe(wins: int, losses: int, margin: float = AUTO_MARGIN) -> bool:
    """Whether a mode that got ``wins`` held-out labels right that the probe got wrong, and
    ``losses`` the other way, beats the probe beyond noise: ``wins - losses > margin * sqrt(wins +
    losses)`` (a paired sign test; ``margin`` standard errors of the difference)."""
    return bool(wins - losses > margin * math.sqrt(wins + losses))


def choose_mode(
    right: dict[str, np.ndarray | None], *, margin: float = AUTO_MARGIN
) -> tuple[str, dict[str, dict[str, Any]]]:
    """The rule of ``auto`` and of the guard (module docstring): the probe unless a mode beats it
    beyond noise on the same held-out labels.

    Args:
        right: ``{"lp": (m,) bool, mode: (m,) bool or None}``: which held-out labels each candidate
            predicted right (None: it diverged), the same labels in the same order for all.
        margin: standard errors of the paired difference a mode must win by (>= 0).

    Returns:
        ``(chosen, {mode: {"wins", "losses", "beats_probe"}})`` for every mode but the probe:
        ``wins`` = labels it gets right and the probe wrong, ``losses`` the other way round.
    """
    base = np.asarray(right["lp"], dtype=bool)
    acc = {"lp": float(base.mean()) if base.size else 0.0}
    stats: dict[str, dict[str, Any]] = {}
    for m, r in right.items():
        if m == "lp":
            continue
        if r is None:
            stats[m] = {"wins": 0, "losses": 0, "beats_probe": False}
            continue
        r = np.asarray(r, dtype=bool)
        if r.shape != base.shape:
            raise ValueError(f"{m}: {r.shape} held-out predictions against the probe's {base.shape}")
        w, lo = int((r & ~base).sum()), int((~r & base).sum())
        stats[m] = {"wins": w, "losses": lo, "beats_probe": beats_probe(w, lo, margin)}
        acc[m] = float(r.mean())
    return most_accurate(acc, ["lp"] + [m for m in stats if stats[m]["beats_probe"]]), stats


def most_accurate(accuracy: dict[str, float], eligible: list[str]) -> str:
    """The mode of ``eligible`` with the highest held-out ``accuracy``; ties to the cheaper
    (:data:`COST_ORDER`)."""
    return max(eligible, key=lambda m: (accuracy[m], -COST_ORDER.index(m)))


def describe_evidence(ev: dict[str, Any]) -> str:
    """One line: the mode trained and the held-out evidence behind it (a training record)."""

    def one(m: str, c: dict[str, Any]) -> str:
        vs = f" (+{c['wins']}/-{c['losses']} vs lp)" if "wins" in c else ""
        return f"{m} {c['accuracy']:.3f}{vs}"

    held = ", ".join(one(m, c) for m, c in ev.get("candidates", {}).items())
    return str(ev.get("mode", "?")) + (f" (held-out accuracy on {ev.get('held_out')} labels: {held})" if held else "")


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
    """Write encoder + head to a safetensors file with the encoder config and the training record
    (mode and evidence) in its metadata."""
    import json

    from safetensors.torch import save_file

    from alcore._io import atomic_path

    meta = {
        "encoder_config": json.dumps(model.encoder.config.to_dict()),
        "n_classes": str(model.head.out_features),
        "format": "alcore.classifier/1",
        "training": json.dumps(getattr(model, "training_record", {}), sort_keys=True),
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
    model.training_record = json.loads(meta.get("training", "{}"))
    return model.eval()


def read_training_record(path: Any) -> dict[str, Any]:
    """How the classifier in ``path`` was trained (:attr:`Classifier.training_record`): the
    requested and chosen mode and the held-out evidence; ``{}`` for files written before it existed."""
    import json

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        return json.loads((fh.metadata() or {}).get("training", "{}"))


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
