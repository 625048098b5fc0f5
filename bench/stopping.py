"""The audit, the forecast and the stop rules through the real loop (issue 17).

Each seed is one run of :class:`alcore.rounds.ActiveLearner` (the library, :class:`PlainSteps`,
pipeline ``svpp``, strategy ``margin``) with the audit on and ``al.stop=never``, so that every round
of the planned budget is measured: per round the audit's estimate of the proxy's accuracy with its
95% interval (what a user sees) and the same proxy's accuracy on the labeled test set (the truth).
The stop rules are then asked round by round on that history with
:func:`alcore.monitor.context`, which gives a rule only what was known after that round: a rule
never changes what the loop selects, so the rounds before its stop are exactly those of a run with
that rule (the decisions are the loop's own code, not a simulation).

Reported, per setting and over the seeds:

0. audit designs side by side on the same runs (``--replicates`` re-drawn audits per design and
   seed through :class:`alcore.estimate.Audit`; selection never depends on the audit, so the stored
   per-round predictions on the reserve are all a design needs): labels bought, error against the
   test accuracy and against the reserve's own accuracy, coverage, width;
1. the loop's own estimate against the true test accuracy, and the interval's coverage of it (also
   with the test set's own sampling noise added);
2. the forecast of the labels to reach a target (the final true accuracy - 1 point), made at 25%
   and 50% of the budget, against the true labels to it (also fitted to the test curve, and to the
   reserve's every true label: the floor of any audit of it), and (2b) the forecast gain of the rest
   of the budget against the true gain;
3. per stop rule: labels spent (training + audit), the true accuracy at the stop, the distance in
   rounds to the oracle's best stopping point (the first round after which no later round gains
   more than 1 point: :func:`alcore.stopping.best_stop_round`), and to the round where the value
   (points x the cost-aware rule's $ a point - dollars spent) peaks, with the value lost; and the
   floor: both oracles on the reserve's true accuracy instead of the test set's (no rule that sees
   the reserve can be nearer).

Settings (:data:`SETTINGS`): ``fmnist`` (Fashion-MNIST, 5,000 pool / 10,000 test) and ``cifar`` (the
CIFAR-10 subset, 5,085 / 1,017), both with the default backbone EfficientNet-Lite0 at 48 px; 100
random labels then 19 rounds of 100; audit reserve 20% of the pool, uniform PPI audit with
``half_width: 0.05``. Results go to ``bench/out/stopping/<setting>-seed<k>/``; a seed already run is
read back (``--fresh`` reruns).

Usage (run alone: the proxy's compute seconds feed the cost model)::

    uv run python bench/stopping.py --setting fmnist --seeds 0 1 2
    uv run python bench/stopping.py --setting cifar --seeds 0 1 2 --report
    uv run python bench/stopping.py --setting fmnist --half-width 0.04   # another audit for the loop's own tables
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
AUDIT = {"reserve": 0.2, "initial": 0, "fraction": 0.0, "sampling": "uniform", "estimator": "ppi", "half_width": 0.05}
CIFAR_NPZ = SHARED / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"

#: The two settings: the default ImageNet backbone (EfficientNet-Lite0 from its PyPI package, 48 px).
SETTINGS: dict[str, dict[str, Any]] = {
    "fmnist": {
        "title": "Fashion-MNIST 5,000 pool / 10,000 test, EfficientNet-Lite0 48 px (feature level 3)",
        "data": {"name": "fashion_mnist", "params": {"root": str(SHARED / "fashion-mnist"), "max_pool": 5000}},
        "encoder": {"feature_level": 3},
        "n_pool": 5000,
    },
    "cifar": {
        "title": "CIFAR-10 subset 5,085 pool / 1,017 test, EfficientNet-Lite0 48 px (last features)",
        "data": {"name": "npz", "params": {"path": str(CIFAR_NPZ)}},
        "encoder": {"feature_level": None},
        "n_pool": 5085,
    },
}


def audit_cfg(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **AUDIT,
        "reserve": args.reserve,
        "initial": args.audit_initial,
        "fraction": args.audit_fraction,
        "sampling": args.sampling,
        "half_width": args.half_width,
    }


def run_name(setting: str, seed: int, audit: dict[str, Any]) -> str:
    """The run's folder: the default audit keeps the short name."""
    if audit == AUDIT:
        return f"{setting}-seed{seed}"
    a = audit
    return f"{setting}-r{a['reserve']}-i{a['initial']}-f{a['fraction']}-w{a['half_width']}-{a['sampling']}-seed{seed}"


