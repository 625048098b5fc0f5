"""The proxy model of SVPp / ASVP: a small MLP on pre-computed features.

Wen et al., "Feature Alignment: Rethinking Efficient Active Learning via Proxy in the Context of
Pre-trained Models", TMLR 2024 (after Coleman et al., "Selection via Proxy", ICLR 2020).
``Linear(D, H) -> BatchNorm1d(H) -> ReLU -> Linear(H, C)``, re-initialised and trained from scratch
each round with SGD (momentum 0.9, Nesterov), cosine decay and cross entropy.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from alcore.device import resolve_device
from alcore.errors import ConfigError, problem


class _MLP(nn.Module):
    def __init__(self, d: int, h: int, c: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, h)
        self.bn = nn.BatchNorm1d(h)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(h, c)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.fc1(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(self.embed(x)))


def _as_tensor(x: np.ndarray, dev: torch.device) -> torch.Tensor:
    """``x`` as a float32 tensor on ``dev``: without a copy when it is a writable C-contiguous CPU
    array (the tensor is only read), else a copy (read-only feature arrays, memmaps)."""
    if dev.type == "cpu" and x.flags.writeable and x.flags.c_contiguous:
        return torch.from_numpy(x)
    return torch.tensor(x, device=dev)


class ProxyMLP:
    """Proxy classifier on features, with scikit-learn manners.

    Parameters are stored untouched and validated in :meth:`fit`; the learned network is ``net_``.
    Reference settings (METHODS.md section 1): CIFAR lr 0.3, wd 3e-4, 100 epochs, batch 128;
    ImageNet hidden 2048, lr 0.1, wd 0, batch 2048, 50 epochs.

    Args:
        hidden: H, width of the hidden layer (its activation is the "embedding").
        epochs, lr, weight_decay, batch_size, momentum: SGD settings (Nesterov, cosine decay).
        dropout: dropout before the last layer (0 = as the reference; > 0 enables MC-dropout).
        device: ``auto``, ``cpu``, ``cuda``.
        random_state: seed of the initialisation and the batch order.
    """

    def __init__(
        self,
        *,
        hidden: int = 256,
        epochs: int = 100,
        lr: float = 0.3,
        weight_decay: float = 3e-4,
        batch_size: int = 128,
        momentum: float = 0.9,
        dropout: float = 0.0,
        device: str = "cpu",
        random_state: int = 0,
    ) -> None:
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.momentum = momentum
        self.dropout = dropout
        self.device = device
        self.random_state = random_state

    def get_params(self) -> dict[str, Any]:
        keys = ("hidden", "epochs", "lr", "weight_decay", "batch_size", "momentum", "dropout", "device", "random_state")
        return {k: getattr(self, k) for k in keys}

    def _validate(self) -> None:
        for name in ("hidden", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ConfigError(problem(f"proxy {name}={v!r}", "an integer >= 1"))
        if not self.lr > 0:
            raise ConfigError(problem(f"proxy lr={self.lr!r}", "a number > 0"))
        if self.weight_decay < 0 or not 0 <= self.momentum < 1 or not 0 <= self.dropout < 1:
            raise ConfigError(
                problem(
                    "proxy weight_decay/momentum/dropout out of range", "wd >= 0, 0 <= momentum < 1, 0 <= dropout < 1"
                )
            )

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int) -> ProxyMLP:
        """Train from scratch on ``X`` (n, D) float and ``y`` (n,) int in ``[0, n_classes)``."""
        self._validate()
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y):
            raise ConfigError(problem(f"proxy fit on X {X.shape}, y {y.shape}", "X (n, D) and y (n,)"))
        if len(y) < 2:
            raise ConfigError(
                problem(f"proxy fit on {len(y)} labeled sample(s)", "at least 2", "label more samples first")
            )
        if y.min() < 0 or y.max() >= n_classes:
            raise ConfigError(problem(f"labels outside [0, {n_classes})"))
        dev = resolve_device(self.device)
        gen = torch.Generator().manual_seed(int(self.random_state))
        torch.manual_seed(int(self.random_state))
        net = _MLP(X.shape[1], self.hidden, n_classes, self.dropout).to(dev)
        opt = torch.optim.SGD(
            net.parameters(),
            lr=self.lr,
            momentum=self.momentum,
            nesterov=self.momentum > 0,
            weight_decay=self.weight_decay,
        )
        n = len(y)
        bs = min(self.batch_size, n)
        steps_per_epoch = max(1, n // bs)  # drop the ragged tail: BatchNorm needs > 1 sample
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.epochs * steps_per_epoch)
        Xt = torch.from_numpy(X).to(dev)
        yt = torch.from_numpy(y.astype(np.int64)).to(dev)
        loss_fn = nn.CrossEntropyLoss()
        net.train()
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=gen).to(dev)
            for s in range(steps_per_epoch):
                idx = perm[s * bs : (s + 1) * bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(Xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        self.net_ = net
        self.n_classes_ = int(n_classes)
        self.n_features_in_ = int(X.shape[1])
        self.final_loss_ = float(loss.detach())
        return self

    def _check_fitted(self, X: np.ndarray) -> None:
        if not hasattr(self, "net_"):
            raise ConfigError(problem("the proxy is not fitted", fix="call fit first"))
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ConfigError(problem(f"features of shape {X.shape}", f"(n, {self.n_features_in_})"))

    @torch.inference_mode()
    def _map(self, X: np.ndarray, fn: str, chunk: int = 65536) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        self._check_fitted(X)
        dev = next(self.net_.parameters()).device
        outs = []
        for s in range(0, len(X), chunk):
            xb = _as_tensor(X[s : s + chunk], dev)
            out = self.net_.embed(xb) if fn == "embed" else torch.softmax(self.net_(xb), dim=1)
            outs.append(out.float().cpu().numpy())
        if not outs:
            width = self.hidden if fn == "embed" else self.n_classes_
            return np.empty((0, width), dtype=np.float32)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, C)``."""
        return self._map(X, "proba")

    def embed(self, X: np.ndarray) -> np.ndarray:
        """The hidden activation ``(n, H)`` (the embedding coreset and BADGE use)."""
        return self._map(X, "embed")

    @torch.inference_mode()
    def predict_proba_mc(
        self,
        X: np.ndarray,
        n_samples: int = 20,
        *,
        random_state: int | np.random.Generator = 0,
        mc_dropout: float = 0.25,
        chunk: int = 65536,
        consistent: bool = False,
    ) -> np.ndarray:
        """MC-dropout class probabilities ``(T, n, C)``, ``T = n_samples`` (Gal et al., "Deep
        Bayesian Active Learning with Image Data", ICML 2017).

        Dropout stays active before the last layer at the proxy's own ``dropout`` rate, or at
        ``mc_dropout`` when the proxy was trained without dropout (rate 0). BatchNorm stays in eval
        mode, so the hidden activation is computed once per row and only the last layer runs
        ``T`` times: ``T x chunk x H`` work on top of one ``predict_proba``. Memory: the
        ``(T, n, C)`` float32 output plus one ``(chunk, H)`` mask.

        Args:
            X: ``(n, D)`` features.
            n_samples: T >= 1 dropout masks.
            random_state: int seed (or Generator, one draw) of the masks; same seed, same output.
            mc_dropout: rate used when ``dropout == 0``, in (0, 1).
            consistent: one set of T masks ``(T, H)`` for every row ("consistent MC dropout",
                Kirsch et al., BatchBALD, NeurIPS 2019: T networks drawn once and applied to the
                whole pool) instead of a fresh mask per row and pass. Dropping hidden units of the
                last layer's input is then a masked copy of its weights, so the T passes are one
                ``(n, H) @ (H, T x C)`` product and ``T x H`` random numbers instead of
                ``T x n x H``. Another random stream: other probabilities than the default.
        """
        if not isinstance(n_samples, int | np.integer) or isinstance(n_samples, bool) or n_samples < 1:
            raise ConfigError(problem(f"n_samples={n_samples!r}", "an int >= 1"))
        rate = float(self.dropout) if self.dropout > 0 else float(mc_dropout)
        if not 0 < rate < 1:
            raise ConfigError(problem(f"mc_dropout={mc_dropout!r}", "a rate in (0, 1)"))
        if isinstance(random_state, np.random.Generator):
            random_state = int(random_state.integers(0, 2**63 - 1))
        X = np.asarray(X, dtype=np.float32)
        self._check_fitted(X)
        dev = next(self.net_.parameters()).device
        gen = torch.Generator(device=dev).manual_seed(int(random_state))
        T, C = int(n_samples), self.n_classes_
        out = np.empty((T, len(X), C), dtype=np.float32)
        if consistent:
            W, b = self.net_.fc2.weight, self.net_.fc2.bias  # (C, H), (C,)
            keep = (torch.rand((T, W.shape[1]), generator=gen, device=dev) >= rate).to(W.dtype) / (1.0 - rate)
            W_all = (keep[:, :, None] * W.T[None]).permute(1, 0, 2).reshape(W.shape[1], T * C)  # (H, T x C)
            for s in range(0, len(X), chunk):
                h = self.net_.embed(torch.tensor(X[s : s + chunk], device=dev))
                p = torch.softmax((h @ W_all).view(len(h), T, C) + b, dim=2)
                out[:, s : s + len(h)] = p.permute(1, 0, 2).float().cpu().numpy()
            return out
        for s in range(0, len(X), chunk):
            h = self.net_.embed(torch.tensor(X[s : s + chunk], device=dev))
            for t in range(T):
                keep = torch.rand(h.shape, generator=gen, device=dev) >= rate
                logits = self.net_.fc2(h * keep / (1.0 - rate))
                out[t, s : s + len(h)] = torch.softmax(logits, dim=1).float().cpu().numpy()
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)


