"""The real network's training recipe against the obvious baselines, like for like (issue 13).

For each setting, label budget and seed, one set of labeled ids (uniformly random pool ids, the
same for every method) and, on it:

- ``logreg``: scikit-learn ``LogisticRegression(C=1)`` on ``StandardScaler``-ed frozen features of
  those ids (the linear probe every network is held to);
- ``proxy``: :class:`alcore.proxy.ProxyMLP` with params.yaml's ``proxy`` settings on the same
  features and ids (what SVPp selects with);
- ``lp``, ``lpft``, ``ft``, ``auto``: :func:`alcore.training.train_classifier` with params.yaml's
  ``train`` settings (``--set key=value`` overrides them) from the same encoder on the same ids.

Each is tested on the setting's test split. Seconds: a network's whole call (the labeled images'
features, the held-out evidence, the final fit); logreg's and the proxy's fit on pool features
that the pipeline has computed anyway. Settings:

- ``digits``: the embedded digits, params.yaml's default encoder (ImageNet EfficientNet-Lite0 from
  its package, 48 px, feature level 3), budgets 20 50 100 200;
- ``fmnist``: Fashion-MNIST, 3,000 pool / 1,000 test images, the supervised CIFAR-10 ResNet-20 of
  ../shared/data/weights (a domain shift), budgets 100 300 1000;
- ``cifar``: the CIFAR-10 subset of ../shared/data, ImageNet-pretrained EfficientNet-Lite0
  (``encoder: {arch: efficientnet_lite0, pretrained: true}``: timm's hub when reachable, else the
  installed package), at ``--input-size`` pixels and ``--feature-level``; budgets 100 300 1000.

Every result is one line of ``bench/out/recipe/<setting>.jsonl``, keyed by setting, budget, seed,
method and the settings that change it, so a benchmark runs in chunks (per setting, per budget)
and ``--report`` prints every table from what was measured. Run alone (the seconds are compute).

Usage::

    uv run python bench/recipe.py --setting digits --budgets 20 50 100 200
    uv run python bench/recipe.py --setting fmnist --budgets 100 300 --methods logreg proxy lp lpft
    uv run python bench/recipe.py --report
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "bench" / "out" / "recipe"
sys.path.insert(0, str(REPO))

METHODS = ("logreg", "proxy", "lp", "lpft", "ft", "auto")
NETWORKS = ("lp", "lpft", "ft", "auto")
BUDGETS = {"digits": [20, 50, 100, 200], "fmnist": [100, 300, 1000], "cifar": [100, 300, 1000]}


def setting_cfg(name: str, args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(data, encoder)`` parameter sections of a setting (encoder None: params.yaml's)."""
    if name == "digits":
        return {"name": "digits", "params": {}}, None
    if name == "fmnist":
        w = next((SHARED / "weights" / "cifar10-resnet").glob("resnet20-*.th"))
        data = {
            "name": "fashion_mnist",
            "params": {"root": str(SHARED / "fashion-mnist"), "max_pool": 3000, "max_test": 1000},
        }
        return data, {
            "arch": "cifar_resnet20",
            "weights": str(w),
            "pretrained": False,
            "input_size": None,
            "feature_level": None,
        }
    npz = SHARED / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"
    data = {"name": "npz", "params": {"path": str(npz), "max_pool": args.cifar_pool, "max_test": args.cifar_test}}
    enc = {
        "arch": "efficientnet_lite0",
        "pretrained": True,
        "input_size": args.input_size,
        "feature_level": args.feature_level,
    }
    return data, enc


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def prepare(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Dataset, encoder (cached), pool and test features (cached) and the run's parameters."""
    import yaml

    from alcore.config import parse_params
    from alcore.encoders import load_encoder, save_encoder
    from alcore.features import extract_features
    from alcore.steps import load_data, pretrained_encoder

    data_d, enc_d = setting_cfg(name, args)
    base = yaml.safe_load((REPO / "params.yaml").read_text())  # proxy, train and the default encoder
    base["data"] = data_d
    if enc_d is not None:
        base["encoder"] = {**base["encoder"], **enc_d}
    base["train"].update({k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)})
    params = parse_params(base)
    dc, ec = params.data, params.encoder
    data = load_data(dc)
    cache = OUT / "cache" / f"{name}-{_key(dc.model_dump(), ec.model_dump())}"
    cache.mkdir(parents=True, exist_ok=True)
    enc_path = cache / "encoder.safetensors"
    if not enc_path.is_file():
        t = time.perf_counter()
        save_encoder(pretrained_encoder(ec, data, seed=0, device="auto", progress=True), enc_path)
        print(f"[{name}] encoder built in {time.perf_counter() - t:.0f} s, cached at {enc_path}", flush=True)
    enc = load_encoder(enc_path)
    feats = {}
    for split in ("pool", "test"):
        f = cache / f"{split}.npy"
        if not f.is_file():
            np.save(
                f, extract_features(enc, getattr(data, split), device="auto", progress=True, desc=f"{split} features")
            )
        feats[split] = np.load(f)
    return {"name": name, "data": data, "encoder": enc, "params": params, "feats": feats, "enc_key": cache.name}


