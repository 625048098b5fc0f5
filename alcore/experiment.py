"""The steps of an active-learning experiment as plain library calls, and its persisted state.

Each function here is what one Prefect task in ``tasks/`` wraps; ``bench/`` calls them in a plain
Python loop to measure what orchestration costs. The experiment's state (label state, cost ledger,
per-round records) lives in one JSON file written atomically after every label purchase, so a run
killed anywhere resumes at the last completed round and never buys a label twice.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alcore._io import file_digest, read_json, write_json_atomic
from alcore.config import ALCfg, DataCfg, EncoderCfg, LabelingCfg, OracleCfg, PretextCfg, ProxyCfg, TrainCfg
from alcore.errors import BudgetExceededError, ConfigError, DataError, ExperimentLockedError, problem
from alcore.features import FeatureSet, FeatureSpec, extract_features, read_features, write_features
from alcore.labeling import LabelingLog
from alcore.ledger import CostLedger
from alcore.proxy import ProxyMLP
from alcore.shards import Shard, write_part
from alcore.state import LabelState

STATE_VERSION = 1


# ---------------------------------------------------------------- seeds and timing
def derive_seed(seed: int, *keys: int | str) -> int:
    """A stable 31-bit seed for (experiment seed, purpose, round, ...)."""
    ss = np.random.SeedSequence(
        [int(seed)] + [k if isinstance(k, int) else sum(map(ord, k)) * 7919 + len(k) for k in keys]
    )
    return int(ss.generate_state(1)[0] & 0x7FFFFFFF)


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``."""
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - t0


# ---------------------------------------------------------------- data, encoder, features
@functools.lru_cache(maxsize=4)
def _load_dataset_cached(name: str, params_json: str) -> Any:
    from alcore.datasets import load_dataset

    return load_dataset(name, **json.loads(params_json))


def load_data(cfg: DataCfg) -> Any:
    """The :class:`~alcore.datasets.Dataset` a config names (memoised per process)."""
    return _load_dataset_cached(cfg.name, json.dumps(cfg.params, sort_keys=True))


def check_budget(al: ALCfg, n_pool: int) -> None:
    """Refuse a schedule that asks for more labels than the pool holds."""
    total = sum(al.schedule())
    if total > n_pool:
        raise BudgetExceededError(
            problem(
                f"The budget schedule buys {total} labels (al.initial={al.initial} + "
                f"{al.rounds - 1} x al.batch={al.batch}) but the pool holds {n_pool} samples",
                f"at most {n_pool} labels in all",
                "lower al.rounds, al.batch or al.initial",
            )
        )


def check_oracle(cfg: OracleCfg, n_unlabeled: int) -> None:
    """Refuse the simulated oracle on a pool with images nobody has labeled (it has no truth to reveal)."""
    if cfg.name == "simulated" and n_unlabeled:
        raise ConfigError(
            problem(
                f"the simulated oracle reveals true labels, but {n_unlabeled} pool image(s) have none",
                allowed="a fully labeled pool for oracle.name=simulated",
                fix="set oracle.name: human and have people label them (alcore run, then alcore serve)",
            )
        )


def build_encoder(cfg: EncoderCfg, data: Any, *, seed: int, device: str, progress: bool) -> Any:
    """The pre-trained encoder: timm hub weights, a local file, or SimCLR on the pool."""
    from alcore.encoders import create_encoder
    from alcore.ssl import pretrain_simclr

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
    encoder: Any, data: Any, split: str, *, batch_size: int, device: str, progress: bool
) -> FeatureSet:
    """Features of ``data.pool`` or ``data.test`` with their spec."""
    sp = getattr(data, split)
    X = extract_features(encoder, sp, batch_size=batch_size, device=device, progress=progress, desc=f"{split} features")
    spec = FeatureSpec.for_encoder(encoder, sp, dataset=data.fingerprint(), split_name=split)
    return FeatureSet(ids=np.asarray(sp.ids, dtype=np.int64), X=X, spec=spec)


