"""Benchmark of the selection strategies: at scale against their lower bounds, and against two peers,
like for like.

Pool: ``--n`` x ``--dim`` float32 features (10 seeded Gaussian blobs) saved once as
``bench/out/pool_<n>x<dim>.npy``; 1,000 random labeled rows; a ProxyMLP fitted on them where a
strategy needs a model. Every case runs in a fresh subprocess that

- reads only the rows it uses (a memory-mapped slice copied into its own memory), builds the
  labeled set and fits the proxy (or the peer's classifier wrapper) - all outside the timing;
- takes its memory baseline after that (``VmRSS``), resets the kernel's peak-RSS counter
  (``/proc/self/clear_refs``), times ``select`` / ``query``, and reports the peak increase
  ``VmHWM - baseline`` (every allocation: numpy, torch's CPU allocator, BLAS buffers;
  ``torch.cuda.max_memory_allocated`` is added on a GPU; ``--tracemalloc`` adds the Python
  allocator's peak, in a run whose time is then not comparable);
- is stopped by the parent past ``--timeout`` seconds or ``--mem-gb`` GiB of RSS - the same limits
  for our side and the peers. A case that is stopped or crashes is reported as failed, never as a
  ratio.

Subcommands (each writes its rows into ``bench/out/selection.json``, merged with earlier runs, and
prints the tables of everything measured so far; run them in chunks, one size or a few strategies
at a time, under ``/work/bin/heavy``):

``scale``  each strategy at ``--n`` rows, budgets ``--budgets``: seconds, peak memory increase, the
           stated lower bound (bare numpy/torch work timed on the same machine after the run) and
           the ratio ours / bound (goal <= 2).
``peers``  ours against scikit-activeml and small-text at ``--sizes`` rows, budget ``--budget``,
           the same input space, cluster counts, neighbours, radius and budget on every side
           (``PEER_SETUP`` says which); a peer that fails at a size is not run at larger ones.
``kmeans`` the large-problem k-means (``alcore.strategies._passes.kmeans_large``) against
           scikit-learn's ``MiniBatchKMeans`` (the path it replaced): seconds and inertia.
``report`` print the tables from ``bench/out/selection.json``.

Usage::

    UV_PROJECT_ENVIRONMENT=/tmp/benchvenv uv sync --locked --group bench   # the peers' environment
    uv run python bench/selection.py scale --only typiclust kmeans --budgets 1000
    uv run python bench/selection.py peers --sizes 20000 --peer-python /tmp/benchvenv/bin/python
    uv run python bench/selection.py report
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
RESULTS = OUT / "selection.json"
sys.path.insert(0, str(REPO))

N_CLASSES, N_LABELED, SEED = 10, 1000, 0

#: (label, strategy, params, lower bound kind) of the scale table.
SCALE_CASES: list[tuple[str, str, dict[str, Any], str]] = [
    ("random", "random", {}, ""),
    ("margin", "margin", {}, "gemm"),
    ("entropy", "entropy", {}, "gemm"),
    ("least_confidence", "least_confidence", {}, "gemm"),
    ("bald", "bald", {}, "gemm_mc"),  # masks=auto: consistent with the proxy
    ("bald[independent]", "bald", {"masks": "independent"}, "gemm_mc"),
    ("coreset", "coreset", {}, "pass_embedding"),
    ("coreset[features]", "coreset", {"space": "features"}, "pass_features"),
    ("badge", "badge", {}, "pass_embedding"),
    ("badge[partitions=10]", "badge", {"partitions": 10, "max_candidates": 200_000}, "pass_embedding"),
    ("cluster_margin", "cluster_margin", {}, "cluster_margin"),
    ("typiclust", "typiclust", {}, "typiclust"),
    ("probcover", "probcover", {}, "probcover"),
    ("kmeans", "kmeans", {}, "kmeans"),
    ("activeft", "activeft", {}, "activeft"),
]
BOUNDS = {
    "gemm": "the proxy's GEMMs over U",
    "gemm_mc": "the proxy's GEMMs, T passes of the last layer",
    "pass_embedding": "the proxy's GEMMs over the rows it scores + b passes over the (U, H) embedding",
    "pass_features": "b passes over the (N, D) features",
    "kmeans": "one assignment pass U x b",
    "typiclust": "one assignment pass N x k + one kNN pass in the clusters",
    "cluster_margin": "scoring GEMMs + one assignment pass 10b x b",
    "activeft": "forward GEMMs of the loss + one assignment pass U x b",
    "probcover": "two all-pairs passes over the graph's nodes",
}

#: Peer comparison: per strategy, the input space and what both sides are told.
PEER_SETUP = {
    "coreset": "raw features; greedy k-center from the labeled set (ours: space=features)",
    "badge": "our fitted proxy's probabilities and embedding for both (forward pass timed, fit not)",
    "typiclust": "raw features; |L| + b clusters, 20 neighbours (ours: max_clusters = |L| + b)",
    "probcover": "L2-normalised features; the same radius delta; balls capped at 100 (ours: max_degree, small-text: k)",
    "kmeans": "raw features; b clusters, the sample nearest each centre",
}
PEERS = {
    "coreset": ("skactiveml", "small-text"),
    "badge": ("skactiveml", "small-text"),
    "typiclust": ("skactiveml",),
    "probcover": ("skactiveml", "small-text"),
    "kmeans": ("small-text",),
}


# -- data ---------------------------------------------------------------------------------------


def make_pool(n: int, dim: int) -> Path:
    """Seeded blobs saved once as .npy (the children memory-map it)."""
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


def _load(pool: str, n: int, normalise: bool = False):
    """The first ``n`` rows (a copy of a memory-mapped slice: only those rows are read), their
    hidden classes, the labeled positions and the ``-1``-filled labels."""
    import numpy as np

    mm = np.load(pool, mmap_mode="r")
    X = np.array(mm[:n], dtype=np.float32)
    del mm
    if normalise:
        X /= np.sqrt(np.einsum("ij,ij->i", X, X))[:, None]
    y = np.array(np.load(pool.replace(".npy", ".y.npy"), mmap_mode="r")[:n])
    labeled = np.sort(np.random.default_rng(SEED).choice(n, size=N_LABELED, replace=False))
    labels = np.full(n, -1, dtype=np.int64)
    labels[labeled] = y[labeled]
    return X, y, labels, labeled


def _proxy(X, labels, labeled):
    from alcore.proxy import ProxyMLP, warm_up

    warm_up()
    return ProxyMLP(epochs=30, random_state=SEED).fit(X[labeled], labels[labeled], N_CLASSES)


# -- memory -------------------------------------------------------------------------------------


def _status_mb(key: str, pid: str = "self") -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1)) / 1024


class Meter:
    """Wall seconds and the peak RSS increase over a baseline taken at ``start``."""

    def __init__(self, trace: bool = False) -> None:
        self.trace = trace

    def start(self) -> None:
        gc.collect()
        self.base = _status_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        if self.trace:
            import tracemalloc

            tracemalloc.start()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
        except ImportError:
            pass
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self.t0
        out = {"wall_s": wall, "mem_mb": _status_mb("VmHWM") - self.base, "base_mb": self.base}
        if self.trace:
            import tracemalloc

            out["tracemalloc_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        try:
            import torch

            if torch.cuda.is_available():
                out["cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        except ImportError:
            pass
        return out


# -- children -----------------------------------------------------------------------------------


def child_scale(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from alcore.strategies import STRATEGIES, SelectionContext, make_strategy

    X, _, labels, labeled = _load(spec["pool"], spec["n"])
    needs_model = bool(STRATEGIES.get(spec["strategy"]).requires & {"model", "embeddings", "mc_dropout"})
    proxy = _proxy(X, labels, labeled) if needs_model else None
    ctx = SelectionContext(
        pool_ids=np.arange(len(X)),
        features=X,
        labels=labels,
        n_classes=N_CLASSES,
        model=proxy,
        device=spec.get("device"),
    )
    strat = make_strategy(spec["strategy"], **spec["params"])
    meter = Meter(spec.get("trace", False))
    meter.start()
    ids = strat.select(ctx, spec["budget"], random_state=SEED)
    out = meter.stop()
    out["n_ids"] = int(ids.size)
    if spec.get("bound"):
        out["bound_s"] = lower_bound(spec["bound"], X, proxy, ctx, strat, spec["budget"])
    return out


def _discard(blocks) -> None:
    """Compute every block and keep none (a list of them would hold U x b floats: 40 GB at 1M x 10,000)."""
    for _ in blocks:
        pass


def lower_bound(kind: str, X, proxy, ctx, strat, b: int) -> float:
    """Seconds of the bare work a strategy cannot avoid, timed on contiguous arrays (numpy's BLAS
    for distances, torch for the proxy's layers) after the measured run."""
    import numpy as np
    import torch

    unl = ctx.unlabeled_positions()
    U = unl.size
    rng = np.random.default_rng(1)

    def timed(fn) -> float:
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    def assign_pass(A: np.ndarray, k: int) -> float:
        """One nearest-centre pass of the rows of ``A`` against ``k`` centres: GEMM + argmin."""
        C = A[rng.choice(len(A), size=k, replace=False)]
        step = max(256, min(16384, (1 << 24) // k))
        return timed(lambda: [(A[s : s + step] @ C.T).argmin(1) for s in range(0, len(A), step)])

    def scoring(T: int = 1, rows: int = U) -> float:
        W1 = proxy.net_.fc1.weight.detach().T.contiguous()
        W2 = proxy.net_.fc2.weight.detach().T.contiguous()

        def run() -> None:
            with torch.inference_mode():
                for s in range(0, rows, ctx.chunk_size):
                    h = torch.from_numpy(X[s : s + ctx.chunk_size]) @ W1
                    for _ in range(T):
                        h @ W2

        return timed(run)

    def one_pass(E: np.ndarray) -> float:
        c, out = E[0].copy(), np.empty(E.shape[0], dtype=np.float32)
        np.matmul(E, c, out=out)
        return timed(lambda: [np.matmul(E, c, out=out) for _ in range(10)]) / 10

    if kind == "gemm":
        return scoring()
    if kind == "gemm_mc":
        return scoring(int(strat.n_samples))
    if kind in ("pass_embedding", "pass_features"):
        E = X if kind == "pass_features" else np.ascontiguousarray(proxy.embed(X))
        rows, scored = E.shape[0], U
        if getattr(strat, "partitions", 1) > 1:  # each pick scans one part of the candidates
            scored = min(U, strat.max_candidates or U)
            rows = scored / strat.partitions
        # in the embedding, the proxy's forward over the rows it needs comes first
        first = scoring(rows=int(scored)) if kind == "pass_embedding" else 0.0
        return first + b * one_pass(E) * rows / E.shape[0]
    if kind == "kmeans":
        return assign_pass(X, b)
    if kind == "typiclust":
        total = assign_pass(X, strat.n_clusters_)
        k = int(strat.n_neighbors)
        for m in strat.cluster_sizes_:
            if m > 1:
                A = X[: int(m)]
                total += timed(lambda A=A: np.partition(A @ A.T, min(k, len(A) - 1), axis=1))
        return total
    if kind == "cluster_margin":
        m = min(U, int(np.ceil(strat.margin_factor * b)))
        E = np.ascontiguousarray(proxy.embed(X[:m]))
        return scoring() + assign_pass(E, b)
    if kind == "activeft":
        L, B = ctx.n_labeled, min(U, strat.batch_size or U)
        C = X[: b + L] / np.linalg.norm(X[: b + L], axis=1, keepdims=True)
        f = X[L : L + B]
        step = timed(lambda: (f @ C.T, C @ C.T))
        return strat.iterations * step + timed(lambda: _discard(X[s : s + 1677] @ C[:b].T for s in range(0, U, 1677)))
    if kind == "probcover":
        M = min(ctx.n_pool, max(b, strat.max_points))
        A = X[:M]
        return 2 * timed(lambda: _discard(A[s : s + 2048] @ A.T for s in range(0, M, 2048)))
    raise ValueError(kind)


def child_peer(spec: dict[str, Any]) -> dict[str, Any]:
    """One strategy at one size, on our side or a peer's, with the same inputs."""
    import numpy as np

    name, side, b = spec["strategy"], spec["side"], spec["budget"]
    X, _, labels, labeled = _load(spec["pool"], spec["n"], normalise=name == "probcover")
    unlabeled = np.flatnonzero(labels < 0)
    proxy = _proxy(X, labels, labeled) if name == "badge" else None
    delta, meter = spec.get("delta"), Meter(spec.get("trace", False))
    if side == "ours":
        from alcore.strategies import SelectionContext, make_strategy

        params = {
            "coreset": {"space": "features"},
            "badge": {},
            "typiclust": {"max_clusters": N_LABELED + b, "n_neighbors": 20},
            "probcover": {"delta": delta, "max_points": len(X), "max_degree": 100},
            "kmeans": {},
        }[name]
        ctx = SelectionContext(pool_ids=np.arange(len(X)), features=X, labels=labels, n_classes=N_CLASSES, model=proxy)
        strat = make_strategy(name, **params)
        meter.start()
        strat.select(ctx, b, random_state=SEED)
    elif side == "skactiveml":
        import skactiveml.pool as skpool

        y = labels.astype(float)
        y[y < 0] = np.nan
        if name == "coreset":
            query = skpool.CoreSet(random_state=SEED)
            meter.start()
            query.query(X, y, batch_size=b)
        elif name == "badge":
            query = skpool.Badge(clf_embedding_flag_name="return_embeddings", random_state=SEED)
            clf = _skactiveml_proxy(proxy)
            meter.start()
            query.query(X, y, clf, fit_clf=False, batch_size=b)
        elif name == "typiclust":
            query = skpool.TypiClust(k=20, cluster_algo_dict={"n_init": 1, "random_state": SEED}, random_state=SEED)
            meter.start()
            query.query(X, y, batch_size=b)
        elif name == "probcover":
            query = skpool.ProbCover(deltas=[delta], random_state=SEED)
            meter.start()
            query.query(X, y, batch_size=b)
    elif side == "small-text":
        from small_text.integrations.pytorch.query_strategies import BADGE
        from small_text.query_strategies import EmbeddingKMeans, GreedyCoreset, ProbCover
        from small_text.vector_indexes.base import VectorIndexFactory
        from small_text.vector_indexes.knn import KNNIndex

        if name == "coreset":
            query = GreedyCoreset(distance_metric="euclidean", normalize=False)
            meter.start()
            query.sample(None, None, unlabeled, labeled, labels[labeled], b, X)
        elif name == "badge":
            query = BADGE(num_classes=N_CLASSES)
            clf = _SmallTextEmbedder(proxy)
            meter.start()
            query.query(clf, X, unlabeled, labeled, labels[labeled], n=b)
        elif name == "probcover":
            # exact neighbours, as ours (its default, HNSW, is approximate and needs hnswlib)
            index = VectorIndexFactory(KNNIndex, {"algorithm": "brute"})
            query = ProbCover(vector_index_factory=index, k=100, ball_radius=delta)
            meter.start()
            query.sample(None, None, unlabeled, labeled, labels[labeled], b, X)
        elif name == "kmeans":
            query = EmbeddingKMeans(normalize=False)
            meter.start()
            query.query(None, X, unlabeled, labeled, labels[labeled], n=b, embeddings=X)
    return meter.stop()


def _skactiveml_proxy(proxy):
    """Our fitted proxy as a scikit-activeml classifier (``fit`` does nothing: fitted outside the
    timing); ``predict_proba(X, return_embeddings=True)`` returns its hidden activation too."""
    import numpy as np
    from skactiveml.base import SkactivemlClassifier

    class ProxyClassifier(SkactivemlClassifier):
        def __init__(self, proxy=None, classes=None, missing_label=np.nan, cost_matrix=None, random_state=None):
            super().__init__(
                classes=classes, missing_label=missing_label, cost_matrix=cost_matrix, random_state=random_state
            )
            self.proxy = proxy

        def fit(self, X, y, sample_weight=None):
            return self

        def predict_proba(self, X, return_embeddings=False):
            p = self.proxy.predict_proba(X)
            return (p, self.proxy.embed(X)) if return_embeddings else p

    return ProxyClassifier(proxy=proxy, classes=np.arange(N_CLASSES))


class _SmallTextEmbedder:
    """Our fitted proxy as small-text's classifier: ``embed(X, return_proba=True)``."""

    def __init__(self, proxy) -> None:
        self.proxy = proxy

    def embed(self, X, return_proba: bool = False, **_: Any):
        emb = self.proxy.embed(X)
        return (emb, self.proxy.predict_proba(X)) if return_proba else emb


def child_delta(spec: dict[str, Any]) -> dict[str, Any]:
    """The shared ProbCover radius: ours from cluster purity on the normalised first rows."""
    import numpy as np

    from alcore.strategies import delta_from_purity
    from alcore.strategies._common import kmeans

    X, *_ = _load(spec["pool"], spec["n"], normalise=True)
    _, pseudo = kmeans(X, N_CLASSES, np.random.default_rng(SEED))
    return {"delta": delta_from_purity(X, pseudo, 0.95)}


def child_kmeans(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    from alcore.strategies._passes import assign, kmeans_large

    if spec["data"] == "emnist":
        z = np.load(REPO.parent / "shared" / "data" / "emnist-letters" / "emnist_letters_upright.npz")
        X = (z["train_x"].reshape(len(z["train_x"]), -1) / 255.0).astype(np.float32)
    else:
        X, *_ = _load(spec["pool"], spec["n"])
    k, out = spec["k"], {"rows": len(X), "dim": X.shape[1]}
    t = time.perf_counter()
    C, _ = kmeans_large(X, k, np.random.default_rng(SEED))
    out["ours_s"] = time.perf_counter() - t
    out["ours_inertia"] = float(assign(X, C)[1].mean())
    t = time.perf_counter()
    mb = MiniBatchKMeans(n_clusters=k, batch_size=4096, n_init=1, random_state=SEED).fit(X)
    out["minibatch_s"] = time.perf_counter() - t
    out["minibatch_inertia"] = float(assign(X, mb.cluster_centers_.astype(np.float32))[1].mean())
    t = time.perf_counter()
    assign(X, C)
    out["pass_s"] = time.perf_counter() - t
    return out


# -- the parent ---------------------------------------------------------------------------------


def run_child(python: str, spec: dict[str, Any], timeout: float, mem_gb: float) -> dict[str, Any]:
    """One case in a fresh process, stopped past ``timeout`` s or ``mem_gb`` GiB of RSS."""
    cmd = [python, __file__, "--child", json.dumps(spec)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    t0, peak = time.time(), 0.0
    while proc.poll() is None:
        try:
            peak = max(peak, _status_mb("VmRSS", str(proc.pid)))
        except (OSError, AttributeError):
            pass
        over_mem, over_time = peak > mem_gb * 1024, time.time() - t0 > timeout
        if over_mem or over_time:
            proc.kill()
            proc.communicate()
            return {"error": f"stopped: RSS > {mem_gb:g} GiB" if over_mem else f"stopped: > {timeout:g} s"}
        time.sleep(0.05)
    out, err = proc.communicate()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": "crashed: " + (err.strip().splitlines() or ["?"])[-1][:160]}
    return json.loads(lines[-1])


def load_results() -> dict[str, dict[str, Any]]:
    if RESULTS.exists():
        return json.loads(RESULTS.read_text())
    return {"scale": {}, "peers": {}, "kmeans": {}, "meta": {}}


def save_results(res: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True))
    os.replace(tmp, RESULTS)


def _fmt(x: float | None) -> str:
    return "-" if x is None else (f"{x:.3g}" if x < 100 else f"{x:.0f}")


def report(res: dict[str, Any]) -> None:
    meta = res.get("meta", {})
    if res.get("scale"):
        print(f"\n## Strategies at scale ({meta.get('scale', '')})\n")
        print("| strategy | budget | seconds | peak memory increase MB | lower bound | bound s | ours / bound | <= 2 |")
        print("|---|---:|---:|---:|---|---:|---:|---|")
        order = {label: i for i, (label, *_) in enumerate(SCALE_CASES)}
        for key in sorted(res["scale"], key=lambda k: (order.get(k.split("@")[0], 99), int(k.split("@")[1]))):
            r = res["scale"][key]
            label, b = key.split("@")
            if "error" in r:
                print(f"| {label} | {b} | failed: {r['error']} | | | | | |")
                continue
            bound = r.get("bound_s")
            ratio = r["wall_s"] / bound if bound else None
            kind = dict((c[0], c[3]) for c in SCALE_CASES).get(label, "")
            ok = "" if ratio is None else ("yes" if ratio <= 2 else "**no**")
            print(
                f"| {label} | {b} | {_fmt(r['wall_s'])} | {r['mem_mb']:.0f} | {BOUNDS.get(kind, '-')} "
                f"| {_fmt(bound)} | {_fmt(ratio)} | {ok} |"
            )
    if res.get("peers"):
        print(f"\n## Peers, like for like ({meta.get('peers', '')})\n")
        print(
            "| strategy | rows | ours s | ours MB | scikit-activeml s | MB | small-text s | MB | best peer / ours: time, memory | >= 10x |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        keys = sorted(res["peers"], key=lambda k: (list(PEER_SETUP).index(k.split("@")[0]), int(k.split("@")[1])))
        for key in keys:
            name, n = key.split("@")
            row = res["peers"][key]
            cells, ratios = [], []
            ours = row.get("ours", {"error": "not run"})
            for side in ("ours", "skactiveml", "small-text"):
                r = row.get(side)
                if r is None:
                    cells += ["n/a" if side not in PEERS[name] and side != "ours" else "not run", ""]
                elif "error" in r:
                    cells += [r["error"], ""]
                else:
                    cells += [_fmt(r["wall_s"]), f"{r['mem_mb']:.0f}"]
                    if side != "ours" and "error" not in ours:
                        ratios.append((r["wall_s"] / ours["wall_s"], max(r["mem_mb"], 1) / max(ours["mem_mb"], 1)))
            if ratios:  # against the best peer on each axis: the fastest, the leanest
                tr, mr = min(t for t, _ in ratios), min(m for _, m in ratios)
                verdict = f"{tr:.1f}x, {mr:.1f}x"
                goal = "yes" if tr >= 10 or mr >= 10 else "**no**"
            else:
                ran = [s for s in PEERS[name] if s in row and not row[s].get("error", "").startswith("not run")]
                finished = [s for s in ran if "error" not in row[s]]
                verdict = "no peer finished" if ran and not finished else "-"
                all_stopped = bool(ran) and not finished and "error" not in ours
                if all_stopped:  # what each stop says about the ratio
                    said = []
                    for side in ran:
                        m = re.match(r"stopped: (?:> ([\d.]+) s|RSS > ([\d.]+) GiB)", row[side]["error"])
                        if m and m.group(1):
                            said.append(f"{side}: time > {float(m.group(1)) / ours['wall_s']:.1f}x")
                        elif m:
                            said.append(f"{side}: memory > {float(m.group(2)) * 1024 / max(ours['mem_mb'], 1):.1f}x")
                    verdict += " (" + "; ".join(said) + ")" if said else ""
                goal = "yes (no peer finished at equal limits)" if all_stopped else "-"
            print(f"| {name} | {n} | " + " | ".join(cells) + f" | {verdict} | {goal} |")
        print("\nInputs: " + "; ".join(f"{k}: {v}" for k, v in PEER_SETUP.items()))
    if res.get("kmeans"):
        print("\n## k-means at scale against MiniBatchKMeans (the former large-problem path)\n")
        print(
            "| data | rows x dim | k | ours s | one pass s | ours inertia | MiniBatchKMeans s | its inertia | inertia ours / its |"
        )
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for key, r in sorted(res["kmeans"].items()):
            data, k = key.split("@")
            print(
                f"| {data} | {r['rows']} x {r['dim']} | {k} | {_fmt(r['ours_s'])} | {_fmt(r['pass_s'])} "
                f"| {r['ours_inertia']:.4g} | {_fmt(r['minibatch_s'])} | {r['minibatch_inertia']:.4g} "
                f"| {r['ours_inertia'] / r['minibatch_inertia']:.3f} |"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("command", nargs="?", choices=["scale", "peers", "kmeans", "report"], default="report")
    ap.add_argument("--n", type=int, default=1_000_000, help="scale: pool rows (default 1,000,000)")
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--only", nargs="*", default=None, help="case labels (scale) or strategies (peers) to run")
    ap.add_argument("--budgets", type=int, nargs="*", default=[1000, 10000], help="scale: budgets")
    ap.add_argument("--sizes", type=int, nargs="*", default=[20_000, 50_000, 200_000], help="peers: pool sizes")
    ap.add_argument("--budget", type=int, default=1000, help="peers: the budget")
    ap.add_argument("--sides", nargs="*", default=["ours", "skactiveml", "small-text"])
    ap.add_argument("--peer-python", default="/tmp/benchvenv/bin/python", help="a Python with the bench group")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per case, both sides (scale: x4)")
    ap.add_argument("--mem-gb", type=float, default=8, help="GiB of RSS per case, both sides")
    ap.add_argument("--device", default=None, help="scale: SelectionContext.device (e.g. cuda)")
    ap.add_argument("--tracemalloc", action="store_true", help="also report tracemalloc's peak (slows allocation)")
    ap.add_argument("--k", type=int, nargs="*", default=[500, 2000], help="kmeans: cluster counts")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec = json.loads(args.child)
        fn = {"scale": child_scale, "peer": child_peer, "delta": child_delta, "kmeans": child_kmeans}[spec["kind"]]
        print(json.dumps(fn(spec)))
        return

    res = load_results()
    if args.command == "scale":
        pool = str(make_pool(args.n, args.dim))
        res["meta"]["scale"] = f"{args.n:,} x {args.dim} float32, {N_LABELED:,} labeled; alone on 2 CPU cores"
        for label, name, params, bound in SCALE_CASES:
            if args.only and label not in args.only:
                continue
            for b in args.budgets:
                spec = {"kind": "scale", "pool": pool, "n": args.n, "strategy": name, "params": params}
                spec.update(budget=b, bound=bound, device=args.device, trace=args.tracemalloc)
                print(f"[scale] {label} b={b} ...", flush=True)
                r = run_child(sys.executable, spec, timeout=4 * args.timeout, mem_gb=20)
                r["when"] = time.strftime("%Y-%m-%d %H:%M")
                res["scale"][f"{label}@{b}"] = r
                save_results(res)
    elif args.command == "peers":
        pool = str(make_pool(1_000_000, args.dim))
        res["meta"]["peers"] = (
            f"first rows of the 1,000,000 x {args.dim} pool, budget {args.budget}, {N_LABELED:,} labeled; "
            f"limits {args.timeout:g} s and {args.mem_gb:g} GiB for every side; alone on 2 CPU cores"
        )
        if "delta" not in res["meta"]:
            res["meta"]["delta"] = run_child(sys.executable, {"kind": "delta", "pool": pool, "n": 20_000}, 600, 8)[
                "delta"
            ]
        for name in PEER_SETUP:
            if args.only and name not in args.only:
                continue
            for n in args.sizes:
                key = f"{name}@{n}"
                row = res["peers"].setdefault(key, {})
                for side in args.sides:
                    if side != "ours" and side not in PEERS[name]:
                        continue
                    smaller = [  # this run's sizes and earlier runs' alike
                        r.get(side, {})
                        for k, r in res["peers"].items()
                        if k.startswith(f"{name}@") and int(k.split("@")[1]) < n
                    ]
                    if any("error" in r for r in smaller):
                        row[side] = {"error": "not run: failed at a smaller size"}
                        continue
                    spec = {"kind": "peer", "pool": pool, "n": n, "strategy": name, "side": side, "budget": args.budget}
                    spec.update(delta=res["meta"]["delta"], trace=args.tracemalloc)
                    python = sys.executable if side == "ours" else args.peer_python
                    print(f"[peers] {name} n={n} {side} ...", flush=True)
                    row[side] = run_child(python, spec, args.timeout, args.mem_gb)
                    save_results(res)
    elif args.command == "kmeans":
        pool = str(make_pool(1_000_000, args.dim))
        for data, n in (("emnist", 0), ("blobs", 200_000)):
            for k in args.k:
                print(f"[kmeans] {data} k={k} ...", flush=True)
                spec = {"kind": "kmeans", "data": data, "pool": pool, "n": n, "k": k}
                r = run_child(sys.executable, spec, 1800, 16)
                if "error" not in r:
                    res["kmeans"][f"{data}@{k}"] = r
                save_results(res)
    report(res)


if __name__ == "__main__":
    main()