def params(setting: str, seed: int, audit: dict[str, Any] = AUDIT) -> Any:
    import yaml

    from alcore.config import parse_params

    s = SETTINGS[setting]
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["experiment"] = {"name": run_name(setting, seed, audit), "seed": seed, "device": "cpu", "progress": False}
    base["data"] = s["data"]
    base["encoder"] = {**base["encoder"], **s["encoder"]}
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


def run_seed(setting: str, seed: int, fresh: bool, audit: dict[str, Any], final: bool = False) -> Path:
    from alcore.rounds import ActiveLearner, PlainSteps, RunInputs

    p = params(setting, seed, audit)
    files = stages(p, OUT / f"{setting}-stages")
    run_dir = OUT / run_name(setting, seed, audit)
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    state = run_dir / "state.json"
    if state.is_file():
        saved = json.loads(state.read_text())
        if len(saved["records"]) == ROUNDS and (not final or saved.get("final")):
            return state
    inputs = RunInputs.from_files(p.data, **files)
    t = time.perf_counter()
    learner = ActiveLearner.open(p, inputs, PlainSteps(progress=final), run_dir=run_dir)  # the final network: minutes

    def progress(r: int) -> None:
        rec = learner.state.records[r]
        print(
            f"[{setting} seed {seed}] round {r:>2}: {learner.state.labels.n_labeled:>5} labels, "
            f"test {100 * rec['proxy_accuracy']:.1f}%, estimate {100 * rec['estimated_accuracy']:.1f}% "
            f"({100 * rec['estimated_accuracy_lower']:.1f}-{100 * rec['estimated_accuracy_upper']:.1f}), "
            f"{time.perf_counter() - t:.0f} s",
            flush=True,
        )

    learner.on_round = progress
    out = learner.run(final=final)
    if final:
        print(
            f"[{setting} seed {seed}] final network ({learner.state.final['mode']}): test "
            f"{100 * out['test_accuracy']:.1f}%, estimate {100 * out['network_estimated_accuracy']:.1f}% "
            f"({100 * out['network_estimated_accuracy_lower']:.1f}-{100 * out['network_estimated_accuracy_upper']:.1f})",
            flush=True,
        )
    return state


# ---------------------------------------------------------------- analysis
def with_test_noise(half: Any, acc: Any, n_test: int) -> Any:
    """An interval's half-width widened by the test set's own 95% sampling noise (``n_test`` images
    are not the population), to judge coverage of a test accuracy."""
    return np.sqrt(np.square(half) + 1.96**2 * np.multiply(acc, np.subtract(1, acc)) / n_test)


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

#: Not rules: the oracles themselves on the reserve's true labels (the noise floor of table 3).
FLOOR = ("floor: best on the reserve's truth", "floor: value-best on the reserve's truth")


