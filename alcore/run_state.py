"""The persisted state of a run: what it bought and measured, in one JSON file written atomically.

:class:`ExperimentState` holds the label state (the round each id was labeled in), the cost ledger,
the per-round records, the feature versions of ASVP's realignments, the final network and the
human oracle's labeling batches and imports (:class:`LabelingLog`). Every change is saved in one
atomic write, so a run killed anywhere resumes at the last saved state and never buys a label
twice. :func:`experiment_lock` keeps a second run off the same experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alcore._io import read_json, write_json_atomic
from alcore.errors import ConfigError, ExperimentLockedError, LabelError, problem
from alcore.ledger import CostLedger
from alcore.state import LabelState, as_int_ids

__all__ = [
    "STATE_VERSION",
    "Batch",
    "ExperimentState",
    "LabelingLog",
    "experiment_digest",
    "experiment_lock",
    "lock_path",
    "final_is_current",
    "open_state",
]

STATE_VERSION = 1


# Options added after experiments were saved, each with the value that does what alcore did
# before it existed. At that value an option is left out of the digest, so an upgrade does not
# orphan the experiments it finds (their states were digested without it); any other value is
# another experiment. Add an option here only if its default changes nothing that was computed.
ADDED_AT_OLD_BEHAVIOUR: dict[tuple[str, str], Any] = {
    ("train", "semi_head_init"): "random",
}


def experiment_digest(p: Any) -> str:
    """What an experiment's labels depend on: its parameters, less what may change while it goes
    on (the device, progress bars, compare settings, the human oracle's hand-off, and where and how
    the work runs: the feature runner, shards, memory budget and work pools; and the accuracy the
    forecast prices, ``al.audit.target``, which changes no label bought), and less the options of
    ``ADDED_AT_OLD_BEHAVIOUR`` left at the value that reproduces the states saved before them."""
    d = p.model_dump(mode="json", exclude={"compare", "labeling", "orchestration"})
    d["al"]["audit"].pop("target", None)
    for (section, name), old in ADDED_AT_OLD_BEHAVIOUR.items():
        if d[section].get(name) == old:
            del d[section][name]
    d["experiment"] = {k: v for k, v in d["experiment"].items() if k not in ("device", "progress")}
    d["features"] = {"batch_size": d["features"]["batch_size"]}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- the labeling batches
@dataclass(frozen=True, eq=False)
class Batch:
    """One labeling job: the ids asked for in ``round`` and the proxy's guess for each.

    Attributes:
        round: the round the batch's labels belong to (>= 1).
        ids: ``(k,)`` int64 distinct pool ids.
        predicted: ``(k,)`` int64 predicted class index, -1 = no prediction (round 1 has no proxy).
        confidence: ``(k,)`` float64 the proxy's probability of ``predicted`` (0 where none).
        audit: ``(k,)`` bool, the audit's ids (:mod:`alcore.monitor`): labeled like the others,
            never trained on, shown without a guess; None: none.
    """

    round: int
    ids: np.ndarray
    predicted: np.ndarray
    confidence: np.ndarray
    audit: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = as_int_ids(self.ids, "Batch.ids", LabelError)
        predicted = as_int_ids(self.predicted, "Batch.predicted", LabelError)
        # rounded as the state stores it: a job re-written from the saved state is byte-identical
        confidence = np.round(np.asarray(self.confidence, dtype=np.float64).reshape(-1), 6)
        if not (ids.size == predicted.size == confidence.size):
            raise LabelError(
                problem(
                    f"Batch of {ids.size} ids with {predicted.size} predictions and {confidence.size} confidences",
                    allowed="one prediction and one confidence per id",
                )
            )
        if np.unique(ids).size != ids.size:
            raise LabelError(problem("Batch ids hold duplicates", allowed="each id once"))
        if not isinstance(self.round, int | np.integer) or self.round < 1:
            raise LabelError(problem(f"Batch round={self.round!r}", allowed="an int >= 1"))
        object.__setattr__(self, "round", int(self.round))
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "predicted", predicted)
        object.__setattr__(self, "confidence", confidence)
        audit = np.zeros(ids.size, dtype=bool) if self.audit is None else np.asarray(self.audit, dtype=bool).reshape(-1)
        if audit.size != ids.size:
            raise LabelError(problem(f"Batch of {ids.size} ids with {audit.size} audit marks", allowed="one per id"))
        object.__setattr__(self, "audit", audit)

    @property
    def audit_ids(self) -> np.ndarray:
        """``(m,)`` the batch's audit ids."""
        return self.ids[self.audit]

    def with_audit(self, ids: np.ndarray) -> Batch:
        """This batch and the audit ``ids`` after it, marked, without a guess."""
        ids = as_int_ids(ids, "audit ids", LabelError)
        return Batch(
            self.round,
            np.concatenate([self.ids, ids]),
            np.concatenate([self.predicted, np.full(ids.size, -1, np.int64)]),
            np.concatenate([self.confidence, np.zeros(ids.size)]),
            np.concatenate([self.audit, np.ones(ids.size, dtype=bool)]),
        )

    @classmethod
    def unpredicted(cls, round: int, ids: np.ndarray) -> Batch:
        ids = as_int_ids(ids, "ids", LabelError)
        return cls(round, ids, np.full(ids.size, -1, np.int64), np.zeros(ids.size))

    @property
    def name(self) -> str:
        """The file stem of its labeling job: ``batch-0003``."""
        return f"batch-{self.round:04d}"

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "ids": self.ids.tolist(),
            "predicted": self.predicted.tolist(),
            "confidence": self.confidence.tolist(),
            **({"audit": self.audit.tolist()} if self.audit.any() else {}),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Batch:
        try:
            return cls(d["round"], d["ids"], d["predicted"], d["confidence"], d.get("audit"))
        except (KeyError, TypeError) as e:
            raise ConfigError(problem(f"not a labeling batch record ({e})", fix="load the file the run saved")) from e


