"""Semi-supervised training of the real network: FixMatch, and AS3L's prior-guided FixMatch.

FixMatch: Sohn et al., "FixMatch: Simplifying Consistency and Confidence-Based Semi-Supervised
Learning", NeurIPS 2020. Prior guidance: Wen et al., AS3L (Neurocomputing 2024), METHODS.md
section 4.

Every step takes ``batch_size`` labeled images (weak augmentation, cross entropy) and
``mu x batch_size`` unlabeled images of the pool. The model's prediction on a weak view of an
unlabeled image gives ``p``; the loss on its strong view is the cross entropy to a target:

* FixMatch: the hard label ``argmax p``, kept only where ``max p >= threshold``;
* prior-guided (``priors`` given), while ``step < switch x steps``: the soft target
  ``normalise(onehot(prior) + p)`` for every unlabeled image, weighted by the prior's
  confidence when ``weight_by_confidence``; then plain FixMatch.

**The guard** (:func:`semi_guard`, what ``train.holdout > 0`` asks of every mode): on Lite0 a linear
probe on AS3L's own labeled ids scored as much as the AS3L network or more (up to 9 points on the
CIFAR-10 subset at 40 labels, ``docs/bench/as3l_lite0.md``), so a semi-supervised mode, like ``ft``,
must beat the probe on held-out labels (the same folds and paired rule as
:func:`alcore.training.train_classifier`) or the probe is handed over. Each fold trains the mode
again on the rest of the labels (AS3L's priors recomputed from them), so the guard costs one run a
fold; with one label per class nothing can be held out and the probe is kept.

The head starts at random (``head_init="random"``, FixMatch's recipe) or at the converged linear
probe on the labeled images' frozen features (``"probe"``, as LP-FT does for supervised fine-tuning).

Weak augmentation: random shifts (and flips where the data allow). Strong: SimCLR's augmentation
(random resized crop, colour jitter, grayscale). SGD with nesterov momentum and FixMatch's cosine
decay ``lr cos(7 pi k / 16 K)``. The labels of unlabeled images are never read: only ``positions``
and ``labels`` of the labeled set, and ``priors``, are.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from alcore.datasets.base import Split
from alcore.device import autocast, resolve_device
from alcore.errors import ConfigError, problem
from alcore.training import (
    Classifier,
    TrainConfig,
    TrainResult,
    _augment,
    evidence_folds,
    fit_linear_probe,
    fold_evidence,
    predict_proba,
)

__all__ = ["SemiConfig", "semi_guard", "train_semi"]


@dataclass(frozen=True)
class SemiConfig:
    """Hyper-parameters of :func:`train_semi` (FixMatch's CIFAR defaults where they fit a CPU)."""

    steps: int = 300
    batch_size: int = 16
    mu: int = 3
    lr: float = 0.03
    weight_decay: float = 5e-4
    momentum: float = 0.9
    threshold: float = 0.95
    lambda_u: float = 1.0
    switch: float = 0.3
    weight_by_confidence: bool = False
    augment: str = "crop"
    head_init: str = "random"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> None:
        bad = []
        if self.steps < 1 or self.batch_size < 1 or self.mu < 1:
            bad.append(f"steps={self.steps}, batch_size={self.batch_size}, mu={self.mu} (each >= 1)")
        if self.lr <= 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            bad.append(f"lr={self.lr} (> 0), weight_decay={self.weight_decay} (>= 0), momentum={self.momentum}")
        if not 0 < self.threshold <= 1 or not 0 <= self.switch <= 1 or self.lambda_u < 0:
            bad.append(f"threshold={self.threshold} (0, 1], switch={self.switch} [0, 1], lambda_u={self.lambda_u}")
        if self.augment not in ("none", "crop", "crop_flip"):
            bad.append(f"augment={self.augment!r} (none, crop, crop_flip)")
        if self.head_init not in ("random", "probe"):
            bad.append(f"head_init={self.head_init!r} (random, probe)")
        if bad:
            raise ConfigError(
                problem("semi-supervised training got " + "; ".join(bad), fix="set train.semi_* in params.yaml")
            )


def train_semi(
    encoder: torch.nn.Module,
    pool: Split,
    positions: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    priors: tuple[np.ndarray, np.ndarray] | None = None,
    config: SemiConfig | None = None,
    device: str | torch.device = "auto",
    random_state: int = 0,
    progress: bool = True,
    callback: Callable[[int, torch.nn.Module], dict[str, float]] | None = None,
    callback_every: int = 0,
    desc: str | None = None,
) -> TrainResult:
    """Train a fresh :class:`~alcore.training.Classifier` from ``encoder`` on the labeled rows
    ``positions`` of ``pool`` (with ``labels``) and every other row of ``pool`` as unlabeled data.

    Args:
        priors: ``(labels (N,), confidence (N,))`` prior pseudo-labels aligned with ``pool``'s rows
            (:func:`alcore.as3l.prior_labels`); None = plain FixMatch.
        callback: called as ``callback(steps_done, model)`` (model in eval mode, switched back
            after) every ``callback_every`` steps and at the end; what it returns is added to
            the history (e.g. a test accuracy for a learning curve).
        desc: the progress bar's label (default: the mode).

    Returns:
        :class:`~alcore.training.TrainResult` with mode ``"as3l"`` (priors) or ``"fixmatch"``.
    """
    from alcore.ssl import SimCLRAugment

    cfg = config or SemiConfig()
    cfg.check()
    positions = np.asarray(positions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    if positions.size == 0 or positions.shape != labels.shape:
        raise ConfigError(
            problem(f"{positions.size} labeled positions, {labels.size} labels", allowed="one label each, >= 1")
        )
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ConfigError(problem(f"labels outside [0, {n_classes})"))
    n = len(pool)
    unlabeled = np.setdiff1d(np.arange(n), positions)
    if unlabeled.size == 0:
        raise ConfigError(problem("no unlabeled image to train on", fix="use a supervised mode (lp, ft, lpft)"))
    if priors is not None:
        prior_y = torch.from_numpy(np.asarray(priors[0], dtype=np.int64))
        prior_w = torch.from_numpy(np.asarray(priors[1], dtype=np.float32))
        if prior_y.shape != (n,) or prior_w.shape != (n,) or prior_y.min() < 0 or prior_y.max() >= n_classes:
            raise ConfigError(problem(f"priors of shapes {tuple(prior_y.shape)}, {tuple(prior_w.shape)} for {n} rows"))
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(int(random_state))
    strong = SimCLRAugment()
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(int(random_state))
        model = Classifier(copy.deepcopy(encoder), n_classes).to(dev).train()
    preprocess = model.encoder.config.preprocess
    if cfg.head_init == "probe":  # start from the converged linear probe on the labeled images' features
        from alcore.features import extract_features

        Z = extract_features(encoder, pool.subset(positions), batch_size=256, device=dev, progress=False)
        fit_linear_probe(Z, labels, n_classes).set_head(model.head)
    opt = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: math.cos(7 * math.pi * k / (16 * cfg.steps)))
    X_lab = pool.load_batch(positions, preprocess).to(dev)
    y_lab = torch.from_numpy(labels).to(dev)
    switch_step = int(cfg.switch * cfg.steps) if priors is not None else 0
    history: list[dict[str, float]] = []
    with tqdm(
        total=cfg.steps,
        desc=desc or ("fixmatch" if priors is None else "as3l"),
        unit="step",
        leave=False,
        disable=not progress,
    ) as bar:
        for step in range(cfg.steps):
            li = torch.randint(0, positions.size, (cfg.batch_size,), generator=gen)
            ui = unlabeled[torch.randint(0, unlabeled.size, (cfg.mu * cfg.batch_size,), generator=gen).numpy()]
            ui = np.sort(ui)
            raw = pool.load_batch_unnormalized(ui, preprocess).to(dev)
            weak = _augment(preprocess.normalize(raw), cfg.augment, gen)
            strong_view = preprocess.normalize(strong(raw, gen))
            xl = _augment(X_lab[li.to(dev)], cfg.augment, gen)
            with autocast(dev):
                logits = model(torch.cat([xl, weak, strong_view])).float()
            b = cfg.batch_size
            lx, lw, ls = logits[:b], logits[b : b + ui.size], logits[b + ui.size :]
            loss_x = F.cross_entropy(lx, y_lab[li.to(dev)])
            p = torch.softmax(lw.detach(), dim=1)
            if step < switch_step:
                onehot = F.one_hot(prior_y[ui].to(dev), n_classes).float()
                target = (onehot + p) / 2.0  # normalise(onehot + p): both rows sum to 1
                per = -(target * F.log_softmax(ls, dim=1)).sum(dim=1)
                w = prior_w[ui].to(dev) if cfg.weight_by_confidence else torch.ones_like(per)
                loss_u = (per * w).mean()
                used = 1.0
            else:
                conf, hard = p.max(dim=1)
                mask = (conf >= cfg.threshold).float()
                loss_u = (F.cross_entropy(ls, hard, reduction="none") * mask).mean()
                used = float(mask.mean())
            loss = loss_x + cfg.lambda_u * loss_u
            if not torch.isfinite(loss):
                raise FloatingPointError(f"semi-supervised loss is {loss.item()}; lower train.semi_lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            if step % 10 == 0 or step == cfg.steps - 1:
                bar.set_postfix(
                    loss_x=f"{float(loss_x.detach()):.3f}",
                    loss_u=f"{float(loss_u.detach()):.3f}",
                    mask=f"{used:.2f}",
                    refresh=False,
                )
            if step % 25 == 0 or step == cfg.steps - 1:
                history.append(
                    {
                        "step": float(step),
                        "loss_x": float(loss_x.detach()),
                        "loss_u": float(loss_u.detach()),
                        "mask": used,
                    }
                )
            done = step + 1
            if callback is not None and ((callback_every and done % callback_every == 0) or done == cfg.steps):
                model.eval()
                history.append({"step": float(done), **callback(done, model)})
                model.train()
    model.eval()
    mode = "as3l" if priors is not None else "fixmatch"
    model.training_record = {
        "requested": mode,
        "mode": mode,
        "rule": "semi-supervised on the whole pool",
        "steps": cfg.steps,
    }
    return TrainResult(model=model.to("cpu"), mode=mode, history=history)


def semi_guard(
    fit: Callable[[np.ndarray, np.ndarray, int, str], Classifier],
    encoder: torch.nn.Module,
    pool: Split,
    positions: np.ndarray,
    labels: np.ndarray,
    *,
    n_classes: int,
    mode: str,
    config: TrainConfig,
    device: str | torch.device = "auto",
    random_state: int = 0,
) -> tuple[str, dict[str, Any]]:
    """Whether the semi-supervised ``mode`` beats the linear probe on held-out labels (module
    docstring, "the guard"): ``(chosen, evidence)``, ``chosen`` being ``mode`` or ``"lp"``.

    Args:
        fit: ``fit(positions, labels, seed, desc)`` trains ``mode`` on those labeled rows of
            ``pool`` (every other row unlabeled) and returns the network; called once a fold.
        config: the guard's settings: ``holdout`` (> 0), ``min_holdout``, ``auto_margin`` and the
            probe's ``lp_C`` / ``lp_max_iter``.

    Returns:
        The evidence in :func:`alcore.training.train_classifier`'s form (``rule``, ``folds``,
        ``held_out``, ``candidates`` with each one's held-out accuracy, the mode's wins and losses
        against the probe, and seconds), without the final fit's fields.
    """
    from alcore.features import extract_features
    from alcore.seeding import derive_seed

    if config.holdout <= 0:
        raise ConfigError(problem("the semi-supervised guard with train.holdout=0", "holdout in (0, 0.5]"))
    t0 = time.perf_counter()
    positions = np.asarray(positions, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    ev: dict[str, Any] = {"requested": mode, "n_labeled": len(labels)}
    folds = evidence_folds(
        labels,
        holdout=config.holdout,
        min_holdout=config.min_holdout,
        rng=np.random.default_rng(derive_seed(random_state, "semi-guard", "folds")),
    )
    if not folds:
        ev.update(rule="no class has two labels, so none can be held out: the probe", seconds_evidence=0.0)
        return "lp", ev
    dev = resolve_device(device)
    Z = extract_features(encoder, pool.subset(positions), batch_size=256, device=dev, progress=False)

    def held_out(m: str, _m_i: int, f_i: int, train: np.ndarray, held: np.ndarray) -> np.ndarray:
        if m == "lp":
            probe = fit_linear_probe(Z[train], labels[train], n_classes, C=config.lp_C, max_iter=config.lp_max_iter)
            return probe.predict_proba(Z[held])
        net = fit(
            positions[train],
            labels[train],
            derive_seed(random_state, "semi-guard", f_i),
            f"{mode} evidence, fold {f_i + 1}/{len(folds)}",
        )
        return predict_proba(net, pool.subset(positions[held]), device=dev)

    chosen, scores = fold_evidence(["lp", mode], folds, labels, held_out, margin=config.auto_margin)
    ev.update(
        rule=(
            f"the probe unless {mode} gets more held-out labels right than it loses against the probe, "
            f"by more than {config.auto_margin:g} x sqrt(wins + losses)"
        ),
        folds=len(folds),
        held_out=int(sum(len(h) for h in folds)),
        candidates=scores,
        seconds_evidence=time.perf_counter() - t0,
    )
    return chosen, ev
