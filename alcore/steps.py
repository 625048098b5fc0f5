"""The steps of an active-learning run as plain library calls.

Two layers:

- computations on data in memory (:func:`pretrained_encoder`, :func:`fit_proxy`,
  :func:`select_batch`, :func:`train_network`, ...), which benchmarks and tests call directly;
- file-level steps (:func:`build_encoder`, :func:`extract_features`, :func:`train_proxy`,
  :func:`select`, :func:`label`, :func:`fine_tune`, :func:`evaluate`, ...): each reads its inputs
  from plain data (configs, arrays, file references with their digests), writes what it makes to
  a file, and returns plain, JSON-ready data (numbers, lists, the refs of what it wrote). Each is
  what the Prefect task of the same name in ``tasks/`` wraps, and what the plain implementation
  of the round's steps (:class:`alcore.rounds.PlainSteps`) calls. No result is a live object, so
  any result can be stored, compared and keyed without pickling.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from alcore.as3l import Priors, fine_features, prior_labels, write_priors
from alcore.config import ALCfg, DataCfg, EncoderCfg, LabelingCfg, OracleCfg, PretextCfg, ProxyCfg, TrainCfg
from alcore.datasets import Dataset, load_dataset
from alcore.encoders import create_encoder, load_encoder, save_encoder
from alcore.errors import ConfigError, DataError, problem
from alcore.features import FeatureSet, FeatureSpec, read_features, write_features
from alcore.features import extract_features as extract_array
from alcore.idtable import IdIndex
from alcore.keys import ref
from alcore.oracle import check_oracle, make_oracle
from alcore.pretext import read_pretext_losses, rotation_losses, train_rotation, write_pretext_losses
from alcore.proxy import ProxyMLP, load_proxy, save_proxy
from alcore.realign import make_trigger
from alcore.seeding import derive_seed, torch_seeded
from alcore.shards import Shard, publish_parts, remove_stale_parts, write_part
from alcore.ssl import pretrain_simclr
from alcore.strategies import STRATEGIES, Scorer, SelectionContext, make_strategy
from alcore.training import (
    SEMI_MODES,
    HeadScorer,
    load_any_encoder,
    load_classifier,
    predict_proba,
    read_training_record,
    resolve_mode,
    save_classifier,
    train_classifier,
)
from alcore.training import evaluate as evaluate_network

__all__ = [
    "as3l_priors",
    "build_encoder",
    "compute_features",
    "decide_realign",
    "describe_data",
    "evaluate",
    "evaluate_proxy",
    "extract_features",
    "extract_part",
    "fine_tune",
    "fit_proxy",
    "label",
    "load_data",
    "load_features",
    "load_pretext_losses",
    "load_scorer",
    "make_oracle_for",
    "predict_batch",
    "predict_labels",
    "pretext_losses",
    "pretrained_encoder",
    "priors_path",
    "publish_features",
    "round_strategy",
    "select",
    "select_batch",
    "stopwatch",
    "train_network",
    "train_proxy",
    "trigger_decision",
    "write_pretext_skipped",
]

Ref = dict[str, str]


# ---------------------------------------------------------------- timing and loading
@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0


@functools.lru_cache(maxsize=4)
def _load_dataset_cached(name: str, params_json: str) -> Dataset:
    return load_dataset(name, **json.loads(params_json))


def load_data(cfg: DataCfg) -> Dataset:
    """The :class:`~alcore.datasets.Dataset` a config names (memoised per process)."""
    return _load_dataset_cached(cfg.name, json.dumps(cfg.params, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _read_features_cached(path: str, mtime_ns: int, size: int, memory_budget: int | None = None) -> FeatureSet:
    return read_features(path, memory_budget=memory_budget)


def load_features(path: str | os.PathLike[str], *, memory_budget: int | None = None) -> FeatureSet:
    """Read a feature file (memoised per process while the file is unchanged); by memory map when
    larger than ``memory_budget`` bytes (``features.memory_budget_mb``)."""
    st = os.stat(path)
    return _read_features_cached(str(path), st.st_mtime_ns, st.st_size, memory_budget)


def load_pretext_losses(path: str | os.PathLike[str], pool_ids: np.ndarray) -> np.ndarray:
    """``(N,)`` pretext losses aligned with ``pool_ids``; a clear error if they were not computed."""
    ids, losses, spec = read_pretext_losses(path)
    if not spec.get("computed", False):
        raise DataError(
            problem(
                f"{path} holds no pretext losses ({spec.get('reason', 'not computed')})",
                fix="set pretext.when=auto (or always) and run the pretext stage (dvc repro, or alcore run)",
            )
        )
    return losses[IdIndex(ids).positions(pool_ids, where=str(path))]


def load_scorer(scorer: Ref) -> Scorer:
    """The scorer a file holds: a proxy (:func:`alcore.proxy.save_proxy`) or a fine-tuned
    network's head (:class:`alcore.training.HeadScorer`, Standard AL's scorer of its own features)."""
    from safetensors import safe_open

    with safe_open(scorer["path"], framework="np") as fh:
        fmt = (fh.metadata() or {}).get("format")
    return HeadScorer.from_file(scorer["path"]) if fmt == "alcore.classifier/1" else load_proxy(scorer["path"])


# ---------------------------------------------------------------- computations in memory
def pretrained_encoder(cfg: EncoderCfg, data: Dataset, *, seed: int, device: str, progress: bool) -> Any:
    """The pre-trained encoder: timm hub weights, a local file, or SimCLR on the pool. Its initial
    weights are drawn from ``seed`` (they matter when SimCLR trains it from scratch)."""
    with torch_seeded(derive_seed(seed, "encoder-init")):
        enc = create_encoder(
            cfg.arch,
            pretrained=cfg.pretrained,
            weights=cfg.weights,
            input_size=cfg.input_size,
            feature_level=cfg.feature_level,
        )
    if cfg.needs_ssl:
        enc = pretrain_simclr(
            enc,
            data.pool,
            epochs=cfg.ssl.epochs,
            batch_size=cfg.ssl.batch_size,
            lr=cfg.ssl.lr,
            temperature=cfg.ssl.temperature,
            projection_dim=cfg.ssl.projection_dim,
            device=device,
            random_state=derive_seed(seed, "ssl"),
            progress=progress,
        )
    return enc.eval()


def compute_features(
    encoder: Any, data: Dataset, split: str, *, batch_size: int, device: str, progress: bool
) -> FeatureSet:
    """Features of ``data.pool`` or ``data.test`` with their spec."""
    sp = getattr(data, split)
    X = extract_array(encoder, sp, batch_size=batch_size, device=device, progress=progress, desc=f"{split} features")
    spec = FeatureSpec.for_encoder(encoder, sp, dataset=data.fingerprint(), split_name=split)
    return FeatureSet(ids=np.asarray(sp.ids, dtype=np.int64), X=X, spec=spec)


def fit_proxy(
    pool: FeatureSet, ids: np.ndarray, labels: np.ndarray, cfg: ProxyCfg, *, n_classes: int, seed: int, device: str
) -> ProxyMLP:
    """A fresh proxy MLP trained on the features of the labeled ``ids`` (only their rows are read)."""
    X = pool.X[pool.positions(np.asarray(ids, dtype=np.int64))]
    proxy = ProxyMLP(**cfg.model_dump(), device=device, random_state=seed)
    return proxy.fit(X, np.asarray(labels), n_classes)


def select_batch(
    strategy: str,
    strategy_params: dict[str, Any],
    pool: FeatureSet,
    labeled_ids: np.ndarray,
    labeled_labels: np.ndarray,
    n: int,
    *,
    n_classes: int,
    proxy: Scorer | None,
    seed: int,
    round: int,
    n_rounds: int | None = None,
    extras: dict[str, np.ndarray] | None = None,
    exclude: np.ndarray | None = None,
    device: str | None = None,
) -> np.ndarray:
    """Ids of the next ``n`` samples to label, chosen by ``strategy`` among the unlabeled.

    ``extras``: per-sample side arrays (e.g. ``pretext_loss``) aligned with ``pool.ids``.
    ``exclude``: unlabeled ids that may not be chosen (out with annotators already); they are left
    out of the pool the strategy sees, which copies the remaining rows (a memory map is read
    whole once then).
    ``device``: where the strategies' distance passes run (``experiment.device``; None or the CPU:
    numpy). The same ids either way, up to float rounding in exact near-ties.
    """
    if exclude is not None and len(exclude):
        keep = ~np.isin(pool.ids, np.asarray(exclude, dtype=np.int64))
        pool = FeatureSet(ids=pool.ids[keep], X=pool.X[keep], spec=pool.spec)
        extras = {k: np.asarray(v)[keep] for k, v in (extras or {}).items()}
    labels = np.full(len(pool.ids), -1, dtype=np.int64)
    labels[pool.positions(np.asarray(labeled_ids, dtype=np.int64))] = labeled_labels
    ctx = SelectionContext(
        pool_ids=pool.ids,
        features=pool.X,
        labels=labels,
        n_classes=n_classes,
        model=proxy,
        round=round,
        n_rounds=n_rounds,
        extras=extras or {},
        device=device,
    )
    strat = make_strategy(strategy, **strategy_params)
    return np.asarray(strat.select(ctx, n, random_state=seed), dtype=np.int64)


def predict_batch(scorer: Scorer, pool: FeatureSet, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's class for each of ``ids`` and its probability: ``(k,)`` int64, ``(k,)`` float64.

    The pre-annotation a labeling job shows the annotator (it is never taken as a label).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if not ids.size:
        return np.zeros(0, np.int64), np.zeros(0)
    proba = np.asarray(scorer.predict_proba(pool.X[pool.positions(ids)]), dtype=np.float64)
    pred = proba.argmax(axis=1)
    return pred.astype(np.int64), proba[np.arange(ids.size), pred]


def round_strategy(al: ALCfg, round: int) -> tuple[str, dict[str, Any]]:
    """Round 1 is random unless the strategy can start cold; later rounds use ``al.strategy``."""
    if round == 1 and not STRATEGIES.get(al.strategy).cold_start:
        return "random", {}
    return al.strategy, dict(al.strategy_params)


def make_oracle_for(
    cfg: OracleCfg, data: Dataset, *, seed: int, labeling: LabelingCfg | None = None, labeling_dir: Any = None
) -> Any:
    """The oracle a config names; the simulated one reads the pool's hidden labels, the human one
    writes jobs to ``labeling_dir/outbox`` and reads answers from ``labeling_dir/inbox``."""
    if cfg.name == "human":
        if labeling is None or labeling_dir is None:
            raise ConfigError(problem("the human oracle needs the labeling section and folder"))
        return make_oracle(
            "human",
            pool=data.pool,
            classes=list(data.classes),
            outbox=Path(labeling_dir) / "outbox",
            inbox=Path(labeling_dir) / "inbox",
            price_per_label=cfg.price_per_label,
            image_url=labeling.image_url,
            image_root=labeling.image_root,
            embed_max_side=labeling.embed_max_side,
            from_name=labeling.from_name,
            to_name=labeling.to_name,
        )
    if cfg.name == "simulated":
        check_oracle(cfg, int((np.asarray(data.pool.labels) < 0).sum()))
        return make_oracle(
            "simulated",
            ids=data.pool.ids,
            labels=data.pool.labels,
            n_classes=data.n_classes,
            price_per_label=cfg.price_per_label,
            noise_rate=cfg.noise_rate,
            random_state=derive_seed(seed, "oracle"),
        )
    return make_oracle(cfg.name, price_per_label=cfg.price_per_label)


def as3l_priors(
    encoder: Any,
    data: Dataset,
    positions: np.ndarray,
    labels: np.ndarray,
    cfg: TrainCfg,
    *,
    seed: int,
    device: str,
    progress: bool = False,
) -> Priors:
    """AS3L's priors for the pool (:func:`alcore.as3l.prior_labels`): ``f_fine`` from the
    encoder's own features of the pool, then constrained k-means seeded by the labeled rows."""
    F_self = extract_array(encoder, data.pool, batch_size=256, device=device, progress=progress, desc="as3l features")
    F_fine = fine_features(
        F_self,
        max(2, min(len(positions), len(data.pool))),
        n_runs=cfg.as3l_runs,
        epochs=cfg.as3l_epochs,
        random_state=derive_seed(seed, "as3l", "fine"),
    )
    return prior_labels(
        F_fine,
        positions,
        labels,
        data.n_classes,
        temperature=cfg.prior_temperature,
        random_state=derive_seed(seed, "as3l", "priors"),
    )


