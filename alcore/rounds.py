"""The round of active learning as a library object: the pipelines, their steps, the learner.

One class, :class:`ActiveLearner`, owns "query, then label, then update" for every pipeline (after
small-text's ``PoolBasedActiveLearner``, whose ``update`` checks that it answers the last
``query``), and every write to the run's ledger. A pipeline (:data:`PIPELINES`: ``standard``,
``svpp``, ``asvp``; Wen et al., TMLR 2024) says how a round's batch is scored and what happens after
a round. The expensive steps (train the proxy, select, label, fine-tune, extract, decide a
realignment, evaluate) go through one small interface, :class:`Steps`, with two implementations:
:class:`PlainSteps` here (plain calls: the library, tests, benchmarks) and ``flows.steps.TaskSteps``
(Prefect tasks: cached, retried, dispatched to GPU workers). The active-learning flow, the
labeling cycle, the compare flow and the benchmarks all drive this object.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from alcore import monitor, steps
from alcore._io import atomic_path, stat_signature
from alcore.config import DataCfg, Params, ProxyCfg
from alcore.errors import DataError, LabelError, StateChangedError, problem
from alcore.features import read_ids
from alcore.keys import ref
from alcore.layout import Layout
from alcore.ledger import CostLedger
from alcore.registry import Extension, Registry
from alcore.report import summary
from alcore.run_state import Batch, ExperimentState, experiment_digest, final_is_current, open_state
from alcore.seeding import derive_seed
from alcore.steps import load_data, round_strategy
from alcore.strategies import STRATEGIES
from alcore.training import describe_evidence, resolve_mode

__all__ = [
    "PIPELINES",
    "ASVP",
    "ActiveLearner",
    "Pipeline",
    "PlainSteps",
    "Query",
    "RunInputs",
    "SVPp",
    "Standard",
    "Steps",
]

Ref = dict[str, str]


# ---------------------------------------------------------------- the steps a round calls
class Steps(Protocol):
    """The expensive steps of a round, as the learner calls them: *what* to compute.

    Each method takes the arguments of the :mod:`alcore.steps` function of the same name, less
    those that say *where and how* it runs (``device``, ``progress``, ``memory_budget``), which
    belong to the implementation with caching, retries and GPU workers; each returns that
    function's plain, JSON-ready result. ``extract(weights, data, data_fingerprint, outs, *,
    batch_size)`` extracts several splits at once (split -> output file), as the implementation
    sees fit (whole, in parts, on a GPU worker).
    """

    def train_proxy(self, *args: Any, **kw: Any) -> dict[str, Any]: ...
    def evaluate_proxy(self, *args: Any, **kw: Any) -> dict[str, Any]: ...
    def select(self, *args: Any, **kw: Any) -> dict[str, Any]: ...
    def predict_labels(self, *args: Any, **kw: Any) -> dict[str, Any]: ...
    def label(self, *args: Any, **kw: Any) -> dict[str, Any]: ...
    def fine_tune(self, *args: Any, **kw: Any) -> dict[str, Any]: ...
    def extract(self, *args: Any, **kw: Any) -> dict[str, dict[str, Any]]: ...
    def decide_realign(self, *args: Any, **kw: Any) -> dict[str, Any]: ...
    def evaluate(self, *args: Any, **kw: Any) -> dict[str, Any]: ...


@dataclass
class PlainSteps:
    """:class:`Steps` as plain calls of :mod:`alcore.steps` in this process: no cache, no retry."""

    device: str = "cpu"
    progress: bool = False
    memory_budget: int | None = None

    def train_proxy(self, features: Ref, ids: np.ndarray, labels: np.ndarray, proxy: ProxyCfg, **kw: Any) -> Any:
        return steps.train_proxy(
            features, ids, labels, proxy, device=self.device, memory_budget=self.memory_budget, **kw
        )

    def evaluate_proxy(self, proxy: Ref, test_features: Ref, test_labels: np.ndarray) -> dict[str, float]:
        return steps.evaluate_proxy(proxy, test_features, test_labels)

    def select(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return steps.select(*args, memory_budget=self.memory_budget, device=self.device, **kw)

    def predict_labels(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return steps.predict_labels(*args, **kw)

    def label(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return steps.label(*args, **kw)

    def fine_tune(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return steps.fine_tune(*args, device=self.device, progress=self.progress, **kw)

    def extract(
        self, weights: Ref, data: DataCfg, data_fingerprint: str, outs: dict[str, str], *, batch_size: int
    ) -> dict[str, dict[str, Any]]:
        return {
            split: steps.extract_features(
                weights,
                data,
                data_fingerprint,
                split,
                batch_size=batch_size,
                device=self.device,
                out=out,
                progress=self.progress,
            )
            for split, out in outs.items()
        }

    def decide_realign(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return steps.decide_realign(*args, memory_budget=self.memory_budget, **kw)

    def evaluate(self, *args: Any, **kw: Any) -> dict[str, Any]:
        return steps.evaluate(*args, device=self.device, progress=self.progress, **kw)


# ---------------------------------------------------------------- what every round reads
@dataclass(frozen=True, eq=False)
class RunInputs:
    """The files and facts every round reads: the pre-computed features (refs with digests), the
    encoder, the pretext losses when the strategy reads them, the test labels."""

    pool: Ref
    test: Ref
    encoder: Ref
    test_labels: np.ndarray
    n_classes: int
    fingerprint: str
    n_pool: int
    n_unlabeled: int = 0
    classes: tuple[str, ...] = ()
    pretext: Ref | None = None

    @classmethod
    def from_files(
        cls,
        data: DataCfg,
        *,
        pool: str | Path,
        test: str | Path,
        encoder: str | Path,
        pretext: str | Path | None = None,
    ) -> RunInputs:
        """Inputs from feature, encoder and pretext files made outside the pipeline's layout (a
        benchmark's work folder); the facts about the data are read from ``data``."""
        ds = load_data(data)
        return cls(
            pool=ref(pool),
            test=ref(test),
            encoder=ref(encoder),
            test_labels=np.asarray(ds.test.labels),
            n_classes=ds.n_classes,
            fingerprint=ds.fingerprint(),
            n_pool=len(ds.pool),
            n_unlabeled=int((np.asarray(ds.pool.labels) < 0).sum()),
            classes=tuple(ds.classes),
            pretext=ref(pretext) if pretext is not None else None,
        )

    @classmethod
    def from_layout(cls, p: Params, L: Layout) -> RunInputs:
        """The stages' outputs under ``L`` (``dataset.json``, the encoder, the feature files); a
        missing one is named with the stage that makes it."""

        def made(path: Path, stage: str) -> Path:
            if not path.is_file():
                raise DataError(
                    problem(f"{path} is missing", fix=f"run the {stage!r} stage first (dvc repro, or alcore run)")
                )
            return path

        info = json.loads(made(L.dataset, "prepare").read_text())
        needs_pretext = "pretext_loss" in STRATEGIES.get(p.al.strategy).requires
        return cls(
            pool=ref(made(L.features("pool"), "features")),
            test=ref(made(L.features("test"), "features")),
            encoder=ref(made(L.encoder, "encoder")),
            test_labels=np.asarray(load_data(p.data).test.labels),
            n_classes=int(info["n_classes"]),
            fingerprint=info["fingerprint"],
            n_pool=int(info["n_pool"]),
            n_unlabeled=int(info.get("n_unlabeled", 0)),
            classes=tuple(info["classes"]),
            pretext=ref(made(L.pretext, "pretext")) if needs_pretext else None,
        )


