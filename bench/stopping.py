"""The audit, the forecast and the stop rules through the real loop (issue 17, phase 2).

Each seed is one run of :class:`alcore.rounds.ActiveLearner` (the library, :class:`PlainSteps`,
pipeline ``svpp``, strategy ``margin``) with the audit on and ``al.stop=never``, so that every round
of the planned budget is measured: per round the audit's estimate of the proxy's accuracy with its
95% interval (what a user sees) and the same proxy's accuracy on the labeled test set (the truth).
The stop rules are then asked round by round on that history with
:func:`alcore.monitor.context`, which gives a rule only what was known after that round: a rule
never changes what the loop selects, so the rounds before its stop are exactly those of a run with
that rule (the decisions are the loop's own code, not a simulation).

Reported, per setting and over the seeds:

1. the estimate's error against the true test accuracy, and the interval's coverage of it (also
   with the test set's own sampling noise added: 1,000 test images are not the population);
2. the forecast of the labels to reach a target (the final true accuracy - 1 point), made at 25%
   and 50% of the budget, against the true labels to it;
3. per stop rule: labels spent (training + audit), the true accuracy at the stop, and the distance
   in rounds to the oracle's best stopping point (the first round after which no later round gains
   more than 1 point: :func:`alcore.stopping.best_stop_round`).

Setting ``fmnist``: Fashion-MNIST from ../shared/data (the first 3,000 training images as the pool,
1,000 test images), the supervised CIFAR-10 ResNet-20 of ../shared/data/weights as the frozen
encoder (64-d features, a domain shift; bench/recipe.py's fmnist setting), 100 random labels then
19 rounds of 100, audit reserve 20% of the pool (600 ids, never selected), 100 audit draws in round
1 then 1 per 10 training labels (active sampling, PPI estimator). Results go to
``bench/out/stopping/<setting>-seed<k>/``; a seed already run is read back (``--fresh`` reruns).

Usage (run alone: the proxy's compute seconds feed the cost model)::

    uv run python bench/stopping.py --seeds 0 1 2
    uv run python bench/stopping.py --seeds 0 1 2 --report
    uv run python bench/stopping.py --seeds 0 1 2 --reserve 0.3 --audit-initial 200 --audit-fraction 0.2  # a larger audit
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "bench" / "out" / "stopping"
sys.path.insert(0, str(REPO))

ROUNDS, INITIAL, BATCH = 20, 100, 100
AUDIT = {"reserve": 0.2, "initial": 100, "fraction": 0.1, "sampling": "active", "estimator": "ppi"}


def audit_cfg(args: argparse.Namespace) -> dict[str, Any]:
    return {**AUDIT, "reserve": args.reserve, "initial": args.audit_initial, "fraction": args.audit_fraction}


def run_name(seed: int, audit: dict[str, Any]) -> str:
    """The run's folder: the default audit keeps its old name."""
    if audit == AUDIT:
        return f"fmnist-seed{seed}"
    return f"fmnist-r{audit['reserve']}-i{audit['initial']}-f{audit['fraction']}-seed{seed}"


def params(seed: int, audit: dict[str, Any] = AUDIT) -> Any:
    import yaml

    from alcore.config import parse_params

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    w = next((SHARED / "weights" / "cifar10-resnet").glob("resnet20-*.th"))
    base["experiment"] = {"name": run_name(seed, audit), "seed": seed, "device": "cpu", "progress": False}
    base["data"] = {
        "name": "fashion_mnist",
        "params": {"root": str(SHARED / "fashion-mnist"), "max_pool": 3000, "max_test": 1000},
    }
    base["encoder"] = {
        **base["encoder"],
        "arch": "cifar_resnet20",
        "weights": str(w),
        "pretrained": False,
        "input_size": None,
        "feature_level": None,
    }
    base["al"].update({"pipeline": "svpp", "strategy": "margin", "initial": INITIAL, "batch": BATCH, "rounds": ROUNDS})
    base["al"]["audit"] = audit
    return parse_params(base)


