"""The ``active_learning`` flow: the rounds loop of SVPp.

Each round: train a fresh proxy on the labeled features, select the next batch with the strategy,
buy its labels, commit them (atomically, with their costs) to the experiment state. At the end:
fine-tune the real network once (LP / FT / LP-FT) and evaluate it on the test set.

Killed anywhere, it resumes at the last committed round; the ``label`` task is cached on the ids it
was asked for, so no label is bought twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow

from alcore.config import Params
from alcore.experiment import (
    check_budget,
    check_features_match_encoder,
    derive_seed,
    experiment_lock,
    open_state,
    round_strategy,
)
from alcore.features import read_spec
from alcore.layout import Layout
from alcore.ledger import CostLedger
from alcore.proxy import warm_up
from alcore.report import round_rows
from flows._util import archive, ensure_artifact, read_json, say
from tasks import tracking
from tasks._common import ref
from tasks.evaluate import evaluate
from tasks.finetune import fine_tune
from tasks.label import label
from tasks.proxy import evaluate_proxy, train_proxy
from tasks.select import select


def experiment_digest(p: Params) -> str:
    """What an experiment's labels depend on (not the device, not progress bars)."""
    d = p.model_dump(mode="json")
    d["experiment"] = {k: v for k, v in d["experiment"].items() if k not in ("device", "progress")}
    import hashlib
    import json

    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _labeled(state: Any) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(state.labels.labeled_ids, dtype=np.int64)
    return ids, np.asarray(state.labels.labels_of(ids), dtype=np.int64)


@flow(name="active_learning", validate_parameters=True)
def active_learning(params: Params, fresh: bool = False, root: str = ".") -> dict[str, Any]:
    """Run (or resume) the experiment ``params.experiment.name``; returns its summary."""
    from alcore.report import summary

    p, L = params, Layout(Path(root))
    seed, dev, name = p.experiment.seed, p.experiment.device, p.experiment.name
    info = read_json(L.dataset, "prepare")
    check_budget(p.al, info["n_pool"])
    fp, n_classes = info["fingerprint"], int(info["n_classes"])
    enc_ref = ref(L.encoder)
    pool_ref, test_ref = ref(L.features("pool")), ref(L.features("test"))
    spec = read_spec(pool_ref["path"])
    read_spec(test_ref["path"]).check_compatible(spec)
    check_features_match_encoder(enc_ref["path"], spec)
    from alcore.experiment import load_data

    data = load_data(p.data)
    test_labels = np.asarray(data.test.labels)
    state_path = L.state(name)
    with experiment_lock(L.run_dir(name)):
        if fresh and state_path.exists():
            say(f"Archived the previous state to {archive(state_path)}")
        state = open_state(
            state_path,
            config_digest=experiment_digest(p),
            pool_ids=spec_ids(pool_ref),
            n_classes=n_classes,
            price_per_label=p.oracle.price_per_label,
            price_per_hour=p.cost.price_per_hour,
        )
        if state.round == 0:
            # Round 0: the setup work the experiment paid for before its first label.
            enc_meta, feat_meta = read_json(L.encoder_meta, "encoder"), read_json(L.features_meta, "features")
            state.ledger = CostLedger(price_per_label=p.oracle.price_per_label, price_per_hour=p.cost.price_per_hour)
            state.ledger.record(0, "pretraining", enc_meta["seconds"])
            state.ledger.record(0, "extraction", feat_meta["seconds"]["pool"])
        run_id = tracking.start_run(name, p.model_dump(mode="json"), state.tracking.get("mlflow_run_id"))
        state.tracking["mlflow_run_id"] = run_id
        schedule = p.al.schedule()
        if state.round:
            say(f"Resuming {name!r} after round {state.round} ({state.labels.n_labeled} labels already bought).")
        proxy, proxy_key, pending = None, "", 0.0
        warm_up()  # a one-time import is not a cost of any round
        for r in range(1, len(schedule) + 1):
            if r > state.round:
                strat, sparams = round_strategy(p.al, r)
                ids, labs = _labeled(state)
                if r > 1 and proxy is None:
                    out = train_proxy(
                        pool_ref,
                        ids,
                        labs,
                        p.proxy,
                        n_classes=n_classes,
                        seed=derive_seed(seed, "proxy", r - 1),
                        device=dev,
                    )
                    proxy, pending = out["proxy"], out["seconds"]
                    proxy_key = f"{pool_ref['sha256']}:{r - 1}:{ids.sum()}:{len(ids)}"
                sel = select(
                    strat,
                    sparams,
                    pool_ref,
                    ids,
                    labs,
                    schedule[r - 1],
                    n_classes=n_classes,
                    proxy=proxy if r > 1 else None,
                    proxy_key=proxy_key if r > 1 else "",
                    seed=derive_seed(seed, "select", r),
                    round=r,
                )
                ans = label(p.oracle, p.data, fp, sel["ids"], seed=seed)
                state.commit(r, ans["ids"], ans["labels"], {"proxy_training": pending, "scoring": sel["seconds"]})
                state.save(state_path)
                proxy, pending = None, 0.0
            if r not in state.records:
                ids, labs = _labeled(state)
                out = train_proxy(
                    pool_ref, ids, labs, p.proxy, n_classes=n_classes, seed=derive_seed(seed, "proxy", r), device=dev
                )
                proxy, pending = out["proxy"], out["seconds"]
                proxy_key = f"{pool_ref['sha256']}:{r}:{ids.sum()}:{len(ids)}"
                acc = evaluate_proxy(proxy, proxy_key, test_ref, test_labels)
                state.records[r] = {"proxy_accuracy": acc}
                state.save(state_path)
                row = next(x for x in round_rows(state) if x["round"] == r)
                tracking.log_metrics(run_id, {k: v for k, v in row.items() if k != "round"}, step=r)
                say(
                    f"round {r:>3}: {row['labels_total']:>6} labels  proxy test acc {acc:.4f}  "
                    f"select {sel_s(row):.2f} s  total ${row['total_usd_cum']:.2f}"
                )
        ids, labs = _labeled(state)
        if state.final is None or state.final.get("labels") != len(ids):
            ft = ensure_artifact(
                fine_tune,
                "model",
                enc_ref,
                p.data,
                fp,
                ids,
                labs,
                p.train,
                mode=p.train.mode,
                seed=derive_seed(seed, "final"),
                device=dev,
                out=str(L.final_model(name)),
                progress=p.experiment.progress,
            )
            ev = evaluate(ft["model"], p.data, fp, device=dev)
            state.ledger.record(len(schedule), "final_training", ft["seconds"])
            state.final = {
                "accuracy": ev["accuracy"],
                "mode": p.train.mode,
                "labels": int(len(ids)),
                "model": ft["model"]["path"],
            }
            state.save(state_path)
        s = summary(state)
        tracking.log_metrics(
            run_id, {f"final_{k}": v for k, v in s.items() if isinstance(v, (int, float))}, step=len(schedule)
        )
        return s


def sel_s(row: dict[str, Any]) -> float:
    return float(row.get("seconds_scoring", 0.0)) + float(row.get("seconds_proxy_training", 0.0))


def spec_ids(pool_ref: dict[str, str]) -> np.ndarray:
    from alcore.experiment import load_features

    return load_features(pool_ref["path"]).ids