def train_network(
    encoder: Any,
    data: Dataset,
    ids: np.ndarray,
    labels: np.ndarray,
    cfg: TrainCfg,
    *,
    mode: str,
    seed: int,
    device: str,
    progress: bool,
    priors: Priors | None = None,
) -> Any:
    """Train the real network on the labeled ids, from ``encoder``: supervised (``lp`` / ``ft`` /
    ``lpft``, or ``auto``), or semi-supervised on the whole pool (``fixmatch``; ``as3l`` with
    ``priors``, computed by :func:`as3l_priors` when not given). Every mode but ``lp`` is held to
    its linear probe on held-out labels when ``cfg.holdout > 0`` (the semi-supervised ones by
    :func:`alcore.semi.semi_guard`); the model's ``training_record`` says which mode won and why."""
    pos = IdIndex(data.pool.ids).positions(ids, where="the pool")
    labels = np.asarray(labels, dtype=np.int64)
    if mode in SEMI_MODES:
        return _train_semi_network(
            encoder, data, pos, labels, cfg, mode=mode, seed=seed, device=device, progress=progress, priors=priors
        )
    return train_classifier(
        encoder,
        data.pool,
        pos,
        labels,
        n_classes=data.n_classes,
        mode=resolve_mode(mode),  # auto is decided inside, on held-out labels
        config=cfg.train_config(),
        device=device,
        random_state=seed,
        progress=progress,
    ).model