def stages(p: Any, work: Path) -> dict[str, Any]:
    """Encoder and pool/test features, once for every seed (the encoder is fixed weights)."""
    from alcore import steps
    from alcore._io import write_json_atomic
    from alcore.keys import ref
    from alcore.rounds import PlainSteps

    work.mkdir(parents=True, exist_ok=True)
    info_path = work / "dataset.json"
    if not (work / "pool.parquet").is_file():
        info = steps.describe_data(p.data)
        write_json_atomic(info_path, info)
        steps.build_encoder(
            p.encoder,
            p.data,
            info["fingerprint"],
            seed=0,
            device="cpu",
            out=str(work / "encoder.safetensors"),
            progress=False,
        )
        PlainSteps().extract(
            ref(work / "encoder.safetensors"),
            p.data,
            info["fingerprint"],
            {s: str(work / f"{s}.parquet") for s in ("pool", "test")},
            batch_size=p.features.batch_size,
        )
    return {"pool": work / "pool.parquet", "test": work / "test.parquet", "encoder": work / "encoder.safetensors"}


def run_seed(seed: int, fresh: bool, audit: dict[str, Any]) -> Path:
    from alcore.rounds import ActiveLearner, PlainSteps, RunInputs

    p = params(seed, audit)
    files = stages(p, OUT / "fmnist-stages")
    run_dir = OUT / run_name(seed, audit)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    state = run_dir / "state.json"
    if state.is_file() and len(json.loads(state.read_text())["records"]) == ROUNDS:
        return state
    inputs = RunInputs.from_files(p.data, **files)
    t = time.perf_counter()
    learner = ActiveLearner.open(p, inputs, PlainSteps(), run_dir=run_dir)

    def progress(r: int) -> None:
        rec = learner.state.records[r]
        print(
            f"[seed {seed}] round {r:>2}: {learner.state.labels.n_labeled:>5} labels, "
            f"test {100 * rec['proxy_accuracy']:.1f}%, estimate {100 * rec['estimated_accuracy']:.1f}% "
            f"({100 * rec['estimated_accuracy_lower']:.1f}-{100 * rec['estimated_accuracy_upper']:.1f}), "
            f"{time.perf_counter() - t:.0f} s",
            flush=True,
        )

    learner.on_round = progress
    learner.run(final=False)
    return state


# ---------------------------------------------------------------- analysis
RULES: list[tuple[str, str, dict[str, Any]]] = [
    ("never", "never", {}),
    ("budget[50%]", "budget", {}),  # max_usd: half the spend of the whole run, set per seed
    ("stabilizing_predictions[0.99,3]", "stabilizing_predictions", {"threshold": 0.99, "window": 3}),
    ("target_accuracy[lower, final-2pt]", "target_accuracy", {}),  # target per seed
    ("cost_aware[median]", "cost_aware", {}),  # value_per_point: 10 rounds' label cost
    ("cost_aware[q90]", "cost_aware", {"quantile": 0.9}),
    ("plateau[1pt]", "plateau", {"min_gain": 1.0}),
    ("plateau[1pt,q90]", "plateau", {"min_gain": 1.0, "quantile": 0.9}),
]