class LabelingLog:
    """Every batch exported to annotators and every annotation file imported, in order.

    The last batch is the *open* one. Ids of any batch that are not labeled yet are *requested*:
    annotations for them are accepted whenever they come (a late label is never refused), and the
    next selection never picks them again.
    """

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self.imports: list[dict[str, Any]] = []
        self.corrections: list[dict[str, Any]] = []

    def __repr__(self) -> str:
        return f"LabelingLog(batches={len(self.batches)}, imports={len(self.imports)})"

    @property
    def open_batch(self) -> Batch | None:
        return self.batches[-1] if self.batches else None

    def exported_ids(self) -> np.ndarray:
        """``(k,)`` int64 ids of every batch, in export order."""
        if not self.batches:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([b.ids for b in self.batches])

    def requested_ids(self, labels: LabelState) -> np.ndarray:
        """``(k,)`` int64 exported ids that are not labeled yet."""
        ids = self.exported_ids()
        return ids[labels.round_of(ids) == 0] if ids.size else ids

    def add_batch(self, batch: Batch) -> None:
        """Record a new open batch; refuses rounds that do not grow and ids asked for before."""
        last = self.open_batch
        if last is not None and batch.round <= last.round:
            raise LabelError(problem(f"batch of round {batch.round} after round {last.round}", f"round > {last.round}"))
        again = np.intersect1d(batch.ids, self.exported_ids())
        if again.size:
            raise LabelError(
                problem(
                    f"batch of round {batch.round} asks again for ids {again[:5].tolist()}",
                    allowed="ids never exported before",
                    fix="exclude the requested ids from the selection",
                )
            )
        self.batches.append(batch)

    def record_corrections(
        self,
        ids: np.ndarray,
        before: np.ndarray,
        after: np.ndarray,
        rounds: np.ndarray,
        *,
        file: str,
        sha256: str,
        at: str,
    ) -> None:
        """Keep the history of corrected labels: ``id``, ``from`` and ``to`` (class indices), the
        ``round`` the sample keeps, and the ``file`` (with its ``sha256``) that corrected it, ``at``."""
        for i, b, a, r in zip(ids.tolist(), before.tolist(), after.tolist(), rounds.tolist(), strict=True):
            self.corrections.append({"id": i, "from": b, "to": a, "round": r, "file": file, "sha256": sha256, "at": at})

    def state_dict(self) -> dict[str, Any]:
        return {
            "batches": [b.to_json() for b in self.batches],
            "imports": [dict(r) for r in self.imports],
            "corrections": [dict(r) for r in self.corrections],
        }

    @classmethod
    def from_state_dict(cls, d: Mapping[str, Any] | None) -> LabelingLog:
        out = cls()
        for b in (d or {}).get("batches", []):
            out.add_batch(Batch.from_json(b))
        out.imports = [dict(r) for r in (d or {}).get("imports", [])]
        out.corrections = [dict(r) for r in (d or {}).get("corrections", [])]
        return out


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
    #: the accuracy audit (alcore.estimate.Audit: its reserve, draws and labels), None when al.audit is off
    audit: Any = None
    #: the stop rule's inputs per round: ``stop_set`` (ids) and ``predictions`` ({round: {"pred", "conf"}}
    #: of that round's model on the stop set, the audit's reserve when there is one)
    monitor: dict[str, Any] = field(default_factory=dict)

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

    def is_audit(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` bool: which of ``ids`` belong to the audit's reserve (never training labels)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self.audit is None:
            return np.zeros(ids.size, dtype=bool)
        return np.isin(ids, self.audit.reserve_ids)

    def answered(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` bool: which of ``ids`` have a label, as training labels or audit labels."""
        ids = np.asarray(ids, dtype=np.int64)
        done = self.labels.round_of(ids) > 0
        if self.audit is not None:
            done |= np.isin(ids, self.audit.labeled_ids())
        return done

    def requested_ids(self) -> np.ndarray:
        """``(k,)`` int64 exported ids (training or audit) that have no label yet."""
        ids = self.labeling.requested_ids(self.labels)
        return ids[~self.answered(ids)] if ids.size else ids

    def answer_view(self) -> LabelState:
        """The label state with the audit's labels in it too (in the current round): what an
        annotation file is checked against, so that an audit answer given again is known and a
        changed one is a correction."""
        if self.audit is None or not self.audit.n_labeled:
            return self.labels
        view = LabelState.from_state_dict(self.labels.state_dict())
        ids = self.audit.labeled_ids()
        view.label(ids, self.audit.labels_of(ids), max(1, view.current_round))
        return view

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
            "audit": None if self.audit is None else self.audit.state_dict(),
            "monitor": self.monitor,
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
        audit = None
        if d.get("audit") is not None:
            from alcore.estimate import Audit

            audit = Audit.from_state_dict(d["audit"])
        paid = ledger.totals()["audit_labels"]
        if paid != (audit.n_labeled if audit is not None else 0):
            raise ConfigError(
                problem(
                    f"{path}: its cost ledger paid {paid} audit labels, its audit holds "
                    f"{audit.n_labeled if audit is not None else 0}",
                    fix="restore the state file the run wrote, or start over with --fresh",
                )
            )
        return cls(
            config_digest=d["config_digest"],
            labels=labels,
            ledger=ledger,
            records={int(k): v for k, v in d.get("records", {}).items()},
            final=d.get("final"),
            tracking=d.get("tracking", {}),
            versions=d.get("versions", []),
            labeling=LabelingLog.from_state_dict(d.get("labeling")),
            audit=audit,
            monitor=d.get("monitor", {}),
        )


def final_is_current(final: Mapping[str, Any] | None, labels: LabelState) -> bool:
    """Whether the final network (``state.final``) was trained on exactly these labels: a label
    added or corrected since makes it stale, and the cycle trains it again."""
    if final is None:
        return False
    if "labels_digest" in final:
        return final["labels_digest"] == labels.digest()
    return final.get("labels") == labels.n_labeled  # a state written before labels were digested


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


def lock_path(dir: str | os.PathLike[str], locks: str | os.PathLike[str]) -> Path:
    """The lock file of the experiment in ``dir``: in ``locks``, named by a digest of ``dir``'s
    resolved path (and its name, for people), so that deleting ``dir`` does not delete it."""
    resolved = str(Path(dir).resolve())
    return Path(locks) / f"{Path(resolved).name}-{hashlib.sha256(resolved.encode()).hexdigest()[:16]}.lock"


@contextmanager
def experiment_lock(dir: str | os.PathLike[str], *, locks: str | os.PathLike[str] | None = None) -> Iterator[None]:
    """Exclusive lock on the experiment in ``dir``; a second run refuses with a clear message.

    The lock is a ``flock`` on a file in ``locks`` (default: ``.alcore/locks`` of the project that
    holds ``dir``, two levels up), never inside ``dir``: ``rm -rf`` of the run folder or
    ``dvc repro`` (which deletes its outputs before a stage runs) cannot remove a held lock and let a
    second run start beside the first.
    """
    import fcntl

    dir = Path(dir)
    dir.mkdir(parents=True, exist_ok=True)
    locks = Path(locks) if locks is not None else dir.resolve().parent.parent / ".alcore" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = lock_path(dir, locks)
    fh = open(path, "a+")  # noqa: SIM115 - held for the context
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            raise ExperimentLockedError(
                problem(
                    f"Another run holds the experiment in {dir} ({holder or 'lock ' + str(path)})",
                    fix="wait for it to finish, or stop it first",
                )
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, lock {path}\n")
        fh.flush()
        yield
    finally:
        fh.close()