@dataclass(frozen=True, eq=False)
class Query:
    """What :meth:`ActiveLearner.query` chose for ``round``: the ids, the compute it cost by phase,
    and the scorer that chose them (None in a cold round) with the features it scored; ``audit``:
    the audit ids the round buys with them (from the reserve, never trained on; :mod:`alcore.monitor`)."""

    round: int
    ids: np.ndarray
    seconds: dict[str, float]
    features: Ref
    scorer: Ref | None = None
    audit: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    @property
    def all_ids(self) -> np.ndarray:
        """The ids to have labeled: the batch, then the audit's."""
        return np.concatenate([self.ids, self.audit]).astype(np.int64)


# ---------------------------------------------------------------- the pipelines
class Pipeline(Extension):
    """How a pipeline scores a round's candidates and what it does after a round.

    ``extracts_features``: the pool's pre-computed features are part of its cost (round 0);
    ``trains_proxy``: a proxy MLP on those features selects, and its test accuracy is recorded.
    """

    name: ClassVar[str]
    extracts_features: ClassVar[bool] = True
    trains_proxy: ClassVar[bool] = True

    def scoring(self, learner: ActiveLearner, round: int) -> tuple[Ref, Ref, dict[str, float]]:
        """``(features, scorer, seconds by phase)`` of round ``round``'s selection (round > 1)."""
        raise NotImplementedError

    def after_round(self, learner: ActiveLearner, round: int, record: dict[str, Any]) -> None:
        """What happens once round ``round``'s labels are in, before it is measured."""