def analyse(seed: int, audit: dict[str, Any]) -> dict[str, Any]:
    from alcore.forecast import fit_learning_curve
    from alcore.run_state import ExperimentState
    from alcore.stopping import best_stop_round, make_stop_rule

    p = params(seed, audit)
    st = ExperimentState.load(OUT / run_name(seed, audit) / "state.json")
    rounds = sorted(st.records)
    rows = {r["round"]: r for r in st.ledger.rows()}
    acc = np.array([st.records[r]["proxy_accuracy"] for r in rounds])
    labels = np.array([rows[r]["labels_total"] for r in rounds])
    spent = np.array([rows[r]["labels_total"] + rows[r]["audit_labels_total"] for r in rounds])
    usd = np.array([rows[r]["total_usd_cum"] for r in rounds])
    est = np.array([st.records[r]["estimated_accuracy"] for r in rounds])
    lo = np.array([st.records[r]["estimated_accuracy_lower"] for r in rounds])
    hi = np.array([st.records[r]["estimated_accuracy_upper"] for r in rounds])
    from alcore.steps import load_data

    pool = load_data(p.data).pool
    truth = dict(zip(np.asarray(pool.ids).tolist(), np.asarray(pool.labels).tolist(), strict=True))
    y_res = np.array([truth[int(i)] for i in st.audit.reserve_ids])
    preds = st.monitor["predictions"]
    acc_res = np.array([(np.asarray(preds[str(r)]["pred"]) == y_res).mean() for r in rounds])
    n_test = 1000
    half = (hi - lo) / 2
    test_se = np.sqrt(acc * (1 - acc) / n_test)
    widened = np.sqrt(half**2 + (1.96 * test_se) ** 2)
    out: dict[str, Any] = {
        "seed": seed,
        "rounds": rounds,
        "acc": acc.tolist(),
        "err": np.abs(est - acc).tolist(),
        "covered": ((lo <= acc) & (acc <= hi)).tolist(),
        "covered_noise": (np.abs(est - acc) <= widened).tolist(),
        "half": half.tolist(),
        "err_reserve": np.abs(est - acc_res).tolist(),
        "covered_reserve": ((lo <= acc_res) & (acc_res <= hi)).tolist(),
        "reserve_minus_test": (acc_res - acc).tolist(),
        "audit_labels": int(st.ledger.totals()["audit_labels"]),
    }
    # forecast of labels to (final true accuracy - 1 point), made at 25% and 50% of the budget
    target = float(acc[-1] - 0.01)
    true_n = float(labels[np.flatnonzero(acc >= target)[0]])
    fc = {}
    n_final = labels[-1]
    for frac in (0.25, 0.5):
        t = int(np.flatnonzero(labels <= frac * n_final)[-1])  # the last round within that share
        ctx, _ = _ctx(st, p, rounds[t])
        curve = ctx.curve()
        f = curve.labels_to(target, n_max=ctx.n_max) if not isinstance(curve, str) else None
        fc[frac] = {
            "made_at": int(labels[t]),
            "forecast": None if f is None else f.labels,
            "status": None if f is None else f.status,
        }
        # the same fit on the true curve: the forecast's error when the estimates were exact
        tc = fit_learning_curve(labels[: t + 1], acc[: t + 1], se=np.full(t + 1, 0.005), n_boot=50, random_state=0)
        fc[frac]["true_curve"] = tc.labels_to(target).labels
    out["forecast"] = {"target": target, "true_labels": true_n, "at": fc}
    # the stop rules on the loop's history
    best = best_stop_round(acc)
    label_usd_round = BATCH * p.oracle.price_per_label
    rules = {}
    for name, rule, kw in RULES:
        kw = dict(kw)
        if rule == "budget":
            kw["max_usd"] = float(usd[-1] / 2)
        if rule == "target_accuracy":
            kw.update(target=float(acc[-1] - 0.02), use="lower")
        if rule == "cost_aware":
            kw["value_per_point"] = 10 * label_usd_round
        rules[name] = make_stop_rule(rule, **kw)
    stops: dict[str, dict[str, Any]] = {}
    for t, r in enumerate(rounds):  # one context per round (its curve fitted once), every rule asked
        ctx, _ = _ctx(st, p, r)
        for name, rule in rules.items():
            if name in stops:
                continue
            d = rule.decide(ctx)
            if d.stop or t == len(rounds) - 1:
                reason = d.reason if d.stop else "never stopped: " + d.reason
                stops[name] = {"round": t, "spent": int(spent[t]), "acc": float(acc[t]), "from_best": t - best}
                stops[name]["reason"] = reason
    out["best"] = {"round": best, "spent": int(spent[best]), "acc": float(acc[best])}
    out["stops"] = stops
    return out


def _ctx(st: Any, p: Any, r: int) -> Any:
    from alcore import monitor
    from alcore.steps import load_data

    n_pool = len(load_data(p.data).pool)
    return monitor.context(
        st,
        p.al,
        r,
        schedule=p.al.schedule(),
        n_pool=n_pool,
        price_per_label=p.oracle.price_per_label,
        seed=p.experiment.seed,
    )


def _shown(x: Any, truth: float) -> tuple[str, str]:
    """A forecast of labels and its relative error."""
    if x is None or not math.isfinite(x):
        return "not reachable", "-"
    return f"{x:,.0f}", f"{100 * abs(x - truth) / truth:.0f}%"