def _ids(pool_ids: np.ndarray, budget: int, seed: int) -> np.ndarray:
    from alcore.seeding import derive_seed

    rng = np.random.default_rng(derive_seed(seed, "recipe", budget))
    return np.sort(rng.choice(len(pool_ids), size=budget, replace=False))


def run_one(prep: dict[str, Any], method: str, budget: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One method on one labeled set: test accuracy and seconds."""
    data, p = prep["data"], prep["params"]
    pos = _ids(np.asarray(data.pool.ids), budget, seed)
    y = np.asarray(data.pool.labels)[pos]
    Zp, Zt, yt = prep["feats"]["pool"], prep["feats"]["test"], np.asarray(data.test.labels)
    out: dict[str, Any] = {}
    t = time.perf_counter()
    if method == "logreg":
        from bench._baseline import logreg

        clf = logreg().fit(Zp[pos], y)
        secs = time.perf_counter() - t
        acc = float((clf.predict(Zt) == yt).mean())
    elif method == "proxy":
        from alcore.proxy import ProxyMLP

        proxy = ProxyMLP(**p.proxy.model_dump(), device="auto", random_state=seed).fit(Zp[pos], y, data.n_classes)
        secs = time.perf_counter() - t
        acc = float((proxy.predict(Zt) == yt).mean())
    else:
        from alcore.training import evaluate, train_classifier

        res = train_classifier(
            prep["encoder"],
            data.pool,
            pos,
            y,
            n_classes=data.n_classes,
            mode=method,
            config=p.train.train_config(),
            device="auto",
            random_state=seed,
            progress=args.progress,
        )
        secs = time.perf_counter() - t
        acc = evaluate(res.model, data.test, device="auto")["accuracy"]
        ev = res.evidence
        out = {"chosen": res.mode, "heldout": {m: c["accuracy"] for m, c in ev.get("candidates", {}).items()}}
        out["heldout_log_loss"] = {m: c["log_loss"] for m, c in ev.get("candidates", {}).items()}
        out["held_out"] = ev.get("held_out", 0)  # labels behind the held-out accuracies (what a rule can trust)
        # held-out labels each mode got right and the probe wrong, and the other way (the paired rule's input)
        out["vs_probe"] = {m: [c["wins"], c["losses"]] for m, c in ev.get("candidates", {}).items() if "wins" in c}
        out["steps"] = ev.get("steps", 0)
    return {"accuracy": acc, "seconds": secs, **out}


def warm_up(prep: dict[str, Any]) -> None:
    """Pay the one-time imports and first calls (scikit-learn, L-BFGS, SGD) before anything is timed."""
    from sklearn.linear_model import LogisticRegression

    from alcore.proxy import ProxyMLP
    from alcore.training import fit_linear_probe

    Z, y = prep["feats"]["pool"][:40], np.arange(40) % 2
    LogisticRegression().fit(Z, y)
    fit_linear_probe(Z, y, 2)
    ProxyMLP(epochs=1, batch_size=20).fit(Z, y, 2)


def _results_path(name: str) -> Path:
    return OUT / f"{name}.jsonl"


def load_results(name: str) -> list[dict[str, Any]]:
    f = _results_path(name)
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()] if f.is_file() else []


def config_key(prep: dict[str, Any], method: str) -> str:
    """What a method's result depends on besides setting, budget and seed."""
    p = prep["params"]
    if method == "logreg":
        return _key(prep["enc_key"], "C=1")
    if method == "proxy":
        return _key(prep["enc_key"], p.proxy.model_dump())
    return _key(prep["enc_key"], p.train.model_dump(), method)


def bench(name: str, args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    prep = prepare(name, args)
    warm_up(prep)
    done = {(r["budget"], r["seed"], r["method"], r["config"]) for r in load_results(name)}
    for budget in args.budgets or BUDGETS[name]:
        for seed in args.seeds:
            for method in args.methods:
                ck = config_key(prep, method)
                if (budget, seed, method, ck) in done and not args.force:
                    continue
                r = run_one(prep, method, budget, seed, args)
                row = {"setting": name, "budget": budget, "seed": seed, "method": method, "config": ck, **r}
                row["train_overrides"] = list(args.set or [])
                with _results_path(name).open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                extra = f"  chose {r['chosen']} {r['heldout']}" if method == "auto" else ""
                print(
                    f"[{name}] {budget:>5} labels seed {seed} {method:>6}: {r['accuracy']:.4f}  {r['seconds']:7.1f} s{extra}",
                    flush=True,
                )


def _ms(v: list[float], scale: float = 100.0, digits: int = 1, n: int | None = None) -> str:
    """Mean ± std; a cell measured on fewer seeds than its row (``n``) says how many (one: no spread)."""
    if not v:
        return "-"
    a = np.asarray(v) * scale
    if len(a) == 1 and n not in (None, 1):
        return f"{a[0]:.{digits}f} (n=1)"
    cell = f"{a.mean():.{digits}f} ± {a.std():.{digits}f}"
    return cell if n is None or len(a) == n else f"{cell} (n={len(a)})"


def report(names: list[str], args: argparse.Namespace) -> None:
    """Tables from every measured result, the latest configuration of each method."""
    for name in names:
        rows = load_results(name)
        if not rows:
            continue
        if args.overrides is not None:
            rows = [r for r in rows if r.get("train_overrides", []) == args.overrides]
        latest: dict[tuple[int, int, str], dict[str, Any]] = {}
        for r in rows:  # a method re-measured under other settings: the last one counts
            latest[(r["budget"], r["seed"], r["method"])] = r
        budgets = sorted({b for b, _, _ in latest})
        seeds_of = {b: sorted({s for bb, s, _ in latest if bb == b}) for b in budgets}
        methods = [m for m in METHODS if any(k[2] == m for k in latest)]
        print(f"\n## {name}: test accuracy % (mean ± std over seeds) and seconds per call\n")
        print("| labels | seeds | " + " | ".join(methods) + " | auto − logreg | auto chose |")
        print("|---:|---:|" + "---:|" * len(methods) + "---:|:---|")
        goal_rows = []
        for b in budgets:
            acc = {m: [latest[k]["accuracy"] for k in latest if k[0] == b and k[2] == m] for m in methods}
            seeds = seeds_of[b]
            both = [
                latest[(b, s, "auto")]["accuracy"] - latest[(b, s, "logreg")]["accuracy"]
                for s in seeds
                if (b, s, "auto") in latest and (b, s, "logreg") in latest
            ]
            chose: dict[str, int] = {}
            for k in latest:
                if k[0] == b and k[2] == "auto":
                    chose[latest[k]["chosen"]] = chose.get(latest[k]["chosen"], 0) + 1
            cells = " | ".join(_ms(acc[m], n=len(seeds)) for m in methods)
            print(
                f"| {b} | {len(seeds)} | {cells} | {_ms(both)} | "
                + ", ".join(f"{m} x{c}" for m, c in sorted(chose.items()))
                + " |"
            )
            if both:
                goal_rows.append((b, float(np.mean(both)) * 100))
        print("\n| labels | " + " | ".join(f"{m} s" for m in methods) + " |")
        print("|---:|" + "---:|" * len(methods))
        for b in budgets:
            secs = {m: [latest[k]["seconds"] for k in latest if k[0] == b and k[2] == m] for m in methods}
            n = len(seeds_of[b])
            print(f"| {b} | " + " | ".join(_ms(secs[m], 1.0, 1 if m in NETWORKS else 2, n) for m in methods) + " |")
        margin_table(rows, latest, budgets)
        if goal_rows:
            worst = min(goal_rows, key=lambda x: x[1])
            print(
                f"\nGoal auto >= logreg - 1 point at every budget: {'met' if worst[1] >= -1 else 'MISSED'} "
                f"(worst {worst[1]:+.1f} at {worst[0]} labels)"
            )
            if name == "fmnist":
                at = dict(goal_rows).get(1000)
                if at is not None:
                    print(
                        f"Goal auto >= logreg + 3 points at 1,000 labels: {'met' if at >= 3 else 'MISSED'} ({at:+.1f})"
                    )


MARGINS = (0.0, 0.5, 0.75, 1.0, 2.0)


def choice_at(auto: dict[str, Any], margin: float) -> str | None:
    """The mode ``auto``'s rule picks at ``margin`` from a call's stored held-out evidence (None:
    measured before the paired counts were stored)."""
    from alcore.training import beats_probe, most_accurate

    vs = auto.get("vs_probe")
    if not vs:
        return None
    return most_accurate(auto["heldout"], ["lp"] + [m for m, (w, lo) in vs.items() if beats_probe(w, lo, margin)])


def _test_accuracy(rows: list[dict[str, Any]], b: int, s: int, mode: str) -> float | None:
    """Test accuracy of ``mode``'s network trained on every label of (budget, seed), where measured:
    the probe, or any network call (auto, or the mode alone) that trained ``mode`` on every label
    (the final fit's seed is the same in all of them); the latest such record."""
    found = None
    for r in rows:
        if r["budget"] == b and r["seed"] == s:
            if (mode == "lp" and r["method"] == "lp") or (r["method"] in NETWORKS and r.get("chosen") == mode):
                found = r["accuracy"]
    return found


def margin_table(rows_all: list[dict[str, Any]], latest: dict[tuple[int, int, str], Any], budgets: list[int]) -> None:
    """auto − logreg (points) had the rule used another ``auto_margin``, from the stored paired
    counts and the networks measured on the same ids; '?' where a choice's network was not measured."""
    rows, measured = [], False
    for b in budgets:
        seeds = sorted(s for bb, s, m in latest if bb == b and m == "auto" and (bb, s, "logreg") in latest)
        cells = []
        for z in MARGINS:
            picks = [choice_at(latest[(b, s, "auto")], z) for s in seeds]
            if not seeds or None in picks:
                cells.append("-")
                continue
            measured = True
            acc = [_test_accuracy(rows_all, b, s, m) for s, m in zip(seeds, picks, strict=True)]
            known = [a - latest[(b, s, "logreg")]["accuracy"] for s, a in zip(seeds, acc, strict=True) if a is not None]
            gap = f"{100 * np.mean(known):+.1f}" if known else "?"
            gap += "" if len(known) == len(seeds) else f" (n={len(known)})"
            cells.append(f"{gap} ({', '.join(p or '?' for p in picks)})")
        rows.append(f"| {b} | " + " | ".join(cells) + " |")
    if not measured:
        return
    print("\nauto − logreg had `train.auto_margin` been z (choices per seed; from the stored paired counts):\n")
    print("| labels | " + " | ".join(f"z = {z:g}" for z in MARGINS) + " |")
    print("|---:|" + "---:|" * len(MARGINS))
    print("\n".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--setting", choices=sorted(BUDGETS), action="append", help="repeatable; default: digits")
    ap.add_argument("--budgets", type=int, nargs="+", help="default: the setting's budgets")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--set", nargs="*", default=[], help="train.KEY=VALUE overrides (e.g. ft_min_steps=200)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="measure again what was measured")
    ap.add_argument("--progress", action="store_true", help="tqdm bars of the networks' training")
    ap.add_argument("--input-size", type=int, default=96, help="cifar: EfficientNet-Lite0 input pixels")
    ap.add_argument(
        "--feature-level", type=int, default=None, help="cifar: pool this feature level (default: the last)"
    )
    ap.add_argument("--cifar-pool", type=int, default=3000)
    ap.add_argument("--cifar-test", type=int, default=1000)
    ap.add_argument("--report", action="store_true", help="print the tables of what was measured, run nothing")
    ap.add_argument("--overrides", nargs="*", help="--report: only results measured with exactly these --set")
    args = ap.parse_args()
    names = args.setting or (sorted(BUDGETS) if args.report else ["digits"])
    if args.report:
        report(names, args)
        return
    for name in names:
        bench(name, args)
    report(names, args)


if __name__ == "__main__":
    main()
