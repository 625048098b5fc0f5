"""The ``active_learning`` flow: the rounds loop of the three pipelines of Wen et al. (TMLR 2024).

- ``svpp``: every round a fresh proxy MLP on the pre-computed features selects; the real network is
  fine-tuned once, at the end.
- ``asvp``: as ``svpp``, and after each round the realignment trigger may fire: fine-tune the
  encoder on the labeled set, re-extract pool and test features with it (a new feature version,
  a new Parquet file; the old one stays) and go on with the same labeled set.
- ``standard``: every round fine-tune the encoder (fresh from its pre-trained weights) on the
  labeled set and score the whole pool with that network.

Every purchase is committed, with its compute seconds, to the experiment state in one atomic
write. Killed anywhere, the flow resumes at the last committed round; the ``label`` task is cached
on the ids it was asked for, so no label is bought twice.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from prefect import flow

from alcore._io import atomic_path
from alcore.config import Params
from alcore.errors import ConfigError, problem
from alcore.experiment import (
    check_budget,
    check_features_match_encoder,
    check_oracle,
    derive_seed,
    experiment_lock,
    load_data,
    load_features,
    open_state,
    round_strategy,
    strategy_needs_pretext,
)
from alcore.features import read_spec
from alcore.layout import Layout
from alcore.ledger import CostLedger
from alcore.proxy import warm_up
from alcore.report import round_rows, summary
from alcore.training import HeadScorer, describe_evidence, resolve_mode
from flows._util import archive, ensure_artifact, read_json, say
from flows.extract import extract_all
from flows.gpu import on_gpu
from tasks import tracking
from tasks._common import ref
from tasks.evaluate import evaluate
from tasks.label import label
from tasks.proxy import evaluate_proxy, train_proxy
from tasks.realign import decide_realign
from tasks.select import select


def experiment_digest(p: Params) -> str:
    """What an experiment's labels depend on (not the device, progress bars, compare settings, the
    human oracle's hand-off, or where and how the work runs: the feature runner, shards, memory
    budget and work pools; those may change while an experiment goes on)."""
    d = p.model_dump(mode="json", exclude={"compare", "labeling", "orchestration"})
    d["experiment"] = {k: v for k, v in d["experiment"].items() if k not in ("device", "progress")}
    d["features"] = {"batch_size": d["features"]["batch_size"]}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _labeled(state: Any) -> tuple[np.ndarray, np.ndarray]:
    ids = np.asarray(state.labels.labeled_ids, dtype=np.int64)
    return ids, np.asarray(state.labels.labels_of(ids), dtype=np.int64)


class _Run:
    """The per-experiment context of one flow run: parameters, paths, refs, the state."""

    def __init__(self, p: Params, L: Layout, state: Any, info: dict[str, Any]) -> None:
        self.p, self.L, self.state = p, L, state
        self.name, self.seed, self.dev = p.experiment.name, p.experiment.seed, p.experiment.device
        self.fp, self.n_classes = info["fingerprint"], int(info["n_classes"])
        self.encoder = ref(L.encoder)
        self.dir = L.run_dir(self.name)
        # PT4AL's per-image pretext losses, when the strategy reads them (the pretext stage wrote them)
        self.pretext = ref(L.pretext) if strategy_needs_pretext(p.al.strategy) else None
        self.budget = p.features.memory_budget_bytes  # larger features are read by memory map
        self.networks: dict[int, dict[str, Any]] = {}  # trained since the last round record, by label count

    def features(self) -> dict[str, Any]:
        """The current feature version (the last realignment's, or the features stage's)."""
        return self.state.versions[-1]

    def network(self, ids: np.ndarray, labs: np.ndarray) -> dict[str, Any]:
        """Fine-tune the pre-trained encoder on ``ids`` with the resolved training mode.

        Standard AL's selection network, ASVP's realignment network, the per-budget evaluation
        network and the final one are all this one computation for a given labeled set: one
        cached result, one file.
        """
        p = self.p
        mode = resolve_mode(p.train.mode)  # auto is decided in the task, on held-out labels
        out = self.dir / "networks" / f"net-{len(ids)}.safetensors"
        say(f"           network on {len(ids)} labels (train.mode={mode})")
        res = ensure_artifact(
            on_gpu("fine_tune", p.orchestration),
            "model",
            self.encoder,
            p.data,
            self.fp,
            ids,
            labs,
            p.train,
            mode=mode,
            seed=derive_seed(self.seed, "network", len(ids)),
            device=self.dev,
            out=str(out),
            progress=p.experiment.progress,
        )
        self.networks[len(ids)] = {"labels": len(ids), "mode": res["mode"], "evidence": res["evidence"]}
        say(f"           network on {len(ids)} labels: {describe_evidence(res['evidence'])} ({res['seconds']:.1f} s)")
        return res

    def network_features(self, model: dict[str, str], *splits: str) -> dict[str, dict[str, Any]]:
        """Features of ``splits`` with a fine-tuned network (Standard's scoring pass, ASVP's re-extraction)."""
        outs = {s: str(self.dir / "features" / f"{Path(model['path']).stem}-{s}.parquet") for s in splits}
        return extract_all(model, self.p, self.fp, outs)

    def proxy(self, ids: np.ndarray, labs: np.ndarray, round: int) -> dict[str, Any]:
        f = self.features()
        out = train_proxy(
            f["pool"],
            ids,
            labs,
            self.p.proxy,
            n_classes=self.n_classes,
            seed=derive_seed(self.seed, "proxy", round),
            device=self.dev,
            memory_budget=self.budget,
        )
        out["key"] = f"{f['pool']['sha256']}:{round}:{hashlib.sha256(ids.tobytes()).hexdigest()[:16]}"
        return out


def network_metrics(ev: dict[str, Any], prefix: str) -> dict[str, float]:
    """A network's evidence as MLflow metrics: held-out accuracy per candidate, labels, steps."""
    out = {f"{prefix}heldout_{m}": c["accuracy"] for m, c in ev.get("candidates", {}).items()}
    out.update({f"{prefix}{k}": float(ev[k]) for k in ("n_labeled", "steps", "held_out") if k in ev})
    return out


