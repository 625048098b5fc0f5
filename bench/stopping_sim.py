"""Accuracy without a test set, the learning-curve forecast and the stopping rules, on a plain loop.

A simulation that needs no round engine: pre-computed features, a scikit-learn LogisticRegression
as the model, alcore's own ``margin`` strategy choosing the labels, and a true test set to check
everything against. Datasets:

- ``digits``: scikit-learn's 8x8 digits, raw pixels (always available, small: 1,797 images);
- ``fmnist``: Fashion-MNIST pixels reduced to 64 PCA components (../shared/data).

Per dataset and seed, one active-learning run; a uniformly random **reserve** of the pool is kept
out of selection and the audit draws from it. On each run, ``--streams`` independent audits are
simulated (same model trajectory, different audit draws) for three designs: ``wilson`` (uniform
draws, the fraction right, Wilson's interval), ``ppi`` (uniform draws, prediction-powered) and
``active`` (draws favouring unsure samples, importance-weighted PPI). The audit buys
``--audit-fraction`` of the training labels so far.

Tables:

1. per audit size, on fixed models (the run's models at 25%, 50% and 100% of the budget, 300 audits
   each): the estimate's error against the true test accuracy (mean, share within 2 points, 90th
   percentile), the 95% interval's coverage of the test accuracy, and its half-width;
2. the same along the loop (each round's model, the audit grown to that round);
3. the forecast of labels-to-target (target: the run's final accuracy minus ``--target-gap``
   points) made at 25% and 50% of the budget, from the estimates and from the true curve;
4. every stopping rule: labels spent (training + audit), accuracy at the stop, rounds from the
   oracle's best stopping point (the round after which no later round gains more than 1 point),
   and from the cost-optimal round for the value the cost-aware rule is given.

Usage::

    uv run python bench/stopping_sim.py                        # both datasets, 3 seeds (run it alone)
    uv run python bench/stopping_sim.py --datasets digits --seeds 0 --streams 5    # quick check

Writes ``bench/out/stopping_sim_<dataset>.json`` (bench/out/ is git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "bench" / "out"
sys.path.insert(0, str(REPO))

from alcore.estimate import active_proposal, draw_audit, estimate_rounds  # noqa: E402
from alcore.forecast import CostModel, fit_learning_curve  # noqa: E402
from alcore.stopping import StopContext, best_stop_round, make_stop_rule  # noqa: E402

DESIGNS = ("wilson", "ppi", "active")
PRICE_PER_LABEL = 0.10  # $ per label (alcore's oracle default)
COMPUTE_USD_PER_ROUND = 0.05  # a fixed, stated compute price per round (a LogisticRegression fit is seconds)


# -- data ---------------------------------------------------------------------------------------
def load(name: str) -> dict[str, np.ndarray]:
    """Features and labels of the pool and the test set, standardised on the pool."""
    if name == "digits":
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        X, y = load_digits(return_X_y=True)
        Xp, Xt, yp, yt = train_test_split(X / 16.0, y, test_size=0.3, stratify=y, random_state=0)
        cfg = {"initial": 20, "batch": 10, "rounds": 30, "reserve": 250, "sizes": (25, 50, 100, 200)}
    elif name == "fmnist":
        from sklearn.decomposition import PCA

        from alcore.datasets.builtin import read_idx

        root = SHARED / "fashion-mnist"
        if not root.is_dir():
            raise SystemExit(f"{root} is missing: fmnist needs ../shared/data (use --datasets digits)")
        files = {p.name: p for p in root.iterdir()}

        def idx(stem: str) -> np.ndarray:
            return read_idx(next(p for n, p in files.items() if n.startswith(stem)))

        Xp = idx("train-images").reshape(-1, 784) / 255.0
        Xt = idx("t10k-images").reshape(-1, 784) / 255.0
        yp, yt = idx("train-labels").astype(np.int64), idx("t10k-labels").astype(np.int64)
        pca = PCA(64, random_state=0).fit(Xp)
        Xp, Xt = pca.transform(Xp), pca.transform(Xt)
        cfg = {"initial": 100, "batch": 100, "rounds": 30, "reserve": 10000, "sizes": (50, 100, 200, 400, 800, 1600)}
    else:
        raise SystemExit(f"unknown dataset {name!r}: digits or fmnist")
    mu, sd = Xp.mean(0), Xp.std(0) + 1e-8
    return {
        "Xp": ((Xp - mu) / sd).astype(np.float32),
        "yp": np.asarray(yp, dtype=np.int64),
        "Xt": ((Xt - mu) / sd).astype(np.float32),
        "yt": np.asarray(yt, dtype=np.int64),
        **{k: np.asarray(v, dtype=np.int64) for k, v in cfg.items()},
    }


class _Model:
    """A LogisticRegression behind the Scorer protocol the strategies read."""

    def __init__(self, clf: Any, n_classes: int) -> None:
        self.clf, self.n_classes = clf, n_classes

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        p = np.zeros((len(X), self.n_classes))
        p[:, self.clf.classes_] = self.clf.predict_proba(X)
        return p

    def embed(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X)


def al_run(d: dict[str, np.ndarray], seed: int, progress: bool) -> dict[str, np.ndarray]:
    """One margin-sampling run: per round the labeled count, test accuracy, reserve predictions."""
    from sklearn.linear_model import LogisticRegression
    from tqdm.auto import tqdm

    from alcore.estimate import choose_reserve
    from alcore.strategies import SelectionContext, make_strategy

    rng = np.random.default_rng(seed)
    N, C = len(d["yp"]), int(d["yp"].max()) + 1
    reserve = choose_reserve(np.arange(N), int(d["reserve"]), random_state=rng)
    pool = np.setdiff1d(np.arange(N), reserve)
    labels = np.full(pool.size, -1, dtype=np.int64)
    first = rng.choice(pool.size, size=int(d["initial"]), replace=False)
    labels[first] = d["yp"][pool[first]]
    strategy = make_strategy("margin")
    Xpool = d["Xp"][pool]
    out: dict[str, list[Any]] = {"n_labeled": [], "test_acc": [], "conf": [], "pred": []}
    for _ in tqdm(range(int(d["rounds"])), desc=f"AL run seed {seed}", disable=not progress, leave=False):
        known = labels >= 0
        clf = LogisticRegression(max_iter=2000, C=1.0).fit(Xpool[known], labels[known])
        model = _Model(clf, C)
        pr = model.predict_proba(d["Xp"][reserve])
        out["n_labeled"].append(int(known.sum()))
        out["test_acc"].append(float((model.predict_proba(d["Xt"]).argmax(1) == d["yt"]).mean()))
        out["conf"].append(pr.max(1).astype(np.float32))
        out["pred"].append(pr.argmax(1).astype(np.int16))
        ctx = SelectionContext(pool_ids=np.arange(pool.size), features=Xpool, labels=labels, n_classes=C, model=model)
        new = strategy.select(ctx, int(d["batch"]), random_state=rng)
        labels[new] = d["yp"][pool[new]]
    return {
        "n_labeled": np.array(out["n_labeled"]),
        "test_acc": np.array(out["test_acc"]),
        "conf": np.stack(out["conf"]),
        "pred": np.stack(out["pred"]),
        "y_reserve": d["yp"][reserve],
        "n_pool": np.int64(pool.size),
        "n_test": np.int64(len(d["yt"])),
    }


def cached_run(name: str, d: dict[str, np.ndarray], seed: int, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """``al_run``, kept in bench/out (the runs are deterministic; ``--fresh`` recomputes them)."""
    key = "_".join(str(int(d[k])) for k in ("initial", "batch", "rounds", "reserve"))
    path = OUT / f"stopping_sim_run_{name}_{key}_seed{seed}.npz"
    if path.exists() and not args.fresh:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    run = al_run(d, seed, args.progress)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **run)
    tmp.replace(path)
    return run


# -- audits ---------------------------------------------------------------------------------------
def audit_stream(run: dict[str, np.ndarray], design: str, m_per_round: np.ndarray, rng: np.random.Generator):
    """One simulated audit grown along the run: its draws, their weights, and every round's estimate."""
    conf, pred, y = run["conf"], run["pred"], run["y_reserve"]
    N = y.size
    pos, w = [], []
    prev = 0
    for t, m in enumerate(m_per_round):
        k = int(m) - prev
        prev = int(m)
        if k <= 0:
            continue
        q = active_proposal(conf[t], mix=0.5) if design == "active" else np.full(N, 1.0 / N)
        p = draw_audit(q, k, random_state=rng)
        pos.append(p)
        w.append(1.0 / (N * q[p]))
    pos_a, w_a = np.concatenate(pos), np.concatenate(w)
    C = pred[:, pos_a] == y[pos_a]
    F = conf[:, pos_a].astype(np.float64)
    est, cov = estimate_rounds(
        C,
        F,
        conf.mean(1),
        m_per_round,
        N,
        weights=w_a if design == "active" else None,
        estimator="wilson" if design == "wilson" else "ppi",
    )
    distinct = np.array([np.unique(pos_a[: int(m)]).size for m in m_per_round])
    return est, cov, distinct