PIPELINES: Registry[type[Pipeline]] = Registry("pipeline", where="al.pipeline")


@PIPELINES.register("svpp")
class SVPp(Pipeline):
    """Selection via proxy on pre-computed features: a fresh proxy MLP on the current features
    scores every round; the real network is trained once, at the end."""

    name = "svpp"

    def scoring(self, learner: ActiveLearner, round: int) -> tuple[Ref, Ref, dict[str, float]]:
        proxy = learner.proxy(round - 1)
        return learner.features()["pool"], proxy["proxy"], {"proxy_training": proxy["seconds"]}


@PIPELINES.register("asvp")
class ASVP(SVPp):
    """SVPp, and after each round the realignment trigger may fire: fine-tune the encoder on the
    labeled set, re-extract pool and test features (a new feature version) and go on."""

    name = "asvp"

    def after_round(self, learner: ActiveLearner, round: int, record: dict[str, Any]) -> None:
        learner.realign(round, record)


@PIPELINES.register("standard")
class Standard(Pipeline):
    """Standard AL: every round fine-tune the encoder (fresh from its pre-trained weights) on the
    labeled set and score the whole pool with that network."""

    name = "standard"
    extracts_features = False
    trains_proxy = False

    def scoring(self, learner: ActiveLearner, round: int) -> tuple[Ref, Ref, dict[str, float]]:
        net = learner.network()
        feats = learner.network_features(net["model"], "pool")["pool"]
        return feats["features"], net["model"], {"fine_tuning": net["seconds"], "scoring": feats["seconds"]}