def trigger_decision(
    trigger: str,
    trigger_params: dict[str, Any],
    pool: FeatureSet,
    ids: np.ndarray,
    labels: np.ndarray,
    *,
    round: int,
    history: list[dict[str, Any]],
    fired_at: tuple[int, ...] | list[int] = (),
) -> dict[str, Any]:
    """Ask the realignment trigger whether ASVP should realign now: ``{"fire", "reason", **indicators}``.
    ``history``: this feature version's earlier decisions; ``fired_at``: the label counts of every
    earlier fire of the run (:class:`alcore.realign.Trigger`)."""
    trig = make_trigger(trigger, **trigger_params)
    X = pool.X[pool.positions(np.asarray(ids, dtype=np.int64))] if trig.needs_features else None
    d = trig.decide(
        round=round,
        n_labeled=len(ids),
        X=X,
        y=np.asarray(labels) if X is not None else None,
        history=history,
        fired_at=tuple(int(n) for n in fired_at),
    )
    return {"fire": bool(d.fire), "reason": d.reason, **{k: float(v) for k, v in d.indicators.items()}}


def priors_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the AS3L priors of a network trained with ``train.mode=as3l`` are written."""
    p = Path(model_path)
    return p.with_name(p.name.split(".")[0] + ".priors.parquet")


def write_pretext_skipped(out: str | os.PathLike[str], reason: str) -> None:
    """The pretext stage's output when no strategy needs it: an empty loss file that says why."""
    write_pretext_losses(
        out, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), {"computed": False, "reason": reason}
    )