def check_features_match_encoder(encoder_path: str | os.PathLike[str], spec: FeatureSpec) -> None:
    """Refuse features that another encoder (or other weights) computed."""
    from alcore.encoders import load_encoder
    from alcore.errors import FeatureMismatchError

    enc = load_encoder(encoder_path)
    digest = enc.weights_digest()
    if spec.weights_digest != digest or spec.encoder_arch != enc.config.arch:
        raise FeatureMismatchError(
            problem(
                f"The features were computed by {spec.encoder_arch} with weights {spec.weights_digest}, but the encoder "
                f"at {encoder_path} is {enc.config.arch} with weights {digest}",
                fix="re-extract the features with this encoder (dvc repro, or alcore run --stage features)",
            )
        )


def save_features(fs: FeatureSet, path: str | os.PathLike[str]) -> None:
    write_features(path, fs.ids, fs.X, fs.spec)


@functools.lru_cache(maxsize=8)
def _read_features_cached(path: str, mtime_ns: int, size: int, memory_budget: int | None = None) -> FeatureSet:
    return read_features(path, memory_budget=memory_budget)


def load_features(path: str | os.PathLike[str], *, memory_budget: int | None = None) -> FeatureSet:
    """Read a feature file (memoised per process while the file is unchanged); by memory map when
    larger than ``memory_budget`` bytes (``features.memory_budget_mb``)."""
    st = os.stat(path)
    return _read_features_cached(str(path), st.st_mtime_ns, st.st_size, memory_budget)


# ---------------------------------------------------------------- proxy, selection, labels
def positions_of(ids: np.ndarray, all_ids: np.ndarray) -> np.ndarray:
    """Row positions of ``ids`` in ``all_ids`` (vectorised; every id must be present)."""
    order = np.argsort(all_ids, kind="stable")
    pos = np.searchsorted(all_ids, ids, sorter=order)
    pos = np.clip(pos, 0, len(all_ids) - 1)
    found = order[pos]
    if len(ids) and not np.array_equal(all_ids[found], ids):
        missing = np.asarray(ids)[all_ids[found] != ids][:5]
        raise ConfigError(problem(f"ids not in this feature set: {missing.tolist()}"))
    return found


def train_proxy(
    pool: FeatureSet, ids: np.ndarray, labels: np.ndarray, cfg: ProxyCfg, *, n_classes: int, seed: int, device: str
) -> ProxyMLP:
    """A fresh proxy MLP trained on the features of the labeled ``ids``."""
    X = pool.X[positions_of(np.asarray(ids, dtype=np.int64), pool.ids)]
    proxy = ProxyMLP(**cfg.model_dump(), device=device, random_state=seed)
    return proxy.fit(X, np.asarray(labels), n_classes)


def proxy_accuracy(proxy: ProxyMLP, test: FeatureSet, test_labels: np.ndarray) -> float:
    """Test accuracy of the proxy on the test set's pre-computed features."""
    return float((proxy.predict(test.X) == test_labels).mean())


def select_batch(
    strategy: str,
    strategy_params: dict[str, Any],
    pool: FeatureSet,
    labeled_ids: np.ndarray,
    labeled_labels: np.ndarray,
    n: int,
    *,
    n_classes: int,
    proxy: ProxyMLP | None,
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
    out of the pool the strategy sees.
    ``device``: where the strategies' distance passes run (``experiment.device``; None or the CPU:
    numpy). The same ids either way, up to float rounding in exact near-ties.
    """
    from alcore.strategies import SelectionContext, make_strategy

    if exclude is not None and len(exclude):
        keep = ~np.isin(pool.ids, np.asarray(exclude, dtype=np.int64))
        pool = FeatureSet(ids=pool.ids[keep], X=pool.X[keep], spec=pool.spec)
    labels = np.full(len(pool.ids), -1, dtype=np.int64)
    labels[positions_of(np.asarray(labeled_ids, dtype=np.int64), pool.ids)] = labeled_labels
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


def predict_batch(scorer: Any, pool: FeatureSet, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The scorer's class for each of ``ids`` and its probability: ``(k,)`` int64, ``(k,)`` float64.

    The pre-annotation a labeling job shows the annotator (it is never taken as a label).
    """
    ids = np.asarray(ids, dtype=np.int64)
    if not ids.size:
        return np.zeros(0, np.int64), np.zeros(0)
    proba = np.asarray(scorer.predict_proba(pool.X[positions_of(ids, pool.ids)]), dtype=np.float64)
    pred = proba.argmax(axis=1)
    return pred.astype(np.int64), proba[np.arange(ids.size), pred]