def analyse(setting: str, seed: int, audit: dict[str, Any]) -> dict[str, Any]:
    from alcore.forecast import fit_learning_curve
    from alcore.run_state import ExperimentState
    from alcore.stopping import best_stop_round, make_stop_rule

    p = params(setting, seed, audit)
    st = ExperimentState.load(OUT / run_name(setting, seed, audit) / "state.json")
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
    n_test = len(load_data(p.data).test)
    half = (hi - lo) / 2
    widened = with_test_noise(half, acc, n_test)
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
        "n_test": n_test,
        "audit_labels": int(st.ledger.totals()["audit_labels"]),
    }
    if st.final and "estimated_accuracy" in st.final:  # --final: the network people would use, on the audit
        f = st.final
        out["final"] = {
            "mode": f["mode"],
            "test": f["accuracy"],
            "est": f["estimated_accuracy"],
            "lower": f["estimated_accuracy_lower"],
            "upper": f["estimated_accuracy_upper"],
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
            "interval": None if f is None else [f.labels_lower, f.labels_upper],
        }
        # what the rest of the budget buys: the forecast gain (with its interval) against the true one
        if not isinstance(curve, str):
            g, glo, ghi = curve.gain(float(labels[t]), float(n_final))
            fc[frac]["gain"] = {"point": g, "lower": glo, "upper": ghi, "true": float(acc[-1] - acc[t])}
        # the same fit on the true curve: the forecast's error when the estimates were exact
        tc = fit_learning_curve(labels[: t + 1], acc[: t + 1], se=np.full(t + 1, 0.005), n_boot=50, random_state=0)
        fc[frac]["true_curve"] = tc.labels_to(target).labels
        # the floor: every reserve label known (the most an audit can know), its binomial error as se
        a_r = acc_res[: t + 1]
        se_r = np.sqrt(np.clip(a_r * (1 - a_r), 1e-4, None) / len(y_res))
        rc = fit_learning_curve(labels[: t + 1], a_r, se=se_r, n_boot=50, random_state=0)
        fc[frac]["reserve_curve"] = rc.labels_to(target).labels
    out["forecast"] = {"target": target, "true_labels": true_n, "at": fc}
    # the stop rules on the loop's history
    best = best_stop_round(acc)
    label_usd_round = BATCH * p.oracle.price_per_label
    # the cost-aware rule's own oracle: the round where (points x value of a point - dollars spent) peaks
    value_per_point = 10 * label_usd_round

    def value(a: np.ndarray) -> np.ndarray:
        return 100 * a * value_per_point - usd

    net = value(acc)
    value_best = int(np.argmax(net))
    rules = {}
    for name, rule, kw in RULES:
        kw = dict(kw)
        if rule == "budget":
            kw["max_usd"] = float(usd[-1] / 2)
        if rule == "target_accuracy":
            kw.update(target=float(acc[-1] - 0.02), use="lower")
        if rule == "cost_aware":
            kw["value_per_point"] = value_per_point
        rules[name] = make_stop_rule(rule, **kw)
    stops: dict[str, dict[str, Any]] = {}

    def stop_at(t: int, reason: str) -> dict[str, Any]:
        row = {"round": t, "spent": int(spent[t]), "acc": float(acc[t]), "from_best": t - best}
        row.update(from_value_best=t - value_best, value_lost=float(net[value_best] - net[t]), reason=reason)
        return row

    for t, r in enumerate(rounds):  # one context per round (its curve fitted once), every rule asked
        ctx, _ = _ctx(st, p, r)
        for name, rule in rules.items():
            if name in stops:
                continue
            d = rule.decide(ctx)
            if d.stop or t == len(rounds) - 1:
                stops[name] = stop_at(t, d.reason if d.stop else "never stopped: " + d.reason)
    # The noise floor: the same two oracles, told every true label of the reserve (the most an audit
    # of it could ever know) instead of the test set's. They differ from the test oracles only by
    # which images judge the same models, so no rule that sees the reserve can do better than them.
    t_res = best_stop_round(acc_res)
    stops[FLOOR[0]] = stop_at(t_res, f"the reserve's true accuracy stops gaining > 1 pt after round {t_res + 1}")
    t_val = int(np.argmax(value(acc_res)))
    stops[FLOOR[1]] = stop_at(t_val, f"the value on the reserve's true accuracy peaks at round {t_val + 1}")
    out["best"] = {"round": best, "spent": int(spent[best]), "acc": float(acc[best])}
    out["value_best"] = {"round": value_best, "value_per_point": value_per_point}
    out["stops"] = stops
    return out


#: Audit designs the study compares on the same runs: (name, sampling, estimator, initial, fraction,
#: half_width). A fixed audit (fraction 0) is drawn in round 1, before any model exists: uniform
#: whatever the sampling; ``half_width`` sizes the audit from the last estimate (alcore.monitor.draws_for_width).
DESIGNS: list[tuple[str, str, str, int, float, float | None]] = [
    *((f"uniform wilson {m}", "uniform", "wilson", m, 0.0, None) for m in (100, 200, 300, 500)),
    *((f"uniform ppi {m}", "uniform", "ppi", m, 0.0, None) for m in (100, 200, 300, 500)),
    ("uniform ppi 100 + 0.1/label", "uniform", "ppi", 100, 0.1, None),
    ("active ppi 100 + 0.1/label", "active", "ppi", 100, 0.1, None),
    ("uniform ppi 100 + 0.2/label", "uniform", "ppi", 100, 0.2, None),
    ("active ppi 100 + 0.2/label", "active", "ppi", 100, 0.2, None),
    ("uniform ppi, half_width 0.05", "uniform", "ppi", 0, 0.0, 0.05),
    ("active ppi, half_width 0.05", "active", "ppi", 0, 0.0, 0.05),
    ("uniform ppi, half_width 0.04", "uniform", "ppi", 0, 0.0, 0.04),
]


