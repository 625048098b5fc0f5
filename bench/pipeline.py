"""Benchmark of the pipeline, side by side in one run, on digits and Fashion-MNIST.

For each dataset, in a fresh temporary project folder:

1. the default flow (Prefect + MLflow), first run: its per-round table and wall time;
2. the same flow again with ``--fresh`` (every task served from the cache): wall-time ratio;
3. the same alcore calls in a plain Python loop, no Prefect, no MLflow: the orchestration
   overhead is flow / plain (goal <= 1.10 on Fashion-MNIST);
4. feature extraction images/s through ``alcore.features.extract_features`` vs. a bare torch loop
   over the same encoder and batch size on tensors already preprocessed in memory (goal >= 0.9).

Usage::

    uv run python bench/pipeline.py                       # digits + Fashion-MNIST from ../shared/data
    uv run python bench/pipeline.py --datasets digits     # no ../shared needed
"""

from __future__ import annotations

import argparse
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


def _configure_env(work: Path) -> None:
    """Fresh Prefect and MLflow stores for this benchmark (a true first run, then a cached one)."""
    os.environ.update(
        {
            "PREFECT_HOME": str(work / ".prefect"),
            "PREFECT_LOCAL_STORAGE_PATH": str(work / ".prefect" / "storage"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
            "ALCORE_MLFLOW_ARTIFACTS": str(work / "mlartifacts"),
            "TQDM_DISABLE": "1",
        }
    )
    import flows  # noqa: F401 - the remaining project defaults


def configs(fmnist_root: Path) -> dict[str, dict[str, Any]]:
    from alcore.config import Params

    base = Params().model_dump(mode="json")
    base["experiment"]["progress"] = False
    digits = json.loads(json.dumps(base))
    fm = json.loads(json.dumps(base))
    fm["experiment"]["name"] = "fmnist-margin"
    fm["data"] = {"name": "fashion_mnist", "params": {"root": str(fmnist_root)}}
    weights = SHARED / "weights" / "cifar10-resnet"
    fm["encoder"] = {
        "arch": "cifar_resnet20",
        "weights": str(next(weights.glob("resnet20-*.th"), weights / "resnet20.th")),
    }
    fm["al"].update({"initial": 100, "batch": 100, "rounds": 10})
    fm["train"].update({"mode": "lpft", "ft_epochs": 10, "batch_size": 128})
    return {"digits": digits, "fashion_mnist": fm}


def clear_process_caches() -> None:
    import alcore.experiment as ex

    ex._load_dataset_cached.cache_clear()
    ex._read_features_cached.cache_clear()


def plain_loop(p: Any, root: Path) -> dict[str, Any]:
    """The same alcore calls as the flows, in a plain loop: no Prefect, no MLflow."""
    import numpy as np

    from alcore import experiment as ex
    from alcore import report
    from alcore._io import write_json_atomic
    from alcore.layout import Layout

    L = Layout(root)
    seed, dev = p.experiment.seed, p.experiment.device
    ex.validate_names(p)
    info = ex.describe_data(p.data)
    write_json_atomic(L.dataset, info)
    enc_s = ex.build_and_save_encoder(p.encoder, p.data, seed=seed, device=dev, progress=False, out=L.encoder)
    feat_s = {
        s: ex.extract_and_save_features(
            L.encoder, p.data, s, batch_size=p.features.batch_size, device=dev, progress=False, out=L.features(s)
        )
        for s in ("pool", "test")
    }
    pool, test = ex.load_features(L.features("pool")), ex.load_features(L.features("test"))
    ex.check_features_match_encoder(L.encoder, pool.spec)
    data = ex.load_data(p.data)
    n_classes = info["n_classes"]
    state = ex.open_state(
        L.state(p.experiment.name),
        config_digest="plain",
        pool_ids=pool.ids,
        n_classes=n_classes,
        price_per_label=p.oracle.price_per_label,
        price_per_hour=p.cost.price_per_hour,
    )
    state.ledger.record(0, "pretraining", enc_s)
    state.ledger.record(0, "extraction", feat_s["pool"])
    oracle = ex.make_oracle_for(p.oracle, data, seed=seed)
    proxy, pending = None, 0.0
    schedule = p.al.schedule()
    for r in range(1, len(schedule) + 1):
        strat, sparams = ex.round_strategy(p.al, r)
        ids = state.labels.labeled_ids
        labs = state.labels.labels_of(ids) if len(ids) else np.empty(0, np.int64)
        with ex.stopwatch() as t:
            sel = ex.select_batch(
                strat,
                sparams,
                pool,
                ids,
                labs,
                schedule[r - 1],
                n_classes=n_classes,
                proxy=proxy,
                seed=ex.derive_seed(seed, "select", r),
                round=r,
            )
        ans = oracle.query(sel)
        state.commit(r, ans.ids, ans.labels, {"proxy_training": pending, "scoring": t["seconds"]})
        state.save(L.state(p.experiment.name))
        ids = state.labels.labeled_ids
        with ex.stopwatch() as t:
            proxy = ex.train_proxy(
                pool,
                ids,
                state.labels.labels_of(ids),
                p.proxy,
                n_classes=n_classes,
                seed=ex.derive_seed(seed, "proxy", r),
                device=dev,
            )
        pending = t["seconds"]
        state.records[r] = {"proxy_accuracy": ex.proxy_accuracy(proxy, test, np.asarray(data.test.labels))}
        state.save(L.state(p.experiment.name))
    ids = state.labels.labeled_ids
    ft_s = ex.fine_tune_and_save(
        L.encoder,
        p.data,
        ids,
        state.labels.labels_of(ids),
        p.train,
        mode=p.train.mode,
        seed=ex.derive_seed(seed, "final"),
        device=dev,
        progress=False,
        out=L.final_model(p.experiment.name),
    )
    ev = ex.evaluate_saved_model(L.final_model(p.experiment.name), p.data, device=dev)
    state.ledger.record(len(schedule), "final_training", ft_s)
    state.final = {"accuracy": ev["accuracy"], "mode": p.train.mode, "labels": int(len(ids))}
    state.save(L.state(p.experiment.name))
    rows = report.round_rows(state)
    report.write_rounds_csv(rows, L.rounds_csv)
    report.write_metrics(state, L.metrics)
    report.plot_accuracy(rows, state.final, L.accuracy_plot)
    report.plot_costs(rows, L.cost_plot)
    return report.summary(state)


def extraction_throughput(p: Any, root: Path, repeats: int = 2) -> dict[str, float]:
    """images/s of extract_features vs. a bare torch loop on pre-processed tensors."""
    import numpy as np
    import torch

    from alcore.encoders import load_encoder
    from alcore.experiment import load_data
    from alcore.features import extract_features

    enc = load_encoder(Layout(root).encoder).eval()
    split = load_data(p.data).pool
    n = min(len(split), 20000)
    split = split.subset(np.arange(n))
    bs = p.features.batch_size
    X = split.load_batch(np.arange(n), enc.config.preprocess)  # preprocessed once, outside the timing

    def bare() -> None:
        with torch.inference_mode():
            for s in range(0, n, bs):
                enc(X[s : s + bs])

    def ours() -> None:
        extract_features(enc, split, batch_size=bs, device="cpu", progress=False)

    best = {}
    for name, fn in (("bare", bare), ("ours", ours)):
        fn()  # warm-up
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        best[name] = n / min(ts)
    return {
        "images": n,
        "batch_size": bs,
        "ours_img_s": best["ours"],
        "bare_img_s": best["bare"],
        "ratio": best["ours"] / best["bare"],
    }


from alcore.layout import Layout  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"], choices=["digits", "fashion_mnist"])
    ap.add_argument("--fmnist-root", type=Path, default=SHARED / "fashion-mnist")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="alcore-bench-"))
    _configure_env(work)
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # pay torch's one-time optimizer import up front
    from alcore.config import parse_params
    from alcore.experiment import ExperimentState
    from alcore.ledger import format_table
    from alcore.report import round_rows
    from flows.pipeline import pipeline

    cfgs = configs(args.fmnist_root)
    results: dict[str, Any] = {}
    for name in args.datasets:
        p = parse_params(cfgs[name])
        root_plain, root_flow = work / f"{name}-plain", work / f"{name}-flow"
        print(f"\n=== {name}: plain loop", flush=True)
        clear_process_caches()
        t0 = time.perf_counter()
        plain = plain_loop(p, root_plain)
        t_plain = time.perf_counter() - t0
        print(f"=== {name}: Prefect + MLflow flow, first run", flush=True)
        clear_process_caches()
        t0 = time.perf_counter()
        first = pipeline(p, root=str(root_flow))
        t_first = time.perf_counter() - t0
        print(f"=== {name}: the same flow again (--fresh: every task from the cache)", flush=True)
        clear_process_caches()
        t0 = time.perf_counter()
        again = pipeline(p, fresh=True, root=str(root_flow))
        t_cached = time.perf_counter() - t0
        thr = extraction_throughput(p, root_flow)
        st = ExperimentState.load(Layout(root_flow).state(p.experiment.name))
        results[name] = {
            "table": format_table(round_rows(st)),
            "plain_s": t_plain,
            "flow_s": t_first,
            "cached_s": t_cached,
            "overhead_ratio": t_first / t_plain,
            "cached_ratio": t_cached / t_first,
            "same_result_cached": again == first,
            "flow": first,
            "plain": plain,
            "extraction": thr,
        }

    print("\n" + "=" * 100)
    for name, r in results.items():
        print(f"\n## {name}: per-round table of the default flow (first run)\n")
        print(r["table"])
        print(f"\nfinal test accuracy {r['flow']['test_accuracy']:.4f} (plain loop {r['plain']['test_accuracy']:.4f})")
    print("\n## Side by side\n")
    hdr = f"{'dataset':<14} {'plain s':>9} {'flow s':>9} {'overhead':>9} {'cached s':>9} {'cached/first':>13} {'extract img/s':>14} {'bare img/s':>11} {'ratio':>6}"
    print(hdr)
    print("-" * len(hdr))
    for name, r in results.items():
        e = r["extraction"]
        print(
            f"{name:<14} {r['plain_s']:>9.1f} {r['flow_s']:>9.1f} {r['overhead_ratio']:>9.3f} {r['cached_s']:>9.1f} "
            f"{r['cached_ratio']:>13.3f} {e['ours_img_s']:>14.0f} {e['bare_img_s']:>11.0f} {e['ratio']:>6.3f}"
        )
    print(
        "\noverhead = flow first run / plain loop (goal <= 1.10 on Fashion-MNIST); "
        "ratio = extract_features / bare torch loop (goal >= 0.9)"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults: {args.out / 'pipeline.json'}  (work folder {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