def round_strategy(al: ALCfg, round: int) -> tuple[str, dict[str, Any]]:
    """Round 1 is random unless the strategy can start cold; later rounds use ``al.strategy``."""
    from alcore.strategies import STRATEGIES

    cls = STRATEGIES.get(al.strategy)
    if round == 1 and not getattr(cls, "cold_start", False):
        return "random", {}
    return al.strategy, dict(al.strategy_params)


def make_oracle_for(
    cfg: OracleCfg, data: Any, *, seed: int, labeling: LabelingCfg | None = None, labeling_dir: Any = None
) -> Any:
    """The oracle a config names; the simulated one reads the pool's hidden labels, the human one
    writes jobs to ``labeling_dir/outbox`` and reads answers from ``labeling_dir/inbox``."""
    from alcore.oracle import make_oracle

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
    data: Any,
    positions: np.ndarray,
    labels: np.ndarray,
    cfg: TrainCfg,
    *,
    seed: int,
    device: str,
    progress: bool = False,
) -> Any:
    """AS3L's priors for the pool (:func:`alcore.as3l.prior_labels`): ``f_fine`` from the
    encoder's own features of the pool, then constrained k-means seeded by the labeled rows."""
    from alcore.as3l import fine_features, prior_labels

    F_self = extract_features(
        encoder, data.pool, batch_size=256, device=device, progress=progress, desc="as3l features"
    )
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


def fine_tune(
    encoder: Any,
    data: Any,
    ids: np.ndarray,
    labels: np.ndarray,
    cfg: TrainCfg,
    *,
    mode: str,
    seed: int,
    device: str,
    progress: bool,
    priors: Any = None,
) -> Any:
    """Train the real network on the labeled ids, from ``encoder``: supervised (``lp`` / ``ft`` /
    ``lpft``, or ``auto``, each held to its linear probe on held-out labels; the model's
    ``training_record`` says which mode won and why), or semi-supervised on the whole pool
    (``fixmatch``; ``as3l`` with ``priors``, computed by :func:`as3l_priors` when not given)."""
    from alcore.training import SEMI_MODES, resolve_mode, train_classifier

    pos = positions_of(np.asarray(ids, dtype=np.int64), np.asarray(data.pool.ids, dtype=np.int64))
    labels = np.asarray(labels, dtype=np.int64)
    if mode in SEMI_MODES:
        from alcore.semi import train_semi

        if mode == "as3l" and priors is None:
            priors = as3l_priors(encoder, data, pos, labels, cfg, seed=seed, device=device, progress=progress)
        return train_semi(
            encoder,
            data.pool,
            pos,
            labels,
            n_classes=data.n_classes,
            priors=(priors.labels, priors.confidence) if mode == "as3l" else None,
            config=cfg.semi_config(),
            device=device,
            random_state=seed,
            progress=progress,
        ).model
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


# ---------------------------------------------------------------- file-level steps (what tasks wrap)
def describe_data(cfg: DataCfg) -> dict[str, Any]:
    """Name, params, fingerprint, sizes and class names of a dataset."""
    data = load_data(cfg)
    if len(data.pool) == 0:
        raise ConfigError(problem(f"Dataset {cfg.name!r} has an empty pool", fix="check data.params"))
    return {
        "name": data.name,
        "params": data.params,
        "fingerprint": data.fingerprint(),
        "n_pool": len(data.pool),
        "n_test": len(data.test),
        "n_classes": data.n_classes,
        "classes": list(data.classes),
        "n_unlabeled": int((np.asarray(data.pool.labels) < 0).sum()),
    }


