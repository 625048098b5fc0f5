"""NTKCPL: the closed-form NTK against autograd, the Schur updates against the direct formula,
the pruned risk against brute force, bounded memory, and what the greedy selection achieves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from alcore.strategies import SelectionContext, init_ntk_mlp, make_strategy, ntk_kernel, ntk_outputs
from alcore.strategies import ntkcpl as mod


def torch_mlp(p: mod.NTKParams):
    W1, b1, W2, b2 = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (p.W1, p.b1, p.W2, p.b2))
    H, D = p.W1.shape

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x @ W1.T / math.sqrt(D) + b1) @ W2.T / math.sqrt(H) + b2

    return f, [W1, b1, W2, b2]


def test_closed_form_kernel_equals_autograd_empirical_ntk() -> None:
    rng = np.random.default_rng(0)
    D, H, C = 5, 7, 3
    p = init_ntk_mlp(D, H, C, rng)
    X = rng.normal(size=(6, D))
    f, params = torch_mlp(p)
    # Jacobian of every output c at every x w.r.t. all parameters: (n, C, P).
    jac = []
    for x in torch.tensor(X):
        out = f(x[None])[0]
        rows = []
        for c in range(C):
            g = torch.autograd.grad(out[c], params, retain_graph=True)
            rows.append(torch.cat([t.reshape(-1) for t in g]))
        jac.append(torch.stack(rows))
    J = torch.stack(jac).numpy()  # (n, C, P)
    # The per-output blocks Theta_c(x, x') = J_c(x) . J_c(x'), averaged over c.
    auto = np.einsum("acp,bcp->ab", J, J) / C
    np.testing.assert_allclose(ntk_kernel(X, X, p), auto, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ntk_outputs(X, p), f(torch.tensor(X)).detach().numpy(), rtol=1e-12)


def test_schur_updates_equal_the_direct_formula() -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 4))
    p = init_ntk_mlp(4, 16, 3, rng)
    K, f0 = ntk_kernel(X, X, p), ntk_outputs(X, p)
    S = np.array([3, 7, 11, 20, 31])
    Y = np.eye(3)[rng.integers(0, 3, size=S.size)]
    inv = np.linalg.inv(K[np.ix_(S, S)])
    f_direct = f0 + K[:, S] @ inv @ (Y - f0[S])
    P_direct = K - K[:, S] @ inv @ K[S, :]
    # Two blocks, one after the other, give the same as all of S at once.
    P, f = K.copy(), f0.copy()
    mod._condition(P, f, S[:2], Y[:2], 0.0)
    mod._condition(P, f, S[2:], Y[2:], 0.0)
    np.testing.assert_allclose(f, f_direct, atol=1e-8)
    np.testing.assert_allclose(P, P_direct, atol=1e-8)
    # The trained linearised network interpolates its training set.
    np.testing.assert_allclose(f[S], Y, atol=1e-8)


def test_pruned_risks_equal_brute_force() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 6))
    p = init_ntk_mlp(6, 32, 5, rng)
    P, f = ntk_kernel(X, X, p), ntk_outputs(X, p)
    cpl = rng.integers(0, 5, size=120)
    mod._condition(P, f, np.arange(10), np.eye(5)[cpl[:10]], 1e-9)
    cands = np.arange(10, 120)
    brute = []
    for c in cands:
        delta = (np.eye(5)[cpl[c]] - f[c]) / P[c, c]
        brute.append(((f + P[:, c : c + 1] * delta).argmax(1) != cpl).mean())
    np.testing.assert_allclose(mod._risks(P, f, cpl, cands), brute)


def blobs(n: int = 600, c: int = 4, d: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(c, d))
    y = rng.integers(0, c, size=n)
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_kernel_memory_is_bounded_by_the_subset(monkeypatch) -> None:
    X, y = blobs(n=2000)
    shapes = []
    real = mod.ntk_kernel

    def spy(a, b, p):
        shapes.append((a.shape[0], b.shape[0]))
        return real(a, b, p)

    monkeypatch.setattr(mod, "ntk_kernel", spy)
    labels = np.full(2000, -1)
    labels[:30] = y[:30]
    ctx = SelectionContext(pool_ids=np.arange(2000), features=X, labels=labels, n_classes=4)
    ids = make_strategy("ntkcpl", max_kernel=150).select(ctx, 20, random_state=0)
    assert ids.size == 20 and not np.isin(ids, np.arange(30)).any()
    assert shapes == [(150, 150)]


def test_subset_grows_to_hold_the_batch_and_the_labels() -> None:
    X, y = blobs(n=300)
    labels = np.full(300, -1)
    labels[:50] = y[:50]
    ctx = SelectionContext(pool_ids=np.arange(300), features=X, labels=labels, n_classes=4)
    ids = make_strategy("ntkcpl", max_kernel=10).select(ctx, 40, random_state=0)
    assert np.unique(ids).size == 40


def test_greedy_batch_estimates_lower_risk_than_random_batches() -> None:
    X, y = blobs(n=500, c=5)
    rng = np.random.default_rng(0)
    Z = math.sqrt(X.shape[1]) * (X / np.linalg.norm(X, axis=1, keepdims=True))
    p = init_ntk_mlp(X.shape[1], 64, 5, rng)
    K, f0 = ntk_kernel(Z, Z, p), ntk_outputs(Z, p)
    from alcore.cluster import constrained_kmeans

    cpl = constrained_kmeans(Z / np.sqrt(X.shape[1]), 5, [], [], random_state=0).labels

    def risk_after(batch: np.ndarray) -> float:
        P, f = K.copy(), f0.copy()
        mod._condition(P, f, batch, np.eye(5)[cpl[batch]], 1e-9)
        return float((f.argmax(1) != cpl).mean())

    greedy = []
    P, f = K.copy(), f0.copy()
    cands = np.arange(500)
    for _ in range(5):
        r = mod._risks(P, f, cpl, cands)
        c = cands[int(np.argmin(r))]
        mod._condition(P, f, np.array([c]), np.eye(5)[cpl[[c]]], 1e-9)
        greedy.append(c)
        cands = cands[cands != c]
    random_risks = [risk_after(rng.choice(500, 5, replace=False)) for _ in range(20)]
    assert risk_after(np.array(greedy)) <= min(random_risks)


def test_centred_drops_the_initial_outputs(monkeypatch) -> None:
    X, y = blobs(n=300)
    ctx = SelectionContext(pool_ids=np.arange(300), features=X, labels=np.full(300, -1), n_classes=4)
    calls = []
    real = mod.ntk_outputs
    monkeypatch.setattr(mod, "ntk_outputs", lambda Z, p: calls.append(1) or real(Z, p))
    make_strategy("ntkcpl", centred=True, max_kernel=200).select(ctx, 8, random_state=0)
    assert calls == []
    make_strategy("ntkcpl", max_kernel=200).select(ctx, 8, random_state=0)
    assert calls == [1]


@pytest.mark.parametrize(
    "bad", [dict(max_kernel=0), dict(step=-1), dict(jitter=-1.0), dict(hidden=1.5), dict(centred="yes")]
)
def test_bad_params_are_named(bad: dict) -> None:
    from alcore.errors import ConfigError

    X, y = blobs(n=100)
    ctx = SelectionContext(pool_ids=np.arange(100), features=X, labels=np.full(100, -1), n_classes=4)
    with pytest.raises(ConfigError, match=next(iter(bad))):
        make_strategy("ntkcpl", **bad).select(ctx, 5, random_state=0)