def design_study(setting: str, seed: int, audit: dict[str, Any], replicates: int) -> dict[str, Any]:
    """Every audit design of :data:`DESIGNS`, ``replicates`` times, on this seed's run.

    Selection never depends on the audit (the reserve is the same for every design of a seed: it is
    chosen with the seed before any draw), so each design's audits can be re-drawn on the run's
    stored per-round predictions on the reserve, through :class:`alcore.estimate.Audit` (the loop's
    own draws, labels and estimates), with the reserve's true labels as the oracle. Returns per
    design the arrays (replicates, rounds) of estimates and interval ends, the distinct audit labels
    bought, and the truths (test and reserve accuracy) per round.
    """
    from types import SimpleNamespace

    from alcore.config import ALCfg, AuditCfg
    from alcore.estimate import Audit
    from alcore.monitor import draws_for_width, estimate_entries
    from alcore.run_state import ExperimentState
    from alcore.seeding import derive_seed
    from alcore.steps import load_data

    p = params(setting, seed, audit)
    st = ExperimentState.load(OUT / run_name(setting, seed, audit) / "state.json")
    rounds = sorted(st.records)
    rows = {r["round"]: r for r in st.ledger.rows()}
    labels = [int(rows[r]["labels_total"]) for r in rounds]
    pool = load_data(p.data).pool
    truth = dict(zip(np.asarray(pool.ids).tolist(), np.asarray(pool.labels).tolist(), strict=True))
    reserve = st.audit.reserve_ids
    y_res = np.array([truth[int(i)] for i in reserve])
    preds = st.monitor["predictions"]
    pred = {r: np.asarray(preds[str(r)]["pred"], dtype=np.int64) for r in rounds}
    conf = {r: np.asarray(preds[str(r)]["conf"], dtype=np.float64) for r in rounds}
    out: dict[str, Any] = {
        "acc": [st.records[r]["proxy_accuracy"] for r in rounds],
        "acc_reserve": [float((pred[r] == y_res).mean()) for r in rounds],
        "designs": {},
    }
    for name, sampling, estimator, initial, fraction, half_width in DESIGNS:
        cfg = AuditCfg(reserve=audit["reserve"], initial=initial, fraction=fraction, half_width=half_width)
        al = ALCfg(audit=cfg)
        E, L, H, bought = [], [], [], []
        for k in range(replicates):
            a = Audit(reserve_ids=reserve, sampling=sampling, estimator=estimator)
            seen = SimpleNamespace(audit=a, records={})  # what draws_for_width reads of the state
            e, lo, hi = [], [], []
            for t, r in enumerate(rounds):
                m = max(cfg.draws_at(labels[t]), draws_for_width(seen, al, r)) - a.n_draws
                if m > 0:
                    prev = conf.get(rounds[t - 1]) if t else None
                    a.draw(None, m, random_state=derive_seed(seed, "study", k, t), round=r, confidence=prev)
                    todo = a.pending_ids
                    a.record(todo, np.array([truth[int(i)] for i in todo]))
                est = a.estimate(predicted=pred[r], confidence=conf[r])
                seen.records[r] = estimate_entries(est)
                e.append(est.estimate)
                lo.append(est.lower)
                hi.append(est.upper)
            E.append(e)
            L.append(lo)
            H.append(hi)
            bought.append(a.n_labeled)
        out["designs"][name] = {"est": E, "lower": L, "upper": H, "bought": bought}
    return out