class Selection(NamedTuple):
    """A round's batch, the compute it cost by phase, and the scorer that chose it (None when
    random): ``scorer`` scores rows of the ``features`` file; ``key`` names it for caches."""

    ids: np.ndarray
    seconds: dict[str, float]
    scorer: Any
    features: dict[str, str]
    key: str


def _select_round(
    run: _Run, r: int, n: int, proxy: dict[str, Any] | None, exclude: np.ndarray | None = None
) -> Selection:
    """Choose round ``r``'s batch among the unlabeled ids not in ``exclude``."""
    p, st = run.p, run.state
    strat, sparams = round_strategy(p.al, r)
    ids, labs = _labeled(st)
    seconds: dict[str, float] = {}
    features, scorer, key = run.features()["pool"], None, ""
    if r > 1 and p.al.pipeline == "standard":
        net = run.network(ids, labs)
        feats = run.network_features(net["model"], "pool")["pool"]
        seconds = {"fine_tuning": net["seconds"], "scoring": feats["seconds"]}
        features, scorer, key = feats["features"], HeadScorer.from_file(net["model"]["path"]), net["model"]["sha256"]
    elif r > 1:
        proxy = proxy or run.proxy(ids, labs, r - 1)
        seconds = {"proxy_training": proxy["seconds"]}
        scorer, key = proxy["proxy"], proxy["key"]
    sel = select(
        strat,
        sparams,
        features,
        ids,
        labs,
        n,
        n_classes=run.n_classes,
        proxy=scorer,
        proxy_key=key,
        seed=derive_seed(run.seed, "select", r),
        round=r,
        n_rounds=p.al.rounds,
        pretext=run.pretext,
        exclude=exclude,
        memory_budget=run.budget,
        device=run.dev,
    )
    seconds["scoring"] = seconds.get("scoring", 0.0) + sel["seconds"]
    return Selection(sel["ids"], seconds, scorer, features, key)


def _realign(run: _Run, r: int, record: dict[str, Any]) -> None:
    """ASVP: ask the trigger; if it fires, fine-tune on L and re-extract pool and test features."""
    p, st = run.p, run.state
    ids, labs = _labeled(st)
    since = len(st.versions) - 1
    history = [st.records[k].get("trigger", {}) for k in sorted(st.records) if st.records[k].get("version", 0) == since]
    d = decide_realign(
        p.al.trigger,
        p.al.trigger_params,
        run.features()["pool"],
        ids,
        labs,
        round=r,
        history=history,
        memory_budget=run.budget,
    )
    d["n_labeled_at_fire"] = len(ids) if d["fire"] else 0
    if d["fire"] and (len(st.versions) - 1 >= p.al.max_realignments or r == p.al.rounds):
        d["fire"], d["reason"] = (
            False,
            (d["reason"] + "; " if d["reason"] else "")
            + ("last round" if r == p.al.rounds else f"max_realignments={p.al.max_realignments} reached"),
        )
    d["fired"] = d["fire"]
    record["trigger"] = d
    if not d["fire"]:
        return
    net = run.network(ids, labs)
    st.ledger.record(r, "fine_tuning", net["seconds"])
    if net["mode"] == "lp":  # fine-tuning lost to the probe on held-out labels: the encoder did not move
        d["reextracted"] = False
        say(f"           no realignment after round {r}: fine-tuning did not beat the probe, the features stay")
        return
    v = len(st.versions)
    feats = run.network_features(net["model"], "pool", "test")
    pool, test = feats["pool"], feats["test"]
    st.ledger.record(r, "reextraction", pool["seconds"])  # the test set's features are evaluation, not charged
    st.versions.append(
        {
            "version": v,
            "round": r,
            "n_labeled": len(ids),
            "pool": pool["features"],
            "test": test["features"],
            "network": net["model"],
        }
    )
    say(
        f"           realigned after round {r} ({d['reason']}): features v{v} from a network fine-tuned on {len(ids)} labels"
    )


