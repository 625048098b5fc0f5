"""ASVP against Standard AL and SVPp: accuracy per budget, labels to target, compute and total cost.

The settings (issue 14): the default ImageNet backbone of ``params.yaml`` (EfficientNet-Lite0 from
its PyPI package, offline, 48 px inputs) on

- ``fmnist``: Fashion-MNIST, 3,000 pool / 1,000 test, feature level 3 (the level that transfers to
  grayscale clothes);
- ``cifar``: the CIFAR-10 subset, its 5,085 exact training images as the pool and 1,017 test, the
  network's own 1280-d features;

and, kept for comparison with the earlier runs, ``fmnist-r20`` (the supervised CIFAR-10 ResNet-20
of ../shared/data/weights on Fashion-MNIST) and ``cifar-simclr`` (a ResNet-20 pre-trained with
SimCLR on the pool).

Each runs the ``compare`` flow (pipelines x seeds, the final network tested at every budget) and
prints its tables, the compute ratios Standard/ASVP and Standard/SVPp, and the goals:
ASVP within 1 point of Standard AL at every budget with >= 5x less compute, and ASVP at least as
accurate as SVPp at the final budget; with ``--baselines``, LogisticRegression on the frozen
features of the same ids and of random ids, and the network on random ids. ``--mode`` and
``--holdout`` set every network's ``train.mode`` and ``train.holdout`` (default ``ft`` and 0:
Standard AL fine-tunes the whole network every round, as in the paper; ``--holdout 0.2`` or
``--mode auto`` add the recipe's guard against the probe, 2-3x the fine-tuning work). Last run:
``docs/bench/asvp_lite0.md``.

``--sweep`` calibrates the trigger first: the ASVP pipeline alone (no network per budget) with each
trigger of ``--sweep-triggers`` (``logme_drop`` tolerances, ``ped_gap`` thresholds, ``schedule``,
``every_round``); per trigger: where it fired, the fine-tunes it paid, its compute, the proxy's test
accuracy per budget and the final network's.

Usage (run alone: compute seconds are part of the result)::

    uv run python bench/asvp.py --settings fmnist cifar --seeds 0 --baselines   # about 75 minutes on 2 CPU cores
    uv run python bench/asvp.py --sweep --settings fmnist --seeds 0             # the trigger sweep (about 25 minutes)
    uv run python bench/asvp.py --settings fmnist-r20 cifar-simclr              # the earlier ResNet-20 settings
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def _data(name: str, args: argparse.Namespace, pool: int | None, test: int | None) -> dict[str, Any]:
    """The data section: ``--pool`` / ``--test`` when given, else the setting's sizes (None: all)."""
    pool, test = args.pool or pool, args.test or test
    sized = {k: v for k, v in (("max_pool", pool), ("max_test", test)) if v}
    if name == "fashion_mnist":
        return {"name": name, "params": {"root": str(SHARED / "fashion-mnist"), **sized}}
    return {
        "name": "npz",
        "params": {"path": str(SHARED / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"), **sized},
    }


def settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    import yaml

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    al = {
        "strategy": "margin",
        "initial": args.initial,
        "batch": args.batch,
        "rounds": args.rounds,
        "trigger": args.trigger,
        "trigger_params": json.loads(args.trigger_params),
        "max_realignments": args.max_realignments,
    }
    common = {
        "proxy": base["proxy"],
        "al": al,
        "oracle": {"price_per_label": 0.10},
        "cost": {"price_per_hour": 3.0},
        "compare": {"pipelines": ["standard", "svpp", "asvp"], "strategies": ["margin"], "seeds": args.seeds},
    }
    # the recipe of params.yaml (issue 13), the mode from --mode
    lite_train = {**base["train"], "mode": args.mode, "holdout": args.holdout}
    lite = {**common, "train": lite_train, "features": {"batch_size": base["features"]["batch_size"]}}
    lite_enc = {k: base["encoder"][k] for k in ("arch", "pretrained", "input_size")}
    exp = {"progress": False, "device": "auto"}
    # the earlier ResNet-20 settings (their own training settings)
    r20_train = {
        "mode": args.mode,
        "holdout": args.holdout,
        "ft_epochs": 8,
        "batch_size": 64,
        "backbone_lr": 0.01,
        "lpft_backbone_lr": 0.003,
        "head_lr": 0.1,
        "augment": "crop",
    }
    w = SHARED / "weights" / "cifar10-resnet"
    return {
        "fmnist": {
            **lite,
            "experiment": {**exp, "name": "fmnist-lite0"},
            "data": _data("fashion_mnist", args, 3000, 1000),
            "encoder": {**lite_enc, "feature_level": 3},
        },
        "cifar": {
            **lite,
            "experiment": {**exp, "name": "cifar-lite0"},
            "data": _data("npz", args, None, None),
            "encoder": {**lite_enc, "feature_level": None},
            "train": {**lite_train, "augment": "crop_flip"},
        },
        "fmnist-r20": {
            **common,
            "train": r20_train,
            "experiment": {**exp, "name": "fmnist-r20"},
            "data": _data("fashion_mnist", args, 5000, 2000),
            "encoder": {"arch": "cifar_resnet20", "weights": str(next(w.glob("resnet20-*.th"), w / "resnet20.th"))},
        },
        "cifar-simclr": {
            **common,
            "train": {**r20_train, "augment": "crop_flip"},
            "experiment": {**exp, "name": "cifar-simclr"},
            "data": _data("npz", args, 5000, 2000),
            "encoder": {
                "arch": "cifar_resnet20",
                "ssl": {"method": "simclr", "epochs": args.ssl_epochs, "batch_size": 256},
            },
        },
    }


def describe(name: str, cfg: dict[str, Any], args: argparse.Namespace) -> str:
    e, d = cfg["encoder"], cfg["data"]["params"]
    if e.get("pretrained"):
        lvl = "last features" if e.get("feature_level") is None else f"feature level {e['feature_level']}"
        enc = f"ImageNet {e['arch']} ({e['pretrained']}), {e['input_size']} px, {lvl}"
    elif "ssl" in e:
        enc = f"{e['arch']} SimCLR {args.ssl_epochs} epochs"
    else:
        enc = f"{e['arch']} supervised CIFAR-10 weights"
    sizes = f"pool {d.get('max_pool', 'all')}, test {d.get('max_test', 'all')}"
    return (
        f"{name}: {cfg['data']['name']} {sizes}, {enc}, train.mode {cfg['train']['mode']} holdout {cfg['train']['holdout']}, "
        f"budgets {args.initial} + {args.batch} x {args.rounds - 1}, seeds {args.seeds}"
    )


def goals(summary: dict[str, Any]) -> list[str]:
    """The issue's goals, measured: what was met, and by how much what was missed."""
    b = summary["budgets"]
    std, asvp, svpp = b.get("standard/margin"), b.get("asvp/margin"), b.get("svpp/margin")
    out = []
    if std and asvp:
        gaps = [(s["labels"], 100 * (s["mean"] - a["mean"])) for s, a in zip(std, asvp, strict=False)]
        worst = max(gaps, key=lambda g: g[1])
        out.append(
            f"ASVP within 1 point of Standard at every budget: {'MET' if worst[1] <= 1 else 'MISSED'} "
            f"(largest gap {worst[1]:+.2f} points at {worst[0]} labels; per budget: "
            + ", ".join(f"{n}:{g:+.1f}" for n, g in gaps)
            + ")"
        )
    ratio = {r["pipeline"]: r for r in summary["ratios"]}
    if "asvp" in ratio:
        r = ratio["asvp"]
        out.append(
            f"ASVP >= 5x less compute than Standard: {'MET' if r['compute_ratio'] >= 5 else 'MISSED'} "
            f"(total compute ratio {r['compute_ratio']:.2f}x, sampling ratio {r['sampling_ratio']:.2f}x)"
        )
    if asvp and svpp:
        d = 100 * (asvp[-1]["mean"] - svpp[-1]["mean"])
        out.append(
            f"ASVP at least as accurate as SVPp at the final budget: {'MET' if d >= 0 else 'MISSED'} ({d:+.2f} points)"
        )
    return out


#: The sweep's triggers: ``name`` or ``name:{JSON trigger_params}``.
SWEEP = (
    "never",
    'logme_drop:{"tolerance": 0.0, "min_labels": 200}',
    'logme_drop:{"tolerance": -0.02, "min_labels": 200}',
    'logme_drop:{"tolerance": 0.02, "min_labels": 200}',
    'ped_gap:{"threshold": 0.25, "min_labels": 200}',
    'ped_gap:{"threshold": 0.5, "min_labels": 200}',
    'ped_gap:{"threshold": 1.0, "min_labels": 200}',
    'schedule:{"at": [500]}',
    "every_round",
)


def parse_trigger(spec: str) -> tuple[str, dict[str, Any]]:
    """``'ped_gap:{"threshold": 0.5}'`` -> ``("ped_gap", {"threshold": 0.5})``."""
    name, _, params = spec.partition(":")
    return name, json.loads(params) if params else {}


def run_variant(
    cfg: dict[str, Any], root: Path, runs: str, name: str, seed: int, *, final: bool = True, **al: Any
) -> Any:
    """Run ``cfg`` as experiment ``name`` with seed ``seed`` and ``al`` overridden, through the
    ``active_learning`` flow (state under ``root/runs``); its state."""
    from alcore.config import parse_params
    from alcore.layout import Layout
    from alcore.run_state import ExperimentState
    from flows.active_learning import active_learning

    d = json.loads(json.dumps(cfg))
    d["experiment"].update(name=name, seed=seed)
    d["al"].update(al)
    p = parse_params(d)
    active_learning(p, root=str(root), runs=runs, final=final)
    return ExperimentState.load(Layout(root, runs_dir=runs).state_of(p))


def sweep(name: str, cfg: dict[str, Any], args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    """The ASVP pipeline alone with each trigger of ``--sweep-triggers`` (module docstring)."""
    from alcore.compare import run_record
    from alcore.config import parse_params
    from flows.pipeline import encoder, features, prepare, pretext

    root = work / name
    root.mkdir(exist_ok=True)
    base = parse_params(cfg)
    for stage in (prepare, encoder, features, pretext):
        stage(base, root=str(root))
    out = []
    for seed in args.seeds:
        for spec in args.sweep_triggers:
            trig, tp = parse_trigger(spec)
            tag = hashlib.sha1(spec.encode()).hexdigest()[:8]  # one run per trigger, whatever the list
            cap = {"max_realignments": args.rounds} if trig == "every_round" else {}
            print(f"\n== sweep {name} seed {seed}: {spec}", flush=True)
            t0 = time.perf_counter()
            st = run_variant(
                cfg,
                root,
                "sweep/runs",
                f"{cfg['experiment']['name']}-{trig}-{tag}-s{seed}",
                seed,
                final=args.sweep_final,
                pipeline="asvp",
                trigger=trig,
                trigger_params=tp,
                evaluate_every_round=False,
                **cap,
            )
            rec = run_record("asvp", "margin", seed, st)
            fired = [
                {"round": r, "labels": int(st.records[r]["trigger"].get("n_labeled_at_fire", 0))}
                for r in sorted(st.records)
                if st.records[r].get("trigger", {}).get("fired")
            ]
            rec.update(
                trigger=spec,
                fired=fired,
                realigned_at=[int(v["n_labeled"]) for v in st.versions[1:]],
                wall_s=time.perf_counter() - t0,
            )
            out.append(rec)
    return out


def sweep_table(rows: list[dict[str, Any]]) -> str:
    """One row per trigger (mean over seeds): realignments, compute, the proxy's and the final
    network's test accuracy."""
    from collections import defaultdict

    import numpy as np

    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by[r["trigger"]].append(r)
    budgets = sorted({pt["labels"] for r in rows for pt in r["proxy_curve"]})
    show = [b for b in budgets if b in (budgets[0], budgets[len(budgets) // 2], budgets[-1])]
    head = (
        "| trigger | realigned at (labels) | fine-tune + re-extract s | compute s | "
        + " | ".join(f"proxy @{b}" for b in show)
        + " | proxy, mean of every budget | final network |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for spec, rs in by.items():
        prox = {b: np.mean([pt["accuracy"] for r in rs for pt in r["proxy_curve"] if pt["labels"] == b]) for b in show}
        ft = np.mean([r["seconds"]["fine_tuning"] + r["seconds"]["reextraction"] for r in rs])
        lines.append(
            f"| {spec} | {'; '.join(','.join(map(str, r['realigned_at'])) or '-' for r in rs)} | {ft:.0f} | "
            f"{np.mean([r['compute_seconds'] for r in rs]):.0f} | "
            + " | ".join(f"{100 * prox[b]:.1f}" for b in show)
            + f" | {100 * np.mean([pt['accuracy'] for r in rs for pt in r['proxy_curve']]):.2f}"
            + f" | {100 * np.mean([r['final_accuracy'] for r in rs]):.1f} |".replace("nan", "-")
        )
    return "\n".join(lines)


def baselines(name: str, cfg: dict[str, Any], args: argparse.Namespace, root: Path) -> str:
    """The obvious baselines on the same data, as a markdown table: LogisticRegression on the
    frozen features (standardised) of the ids each run bought at each budget and of random ids
    (``--lr-seeds``), and the same network recipe on random ids at the last budget
    (``--random-seeds``: one fine-tune each, through the flow)."""
    import numpy as np

    from alcore.config import parse_params
    from alcore.features import read_features
    from alcore.idtable import IdIndex
    from alcore.layout import Layout
    from alcore.run_state import ExperimentState
    from alcore.steps import load_data
    from bench._baseline import logreg_accuracy

    ds = load_data(parse_params(cfg).data)
    pool, test = (read_features(root / "features" / f"{s}.parquet") for s in ("pool", "test"))
    y = np.asarray(ds.pool.labels)[IdIndex(ds.pool.ids).positions(pool.ids)]
    yt = np.asarray(ds.test.labels)[IdIndex(ds.test.ids).positions(test.ids)]

    def lr(rows: np.ndarray) -> float:
        return 100 * logreg_accuracy(pool.X[rows], y[rows], test.X, yt)

    runs = Layout(root, runs_dir="compare/runs")
    curves = {}
    for d in sorted((root / "compare" / "runs").iterdir()):
        st = ExperimentState.load(runs.state(d.name))
        L = st.labels
        ids, rnd = L.pool_ids[L.labeled_round > 0], L.labeled_round[L.labeled_round > 0]
        pl, seed = d.name.split("-")[-3], d.name.split("-")[-1]
        curves[f"{pl} {seed}"] = [
            (int((rnd <= r).sum()), lr(pool.positions(ids[rnd <= r]))) for r in range(1, rnd.max() + 1)
        ]
    budgets = [n for n, _ in next(iter(curves.values()))]
    rand = {
        b: [lr(np.random.default_rng(s).choice(len(pool.ids), b, replace=False)) for s in args.lr_seeds]
        for b in budgets
    }
    cols = sorted(curves)
    lines = [
        f"LogisticRegression on the frozen features ({name}): the ids of each run, and random ids "
        f"(seeds {args.lr_seeds})\n",
        "| labels | " + " | ".join(cols) + " | random ids |",
        "|---:|" + "---:|" * (len(cols) + 1),
    ]
    for k, b in enumerate(budgets):
        lines.append(
            f"| {b} | "
            + " | ".join(f"{curves[c][k][1]:.1f}" for c in cols)
            + f" | {np.mean(rand[b]):.1f} ± {np.std(rand[b]):.1f} |"
        )
    if args.random_seeds:
        acc = []
        for seed in args.random_seeds:
            st = run_variant(
                cfg,
                root,
                "baseline/runs",
                f"{cfg['experiment']['name']}-random{budgets[-1]}-s{seed}",
                seed,
                pipeline="svpp",
                strategy="random",
                initial=budgets[-1],
                rounds=1,
                evaluate_every_round=False,
            )
            acc.append(100 * st.final["accuracy"])
        lines.append(
            f"\nThe network on {budgets[-1]} random labels (seeds {args.random_seeds}): "
            + ", ".join(f"{a:.1f}" for a in acc)
            + f"; {np.mean(acc):.1f} ± {np.std(acc):.1f}"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = ["fmnist", "cifar", "fmnist-r20", "cifar-simclr"]
    ap.add_argument("--settings", nargs="+", default=["fmnist", "cifar"], choices=names)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--pool", type=int, default=None, help="pool size (a stratified subsample); default: the setting's")
    ap.add_argument("--test", type=int, default=None, help="test size; default: the setting's")
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--mode", default="ft", choices=["ft", "lpft", "auto"], help="train.mode of every network")
    ap.add_argument(
        "--holdout",
        type=float,
        default=0.0,
        help="train.holdout: 0 = fine-tune unconditionally (Standard AL as in the paper, 1 fit a network); "
        "0.2 = the recipe's guard against the probe (2-3 fits a network)",
    )
    ap.add_argument("--ssl-epochs", type=int, default=15)
    ap.add_argument("--trigger", default="logme_drop")
    ap.add_argument("--trigger-params", default='{"tolerance": 0.0, "min_labels": 200}')
    ap.add_argument("--max-realignments", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="calibrate the trigger: the ASVP pipeline alone per trigger")
    ap.add_argument("--sweep-triggers", nargs="+", default=list(SWEEP))
    ap.add_argument("--sweep-final", action="store_true", help="the sweep also trains and tests a final network")
    ap.add_argument("--baselines", action="store_true", help="after the compare: LogisticRegression and random ids")
    ap.add_argument("--lr-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4], help="--baselines: random ids for LR")
    ap.add_argument(
        "--random-seeds", nargs="*", type=int, default=[0, 1, 2], help="--baselines: the network on random ids"
    )
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="alcore-asvp-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TQDM_DISABLE", "1")
    from flows._env import configure

    configure(work)
    from alcore.config import parse_params
    from flows.compare import compare

    args.out.mkdir(parents=True, exist_ok=True)
    if args.sweep:
        results = {}
        for name in args.settings:
            cfg = settings(args)[name]
            rows = sweep(name, cfg, args, work)
            results[name] = {
                "rows": rows,
                "config": cfg,
                "table": sweep_table(rows),
                "about": describe(name, cfg, args),
            }
            (args.out / "asvp_sweep.json").write_text(json.dumps(results, indent=2, default=str))
        print("\n" + "=" * 100)
        for r in results.values():
            print(f"\n## trigger sweep, {r['about']}\n\n{r['table']}")
        print(f"\nresults: {args.out / 'asvp_sweep.json'}")
        return 0

    results = {}
    for name in args.settings:
        cfg = settings(args)[name]
        root = work / name
        root.mkdir(exist_ok=True)
        t0 = time.perf_counter()
        summary = compare(parse_params(cfg), root=str(root))
        results[name] = {
            "summary": summary,
            "wall_s": time.perf_counter() - t0,
            "config": cfg,
            "about": describe(name, cfg, args),
            "tables": (root / "reports" / "compare" / "tables.md").read_text(),
            "goals": goals(summary),
        }
        if args.baselines:
            results[name]["baselines"] = baselines(name, cfg, args, root)
        (args.out / "asvp.json").write_text(json.dumps(results, indent=2, default=str))

    print("\n" + "=" * 100)
    for r in results.values():
        print(f"\n## {r['about']}, trigger {args.trigger} {args.trigger_params}; wall {r['wall_s'] / 60:.1f} min\n")
        print(r["tables"])
        for g in r["goals"]:
            print("- " + g)
        if "baselines" in r:
            print("\n" + r["baselines"])
    print(f"\nresults: {args.out / 'asvp.json'}; plots: {work}/<setting>/reports/compare/*.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