# ---------------------------------------------------------------- file-level steps (what tasks wrap)
def describe_data(data: DataCfg) -> dict[str, Any]:
    """Name, params, fingerprint, sizes and class names of a dataset."""
    ds = load_data(data)
    if len(ds.pool) == 0:
        raise ConfigError(problem(f"Dataset {data.name!r} has an empty pool", fix="check data.params"))
    return {
        "name": ds.name,
        "params": ds.params,
        "fingerprint": ds.fingerprint(),
        "n_pool": len(ds.pool),
        "n_test": len(ds.test),
        "n_classes": ds.n_classes,
        "classes": list(ds.classes),
        "n_unlabeled": int((np.asarray(ds.pool.labels) < 0).sum()),
    }


def build_encoder(
    encoder: EncoderCfg,
    data: DataCfg,
    data_fingerprint: str,
    *,
    seed: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Build the pre-trained encoder and write it to ``out``: ``{"encoder": ref, "seconds"}``."""
    with stopwatch() as t:
        enc = pretrained_encoder(encoder, load_data(data), seed=seed, device=device, progress=progress)
    save_encoder(enc, out)
    return {"encoder": ref(out), "seconds": t["seconds"]}


def pretext_losses(
    encoder: Ref,
    data: DataCfg,
    data_fingerprint: str,
    cfg: PretextCfg,
    *,
    seed: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the rotation predictor on the pool and write every pool image's pretext loss to
    ``out`` (:func:`alcore.pretext.write_pretext_losses`): ``{"pretext": ref, "seconds"}``."""
    ds = load_data(data)
    enc = load_encoder(encoder["path"])
    if cfg.init == "scratch":
        with torch_seeded(derive_seed(seed, "pretext-init")):
            c = enc.config
            enc = create_encoder(c.arch, input_size=c.preprocess.input_size, feature_level=c.feature_level)
    with stopwatch() as t:
        model = train_rotation(
            enc,
            ds.pool,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            device=device,
            random_state=derive_seed(seed, "pretext"),
            progress=progress,
        )
        losses = rotation_losses(model, ds.pool, batch_size=max(cfg.batch_size, 256), device=device)
    spec = {
        "computed": True,
        "task": "rotation",
        "encoder_sha256": encoder["sha256"],
        "dataset": ds.fingerprint(),
        "config": cfg.model_dump(mode="json"),
        "seed": seed,
        "seconds": t["seconds"],
    }
    write_pretext_losses(out, np.asarray(ds.pool.ids), losses, spec)
    return {"pretext": ref(out), "seconds": t["seconds"]}


def extract_features(
    weights: Ref,
    data: DataCfg,
    data_fingerprint: str,
    split: str,
    *,
    batch_size: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Extract ``split``'s features and write them to ``out``: ``{"features": ref, "seconds"}``.

    ``weights`` is an encoder file (the pre-trained encoder) or a classifier file (a fine-tuned
    network: Standard AL's scoring pass, ASVP's re-extraction). Either way the spec records that
    encoder's weights digest, so each set of features is a new, distinct file.
    """
    enc = load_any_encoder(weights["path"])
    with stopwatch() as t:
        fs = compute_features(enc, load_data(data), split, batch_size=batch_size, device=device, progress=progress)
    write_features(out, fs.ids, fs.X, fs.spec)
    return {"features": ref(out), "seconds": t["seconds"]}


def extract_part(
    weights: Ref,
    data: DataCfg,
    data_fingerprint: str,
    split: str,
    shard: Shard,
    *,
    batch_size: int,
    device: str,
    threads: int | None,
    out: str,
) -> dict[str, Any]:
    """Extract part ``shard`` of ``split`` and write it to ``out`` with torch limited to ``threads``
    intra-op threads: ``{"part": ref, "seconds"}``."""
    from alcore.device import torch_threads

    enc = load_any_encoder(weights["path"])
    ds = load_data(data)
    sp = getattr(ds, split)
    whole = FeatureSpec.for_encoder(enc, sp, dataset=ds.fingerprint(), split_name=split)
    part = sp.subset(np.arange(shard.start, shard.stop))
    with torch_threads(threads), stopwatch() as t:
        X = extract_array(
            enc, part, batch_size=batch_size, device=device, progress=False, desc=f"{split} part {shard.index}"
        )
    write_part(out, shard, part.ids, X, whole)
    return {"part": ref(out), "seconds": t["seconds"]}


def publish_features(parts: list[dict[str, Any]], *, out: str) -> dict[str, Any]:
    """Check the parts of one split (one spec, ids disjoint and complete) and write them as ``out``.

    ``seconds`` is the extraction's compute: the parts' seconds summed (what a ledger charges),
    not the wall time of the parallel run.
    """
    with stopwatch() as t:
        paths = [p["part"]["path"] for p in parts]
        publish_parts(paths, out)
        remove_stale_parts(out, keep=paths)
    return {
        "features": ref(out),
        "seconds": sum(p["seconds"] for p in parts),
        "parts": len(parts),
        "publish_seconds": t["seconds"],
    }


def train_proxy(
    features: Ref,
    ids: np.ndarray,
    labels: np.ndarray,
    proxy: ProxyCfg,
    *,
    n_classes: int,
    seed: int,
    device: str,
    out: str,
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """A fresh proxy trained on the labeled ids, written to ``out``: ``{"proxy": ref, "seconds"}``
    (features larger than ``memory_budget`` bytes are read by memory map: only the labeled rows
    are loaded)."""
    pool = load_features(features["path"], memory_budget=memory_budget)
    with stopwatch() as t:
        model = fit_proxy(pool, ids, labels, proxy, n_classes=n_classes, seed=seed, device=device)
    save_proxy(model, out)
    return {"proxy": ref(out), "seconds": t["seconds"]}


def evaluate_proxy(proxy: Ref, test_features: Ref, test_labels: np.ndarray) -> dict[str, float]:
    """Test accuracy of the proxy on the test set's pre-computed features: ``{"accuracy"}``."""
    model = load_proxy(proxy["path"])
    return {"accuracy": float((model.predict(load_features(test_features["path"]).X) == test_labels).mean())}


def select(
    strategy: str,
    strategy_params: dict[str, Any],
    features: Ref,
    labeled_ids: np.ndarray,
    labeled_labels: np.ndarray,
    n: int,
    *,
    n_classes: int,
    scorer: Ref | None,
    seed: int,
    round: int,
    n_rounds: int | None = None,
    pretext: Ref | None = None,
    exclude: np.ndarray | None = None,
    memory_budget: int | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Ids of the next ``n`` samples, never one of ``exclude`` (ids out with annotators):
    ``{"ids": [...], "seconds"}``. ``scorer`` is the file of the model that scores the rows of
    ``features`` (a proxy, or a fine-tuned network's head), or None (round 1). Features larger
    than ``memory_budget`` bytes are read by memory map, and the distance passes run on ``device``
    (the same ids either way: neither is in the cache key).

    ``pretext``: a ref to the pretext-loss file, for strategies that need ``pretext_loss``.
    """
    pool = load_features(features["path"], memory_budget=memory_budget)
    extras = {"pretext_loss": load_pretext_losses(pretext["path"], pool.ids)} if pretext else None
    model = load_scorer(scorer) if scorer is not None else None
    with stopwatch() as t:
        ids = select_batch(
            strategy,
            strategy_params,
            pool,
            labeled_ids,
            labeled_labels,
            n,
            n_classes=n_classes,
            proxy=model,
            seed=seed,
            round=round,
            n_rounds=n_rounds,
            extras=extras,
            exclude=exclude,
            device=device,
        )
    return {"ids": ids.tolist(), "seconds": t["seconds"]}


def predict_labels(scorer: Ref, features: Ref, ids: np.ndarray) -> dict[str, list[Any]]:
    """The scorer's class and probability for each of ``ids``: a labeling job's pre-annotation,
    ``{"predicted": [...], "confidence": [...]}``."""
    pred, conf = predict_batch(load_scorer(scorer), load_features(features["path"]), ids)
    return {"predicted": pred.tolist(), "confidence": conf.tolist()}


def label(oracle: OracleCfg, data: DataCfg, data_fingerprint: str, ids: np.ndarray, *, seed: int) -> dict[str, Any]:
    """The oracle's answers for ``ids``: ``{"ids": [...], "labels": [...]}`` (a human may answer fewer)."""
    batch = make_oracle_for(oracle, load_data(data), seed=seed).query(np.asarray(ids, dtype=np.int64))
    return {"ids": np.asarray(batch.ids).tolist(), "labels": np.asarray(batch.labels).tolist()}


def _train_semi_network(
    encoder: Any,
    data: Dataset,
    pos: np.ndarray,
    labels: np.ndarray,
    cfg: TrainCfg,
    *,
    mode: str,
    seed: int,
    device: str,
    progress: bool,
    priors: Priors | None,
) -> Any:
    """:func:`train_network` for ``fixmatch`` / ``as3l``: the guard's folds (AS3L's priors from
    each fold's own labels, so no held-out label reaches its training), then the final fit on
    every label (with ``priors`` when given), or the probe when the mode did not beat it."""
    import time

    from alcore.semi import semi_guard, train_semi

    def fit(p: np.ndarray, y: np.ndarray, s: int, desc: str | None = None, pri: Priors | None = None) -> Any:
        if mode == "as3l" and pri is None:
            pri = as3l_priors(encoder, data, p, y, cfg, seed=s, device=device, progress=progress)
        return train_semi(
            encoder,
            data.pool,
            p,
            y,
            n_classes=data.n_classes,
            priors=(pri.labels, pri.confidence) if pri is not None and mode == "as3l" else None,
            config=cfg.semi_config(),
            device=device,
            random_state=s,
            progress=progress,
            desc=desc,
        ).model

    tcfg = cfg.train_config()
    if tcfg.holdout == 0:
        model = fit(pos, labels, seed, pri=priors)
        model.training_record["rule"] = "holdout=0: semi-supervised without the guard"
        return model
    chosen, ev = semi_guard(
        fit,
        encoder,
        data.pool,
        pos,
        labels,
        n_classes=data.n_classes,
        mode=mode,
        config=tcfg,
        device=device,
        random_state=seed,
    )
    t = time.perf_counter()
    if chosen == "lp":
        model = train_classifier(
            encoder,
            data.pool,
            pos,
            labels,
            n_classes=data.n_classes,
            mode="lp",
            config=tcfg,
            device=device,
            progress=False,
        ).model
    else:
        model = fit(pos, labels, seed, f"{mode} on {len(labels)} labels", pri=priors)
    ev.update(mode=chosen, steps=0 if chosen == "lp" else cfg.semi_steps, seconds_final=time.perf_counter() - t)
    model.training_record = ev
    return model


def fine_tune(
    encoder: Ref,
    data: DataCfg,
    data_fingerprint: str,
    ids: np.ndarray,
    labels: np.ndarray,
    train: TrainCfg,
    *,
    mode: str,
    seed: int,
    device: str,
    out: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Fine-tune from the encoder file on ``ids`` and write the classifier to ``out``:
    ``{"model": ref, "seconds", "mode", "evidence"}``: the mode trained (``auto`` resolved) and its
    held-out evidence (also in the file's metadata); and ``"priors"``, the AS3L priors written
    beside it, with ``train.mode=as3l``."""
    enc = load_encoder(encoder["path"])
    ds = load_data(data)
    priors, written = None, {}
    with stopwatch() as t:
        if mode == "as3l":  # the priors are an artifact of their own, beside the network
            pos = IdIndex(ds.pool.ids).positions(ids, where="the pool")
            priors = as3l_priors(enc, ds, pos, np.asarray(labels), train, seed=seed, device=device, progress=progress)
            spec = {"encoder_sha256": encoder["sha256"], "n_labeled": len(ids), "seed": seed}
            write_priors(str(priors_path(out)), np.asarray(ds.pool.ids), priors, spec)
            written["priors"] = ref(priors_path(out))
        model = train_network(
            enc, ds, ids, labels, train, mode=mode, seed=seed, device=device, progress=progress, priors=priors
        )
    save_classifier(model, out)
    record = read_training_record(out)
    return {"model": ref(out), "seconds": t["seconds"], "mode": record.get("mode", mode), "evidence": record, **written}


def decide_realign(
    trigger: str,
    trigger_params: dict[str, Any],
    features: Ref,
    ids: np.ndarray,
    labels: np.ndarray,
    *,
    round: int,
    history: list[dict[str, Any]],
    fired_at: tuple[int, ...] | list[int] = (),
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """``{"fire": bool, "reason": str, <indicator>: float, ...}`` on the features ``features``."""
    pool = load_features(features["path"], memory_budget=memory_budget)
    return trigger_decision(trigger, trigger_params, pool, ids, labels, round=round, history=history, fired_at=fired_at)


def evaluate(
    model: Ref,
    data: DataCfg,
    data_fingerprint: str,
    *,
    device: str,
    progress: bool = False,
    pool_ids: Any = None,
) -> dict[str, Any]:
    """Test accuracy of a saved classifier: ``{"accuracy", "n", "seconds"}``. With ``pool_ids``
    (the audit's reserve), also the classifier's predictions on those pool rows, in their order:
    ``pool_predicted``, ``pool_confidence`` (top-class probability, 6 digits) and ``pool_seconds``
    (what a project without a test set pays to have its network judged on the audit)."""
    net = load_classifier(model["path"])
    ds = load_data(data)
    with stopwatch() as t:
        res = evaluate_network(net, ds.test, device=device, progress=progress)
    out = {**res, "seconds": t["seconds"]}
    if pool_ids is not None:
        ids = np.asarray(pool_ids, dtype=np.int64)
        with stopwatch() as t:
            split = ds.pool.subset(IdIndex(ds.pool.ids).positions(ids))
            probs = predict_proba(net, split, device=device, progress=progress)
        out["pool_predicted"] = probs.argmax(1).astype(int).tolist()
        out["pool_confidence"] = np.round(probs.max(1).astype(np.float64), 6).tolist()
        out["pool_seconds"] = t["seconds"]
    return out
