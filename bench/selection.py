"""Benchmark of the selection strategies at scale, with the physical floor and a peer beside them.

A synthetic pool of ``--n`` x ``--dim`` float32 features (10 Gaussian blobs, seeded), 1,000 random
labeled samples and a ProxyMLP fitted on them (outside the timing). Each case runs in its own
subprocess, which loads the pool, fits the proxy, and reports:

- wall seconds of ``strategy.select`` and the peak RSS of the process (``ru_maxrss``), absolute and
  minus the baseline measured just before ``select`` (pool array + proxy + interpreter);
- the floor: for margin/entropy/least_confidence/bald, the same proxy's GEMMs timed bare in torch on
  the same chunks (ratio floor/ours, goal >= 0.5); for coreset and BADGE, one bare ``E @ c`` pass over
  the array they scan per pick (seconds per pick ours/floor, goal <= 2);
- a peer: scikit-activeml's CoreSet, Badge, TypiClust and ProbCover against ours on the first
  ``--peer-n`` rows with budget ``--peer-budget`` (time and memory ratios, goal >= 10x on one of them).
  A peer that exceeds ``--peer-mem-gb`` or ``--peer-timeout`` is stopped and reported as such.

Usage::

    uv run python bench/selection.py                 # 1,000,000 x 512 (about 30 minutes on 2 cores)
    uv run python bench/selection.py --n 100000      # quick check
    UV_PROJECT_ENVIRONMENT=/tmp/benchvenv uv sync --locked --group bench   # peers' environment
    uv run python bench/selection.py --peer-python /tmp/benchvenv/bin/python

Writes ``bench/out/selection.json`` (bench/out/ is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))

N_CLASSES, N_LABELED, SEED = 10, 1000, 0

#: (label, strategy, params, budgets at full scale, floor kind). Budgets above a strategy's
#: practical cost are left out and said so in the table.
CASES: list[tuple[str, str, dict[str, Any], tuple[int, ...], str]] = [
    ("random", "random", {}, (1000, 10000), ""),
    ("margin", "margin", {}, (1000, 10000), "gemm"),
    ("entropy", "entropy", {}, (1000, 10000), "gemm"),
    ("least_confidence", "least_confidence", {}, (1000, 10000), "gemm"),
    ("bald", "bald", {}, (1000, 10000), "gemm_mc"),
    ("coreset", "coreset", {}, (1000,), "pass_embedding"),
    ("coreset[features]", "coreset", {"space": "features"}, (1000,), "pass_features"),
    ("badge", "badge", {}, (1000,), "pass_embedding"),
    ("badge[partitions=10]", "badge", {"partitions": 10, "max_candidates": 200_000}, (1000, 10000), ""),
    ("cluster_margin", "cluster_margin", {}, (1000, 10000), ""),
    ("typiclust", "typiclust", {}, (1000, 10000), ""),
    ("probcover", "probcover", {}, (1000, 10000), ""),
    ("kmeans", "kmeans", {}, (1000,), ""),
    ("activeft", "activeft", {}, (1000,), ""),
]
SKIPPED = {
    "coreset": "10000: ~10x the 1000 run (sequential, one pool pass per pick)",
    "coreset[features]": "10000: ~10x the 1000 run (sequential, one pool pass per pick)",
    "badge": "10000: ~10x the 1000 run (sequential); use partitions",
    "kmeans": "10000: k-means with 10^4 centres on 10^6 x 512 (~10^13 flops per assignment)",
    "activeft": "10000: 100 steps x (16384 x 10^4 x 512) + a (10^4)^2 repulsion block",
}
PEERS = ["coreset", "badge", "typiclust", "probcover"]


def make_pool(n: int, dim: int) -> Path:
    """Seeded blobs saved once as .npy (the children load it)."""
    import numpy as np

    path = OUT / f"pool_{n}x{dim}.npy"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    centers = rng.normal(scale=0.5, size=(N_CLASSES, dim)).astype(np.float32)
    X = np.lib.format.open_memmap(path.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32, shape=(n, dim))
    y = rng.integers(0, N_CLASSES, size=n)
    for s in range(0, n, 100_000):
        e = min(n, s + 100_000)
        X[s:e] = centers[y[s:e]] + rng.standard_normal((e - s, dim), dtype=np.float32)
    X.flush()
    del X
    np.save(path.with_suffix(".y.npy"), y)
    os.replace(path.with_suffix(".tmp.npy"), path)
    return path


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load(pool: str, n: int | None):
    import numpy as np

    X = np.load(pool)
    y = np.load(pool.replace(".npy", ".y.npy"))
    if n is not None:
        X, y = np.ascontiguousarray(X[:n]), y[:n]
    rng = np.random.default_rng(SEED)
    labeled = rng.choice(len(X), size=N_LABELED, replace=False)
    labels = np.full(len(X), -1, dtype=np.int64)
    labels[labeled] = y[labeled]
    return X, y, labels, labeled


def child_ours(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from alcore.proxy import ProxyMLP, warm_up
    from alcore.strategies import SelectionContext, make_strategy

    X, _, labels, labeled = _load(spec["pool"], spec.get("n"))
    warm_up()
    proxy = ProxyMLP(epochs=30, random_state=SEED).fit(X[labeled], labels[labeled], N_CLASSES)
    ctx = SelectionContext(pool_ids=np.arange(len(X)), features=X, labels=labels, n_classes=N_CLASSES, model=proxy)
    base = _rss_mb()
    strat = make_strategy(spec["strategy"], **spec["params"])
    t = time.perf_counter()
    ids = strat.select(ctx, spec["budget"], random_state=SEED)
    wall = time.perf_counter() - t
    out: dict[str, Any] = {"wall_s": wall, "peak_mb": _rss_mb(), "base_mb": base, "n_ids": int(ids.size)}
    floor = spec.get("floor", "")
    if floor:
        out["floor_s"] = _floor(floor, X, proxy, ctx, strat)
    return out


def _floor(kind: str, X, proxy, ctx, strat) -> float:
    """Seconds of the bare work: the proxy's GEMMs (whole pool), or one pass per pick."""
    import numpy as np
    import torch

    unl = ctx.unlabeled_positions()
    if kind.startswith("gemm"):
        W1, W2 = proxy.net_.fc1.weight.detach().T.contiguous(), proxy.net_.fc2.weight.detach().T.contiguous()
        T = getattr(strat, "n_samples", 1) if kind == "gemm_mc" else 1
        with torch.inference_mode():
            t = time.perf_counter()
            for s in range(0, unl.size, ctx.chunk_size):
                h = torch.from_numpy(X[unl[s : s + ctx.chunk_size]]) @ W1
                for _ in range(T):
                    h @ W2
            return time.perf_counter() - t
    E = X if kind == "pass_features" else np.ascontiguousarray(proxy.embed(X))
    c = E[0].copy()
    out = np.empty(E.shape[0], dtype=np.float32)
    np.matmul(E, c, out=out)
    t = time.perf_counter()
    for _ in range(10):
        np.matmul(E, c, out=out)
    return (time.perf_counter() - t) / 10