def build_and_save_encoder(
    cfg: EncoderCfg, data_cfg: DataCfg, *, seed: int, device: str, progress: bool, out: str | os.PathLike[str]
) -> float:
    """Build the encoder and write it to ``out``; returns the seconds spent."""
    from alcore.encoders import save_encoder

    with stopwatch() as t:
        enc = build_encoder(cfg, load_data(data_cfg), seed=seed, device=device, progress=progress)
    save_encoder(enc, out)
    return t["seconds"]


def strategy_needs_pretext(name: str) -> bool:
    """Whether the strategy registered as ``name`` reads ``pretext_loss``."""
    from alcore.strategies import STRATEGIES

    return "pretext_loss" in STRATEGIES.get(name).requires


def pretext_needed(p: Any) -> bool:
    """Whether this run needs the rotation pretext losses: ``pretext.when``, or (``auto``) whether
    ``al.strategy`` or a strategy of ``compare.strategies`` requires ``pretext_loss``."""
    if p.pretext.when != "auto":
        return p.pretext.when == "always"
    return any(strategy_needs_pretext(n) for n in run_strategies(p))


def run_strategies(p: Any) -> list[str]:
    """Every strategy a run of ``p`` may select with: ``al.strategy`` and ``compare.strategies``."""
    return [p.al.strategy, *getattr(getattr(p, "compare", None), "strategies", [])]


def pretext_and_save(
    encoder_path: str | os.PathLike[str],
    data_cfg: DataCfg,
    cfg: PretextCfg,
    *,
    seed: int,
    device: str,
    progress: bool,
    out: str | os.PathLike[str],
) -> float:
    """Train the rotation predictor on the pool and write every pool image's pretext loss to
    ``out`` (:func:`alcore.pretext.write_pretext_losses`); returns the seconds spent."""
    from alcore.encoders import create_encoder, load_encoder
    from alcore.pretext import rotation_losses, train_rotation, write_pretext_losses

    data = load_data(data_cfg)
    enc = load_encoder(encoder_path)
    if cfg.init == "scratch":
        c = enc.config
        enc = create_encoder(c.arch, input_size=c.preprocess.input_size, feature_level=c.feature_level)
    with stopwatch() as t:
        model = train_rotation(
            enc,
            data.pool,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            device=device,
            random_state=derive_seed(seed, "pretext"),
            progress=progress,
        )
        losses = rotation_losses(model, data.pool, batch_size=max(cfg.batch_size, 256), device=device)
    spec = {
        "computed": True,
        "task": "rotation",
        "encoder_sha256": file_digest(encoder_path),
        "dataset": data.fingerprint(),
        "config": cfg.model_dump(mode="json"),
        "seed": seed,
        "seconds": t["seconds"],
    }
    write_pretext_losses(out, np.asarray(data.pool.ids), losses, spec)
    return t["seconds"]


def write_pretext_skipped(out: str | os.PathLike[str], reason: str) -> None:
    """The pretext stage's output when no strategy needs it: an empty loss file that says why."""
    from alcore.pretext import write_pretext_losses

    write_pretext_losses(
        out, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), {"computed": False, "reason": reason}
    )


def load_pretext_losses(path: str | os.PathLike[str], pool_ids: np.ndarray) -> np.ndarray:
    """``(N,)`` pretext losses aligned with ``pool_ids``; a clear error if they were not computed."""
    from alcore.pretext import read_pretext_losses

    ids, losses, spec = read_pretext_losses(path)
    if not spec.get("computed", False):
        raise DataError(
            problem(
                f"{path} holds no pretext losses ({spec.get('reason', 'not computed')})",
                fix="set pretext.when=auto (or always) and run the pretext stage (dvc repro, or alcore run)",
            )
        )
    return losses[positions_of(np.asarray(pool_ids, dtype=np.int64), ids)]