def report_study(setting: str, studies: list[dict[str, Any]], n_test: int, replicates: int) -> None:
    """The designs side by side: error against the test accuracy, coverage, width, labels bought."""
    print(
        f"\n#### 0. Audit designs on the same runs ({len(studies)} seeds x {replicates} re-drawn audits x {ROUNDS} rounds)"
    )
    print(
        "| design | audit labels bought | mean abs err (pts) | within 2 pts | 95% coverage (+test noise) "
        "| mean half-width (pts) | err vs the reserve's acc | coverage of the reserve's acc | err, rounds 1-5 "
        "| err, rounds 11-20 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, *_ in DESIGNS:
        err, cov, half, cres, eres, bought, early, late = [], [], [], [], [], [], [], []
        for s in studies:
            d = s["designs"][name]
            acc, ares = np.array(s["acc"]), np.array(s["acc_reserve"])
            est, lo, hi = np.array(d["est"]), np.array(d["lower"]), np.array(d["upper"])
            h = (hi - lo) / 2
            e = np.abs(est - acc)
            widened = with_test_noise(h, acc, n_test)
            err.append(e.ravel())
            early.append(e[:, :5].ravel())
            late.append(e[:, 10:].ravel())
            cov.append((e <= widened).ravel())
            half.append(h.ravel())
            cres.append(((lo <= ares) & (ares <= hi)).ravel())
            eres.append(np.abs(est - ares).ravel())
            bought.extend(d["bought"])
        err, cov, half, cres, eres = (np.concatenate(x) for x in (err, cov, half, cres, eres))
        print(
            f"| {name} | {np.mean(bought):,.0f} | {100 * err.mean():.2f} | {100 * (err <= 0.02).mean():.0f}% | "
            f"{100 * cov.mean():.1f}% | {100 * half.mean():.2f} | {100 * eres.mean():.2f} | {100 * cres.mean():.1f}% | "
            f"{100 * np.concatenate(early).mean():.2f} | {100 * np.concatenate(late).mean():.2f} |"
        )


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


def report(setting: str, results: list[dict[str, Any]], audit: dict[str, Any]) -> None:
    seeds = [r["seed"] for r in results]
    print(f"\n### {setting}: {SETTINGS[setting]['title']}, svpp + margin, seeds {seeds}")
    print(
        f"labels {INITIAL}..{INITIAL + BATCH * (ROUNDS - 1)} in {ROUNDS} rounds; audit reserve "
        f"{round(SETTINGS[setting]['n_pool'] * audit['reserve'])}, {audit['sampling']} {audit['estimator']}, "
        f"{audit['initial']} draws in round 1, then {audit['fraction']} per label, half_width {audit['half_width']}; "
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
    finals = [r for r in results if "final" in r]
    if finals:
        print("\n#### 1b. The final network (trained on every label) judged on the same audit")
        print("| seed | mode | test accuracy | estimate (95% interval) | error (pts) | covered (+test noise) |")
        print("|---:|---|---:|---:|---:|:---:|")
        for r in finals:
            f = r["final"]
            half = (f["upper"] - f["lower"]) / 2
            wide = with_test_noise(half, f["test"], r["n_test"])
            print(
                f"| {r['seed']} | {f['mode']} | {100 * f['test']:.1f}% | {100 * f['est']:.1f}% "
                f"({100 * f['lower']:.1f} to {100 * f['upper']:.1f}) | {100 * abs(f['est'] - f['test']):.2f} | "
                f"{'yes' if abs(f['est'] - f['test']) <= wide else 'no'} |"
            )
    print("\n#### 2. Forecast of the labels to the final accuracy - 1 pt")
    print(
        "| made at | seed | target | true labels | forecast (audit) | error | its 90% interval | covers | "
        "forecast (true curve) | error | forecast (the reserve's truth) | error |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|")
    for frac in ("0.25", "0.5"):
        for r in results:
            f = r["forecast"]
            a = f["at"][frac] if frac in f["at"] else f["at"][float(frac)]
            tl = f["true_labels"]

            fa, ea = _shown(a["forecast"], tl)
            ft, et = _shown(a["true_curve"], tl)
            fr, er = _shown(a["reserve_curve"], tl) if "reserve_curve" in a else ("-", "-")
            iv, cv = "-", "-"
            if a.get("interval") is not None:
                lo, hi = a["interval"]
                iv = f"{lo:,.0f} to " + (f"{hi:,.0f}" if math.isfinite(hi) else "never")
                cv = "yes" if lo <= tl <= hi else "no"
            print(
                f"| {100 * float(frac):.0f}% ({a['made_at']} labels) | {r['seed']} | {100 * f['target']:.1f}% | "
                f"{tl:,.0f} | {fa} | {ea} | {iv} | {cv} | {ft} | {et} | {fr} | {er} |"
            )
    print("\n#### 2b. Forecast of what the rest of the budget buys (points of accuracy)")
    print("| made at | seed | forecast gain (90% interval) | true gain (test) | error (pts) | covered |")
    print("|---|---:|---:|---:|---:|:---:|")
    for frac in ("0.25", "0.5"):
        for r in results:
            a = r["forecast"]["at"][frac] if frac in r["forecast"]["at"] else r["forecast"]["at"][float(frac)]
            g = a.get("gain")
            if g is None:
                print(f"| {100 * float(frac):.0f}% ({a['made_at']} labels) | {r['seed']} | no curve yet | | | |")
                continue
            print(
                f"| {100 * float(frac):.0f}% ({a['made_at']} labels) | {r['seed']} | {100 * g['point']:+.1f} "
                f"({100 * g['lower']:+.1f} to {100 * g['upper']:+.1f}) | {100 * g['true']:+.1f} | "
                f"{100 * abs(g['point'] - g['true']):.1f} | {'yes' if g['lower'] <= g['true'] <= g['upper'] else 'no'} |"
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
        "value-best (the round where points x $"
        + f"{results[0]['value_best']['value_per_point']:.0f} - dollars spent peaks): "
        + ", ".join(f"seed {r['seed']}: round {r['value_best']['round'] + 1}" for r in results)
    )
    if FLOOR[0] in results[0]["stops"]:
        print(
            "the same two on the reserve's true accuracy (the floor): "
            + ", ".join(
                f"seed {r['seed']}: round {r['stops'][FLOOR[0]]['round'] + 1} and {r['stops'][FLOOR[1]]['round'] + 1}"
                for r in results
            )
        )
    print(
        "| rule | labels spent (train + audit) | acc at stop | rounds from best (mean abs) | within 1 round "
        "| stops before best | rounds from value-best (mean abs) | within 1 round of it | value lost ($) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in [n for n, _, _ in RULES] + list(FLOOR):
        if name not in results[0]["stops"]:
            continue  # results saved before the floor rows existed
        s = [r["stops"][name] for r in results]
        d = np.array([x["from_best"] for x in s])
        dv = np.array([x["from_value_best"] for x in s])
        print(
            f"| {name} | {np.mean([x['spent'] for x in s]):,.0f} | {100 * np.mean([x['acc'] for x in s]):.1f}% | "
            f"{np.abs(d).mean():.1f} | {100 * (np.abs(d) <= 1).mean():.0f}% | {100 * (d < 0).mean():.0f}% | "
            f"{np.abs(dv).mean():.1f} | {100 * (np.abs(dv) <= 1).mean():.0f}% | {np.mean([x['value_lost'] for x in s]):.1f} |"
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
    ap.add_argument("--half-width", type=float, default=AUDIT["half_width"], help="al.audit.half_width")
    ap.add_argument("--sampling", choices=("uniform", "active"), default=AUDIT["sampling"], help="al.audit.sampling")
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="fmnist")
    ap.add_argument("--replicates", type=int, default=100, help="re-drawn audits per design and seed (0: no study)")
    ap.add_argument("--only-run", action="store_true", help="run the loops, no analysis")
    ap.add_argument("--final", action="store_true", help="also train the final network and judge it on the audit")
    args = ap.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is missing: this benchmark needs ../shared/data (Fashion-MNIST, the CIFAR-10 subset)")
    audit = audit_cfg(args)
    if not args.report:
        for s in args.seeds:
            run_seed(args.setting, s, args.fresh, audit, final=args.final)
    if args.only_run:
        return
    if args.replicates:
        from alcore.steps import load_data

        n_test = len(load_data(params(args.setting, 0, audit).data).test)
        studies = [design_study(args.setting, s, audit, args.replicates) for s in args.seeds]
        report_study(args.setting, studies, n_test, args.replicates)
    report(args.setting, [analyse(args.setting, s, audit) for s in args.seeds], audit)


if __name__ == "__main__":
    main()