def child_peer(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import skactiveml.pool as pool
    from skactiveml.classifier import SklearnClassifier
    from sklearn.linear_model import LogisticRegression

    X, _, labels, _ = _load(spec["pool"], spec.get("n"))
    y = labels.astype(float)
    y[y < 0] = np.nan
    base = _rss_mb()
    name, b = spec["strategy"], spec["budget"]
    t = time.perf_counter()
    if name == "coreset":
        pool.CoreSet(random_state=SEED).query(X, y, batch_size=b)
    elif name == "badge":
        clf = SklearnClassifier(LogisticRegression(max_iter=200), classes=np.arange(N_CLASSES), random_state=SEED)
        pool.Badge(random_state=SEED).query(X, y, clf, batch_size=b)
    elif name == "typiclust":
        pool.TypiClust(random_state=SEED).query(X, y, batch_size=b)
    elif name == "probcover":
        pool.ProbCover(n_classes=N_CLASSES, random_state=SEED).query(X, y, batch_size=b)
    return {"wall_s": time.perf_counter() - t, "peak_mb": _rss_mb(), "base_mb": base}


def run_child(python: str, spec: dict[str, Any], timeout: float, mem_gb: float) -> dict[str, Any]:
    """Run one case in a fresh process; stop it past ``timeout`` s or ``mem_gb`` GiB of RSS."""
    import psutil

    cmd = [python, __file__, "--child", json.dumps(spec)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    ps = psutil.Process(proc.pid)
    t0, peak = time.time(), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        if peak > mem_gb * 2**30 or time.time() - t0 > timeout:
            proc.kill()
            proc.wait()
            why = f"stopped: RSS > {mem_gb:g} GiB" if peak > mem_gb * 2**30 else f"stopped: > {timeout:g} s"
            return {"error": why}
        time.sleep(0.2)
    out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (err.strip().splitlines() or ["failed"])[-1][:200]}
    return json.loads(lines[-1])


def _fmt(x: float | None, unit: str = "") -> str:
    return "-" if x is None else (f"{x:.3g}{unit}" if x < 100 else f"{x:.0f}{unit}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="pool size (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--only", nargs="*", default=None, help="case labels to run (default all)")
    ap.add_argument("--peer-n", type=int, default=50_000)
    ap.add_argument("--peer-budget", type=int, default=1000)
    ap.add_argument("--peer-python", default="/tmp/benchvenv/bin/python", help="a Python with the bench group")
    ap.add_argument("--peer-timeout", type=float, default=300)
    ap.add_argument("--peer-mem-gb", type=float, default=16)
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        fn = child_peer if spec.get("peer") else child_ours
        print(json.dumps(fn(spec)))
        return

    pool = str(make_pool(args.n, args.dim))
    scale = args.n / 1_000_000
    rows: list[dict[str, Any]] = []
    print(
        f"pool {args.n} x {args.dim} float32 ({args.n * args.dim * 4 / 2**30:.2f} GiB), {N_LABELED} labeled", flush=True
    )
    print("| strategy | budget | wall s | peak RSS MB | peak - baseline MB | floor | ours / floor | goal |")
    print("|---|---|---|---|---|---|---|---|")
    for label, name, params, budgets, floor in CASES:
        if args.only and label not in args.only:
            continue
        for b in budgets if scale >= 0.5 else tuple(sorted({*budgets, 10000})):
            spec = {"pool": pool, "strategy": name, "params": params, "budget": b, "floor": floor}
            r = run_child(sys.executable, spec, timeout=1200, mem_gb=22)
            r.update(label=label, budget=b)
            rows.append(r)
            if "error" in r:
                print(f"| {label} | {b} | {r['error']} | | | | | |", flush=True)
                continue
            floor_s, ratio, goal = r.get("floor_s"), None, ""
            if floor.startswith("gemm"):
                ratio = floor_s / r["wall_s"]
                goal = f"floor/ours {ratio:.2f} {'>=' if ratio >= 0.5 else '<'} 0.5"
                floor_txt = f"GEMM {floor_s:.2f} s"
            elif floor.startswith("pass"):
                per_pick = r["wall_s"] / b
                ratio = per_pick / floor_s
                goal = f"{per_pick * 1e3:.1f} ms/pick, x{ratio:.2f} {'<=' if ratio <= 2 else '>'} 2"
                floor_txt = f"pass {floor_s * 1e3:.1f} ms"
            else:
                floor_txt = "-"
            r["ratio"] = ratio
            print(
                f"| {label} | {b} | {_fmt(r['wall_s'])} | {r['peak_mb']:.0f} | {r['peak_mb'] - r['base_mb']:.0f} "
                f"| {floor_txt} | {_fmt(ratio)} | {goal} |",
                flush=True,
            )
        if label in SKIPPED and scale >= 0.5:
            print(f"| {label} | (not run) {SKIPPED[label]} | | | | | | |", flush=True)

    peers: list[dict[str, Any]] = []
    if not args.no_peers and Path(args.peer_python).exists():
        n, b = min(args.peer_n, args.n), args.peer_budget
        print(f"\nPeer: scikit-activeml on the first {n} rows, budget {b}")
        print(
            "| strategy | ours s | ours MB (peak - base) | peer s | peer MB (peak - base) | time ratio | mem ratio | goal >= 10x |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for name in PEERS:
            if args.only and name not in args.only:
                continue
            spec = {"pool": pool, "strategy": name, "params": {}, "budget": b, "n": n}
            ours = run_child(sys.executable, spec, timeout=3600, mem_gb=22)
            peer = run_child(args.peer_python, {**spec, "peer": True}, args.peer_timeout, args.peer_mem_gb)
            peers.append({"strategy": name, "ours": ours, "peer": peer})
            om = ours.get("peak_mb", 0) - ours.get("base_mb", 0)
            if "error" in peer:
                print(f"| {name} | {_fmt(ours.get('wall_s'))} | {om:.0f} | {peer['error']} | | | | yes (peer failed) |")
                continue
            pm = peer["peak_mb"] - peer["base_mb"]
            tr, mr = peer["wall_s"] / ours["wall_s"], pm / max(om, 1.0)
            goal = "yes" if tr >= 10 or mr >= 10 else "no"
            print(
                f"| {name} | {_fmt(ours['wall_s'])} | {om:.0f} | {_fmt(peer['wall_s'])} | {pm:.0f} | {tr:.1f}x | {mr:.1f}x | {goal} |"
            )
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = OUT / "selection.json.tmp"
    tmp.write_text(json.dumps({"n": args.n, "dim": args.dim, "rows": rows, "peers": peers}, indent=2))
    os.replace(tmp, OUT / "selection.json")
    print(f"\nwrote {OUT / 'selection.json'}")


if __name__ == "__main__":
    main()