def extract_and_save_features(
    weights_path: str | os.PathLike[str],
    data_cfg: DataCfg,
    split: str,
    *,
    batch_size: int,
    device: str,
    progress: bool,
    out: str | os.PathLike[str],
) -> float:
    """Extract ``split`` features and write them to ``out``; returns the seconds spent.

    ``weights_path`` is an encoder file (the pre-trained encoder) or a classifier file (a
    fine-tuned network: Standard AL's scoring pass, ASVP's re-extraction). Either way the spec
    records that encoder's weights digest, so each set of features is a new, distinct file.
    """
    from alcore.training import load_any_encoder

    enc = load_any_encoder(weights_path)
    with stopwatch() as t:
        fs = compute_features(enc, load_data(data_cfg), split, batch_size=batch_size, device=device, progress=progress)
    save_features(fs, out)
    return t["seconds"]


def extract_and_save_part(
    weights_path: str | os.PathLike[str],
    data_cfg: DataCfg,
    split: str,
    shard: Shard,
    *,
    batch_size: int,
    device: str,
    threads: int | None,
    out: str | os.PathLike[str],
) -> float:
    """Extract part ``shard`` of ``split`` and write it to ``out``; returns the seconds spent, with
    torch limited to ``threads`` intra-op threads."""
    from alcore.device import torch_threads
    from alcore.training import load_any_encoder

    enc = load_any_encoder(weights_path)
    data = load_data(data_cfg)
    sp = getattr(data, split)
    whole = FeatureSpec.for_encoder(enc, sp, dataset=data.fingerprint(), split_name=split)
    part = sp.subset(np.arange(shard.start, shard.stop))
    with torch_threads(threads), stopwatch() as t:
        X = extract_features(
            enc, part, batch_size=batch_size, device=device, progress=False, desc=f"{split} part {shard.index}"
        )
    write_part(out, shard, part.ids, X, whole)
    return t["seconds"]


def fine_tune_and_save(
    encoder_path: str | os.PathLike[str],
    data_cfg: DataCfg,
    ids: np.ndarray,
    labels: np.ndarray,
    cfg: TrainCfg,
    *,
    mode: str,
    seed: int,
    device: str,
    progress: bool,
    out: str | os.PathLike[str],
) -> float:
    """Fine-tune from the encoder file and write the classifier to ``out``; returns seconds."""
    from alcore.encoders import load_encoder
    from alcore.training import save_classifier

    enc = load_encoder(encoder_path)
    data = load_data(data_cfg)
    priors = None
    with stopwatch() as t:
        if mode == "as3l":  # the priors are an artifact of their own, beside the network
            from alcore.as3l import write_priors

            pos = positions_of(np.asarray(ids, dtype=np.int64), np.asarray(data.pool.ids, dtype=np.int64))
            priors = as3l_priors(enc, data, pos, np.asarray(labels), cfg, seed=seed, device=device, progress=progress)
            spec = {"encoder_sha256": file_digest(encoder_path), "n_labeled": len(ids), "seed": seed}
            write_priors(priors_path(out), np.asarray(data.pool.ids), priors, spec)
        model = fine_tune(
            enc, data, ids, labels, cfg, mode=mode, seed=seed, device=device, progress=progress, priors=priors
        )
    save_classifier(model, out)
    return t["seconds"]


def priors_path(model_path: str | os.PathLike[str]) -> Path:
    """Where the AS3L priors of a network trained with ``train.mode=as3l`` are written."""
    p = Path(model_path)
    return p.with_name(p.name.split(".")[0] + ".priors.parquet")