# ---------------------------------------------------------------- the learner
def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """The state file's :func:`~alcore._io.stat_signature`; None when it is gone."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return stat_signature(st)


@dataclass(eq=False)
class ActiveLearner:
    """One experiment's rounds: :meth:`query` a batch, have it labeled, :meth:`update` with the
    answers, :meth:`measure` the round; :meth:`finish` trains the final network. :meth:`run` is the
    whole loop with the oracle as a step; the labeling cycle calls the parts, with people between.

    Every purchase and every compute second is written to ``state``'s ledger here, and the state is
    saved (atomically) after every change, in ``run_dir/state.json``. Files the rounds make live
    under ``run_dir``: ``proxies/``, ``networks/``, ``features/`` and the final ``model.safetensors``.
    """

    params: Params
    state: ExperimentState
    steps: Steps
    inputs: RunInputs
    run_dir: Path
    schedule: list[int] = field(default_factory=list)
    on_round: Callable[[int], None] | None = None
    say: Callable[[str], None] = field(default=lambda line: None, repr=False)  # progress lines (flows print them)
    _proxies: dict[tuple[int, int, int], dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    _last_query: Query | None = field(default=None, init=False, repr=False)
    #: the networks trained since the last round record, by label count: the mode each chose, its evidence
    _networks: dict[int, dict[str, Any]] = field(default_factory=dict, init=False, repr=False)
    #: the state file as this learner last read or wrote it (device, inode, size, mtime), None = absent
    _seen: tuple[int, int, int, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.run_dir = Path(self.run_dir)
        self.schedule = list(self.schedule or self.params.al.schedule())
        self.pipeline = PIPELINES.create(self.params.al.pipeline)
        self.seed = self.params.experiment.seed

    @classmethod
    def open(
        cls,
        params: Params,
        inputs: RunInputs,
        steps: Steps,
        *,
        run_dir: str | Path,
        new: Callable[[ExperimentState], bool] = lambda st: st.round == 0,
        setup: Callable[[], dict[str, float]] | None = None,
        schedule: list[int] | None = None,
    ) -> ActiveLearner:
        """The learner of the experiment saved in ``run_dir/state.json`` (resumed when it belongs
        to these parameters, refused when not), or of a new one. ``new(state)`` says whether to
        (re)do round 0, charged with ``setup()``'s ``pretraining`` and ``extraction`` seconds."""
        state = open_state(
            Path(run_dir) / "state.json",
            config_digest=experiment_digest(params),
            pool_ids=read_ids(inputs.pool["path"]),
            n_classes=inputs.n_classes,
            price_per_label=params.oracle.price_per_label,
            price_per_hour=params.cost.price_per_hour,
        )
        learner = cls(params, state, steps, inputs, Path(run_dir), schedule=list(schedule or []))
        learner._seen = _signature(learner.state_path)
        if new(state):
            learner.begin(**(setup() if setup is not None else {"pretraining": 0.0, "extraction": 0.0}))
        return learner

    # -- the state ------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.run_dir / "state.json"

    @property
    def final_model_path(self) -> Path:
        return self.run_dir / "model.safetensors"

    def save(self) -> None:
        """Write the state (atomically), after checking that the file is still the one this
        learner last read or wrote (:meth:`check_state`)."""
        self.check_state()
        self.state.save(self.state_path)
        self._seen = _signature(self.state_path)

    def reload(self) -> ExperimentState:
        """Read the state back from its file (after another writer this run called, such as the
        labeling cycle's import of annotations) and take that file as the current one."""
        self.state = ExperimentState.load(self.state_path)
        self._seen = _signature(self.state_path)
        return self.state

    def check_state(self) -> None:
        """Stop with :class:`StateChangedError` when the state file vanished (``rm -rf`` of the run
        folder, ``dvc repro`` deleting its outputs) or was replaced by another writer since this
        learner last read or wrote it: carrying on would buy labels that no state records, or
        overwrite another run's purchases."""
        now = _signature(self.state_path)
        if now == self._seen:
            return
        what = (
            "was deleted"
            if now is None
            else "appeared from elsewhere"
            if self._seen is None
            else "was replaced by another writer"
        )
        raise StateChangedError(
            problem(
                f"the experiment state {self.state_path} {what} while this run held the experiment "
                f"(after round {self.state.round}, {self.state.labels.n_labeled} labels); this run stopped before "
                "buying or writing anything more",
                allowed="one run per experiment, and no command that deletes its folder while it runs "
                "(rm -rf, dvc repro and make clean delete runs/)",
                fix="find what deleted or rewrote it; then run the same command again: it resumes from the state "
                "on disk (or starts over when there is none)",
            )
        )

    def labeled(self) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, labels)`` of every labeled sample, in pool order."""
        ids = np.asarray(self.state.labels.labeled_ids, dtype=np.int64)
        return ids, np.asarray(self.state.labels.labels_of(ids), dtype=np.int64)

    def features(self) -> dict[str, Any]:
        """The current feature version (the last realignment's, or the features stage's)."""
        return self.state.versions[-1]

    def begin(self, *, pretraining: float, extraction: float) -> None:
        """Charge round 0 (the setup paid for before the first label: pre-training, and the pool's
        extraction for a pipeline that uses the pre-computed features) and record feature version 0.
        Starts the ledger afresh: call it for a new experiment only."""
        p, st = self.params, self.state
        st.ledger = CostLedger(price_per_label=p.oracle.price_per_label, price_per_hour=p.cost.price_per_hour)
        st.ledger.record(0, "pretraining", pretraining)
        if self.pipeline.extracts_features:
            st.ledger.record(0, "extraction", extraction)
        st.versions = [{"version": 0, "round": 0, "pool": self.inputs.pool, "test": self.inputs.test}]
        monitor.setup(st, p.al, st.labels.pool_ids, seed=self.seed)

    # -- the expensive steps, as this experiment asks for them ----------------------------------
    def network(self) -> dict[str, Any]:
        """The real network fine-tuned from the pre-trained encoder on every label so far:
        ``{"model": ref, "seconds", "mode", "evidence"}`` (``auto`` is decided in the step, on
        held-out labels; ``mode`` is what it chose, ``evidence`` why).

        Standard AL's selection network, ASVP's realignment network, the per-budget evaluation
        network and the final one are this one computation for a given labeled set: one file.
        """
        p = self.params
        ids, labs = self.labeled()
        mode = resolve_mode(p.train.mode)  # auto is decided in the step, on held-out labels
        self.say(f"           network on {len(ids)} labels (train.mode={mode})")
        res = self.steps.fine_tune(
            self.inputs.encoder,
            p.data,
            self.inputs.fingerprint,
            ids,
            labs,
            p.train,
            mode=mode,
            seed=derive_seed(self.seed, "network", len(ids)),
            out=str(self.run_dir / "networks" / f"net-{len(ids)}.safetensors"),
        )
        self._networks[len(ids)] = {"labels": len(ids), "mode": res["mode"], "evidence": res["evidence"]}
        self.say(
            f"           network on {len(ids)} labels: {describe_evidence(res['evidence'])} ({res['seconds']:.1f} s)"
        )
        return res

    def network_features(self, model: Ref, *splits: str) -> dict[str, dict[str, Any]]:
        """Features of ``splits`` with a fine-tuned network (Standard's scoring pass, ASVP's re-extraction)."""
        stem = Path(model["path"]).stem
        outs = {s: str(self.run_dir / "features" / f"{stem}-{s}.parquet") for s in splits}
        p = self.params
        return self.steps.extract(model, p.data, self.inputs.fingerprint, outs, batch_size=p.features.batch_size)

    def proxy(self, round: int) -> dict[str, Any]:
        """The proxy trained after round ``round`` on every label so far, on the current features:
        ``{"proxy": ref, "seconds"}`` (trained once per round, labels and feature version)."""
        ids, labs = self.labeled()
        key = (round, len(self.state.versions) - 1, len(ids))
        if key not in self._proxies:
            self._proxies[key] = self.steps.train_proxy(
                self.features()["pool"],
                ids,
                labs,
                self.params.proxy,
                n_classes=self.inputs.n_classes,
                seed=derive_seed(self.seed, "proxy", round),
                out=str(self.run_dir / "proxies" / f"proxy-r{round:04d}-v{key[1]}.safetensors"),
            )
        return self._proxies[key]

    # -- the round ------------------------------------------------------------------------------
    def query(self, round: int, n: int, *, exclude: np.ndarray | None = None) -> Query:
        """Choose round ``round``'s ``n`` ids among the unlabeled ones not in ``exclude`` (ids out
        with annotators) nor in the audit's reserve, and the audit draws the round buys with them.
        Round 1 is random unless the strategy starts cold."""
        p = self.params
        reserve = monitor.excluded(self.state)
        if reserve is not None:
            exclude = reserve if exclude is None else np.union1d(np.asarray(exclude, dtype=np.int64), reserve)
        strategy, params = round_strategy(p.al, round)
        ids, labs = self.labeled()
        features, scorer, seconds = self.features()["pool"], None, {}
        if round > 1:
            features, scorer, seconds = self.pipeline.scoring(self, round)
        sel = self.steps.select(
            strategy,
            params,
            features,
            ids,
            labs,
            n,
            n_classes=self.inputs.n_classes,
            scorer=scorer,
            seed=derive_seed(self.seed, "select", round),
            round=round,
            n_rounds=p.al.rounds,
            pretext=self.inputs.pretext,
            exclude=exclude,
        )
        seconds = {**seconds, "scoring": seconds.get("scoring", 0.0) + sel["seconds"]}
        audit = monitor.draw(self.state, p.al, round, len(ids) + n, seed=self.seed)
        self._last_query = Query(round, np.asarray(sel["ids"], dtype=np.int64), seconds, features, scorer, audit)
        return self._last_query

    def update(self, query: Query, ids: Any, labels: Any) -> None:
        """Commit the answers to ``query`` (the last one asked): buy the labels and charge the
        compute that chose them, in round ``query.round``; answers for its audit ids go to the
        audit (paid as audit labels, never trained on); saved at once.

        Raises:
            LabelError: ``query`` is not the last query, or the answers name ids it did not ask for.
        """
        if query is not self._last_query:
            raise LabelError(problem(f"an update for round {query.round}'s query, which is not the last one asked"))
        ids = np.asarray(ids, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        stray = np.setdiff1d(ids, query.all_ids)
        if stray.size:
            raise LabelError(
                problem(
                    f"answers for ids {stray[:5].tolist()} that round {query.round} did not ask for",
                    allowed="a subset of the queried ids",
                    fix="label only the ids the query returned",
                )
            )
        is_audit = np.isin(ids, query.audit)
        self.state.commit(query.round, ids[~is_audit], labels[~is_audit], query.seconds)
        monitor.record_audit(self.state, query.round, ids[is_audit], labels[is_audit])
        self.save()
        self._last_query = None

    def open_batch(self, query: Query, *, predict: bool = True) -> Batch:
        """Hand ``query`` to people (the human oracle): record it as the open labeling batch, with
        the scorer's guesses as its pre-annotation, and charge the compute that chose it; saved at
        once. Its labels come back through :func:`alcore.labeling.ingest_inbox`."""
        if predict and query.scorer is not None:
            guess = self.steps.predict_labels(query.scorer, query.features, query.ids)
            batch = Batch(query.round, query.ids, guess["predicted"], guess["confidence"])
        else:  # chosen before any scorer exists: no guesses to show
            batch = Batch.unpredicted(query.round, query.ids)
        if query.audit.size:  # the audit's ids go with it, marked, and without a guess (unbiased answers)
            batch = batch.with_audit(query.audit)
        for phase, seconds in query.seconds.items():
            self.state.ledger.record(query.round, phase, seconds)
        self.state.labeling.add_batch(batch)
        self.save()
        self._last_query = None
        return batch

    def measure(self, round: int) -> dict[str, Any]:
        """Round ``round``'s record once its labels are in: the pipeline's after-round work (ASVP's
        trigger and realignment), the proxy's test accuracy, and with ``al.evaluate_every_round``
        the network's (uncharged evaluation). Saved, then ``on_round(round)``."""
        p = self.params
        record: dict[str, Any] = {}
        self.pipeline.after_round(self, round, record)
        record["version"] = len(self.state.versions) - 1
        if self.pipeline.trains_proxy:
            proxy = self.proxy(round)
            acc = self.steps.evaluate_proxy(proxy["proxy"], self.features()["test"], self.inputs.test_labels)
            record["proxy_accuracy"] = acc["accuracy"]
        if p.al.evaluate_every_round:  # the final network at this budget; Standard's next selection network
            net = self.network()
            record["test_accuracy"] = self.steps.evaluate(net["model"], p.data, self.inputs.fingerprint)["accuracy"]
        if self._networks:  # the networks this round trained: the mode each chose and its evidence
            record["networks"], self._networks = list(self._networks.values()), {}
        if monitor.active(p.al):
            record.update(self.judge(round))
        self.state.records[round] = record
        self.save()
        if self.on_round is not None:
            self.on_round(round)
        return record

    def judge(self, round: int) -> dict[str, Any]:
        """Round ``round``'s model (the proxy on the current features) predicts on the reserve or
        stop set; then its accuracy estimate, the forecast and the stop decision
        (:func:`alcore.monitor.judge`). A pipeline without a proxy pays for this one here."""
        p, st = self.params, self.state
        ids, out = monitor.stop_set(st), {}
        if ids is not None:
            fresh = (round, len(st.versions) - 1, st.labels.n_labeled) not in self._proxies
            proxy = self.proxy(round)
            if fresh and not self.pipeline.trains_proxy:
                st.ledger.record(round, "proxy_training", proxy["seconds"])
            guess = self.steps.predict_labels(proxy["proxy"], self.features()["pool"], ids)
            monitor.observe(st, round, guess["predicted"], guess["confidence"])
            if not self.pipeline.trains_proxy:  # the estimated model's true test accuracy (uncharged)
                acc = self.steps.evaluate_proxy(proxy["proxy"], self.features()["test"], self.inputs.test_labels)
                out["proxy_accuracy"] = acc["accuracy"]
        return out | monitor.judge(
            st,
            p.al,
            round,
            schedule=self.schedule,
            n_pool=self.inputs.n_pool,
            price_per_label=p.oracle.price_per_label,
            seed=self.seed,
        )

    def stopped(self, round: int) -> str | None:
        """Why the stop rule stopped the loop after ``round``, None when it did not."""
        stop = self.state.records.get(round, {}).get("stop", {})
        return stop["reason"] if stop.get("stop") else None

    def realign(self, round: int, record: dict[str, Any]) -> None:
        """ASVP: ask the trigger (comparing only with decisions on the same feature version); if
        it fires, fine-tune on the labeled set and re-extract pool and test features."""
        p, st = self.params, self.state
        ids, labs = self.labeled()
        version = len(st.versions) - 1
        history = [
            st.records[k]["trigger"]
            for k in sorted(st.records)
            if "trigger" in st.records[k]
            and st.records[k]["trigger"].get("version", st.records[k].get("version", 0)) == version
        ]
        fired_at = [
            int(st.records[k]["trigger"]["n_labeled_at_fire"])
            for k in sorted(st.records)
            if st.records[k].get("trigger", {}).get("fired")
        ]
        d = self.steps.decide_realign(
            p.al.trigger,
            p.al.trigger_params,
            self.features()["pool"],
            ids,
            labs,
            round=round,
            history=history,
            fired_at=fired_at,
        )
        d["version"] = version  # the feature version its indicators were measured on
        d["n_labeled_at_fire"] = len(ids) if d["fire"] else 0
        if d["fire"] and (version >= p.al.max_realignments or round == len(self.schedule)):
            why = "last round" if round == len(self.schedule) else f"max_realignments={p.al.max_realignments} reached"
            d["fire"], d["reason"] = False, (d["reason"] + "; " if d["reason"] else "") + why
        d["fired"] = d["fire"]
        record["trigger"] = d
        if not d["fire"]:
            return
        net = self.network()
        st.ledger.record(round, "fine_tuning", net["seconds"])
        if net["mode"] == "lp":  # fine-tuning lost to the probe on held-out labels: the encoder did not move
            d["reextracted"] = False
            self.say(
                f"           no realignment after round {round}: fine-tuning did not beat the probe, the features stay"
            )
            return
        feats = self.network_features(net["model"], "pool", "test")
        st.ledger.record(round, "reextraction", feats["pool"]["seconds"])  # test features: evaluation, uncharged
        st.versions.append(
            {
                "version": version + 1,
                "round": round,
                "n_labeled": len(ids),
                "pool": feats["pool"]["features"],
                "test": feats["test"]["features"],
                "network": net["model"],
            }
        )

    def finish(self) -> dict[str, Any]:
        """Train the final network on every label (again when labels were added or corrected
        since), test it, charge it to the last round; the run's summary."""
        st = self.state
        n = st.labels.n_labeled
        if not final_is_current(st.final, st.labels):
            net = self.network()
            with atomic_path(self.final_model_path) as tmp:
                shutil.copyfile(net["model"]["path"], tmp)
            reserve = monitor.excluded(st)
            audited = {} if reserve is None else {"pool_ids": reserve}
            ev = self.steps.evaluate(net["model"], self.params.data, self.inputs.fingerprint, **audited)
            st.ledger.record(max(st.round, 1), "final_training", net["seconds"] + ev.get("pool_seconds", 0.0))
            st.final = {
                "accuracy": ev["accuracy"],
                "mode": net["mode"],
                "labels": int(n),
                "model": net["model"]["path"],
                "evidence": net["evidence"],
                "labels_digest": st.labels.digest(),
            }
            if audited:  # the network people will use, judged on the audit: its accuracy without a test set
                st.final.update(monitor.estimate_final(st, ev["pool_predicted"], ev["pool_confidence"]))
            self.save()
        return summary(st)

    def run(self, *, final: bool = True) -> dict[str, Any]:
        """The whole loop with the oracle as a step: for each round not done yet, query, label,
        update, measure; then :meth:`finish` (unless ``final`` is False: the summary without a
        final network). Resumes after the last saved round; ends early when the stop rule
        (``al.stop``) says so, and says why."""
        p = self.params
        for r, n in enumerate(self.schedule, start=1):
            self.check_state()  # every round: a run whose state was deleted stops before it buys more
            if r > self.state.round:
                q = self.query(r, n)
                ans = self.steps.label(p.oracle, p.data, self.inputs.fingerprint, q.all_ids, seed=self.seed)
                self.update(q, ans["ids"], ans["labels"])
            if r not in self.state.records:
                self.measure(r)
            why = self.stopped(r)
            if why is not None:
                self.say(f"Stopped after round {r} of {len(self.schedule)} ({p.al.stop}): {why}")
                break
        return self.finish() if final else summary(self.state)