def _measure(run: _Run, r: int, test_labels: np.ndarray) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Round ``r``'s record (accuracies, trigger) and the proxy that selects round r + 1."""
    p, st = run.p, run.state
    ids, labs = _labeled(st)
    record: dict[str, Any] = {}
    if p.al.pipeline == "asvp":
        _realign(run, r, record)
    record["version"] = len(st.versions) - 1
    proxy = None
    if p.al.pipeline != "standard":
        proxy = run.proxy(ids, labs, r)
        record["proxy_accuracy"] = evaluate_proxy(proxy["proxy"], proxy["key"], run.features()["test"], test_labels)
    if p.al.evaluate_every_round:  # the final network at this budget: evaluation, never charged
        net = run.network(ids, labs)  # Standard's next selection network: the same cached result
        record["test_accuracy"] = evaluate(net["model"], p.data, run.fp, device=run.dev)["accuracy"]
    if run.networks:  # the networks this round trained: the mode each chose and its evidence
        record["networks"], run.networks = list(run.networks.values()), {}
    return record, proxy


class Inputs(NamedTuple):
    """What every round reads: the dataset's description, the feature files, the test labels."""

    info: dict[str, Any]
    pool: dict[str, str]
    test: dict[str, str]
    test_labels: np.ndarray


def read_inputs(p: Params, L: Layout) -> Inputs:
    """Check the budget and that the feature files belong to the encoder; before any work."""
    info = read_json(L.dataset, "prepare")
    check_budget(p.al, info["n_pool"])
    check_oracle(p.oracle, info.get("n_unlabeled", 0))
    pool_ref, test_ref = ref(L.features("pool")), ref(L.features("test"))
    spec = read_spec(pool_ref["path"])
    read_spec(test_ref["path"]).check_compatible(spec)
    check_features_match_encoder(L.encoder, spec)
    return Inputs(info, pool_ref, test_ref, np.asarray(load_data(p.data).test.labels))


def open_experiment(p: Params, L: Layout, inputs: Inputs, *, setup: Any) -> Any:
    """The experiment's state (resumed, or new); ``setup(state)`` says whether to (re)do round 0:
    the setup work paid for before the first label, and the first feature version."""
    st = open_state(
        L.state(p.experiment.name),
        config_digest=experiment_digest(p),
        pool_ids=load_features(inputs.pool["path"], memory_budget=p.features.memory_budget_bytes).ids,
        n_classes=int(inputs.info["n_classes"]),
        price_per_label=p.oracle.price_per_label,
        price_per_hour=p.cost.price_per_hour,
    )
    if setup(st):
        enc_meta, feat_meta = read_json(L.encoder_meta, "encoder"), read_json(L.features_meta, "features")
        st.ledger = CostLedger(price_per_label=p.oracle.price_per_label, price_per_hour=p.cost.price_per_hour)
        st.ledger.record(0, "pretraining", enc_meta["seconds"])
        if strategy_needs_pretext(p.al.strategy):  # the rotation task is pre-training paid for this strategy
            st.ledger.record(0, "pretraining", read_json(L.pretext_meta, "pretext")["seconds"])
        if p.al.pipeline != "standard":  # standard never uses the pre-computed features
            st.ledger.record(0, "extraction", feat_meta["seconds"]["pool"])
        st.versions = [{"version": 0, "round": 0, "pool": inputs.pool, "test": inputs.test}]
    return st