def warm_up() -> None:
    """Pay torch's one-time optimizer import (seconds) before anything is timed."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


PROXY_FORMAT = "alcore.proxy/1"


def save_proxy(proxy: ProxyMLP, path: str | os.PathLike[str]) -> None:
    """Write a fitted proxy as safetensors (its weights, BatchNorm statistics included) with its
    parameters in the metadata: plain data that any process can read back, never a pickle."""
    from safetensors.torch import save_file

    from alcore._io import atomic_path

    if not hasattr(proxy, "net_"):
        raise ConfigError(problem("the proxy is not fitted", fix="call fit first"))
    meta = {
        "format": PROXY_FORMAT,
        "params": json.dumps(proxy.get_params(), sort_keys=True),
        "n_classes": str(proxy.n_classes_),
        "n_features_in": str(proxy.n_features_in_),
        "final_loss": repr(proxy.final_loss_),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in proxy.net_.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_proxy(path: str | os.PathLike[str], *, device: str = "cpu") -> ProxyMLP:
    """Read a proxy written by :func:`save_proxy`, ready to predict."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from alcore.errors import WeightsError

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise WeightsError(problem(f"Cannot read the proxy file {path}: {e}", fix="train the proxy again")) from None
    if meta.get("format") != PROXY_FORMAT:
        raise WeightsError(problem(f"{path} is not an alcore proxy file", fix="pass a file written by save_proxy"))
    params = {**json.loads(meta["params"]), "device": device}
    proxy = ProxyMLP(**params)
    d, c = int(meta["n_features_in"]), int(meta["n_classes"])
    net = _MLP(d, proxy.hidden, c, proxy.dropout)
    net.load_state_dict(load_file(str(path)), strict=True)
    proxy.net_ = net.to(resolve_device(device)).eval()
    proxy.n_classes_, proxy.n_features_in_ = c, d
    proxy.final_loss_ = float(meta["final_loss"])
    return proxy