def report(results: list[dict[str, Any]], audit: dict[str, Any]) -> None:
    seeds = [r["seed"] for r in results]
    print(
        f"\n### fmnist: Fashion-MNIST 3,000 pool / 1,000 test, CIFAR-10 ResNet-20 features, svpp + margin, seeds {seeds}"
    )
    print(
        f"labels {INITIAL}..{INITIAL + BATCH * (ROUNDS - 1)} in {ROUNDS} rounds; audit reserve "
        f"{round(3000 * audit['reserve'])}, {audit['initial']} draws in round 1, then {audit['fraction']} per label; "
        f"audit labels bought: {', '.join(str(r['audit_labels']) for r in results)}"
    )
    print("final proxy test accuracy per seed: " + ", ".join(f"{100 * r['acc'][-1]:.1f}%" for r in results))
    print("\n#### 1. The estimate against the proxy's true test accuracy, per round")
    print(
        "| rounds | mean abs err (pts) | within 2 pts | 95% coverage | coverage (+test noise) | mean half-width (pts) "
        "| err vs reserve acc | coverage of reserve acc | reserve - test acc |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    n = len(results[0]["err"])
    for label, sl in (("1-5", slice(0, 5)), ("6-10", slice(5, 10)), ("11-20", slice(10, n)), ("all", slice(0, n))):
        e = np.concatenate([np.array(r["err"])[sl] for r in results])
        c = np.concatenate([np.array(r["covered"])[sl] for r in results])
        cn = np.concatenate([np.array(r["covered_noise"])[sl] for r in results])
        h = np.concatenate([np.array(r["half"])[sl] for r in results])
        er = np.concatenate([np.array(r["err_reserve"])[sl] for r in results])
        cr = np.concatenate([np.array(r["covered_reserve"])[sl] for r in results])
        rt = np.concatenate([np.array(r["reserve_minus_test"])[sl] for r in results])
        print(
            f"| {label} | {100 * e.mean():.2f} | {100 * (e <= 0.02).mean():.0f}% | {100 * c.mean():.0f}% | "
            f"{100 * cn.mean():.0f}% | {100 * h.mean():.2f} | {100 * er.mean():.2f} | {100 * cr.mean():.0f}% | "
            f"{100 * rt.mean():+.2f} |"
        )
    print("\n#### 2. Forecast of the labels to the final accuracy - 1 pt")
    print("| made at | seed | target | true labels | forecast (audit) | error | forecast (true curve) | error |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for frac in ("0.25", "0.5"):
        for r in results:
            f = r["forecast"]
            a = f["at"][frac] if frac in f["at"] else f["at"][float(frac)]
            tl = f["true_labels"]

            fa, ea = _shown(a["forecast"], tl)
            ft, et = _shown(a["true_curve"], tl)
            print(
                f"| {100 * float(frac):.0f}% ({a['made_at']} labels) | {r['seed']} | {100 * f['target']:.1f}% | {tl:,.0f} | {fa} | {ea} | {ft} | {et} |"
            )
    print("\n#### 3. Stop rules against the oracle's best stopping point")
    print(
        "oracle best (no later round gains > 1 pt): "
        + ", ".join(
            f"seed {r['seed']}: round {r['best']['round'] + 1}, {r['best']['spent']:,} labels, {100 * r['best']['acc']:.1f}%"
            for r in results
        )
    )
    print(
        "| rule | labels spent (train + audit) | acc at stop | rounds from best (mean abs) | within 1 round | stops before best |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name, _, _ in RULES:
        s = [r["stops"][name] for r in results]
        d = np.array([x["from_best"] for x in s])
        print(
            f"| {name} | {np.mean([x['spent'] for x in s]):,.0f} | {100 * np.mean([x['acc'] for x in s]):.1f}% | "
            f"{np.abs(d).mean():.1f} | {100 * (np.abs(d) <= 1).mean():.0f}% | {100 * (d < 0).mean():.0f}% |"
        )
    print("\nreasons at the stop (seed " + str(results[0]["seed"]) + "):")
    for name, _, _ in RULES:
        print(f"- {name}: {results[0]['stops'][name]['reason']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--report", action="store_true", help="only analyse the seeds already run")
    ap.add_argument("--fresh", action="store_true", help="rerun the seeds")
    ap.add_argument("--reserve", type=float, default=AUDIT["reserve"], help="al.audit.reserve")
    ap.add_argument("--audit-initial", type=int, default=AUDIT["initial"], help="al.audit.initial")
    ap.add_argument("--audit-fraction", type=float, default=AUDIT["fraction"], help="al.audit.fraction")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(
            f"{SHARED} is missing: this benchmark needs ../shared/data (Fashion-MNIST, CIFAR-10 ResNet-20 weights)"
        )
    if not args.report:
        for s in args.seeds:
            run_seed(s, args.fresh, audit_cfg(args))
    report([analyse(s, audit_cfg(args)) for s in args.seeds], audit_cfg(args))


if __name__ == "__main__":
    main()