def mlflow_run(run: _Run) -> str:
    """The experiment's MLflow run (created once, its id kept in the state)."""
    st = run.state
    run_id = tracking.start_run(
        run.name, run.p.model_dump(mode="json", exclude={"compare"}), st.tracking.get("mlflow_run_id")
    )
    st.tracking["mlflow_run_id"] = run_id
    return run_id


def log_round(run: _Run, run_id: str, r: int) -> None:
    """Round ``r``'s costs, metrics and trigger decision to MLflow, and one line to the console."""
    st = run.state
    row = next(x for x in round_rows(st) if x["round"] == r)
    trig = st.records[r].get("trigger", {})
    nets = st.records[r].get("networks", [])
    tracking.log_metrics(
        run_id,
        {
            **{k: v for k, v in row.items() if k != "round"},
            **{f"trigger_{k}": v for k, v in trig.items()},
            **{k: v for n in nets for k, v in network_metrics(n["evidence"], "network_").items()},
        },
        step=r,
    )
    if nets:
        tracking.set_tags(run_id, {f"round_{r}.network_mode": ",".join(n["mode"] for n in nets)})
    acc = " ".join(f"{k} {st.records[r][k]:.4f}" for k in ("proxy_accuracy", "test_accuracy") if k in st.records[r])
    say(
        f"round {r:>3}: {row['labels_total']:>6} labels  {acc}  compute {row['compute_seconds']:.1f} s  total ${row['total_usd_cum']:.2f}"
    )


def finish(run: _Run, run_id: str, state_path: Path, last_round: int) -> dict[str, Any]:
    """Train the final network on every label (again when labels were added since) and summarise."""
    p, st = run.p, run.state
    ids, labs = _labeled(st)
    if st.final is None or st.final.get("labels") != len(ids):
        net = run.network(ids, labs)
        with atomic_path(run.L.final_model(run.name)) as tmp:
            shutil.copyfile(net["model"]["path"], tmp)
        ev = evaluate(net["model"], p.data, run.fp, device=run.dev, progress=p.experiment.progress)
        st.ledger.record(last_round, "final_training", net["seconds"])
        st.final = {
            "accuracy": ev["accuracy"],
            "mode": net["mode"],
            "labels": int(len(ids)),
            "model": net["model"]["path"],
            "evidence": net["evidence"],
        }
        st.save(state_path)
    s = summary(st)
    tracking.log_metrics(
        run_id,
        {
            **{f"final_{k}": v for k, v in s.items() if isinstance(v, (int, float))},
            **network_metrics(st.final.get("evidence", {}), "final_"),
        },
        step=last_round,
    )
    tracking.set_tags(run_id, {"final.train_mode": st.final["mode"]})
    return s


def refuse_human(p: Params) -> None:
    if p.oracle.name == "human":
        raise ConfigError(
            problem(
                "active_learning buys every round's labels at once, but oracle.name=human answers through files",
                allowed="oracle.name=simulated here; the human oracle runs in the labeling cycle",
                fix="run `alcore label cycle` (once) or `alcore serve` (on a schedule); `alcore run` does it for you",
            )
        )


@flow(name="active_learning", validate_parameters=True)
def active_learning(params: Params, fresh: bool = False, root: str = ".", runs: str = "runs") -> dict[str, Any]:
    """Run (or resume) the experiment ``params.experiment.name`` (state under ``root/runs/NAME``)."""
    p, L = params, Layout(Path(root), runs_dir=runs)
    refuse_human(p)
    name = p.experiment.name
    inputs = read_inputs(p, L)
    test_labels = inputs.test_labels
    state_path = L.state(name)
    with experiment_lock(L.run_dir(name)):
        if fresh and state_path.exists():
            say(f"Archived the previous state to {archive(state_path)}")
        st = open_experiment(p, L, inputs, setup=lambda st: st.round == 0)
        run = _Run(p, L, st, inputs.info)
        run_id = mlflow_run(run)
        schedule = p.al.schedule()
        if st.round:
            say(f"Resuming {name!r} after round {st.round} ({st.labels.n_labeled} labels already bought).")
        warm_up()  # a one-time import is not a cost of any round
        proxy = None
        for r in range(1, len(schedule) + 1):
            if r > st.round:
                sel = _select_round(run, r, schedule[r - 1], proxy)
                ans = label(p.oracle, p.data, run.fp, sel.ids, seed=run.seed)
                st.commit(r, ans["ids"], ans["labels"], sel.seconds)
                st.save(state_path)
                proxy = None
            if r not in st.records:
                st.records[r], proxy = _measure(run, r, test_labels)
                st.save(state_path)
                log_round(run, run_id, r)
        return finish(run, run_id, state_path, len(schedule))