def decide_realign(
    trigger: str,
    trigger_params: dict[str, Any],
    pool: FeatureSet,
    ids: np.ndarray,
    labels: np.ndarray,
    *,
    round: int,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Ask the realignment trigger whether ASVP should realign now: ``{"fire", "reason", **indicators}``."""
    from alcore.realign import make_trigger

    trig = make_trigger(trigger, **trigger_params)
    X = pool.X[positions_of(np.asarray(ids, dtype=np.int64), pool.ids)] if trig.needs_features else None
    d = trig.decide(
        round=round, n_labeled=len(ids), X=X, y=np.asarray(labels) if X is not None else None, history=history
    )
    return {"fire": bool(d.fire), "reason": d.reason, **{k: float(v) for k, v in d.indicators.items()}}


def evaluate_saved_model(
    model_path: str | os.PathLike[str], data_cfg: DataCfg, *, device: str, progress: bool = False
) -> dict[str, Any]:
    """Test accuracy of a saved classifier: ``{"accuracy", "n", "seconds"}``."""
    from alcore.training import evaluate, load_classifier

    model = load_classifier(model_path)
    with stopwatch() as t:
        res = evaluate(model, load_data(data_cfg).test, device=device, progress=progress)
    return {**res, "seconds": t["seconds"]}


# ---------------------------------------------------------------- persisted state
@dataclass
class ExperimentState:
    """Everything an experiment has bought and measured; saved after every purchase."""

    config_digest: str
    labels: LabelState
    ledger: CostLedger
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # round -> metrics
    final: dict[str, Any] | None = None
    tracking: dict[str, Any] = field(default_factory=dict)  # e.g. the MLflow run id
    versions: list[dict[str, Any]] = field(default_factory=list)  # feature versions (ASVP realignments)
    labeling: LabelingLog = field(default_factory=LabelingLog)  # the human oracle's batches and imports

    @property
    def round(self) -> int:
        """The last round whose labels are committed (0 before any)."""
        return int(self.labels.current_round)

    def commit(self, round: int, ids: np.ndarray, labels: np.ndarray, seconds: dict[str, float]) -> None:
        """Record a purchase and its compute in memory (validated before anything changes)."""
        if round != self.round + 1:
            raise ConfigError(problem(f"commit of round {round} after round {self.round}", f"round {self.round + 1}"))
        self.labels.label(ids, labels, round)
        self.ledger.buy(round, len(ids))
        for phase, s in seconds.items():
            self.ledger.record(round, phase, s)

    def commit_answers(self, round: int, ids: np.ndarray, labels: np.ndarray) -> None:
        """Record labels that annotators gave for ``round`` (a part of its batch, or late labels of
        an earlier one) and pay for exactly these. Validated before anything changes."""
        ids = np.asarray(ids, dtype=np.int64)
        if not ids.size:
            return
        if round < 1:
            raise ConfigError(problem(f"answers committed to round {round}", "round >= 1 (an exported batch)"))
        self.labels.label(ids, labels, round)
        self.ledger.buy(round, len(ids))

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "config_digest": self.config_digest,
            "labels": self.labels.state_dict(),
            "ledger": self.ledger.state_dict(),
            "records": {str(k): v for k, v in sorted(self.records.items())},
            "final": self.final,
            "tracking": self.tracking,
            "versions": self.versions,
            "labeling": self.labeling.state_dict(),
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a crash leaves the previous complete state."""
        write_json_atomic(path, self.state_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExperimentState:
        d = read_json(path, "experiment state")
        if not isinstance(d, dict) or d.get("version") != STATE_VERSION:
            v = d.get("version") if isinstance(d, dict) else None
            raise ConfigError(problem(f"{path} has state version {v}", f"{STATE_VERSION}"))
        try:
            labels = LabelState.from_state_dict(d["labels"])
            ledger = CostLedger.from_state_dict(d["ledger"])
        except (KeyError, TypeError, ValueError) as e:  # AlcoreErrors included: name the file
            raise ConfigError(problem(f"{path} is not a valid experiment state: {e}", fix="restore the file")) from e
        ledger.check_paid(labels.counts_per_round(), where=str(path))
        return cls(
            config_digest=d["config_digest"],
            labels=labels,
            ledger=ledger,
            records={int(k): v for k, v in d.get("records", {}).items()},
            final=d.get("final"),
            tracking=d.get("tracking", {}),
            versions=d.get("versions", []),
            labeling=LabelingLog.from_state_dict(d.get("labeling")),
        )


def open_state(
    path: str | os.PathLike[str],
    *,
    config_digest: str,
    pool_ids: np.ndarray,
    n_classes: int,
    price_per_label: float,
    price_per_hour: float,
) -> ExperimentState:
    """Resume the state at ``path`` if it belongs to this config, else start a new one."""
    path = Path(path)
    if path.exists():
        st = ExperimentState.load(path)
        if st.config_digest != config_digest:
            raise ConfigError(
                problem(
                    f"{path} belongs to an experiment with other parameters (digest {st.config_digest}, now {config_digest})",
                    fix="give this run another experiment.name, or pass --fresh to archive the old state and start over",
                )
            )
        return st
    return ExperimentState(
        config_digest=config_digest,
        labels=LabelState(np.asarray(pool_ids, dtype=np.int64), n_classes),
        ledger=CostLedger(price_per_label=price_per_label, price_per_hour=price_per_hour),
    )


@contextmanager
def experiment_lock(dir: str | os.PathLike[str]) -> Iterator[None]:
    """Exclusive lock on an experiment directory; a second run refuses with a clear message."""
    import fcntl

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    fh = open(dir / ".lock", "w")  # noqa: SIM115 - held for the context
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExperimentLockedError(
                problem(f"Another run holds the experiment in {dir}", fix="wait for it to finish, or stop it first")
            ) from None
        yield
    finally:
        fh.close()


def validate_names(p: Any) -> None:
    """Check every registry name and its parameters before any work starts.

    A typo in a strategy name must fail in a second, not after the encoder has trained.
    """
    import inspect

    from alcore.datasets import DATASETS
    from alcore.encoders import ARCHS
    from alcore.errors import UnknownNameError, WeightsError
    from alcore.oracle import ORACLES
    from alcore.strategies import make_strategy

    loader = DATASETS.get(p.data.name)
    allowed = [k for k in inspect.signature(loader).parameters]
    unknown = sorted(set(p.data.params) - set(allowed))
    if unknown:
        raise ConfigError(
            problem(
                f"dataset {p.data.name!r} takes no parameter {', '.join(map(repr, unknown))}",
                allowed=", ".join(allowed),
                fix="fix data.params in params.yaml",
            )
        )
    if p.encoder.arch not in ARCHS:
        from alcore.encoders.core import _is_timm_model

        if not _is_timm_model(p.encoder.arch):
            raise UnknownNameError(
                problem(
                    f"Unknown encoder architecture {p.encoder.arch!r}",
                    allowed=f"{', '.join(ARCHS.names())}, or any timm model name",
                    fix="set encoder.arch (alcore list encoders)",
                )
            )
    if p.encoder.pretrained == "package":
        from alcore.encoders.pretrained import check_package_weights

        check_package_weights(p.encoder.arch)
    if p.encoder.weights and not Path(p.encoder.weights).is_file():
        raise WeightsError(
            problem(
                f"encoder.weights={p.encoder.weights!r} does not exist", fix="give the path of a local weights file"
            )
        )
    make_strategy(p.al.strategy, **p.al.strategy_params)
    if p.pretext.when == "never" and any(strategy_needs_pretext(n) for n in run_strategies(p)):
        raise ConfigError(
            problem(
                "pretext.when=never but a strategy of this run reads the pretext loss (pt4al)",
                allowed="pretext.when=auto or always with pt4al",
                fix="set pretext.when=auto",
            )
        )
    ORACLES.get(p.oracle.name)
    from alcore.realign import make_trigger

    make_trigger(p.al.trigger, **p.al.trigger_params)
    for s in getattr(getattr(p, "compare", None), "strategies", []):
        make_strategy(s)