def audit_sizes(run: dict[str, np.ndarray], fraction: float, initial: int) -> np.ndarray:
    """(T,) audit draws held at each round: ``initial`` from round 1, then ``fraction`` of the labels."""
    return np.maximum(np.ceil(fraction * run["n_labeled"]).astype(np.int64), max(int(initial), 2))


def fixed_model_table(runs: list[dict[str, np.ndarray]], sizes: Any, reps: int, seed: int) -> list[dict[str, Any]]:
    """Table 1: audits of each size on fixed models (25%, 50%, 100% of the budget)."""
    from alcore.estimate import ppi_estimate, wilson_estimate

    rng = np.random.default_rng(seed)
    rows = []
    for design in DESIGNS:
        for m in sizes:
            errs, covs, covs_t, covs_p, hws = [], [], [], [], []
            for run in runs:
                T = len(run["n_labeled"])
                for t in (T // 4 - 1, T // 2 - 1, T - 1):
                    conf, pred, y, truth = (
                        run["conf"][t].astype(np.float64),
                        run["pred"][t],
                        run["y_reserve"],
                        run["test_acc"][t],
                    )
                    N = y.size
                    test_var = truth * (1 - truth) / int(run["n_test"])
                    pool_acc = float((pred == y).mean())
                    q = active_proposal(conf, mix=0.5) if design == "active" else np.full(N, 1.0 / N)
                    for _ in range(reps):
                        p = draw_audit(q, m, random_state=rng)
                        c = pred[p] == y[p]
                        if design == "wilson":
                            e = wilson_estimate(c, n_pool=N)
                        else:
                            wts = 1.0 / (N * q[p]) if design == "active" else None
                            e = ppi_estimate(c, conf[p], float(conf.mean()), N, weights=wts)
                        errs.append(abs(e.estimate - truth))
                        covs.append(e.covers(truth))
                        covs_t.append(_covers_with_test_noise(e, truth, test_var))
                        covs_p.append(e.covers(pool_acc))
                        hws.append(e.half_width)
            errs_a = np.array(errs) * 100
            rows.append(
                {
                    "design": design,
                    "m": m,
                    "mean_err": float(errs_a.mean()),
                    "within_2": float((errs_a <= 2).mean()),
                    "p90_err": float(np.quantile(errs_a, 0.9)),
                    "coverage": float(np.mean(covs)),
                    "coverage_test_noise": float(np.mean(covs_t)),
                    "coverage_pool": float(np.mean(covs_p)),
                    "half_width": float(np.mean(hws) * 100),
                }
            )
    return rows


def _covers_with_test_noise(e: Any, truth: float, test_var: float) -> bool:
    """Whether the interval, widened by the test set's own sampling variance, covers the test accuracy
    (the estimate targets the population accuracy; a finite test set measures it with noise)."""
    z = (e.upper - e.lower) / 2 / max(e.se, 1e-12)
    half = z * math.sqrt(e.se**2 + test_var)
    return abs(e.estimate - truth) <= half or e.covers(truth)


# -- rules ------------------------------------------------------------------------------------------
def rule_specs(value: float, target: float, half_usd: float) -> list[tuple[str, str, dict[str, Any], bool]]:
    """(label, rule name, params, reads the audit). ``value``: $ per point for the cost-aware rule."""
    return [
        ("never", "never", {}, False),
        ("budget[50%]", "budget", {"max_usd": half_usd}, False),
        ("stabilizing_predictions[0.99,3]", "stabilizing_predictions", {"threshold": 0.99, "window": 3}, False),
        ("target_accuracy[lower]", "target_accuracy", {"target": target}, True),
        ("cost_aware[median]", "cost_aware", {"value_per_point": value}, True),
        ("cost_aware[q90]", "cost_aware", {"value_per_point": value, "quantile": 0.9}, True),
        ("plateau[1pt]", "plateau", {"min_gain": 1.0}, True),
        ("plateau[1pt,q90]", "plateau", {"min_gain": 1.0, "quantile": 0.9}, True),
    ]


#: Rules also run on the true curve (the test accuracy as the estimate): what they would do with
#: perfect knowledge of the accuracy, apart from the audit's noise.
ON_TRUE_CURVE = ("cost_aware[median]", "cost_aware[q90]", "plateau[1pt]", "plateau[1pt,q90]")


def spent(run: dict[str, np.ndarray], t: int, audit_labels: int) -> float:
    return (int(run["n_labeled"][t]) + audit_labels) * PRICE_PER_LABEL + (t + 1) * COMPUTE_USD_PER_ROUND


def true_estimates(run: dict[str, np.ndarray]) -> tuple[list[Any], np.ndarray]:
    """The test accuracies as estimates (their se: the test set's binomial noise)."""
    from alcore.estimate import AccuracyEstimate

    acc, n_test = run["test_acc"], int(run["n_test"])
    se = np.sqrt(np.maximum(acc * (1 - acc), 1e-4) / n_test)
    est = [
        AccuracyEstimate(float(a), float(a - 2 * s), float(a + 2 * s), float(s), n_test, "test")
        for a, s in zip(acc, se, strict=True)
    ]
    return est, np.diag(se**2)


def stop_rounds(
    run: dict[str, np.ndarray],
    est: list[Any],
    cov: np.ndarray,
    audit: np.ndarray,
    specs: list[tuple[str, str, dict[str, Any], bool]],
    *,
    batch: int,
    fraction: float,
    stop_set: int,
    seed: int,
) -> dict[str, int]:
    """The round (0-based) at which each rule stops on one audit stream; the last round if never."""
    n = run["n_labeled"]
    T = n.size
    cost = CostModel(
        price_per_label=PRICE_PER_LABEL, audit_fraction=fraction, compute_usd_per_round=COMPUTE_USD_PER_ROUND
    )
    rules = [(label, make_stop_rule(name, **params)) for label, name, params, _ in specs]
    stops: dict[str, int] = {}
    for t in range(T - 1):
        ctx = StopContext(
            n_labeled=n[: t + 1],
            spent_usd=spent(run, t, int(audit[t])),
            next_batch=batch,
            cost=cost,
            estimates=est[: t + 1],
            estimate_cov=cov[: t + 1, : t + 1],
            predictions=[p[:stop_set] for p in run["pred"][: t + 1]],
            n_max=int(run["n_pool"]),
            n_final=int(n[-1]),
            random_state=seed,
            n_boot=100,
        )
        for label, rule in rules:
            if label not in stops and rule.decide(ctx).stop:
                stops[label] = t
    return {label: stops.get(label, T - 1) for label, _ in rules}


def forecasts(
    run: dict[str, np.ndarray], est: list[Any], cov: np.ndarray, target: float, seed: int
) -> list[dict[str, Any]]:
    """Labels-to-target forecast at 25% and 50% of the budget, from the estimates and from the true curve."""
    n = run["n_labeled"]
    T = n.size
    rows = []
    true_est, true_cov = true_estimates(run)
    for frac in (0.25, 0.5):
        t = int(round(frac * T))
        for source, e, c in (("estimate", est, cov), ("true_curve", true_est, true_cov)):
            y = np.array([x.estimate for x in e[:t]])
            curve = fit_learning_curve(n[:t], y, cov=c[:t, :t], n_boot=100, random_state=seed)
            f = curve.labels_to(target)
            rows.append(
                {
                    "at": frac,
                    "source": source,
                    "labels": f.labels,
                    "lower": f.labels_lower,
                    "upper": f.labels_upper,
                    "status": f.status,
                }
            )
    return rows


def cost_optimum(run: dict[str, np.ndarray], value: float, batch: int, fraction: float) -> int:
    """The first round after which one more round is worth less than it costs, on the true curve
    smoothed by a power-law fit over the whole run (the reference for ``cost_aware``)."""
    est, cov = true_estimates(run)
    n = run["n_labeled"]
    curve = fit_learning_curve(n, np.array([e.estimate for e in est]), cov=cov, n_boot=10)
    usd = batch * PRICE_PER_LABEL * (1 + fraction) + COMPUTE_USD_PER_ROUND
    for t in range(n.size):
        if 100 * (curve.predict([n[t] + batch])[0] - curve.predict([n[t]])[0]) * value < usd:
            return t
    return n.size - 1


# -- the benchmark ------------------------------------------------------------------------------------
def run_dataset(name: str, args: argparse.Namespace) -> dict[str, Any]:
    from tqdm.auto import tqdm

    d = load(name)
    batch = int(d["batch"])
    t0 = time.time()
    runs = [cached_run(name, d, s, args) for s in args.seeds]
    al_seconds = time.time() - t0
    fixed = fixed_model_table(runs, d["sizes"], args.reps, seed=1000)

    loop_rows: dict[str, list[tuple[int, int, float, float, bool, bool, bool]]] = {k: [] for k in DESIGNS}
    rule_rows: list[dict[str, Any]] = []
    fc_rows: list[dict[str, Any]] = []
    round_usd = batch * PRICE_PER_LABEL * (1 + args.audit_fraction) + COMPUTE_USD_PER_ROUND
    value = args.rounds_per_point * round_usd
    kw = {"batch": batch, "fraction": args.audit_fraction, "stop_set": args.stop_set}
    bar = tqdm(total=len(runs) * args.streams * len(DESIGNS), desc=f"{name}: audits", disable=not args.progress)
    for si, run in enumerate(runs):
        acc, n = run["test_acc"], run["n_labeled"]
        T = acc.size
        target = float(acc[-3:].mean()) - args.target_gap / 100
        true_n = int(n[int(np.flatnonzero(acc >= target)[0])]) if (acc >= target).any() else math.inf
        best = best_stop_round(acc)
        econ = cost_optimum(run, value, batch, args.audit_fraction)
        initial = args.audit_initial if args.audit_initial is not None else int(args.audit_fraction / 2 * n[-1])
        m_rounds = audit_sizes(run, args.audit_fraction, initial)
        specs = rule_specs(value, target, spent(run, T // 2 - 1, int(m_rounds[T // 2 - 1])))
        base = {"seed": si, "best": best, "econ_best": econ, "best_acc": float(acc[best]), "best_labels": int(n[best])}

        def record(label: str, t: int, audit_labels: int, base: dict[str, Any] = base, n=n, acc=acc) -> None:  # noqa: ANN001
            rule_rows.append(
                {
                    **base,
                    "rule": label,
                    "stop": t,
                    "train_labels": int(n[t]),
                    "audit_labels": audit_labels,
                    "acc": float(acc[t]),
                }
            )

        true_est, true_cov = true_estimates(run)
        on_true = [sp for sp in specs if sp[0] in ON_TRUE_CURVE]
        for label, t in stop_rounds(run, true_est, true_cov, np.zeros(T), on_true, seed=0, **kw).items():
            record(label + " (true curve)", t, 0)
        rng = np.random.default_rng(10_000 + si)
        for design in DESIGNS:
            for k in range(args.streams):
                est, cov, distinct = audit_stream(run, design, m_rounds, rng)
                for t in range(T):
                    e = est[t]
                    tv = acc[t] * (1 - acc[t]) / int(run["n_test"])
                    pool_acc = float((run["pred"][t] == run["y_reserve"]).mean())
                    loop_rows[design].append(
                        (
                            t,
                            int(m_rounds[t]),
                            abs(e.estimate - acc[t]) * 100,
                            e.half_width * 100,
                            e.covers(acc[t]),
                            _covers_with_test_noise(e, acc[t], tv),
                            e.covers(pool_acc),
                        )
                    )
                if design == args.rule_design and k < args.rule_streams:
                    stops = stop_rounds(run, est, cov, distinct, specs, seed=k, **kw)
                    for label, _, _, uses_audit in specs:
                        t = stops[label]
                        record(label, t, int(distinct[t]) if uses_audit else 0)
                    for row in forecasts(run, est, cov, target, seed=k):
                        fc_rows.append({"seed": si, "true": true_n, **row})
                bar.update(1)
    bar.close()
    return {
        "dataset": name,
        "n_test": int(runs[0]["n_test"]),
        "al_seconds": al_seconds,
        "audit_sizes": m_rounds.tolist(),
        "value_per_point": value,
        "runs": [
            {
                "n_labeled": r["n_labeled"].tolist(),
                "test_acc": r["test_acc"].tolist(),
                "n_reserve": int(r["y_reserve"].size),
                "test_minus_pool": float(
                    100 * np.mean((r["test_acc"] - (r["pred"] == r["y_reserve"]).mean(1))[len(r["test_acc"]) // 2 :])
                ),
            }
            for r in runs
        ],
        "fixed": fixed,
        "loop": {k: v for k, v in loop_rows.items()},
        "rules": rule_rows,
        "forecasts": fc_rows,
        "args": {k: v for k, v in vars(args).items() if k != "datasets"},
    }


def _fmt_pct(x: float) -> str:
    return "inf" if not math.isfinite(x) else (f"{100 * x:.0f}%" if x < 10 else "> 1,000%")


def _fmt_n(x: float) -> str:
    return "inf" if not math.isfinite(x) else (f"{x:,.0f}" if x < 1e6 else "> 1,000,000")


def print_tables(res: dict[str, Any], args: argparse.Namespace) -> None:
    name = res["dataset"]
    runs = res["runs"]
    print(
        f"\n## {name}: {len(runs)} seeds, test set {res['n_test']}, reserve {runs[0]['n_reserve']}, labels {runs[0]['n_labeled'][0]}..{runs[0]['n_labeled'][-1]}"
    )
    print("final test accuracy per seed: " + ", ".join(f"{100 * r['test_acc'][-1]:.1f}%" for r in runs))
    print(
        "test minus pool accuracy (the pool's = on the whole reserve), mean over the second half of the rounds: "
        + ", ".join(f"{r['test_minus_pool']:+.2f} pts" for r in runs)
    )

    print(
        f"\n### 1. Audit size on fixed models ({args.reps} audits x 3 models x {len(runs)} seeds; truth = test accuracy)"
    )
    print(
        "| design | m | mean err (pts) | within 2 pts | p90 err | 95% coverage | coverage (+test noise) | coverage of pool acc | half-width |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in res["fixed"]:
        print(
            f"| {r['design']} | {r['m']} | {r['mean_err']:.2f} | {100 * r['within_2']:.0f}% | {r['p90_err']:.2f} | {100 * r['coverage']:.1f}% | {100 * r['coverage_test_noise']:.1f}% | {100 * r['coverage_pool']:.1f}% | {r['half_width']:.2f} |"
        )

    sizes = res["audit_sizes"]
    print(
        f"\n### 2. Along the loop (audit: {sizes[0]} draws from round 1, then {100 * args.audit_fraction:.0f}% of the "
        f"training labels, {sizes[-1]} at the end; {args.streams} audits per seed)"
    )
    print(
        "| design | rounds | audit m | mean err (pts) | within 2 pts | 95% coverage | coverage (+test noise) | coverage of pool acc | half-width |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    T = len(runs[0]["n_labeled"])
    groups = [("first quarter", 0, T // 4), ("second quarter", T // 4, T // 2), ("second half", T // 2, T)]
    for design, rows in res["loop"].items():
        a = np.array(rows, dtype=np.float64)
        for label, lo, hi in groups:
            s = a[(a[:, 0] >= lo) & (a[:, 0] < hi)]
            print(
                f"| {design} | {label} | {s[:, 1].min():.0f}-{s[:, 1].max():.0f} | {s[:, 2].mean():.2f} | {100 * (s[:, 2] <= 2).mean():.0f}% | {100 * s[:, 4].mean():.1f}% | {100 * s[:, 5].mean():.1f}% | {100 * s[:, 6].mean():.1f}% | {s[:, 3].mean():.2f} |"
            )

    print(
        f"\n### 3. Forecast of labels to the target (final accuracy - {args.target_gap} pt), design {args.rule_design}"
    )
    print(
        "| made at | from | median true labels | median forecast | median abs error | within 25% | interval covers | not reachable / with confidence |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for at in (0.25, 0.5):
        for source in ("estimate", "true_curve"):
            rows = [r for r in res["forecasts"] if r["at"] == at and r["source"] == source]
            true = np.array([r["true"] for r in rows], dtype=float)
            pred = np.array([r["labels"] for r in rows], dtype=float)
            rel = np.abs(pred - true) / true
            cover = np.mean([r["lower"] <= r["true"] <= r["upper"] for r in rows])
            nr = np.mean([r["status"] == "not_reachable" for r in rows])
            nrc = np.mean([r["status"] == "not_reachable_with_confidence" for r in rows])
            print(
                f"| {int(100 * at)}% | {source} | {_fmt_n(float(np.median(true)))} | {_fmt_n(float(np.median(pred)))} | {_fmt_pct(float(np.median(rel)))} | {100 * float(np.mean(rel <= 0.25)):.0f}% | {100 * cover:.0f}% | {100 * nr:.0f}% / {100 * nrc:.0f}% |"
            )

    rr = res["rules"]
    bests = {r["seed"]: r for r in rr}
    print(
        f"\n### 4. Stopping rules (estimates: design {args.rule_design}, {args.rule_streams} audits per seed; "
        f"cost_aware values a point at {args.rounds_per_point:g} rounds' cost, ${res['value_per_point']:.2f})"
    )
    print(
        "oracle best stop (no later round gains > 1 pt): "
        + ", ".join(
            f"seed {s}: round {b['best'] + 1}, {b['best_labels']:,} labels, {100 * b['best_acc']:.2f}%"
            for s, b in bests.items()
        )
        + "; cost optimum: "
        + ", ".join(f"round {b['econ_best'] + 1}" for b in bests.values())
    )
    print(
        "| rule | labels (train+audit) | acc at stop | rounds from best (mean abs) | within 1 round of best | stops before best | within 1 round of cost optimum |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label in dict.fromkeys(r["rule"] for r in rr):
        rows = [r for r in rr if r["rule"] == label]
        d = np.array([r["stop"] - r["best"] for r in rows])
        de = np.array([r["stop"] - r["econ_best"] for r in rows])
        lab = np.mean([r["train_labels"] + r["audit_labels"] for r in rows])
        print(
            f"| {label} | {lab:,.0f} | {100 * np.mean([r['acc'] for r in rows]):.2f}% | {np.abs(d).mean():.1f} | "
            f"{100 * (np.abs(d) <= 1).mean():.0f}% | {100 * (d < 0).mean():.0f}% | {100 * (np.abs(de) <= 1).mean():.0f}% |"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["digits", "fmnist"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--streams", type=int, default=200, help="simulated audits per run and design (tables 1-2)")
    ap.add_argument("--rule-streams", type=int, default=10, help="audits per run behind the forecast and the rules")
    ap.add_argument("--rule-design", default="active", choices=DESIGNS)
    ap.add_argument("--audit-fraction", type=float, default=0.1, help="audit draws per training label")
    ap.add_argument(
        "--audit-initial", type=int, default=None, help="audit draws bought in round 1 (default: half the final audit)"
    )
    ap.add_argument(
        "--rounds-per-point", type=float, default=10.0, help="cost_aware: 1 point is worth this many rounds"
    )
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--target-gap", type=float, default=1.0, help="target = final accuracy - this many points")
    ap.add_argument(
        "--stop-set", type=int, default=2000, help="reserve samples forming the stabilising rule's stop set"
    )
    ap.add_argument("--fresh", action="store_true", help="recompute the AL runs kept in bench/out")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # small fits and many small array ops: BLAS threads only contend
    for name in args.datasets:
        t0 = time.time()
        res = run_dataset(name, args)
        res["seconds"] = time.time() - t0
        (OUT / f"stopping_sim_{name}.json").write_text(json.dumps(res, default=float))
        print_tables(res, args)
        print(f"\n({name}: {res['seconds']:.0f} s, of which the AL runs {res['al_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
