"""The label state of an active-learning run, as data.

Per pool sample: the round it was labeled in (0 = unlabeled) and its label (-1 = unlabeled), aligned
with the pool's stable ids. Every change goes through :meth:`LabelState.label`, which checks the
whole event before touching anything. (After baal's ``ActiveLearningDataset.labelled_map``.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from alcore.errors import ConfigError, LabelError, problem

__all__ = ["LabelState"]

_FORMAT = "alcore.LabelState"
_VERSION = 1


def _is_int(x: object) -> bool:
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _few(values: np.ndarray, k: int = 5) -> str:
    """``[1, 2, 3, 4, 5, ...] (12 in all)`` - the first ``k`` offending values."""
    values = np.asarray(values)
    head = values[:k].tolist()
    more = f", ... ({values.size} in all)" if values.size > k else ""
    return f"{str(head)[:-1]}{more}]"


def as_int_ids(x: Any, what: str, error: type[Exception]) -> np.ndarray:
    """``x`` as a 1-D int64 array, or ``error`` naming ``what`` (shared by label state and oracles)."""
    arr = np.asarray(x)
    if arr.size == 0 and arr.ndim <= 1:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise error(
            problem(
                f"{what} has shape {arr.shape} and dtype {arr.dtype}",
                allowed="a 1-D array (or list) of integers",
                fix=f"pass {what} as integers",
            )
        )
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise error(problem(f"{what} holds values above the int64 range", allowed="int64 values"))
    return arr.astype(np.int64, copy=False)


class LabelState:
    """Which pool samples are labeled, with what, and in which round.

    Args:
        pool_ids: ``(N,)`` unique integer ids of the pool, in the pool's order.
        n_classes: number of classes C >= 2; labels live in ``[0, C)``.

    Attributes:
        pool_ids: ``(N,)`` int64, read-only.
        labeled_round: ``(N,)`` int32 read-only view; 0 = unlabeled, r >= 1 = labeled in round r.
        labels: ``(N,)`` int64 read-only view; -1 = unlabeled.

    Lookups of ids are vectorised (``searchsorted`` on a sorted copy of the ids), so a call with
    10^5 ids on a pool of 10^6 takes milliseconds.
    """

    def __init__(self, pool_ids: np.ndarray, n_classes: int) -> None:
        ids = as_int_ids(pool_ids, "pool_ids", ConfigError)
        if np.asarray(pool_ids).ndim != 1:
            raise ConfigError(problem("pool_ids must be 1-D", allowed="a 1-D array of ids"))
        if not _is_int(n_classes) or n_classes < 2:
            raise ConfigError(
                problem(
                    f"n_classes={n_classes!r}",
                    allowed="an int >= 2",
                    fix="pass the dataset's number of classes",
                )
            )
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        if dup.size:
            raise ConfigError(
                problem(
                    f"pool_ids holds duplicates: {_few(np.unique(dup))}",
                    allowed="unique ids",
                    fix="give every pool sample its own id",
                )
            )
        self._pool_ids = ids.copy()
        self._pool_ids.flags.writeable = False
        self._order = order
        self._sorted_ids = sorted_ids
        self.n_classes = int(n_classes)
        self._round = np.zeros(ids.size, dtype=np.int32)
        self._labels = np.full(ids.size, -1, dtype=np.int64)

    # -- read access ----------------------------------------------------------------------------
    @staticmethod
    def _view(a: np.ndarray) -> np.ndarray:
        v = a.view()
        v.flags.writeable = False
        return v

    @property
    def pool_ids(self) -> np.ndarray:
        return self._pool_ids

    @property
    def labeled_round(self) -> np.ndarray:
        return self._view(self._round)

    @property
    def labels(self) -> np.ndarray:
        return self._view(self._labels)

    def __len__(self) -> int:
        return int(self._pool_ids.size)

    def __repr__(self) -> str:
        return (
            f"LabelState(n_pool={len(self)}, n_classes={self.n_classes}, "
            f"n_labeled={self.n_labeled}, current_round={self.current_round})"
        )

    @property
    def labeled_mask(self) -> np.ndarray:
        """``(N,)`` bool, aligned with ``pool_ids``."""
        return self._round > 0

    @property
    def n_labeled(self) -> int:
        return int(np.count_nonzero(self._round))

    @property
    def n_unlabeled(self) -> int:
        return len(self) - self.n_labeled

    @property
    def labeled_ids(self) -> np.ndarray:
        """``(L,)`` int64 ids of the labeled samples, in pool order."""
        return self._pool_ids[self._round > 0]

    @property
    def unlabeled_ids(self) -> np.ndarray:
        """``(U,)`` int64 ids of the unlabeled samples, in pool order."""
        return self._pool_ids[self._round == 0]

    @property
    def current_round(self) -> int:
        """The highest round any sample was labeled in; 0 before the first label."""
        return int(self._round.max()) if self._round.size else 0

    def ids_in_round(self, round: int) -> np.ndarray:
        """``(k,)`` int64 ids labeled in ``round``, in pool order."""
        return self._pool_ids[self._round == round]

    def labels_array(self) -> np.ndarray:
        """``(N,)`` int64 copy of the labels aligned with ``pool_ids``, -1 = unlabeled."""
        return self._labels.copy()

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``ids`` in the pool and a mask of those found (positions of the missing
        ones are meaningless)."""
        if self._sorted_ids.size == 0:
            return np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=bool)
        at = np.searchsorted(self._sorted_ids, ids)
        at = np.minimum(at, self._sorted_ids.size - 1)
        found = self._sorted_ids[at] == ids
        return self._order[at], found

    def positions_of(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` int64 positions (rows of the pool's feature matrix) of ``ids``.

        Raises:
            LabelError: some ids are not in the pool.
        """
        ids = as_int_ids(ids, "ids", LabelError)
        positions, found = self._lookup(ids)
        if not found.all():
            raise LabelError(
                problem(
                    f"ids not in the pool: {_few(ids[~found])}",
                    allowed="ids of this pool",
                    fix="check that the ids come from the same dataset and split",
                )
            )
        return positions

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` bool: which of ``ids`` are in the pool."""
        return self._lookup(as_int_ids(ids, "ids", LabelError))[1]

    def labels_of(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` int64 labels of ``ids``.

        Raises:
            LabelError: some ids are not in the pool or not labeled.
        """
        positions = self.positions_of(ids)
        self._require_labeled(
            np.asarray(ids), positions, "ids not labeled yet", "ask only for the labels of labeled samples"
        )
        return self._labels[positions]

    def _require_labeled(self, ids: np.ndarray, positions: np.ndarray, what: str, fix: str) -> None:
        unlabeled = self._round[positions] == 0
        if unlabeled.any():
            raise LabelError(
                problem(f"{what}: {_few(ids[unlabeled])}", allowed="labeled ids (see labeled_ids)", fix=fix)
            )

    def round_of(self, ids: np.ndarray) -> np.ndarray:
        """``(k,)`` int32 round each of ``ids`` was labeled in (0 = unlabeled)."""
        return self._round[self.positions_of(ids)]

    # -- the one write ---------------------------------------------------------------------------
    def _check_entries(self, ids: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate ids and labels of one event; return ``(ids, labels, positions)``."""
        ids = as_int_ids(ids, "ids", LabelError)
        labels = as_int_ids(labels, "labels", LabelError)
        if ids.size != labels.size:
            raise LabelError(
                problem(
                    f"{ids.size} ids but {labels.size} labels",
                    allowed="one label per id",
                    fix="pass ids and labels of equal length",
                )
            )
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            raise LabelError(
                problem(
                    f"ids repeated within one call: {_few(uniq[counts > 1])}",
                    allowed="each id once per call",
                    fix="remove the repeated ids",
                )
            )
        positions, found = self._lookup(ids)
        if not found.all():
            raise LabelError(
                problem(
                    f"ids not in the pool: {_few(ids[~found])}",
                    allowed="ids of this pool",
                    fix="check that the ids come from the same dataset and split",
                )
            )
        bad = (labels < 0) | (labels >= self.n_classes)
        if bad.any():
            raise LabelError(
                problem(
                    f"labels outside the class set for ids {_few(ids[bad])} (labels {_few(labels[bad])})",
                    allowed=f"class indices in [0, {self.n_classes})",
                    fix="map the annotations onto the dataset's class indices",
                )
            )
        return ids, labels, positions

    def label(self, ids: np.ndarray, labels: np.ndarray, round: int) -> None:
        """Record that ``ids`` received ``labels`` in ``round``.

        Everything is checked before anything changes: on error the state is as before.

        Args:
            ids: ``(k,)`` integer pool ids, distinct, not yet labeled.
            labels: ``(k,)`` integer classes in ``[0, n_classes)``.
            round: int >= 1 and >= ``current_round`` (rounds never go back).

        Raises:
            LabelError: naming the first offending ids.
        """
        current = self.current_round
        if not _is_int(round) or round < max(1, current):
            raise LabelError(
                problem(
                    f"round={round!r} while the state is at round {current}",
                    allowed=f"an int >= {max(1, current)}",
                    fix="label in the current round or a later one",
                )
            )
        ids, labels, positions = self._check_entries(ids, labels)
        again = self._round[positions] > 0
        if again.any():
            raise LabelError(
                problem(
                    f"ids already labeled: {_few(ids[again])} (in rounds {_few(self._round[positions][again])})",
                    allowed="unlabeled ids (see unlabeled_ids)",
                    fix="drop the ids that are labeled already",
                )
            )
        self._round[positions] = round
        self._labels[positions] = labels

    def relabel(self, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Correct the labels of ``ids``, which are labeled already; their rounds are kept.

        A reviewer who fixes a label changes what the sample *is*, not when it was bought: the
        round (and so what was paid in it) stays. Checked before anything changes.

        Returns:
            ``(k,)`` int64 the labels they had before.

        Raises:
            LabelError: an id is unknown, unlabeled or repeated, or a label is outside the class set.
        """
        ids, labels, positions = self._check_entries(ids, labels)
        self._require_labeled(
            ids, positions, "cannot correct ids that are not labeled yet", "label them first (label())"
        )
        before = self._labels[positions].copy()
        self._labels[positions] = labels
        return before

    def counts_per_round(self) -> dict[int, int]:
        """``{round: labeled samples}`` for every round with labels."""
        rounds, counts = np.unique(self._round[self._round > 0], return_counts=True)
        return {int(r): int(c) for r, c in zip(rounds, counts, strict=True)}

    def digest(self) -> str:
        """A digest of which ids are labeled with what (not when): it changes with every new label
        and every correction, so a run can see that its labels are not the ones it trained on."""
        import hashlib

        mask = self._round > 0
        h = hashlib.sha256()
        h.update(self._pool_ids[mask].tobytes())
        h.update(self._labels[mask].tobytes())
        return h.hexdigest()[:16]

    # -- invariants and persistence ------------------------------------------------------------
    def _invariant_problems(self, rounds: np.ndarray, labels: np.ndarray) -> list[str]:
        n = self._pool_ids.size
        out = []
        if rounds.shape != (n,) or rounds.dtype != np.int32:
            out.append(f"labeled_round has shape {rounds.shape} and dtype {rounds.dtype}")
        if labels.shape != (n,) or labels.dtype != np.int64:
            out.append(f"labels has shape {labels.shape} and dtype {labels.dtype}")
        if out:
            return out
        if (rounds < 0).any():
            out.append(f"negative rounds at ids {_few(self._pool_ids[rounds < 0])}")
        mismatch = (rounds > 0) != (labels >= 0)
        if mismatch.any():
            out.append(f"labeled_round and labels disagree at ids {_few(self._pool_ids[mismatch])}")
        bad = (labels < -1) | (labels >= self.n_classes)
        if bad.any():
            out.append(f"labels outside [-1, {self.n_classes}) at ids {_few(self._pool_ids[bad])}")
        return out

    def check_invariants(self) -> None:
        """Raise LabelError if the arrays contradict each other or the class set."""
        problems = self._invariant_problems(self._round, self._labels)
        if problems:
            raise LabelError(problem("Label state is inconsistent: " + "; ".join(problems)))

    def state_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot (plain lists and ints).

        The labeled entries are stored sparsely, ordered by (round, pool position):
        ``labeled_ids``, ``labels`` and ``rounds`` of equal length.
        """
        positions = np.flatnonzero(self._round)
        rounds = self._round[positions]
        positions = positions[np.argsort(rounds, kind="stable")]
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "n_classes": self.n_classes,
            "pool_ids": self._pool_ids.tolist(),
            "labeled_ids": self._pool_ids[positions].tolist(),
            "labels": self._labels[positions].tolist(),
            "rounds": self._round[positions].tolist(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the labels with those of ``state`` (from :meth:`state_dict`).

        Raises:
            ConfigError: not a label-state dict, another format version or another class count.
            LabelError: the pool ids differ from this state's, or the entries break an invariant.
            On error nothing changes.
        """
        keys = ("format", "version", "n_classes", "pool_ids", "labeled_ids", "labels", "rounds")
        missing = [k for k in keys if not isinstance(state, Mapping) or k not in state]
        if missing or state["format"] != _FORMAT:
            raise ConfigError(
                problem(
                    f"not a label-state dict (missing {missing or 'nothing'}, "
                    f"format {state.get('format') if isinstance(state, Mapping) else None!r})",
                    allowed=f"the output of LabelState.state_dict() (format {_FORMAT!r})",
                    fix="load the file the run saved",
                )
            )
        if state["version"] != _VERSION:
            raise ConfigError(
                problem(
                    f"label-state format version {state['version']!r}",
                    allowed=f"version {_VERSION}",
                    fix="load it with the alcore version that wrote it",
                )
            )
        if state["n_classes"] != self.n_classes:
            raise ConfigError(
                problem(
                    f"saved state has n_classes={state['n_classes']!r}, this one {self.n_classes}",
                    allowed="the same class count",
                    fix="load the state into a LabelState of the same dataset",
                )
            )
        pool_ids = as_int_ids(state["pool_ids"], "pool_ids", LabelError)
        if pool_ids.shape != self._pool_ids.shape or not np.array_equal(pool_ids, self._pool_ids):
            where = ""
            if pool_ids.shape == self._pool_ids.shape:
                first = int(np.flatnonzero(pool_ids != self._pool_ids)[0])
                where = (
                    f"; first difference at position {first}: {int(pool_ids[first])} vs {int(self._pool_ids[first])}"
                )
            raise LabelError(
                problem(
                    f"saved state is for another pool ({pool_ids.size} ids, this one {self._pool_ids.size}{where})",
                    allowed="the same pool ids in the same order",
                    fix="load the state into a LabelState built from the same dataset",
                )
            )
        ids, labels, positions = self._check_entries(state["labeled_ids"], state["labels"])
        rounds = as_int_ids(state["rounds"], "rounds", LabelError)
        if rounds.size != ids.size or (rounds < 1).any():
            raise LabelError(
                problem(
                    f"{rounds.size} rounds for {ids.size} labeled ids "
                    f"(smallest {int(rounds.min()) if rounds.size else None})",
                    allowed="one round >= 1 per labeled id",
                    fix="load the file the run saved",
                )
            )
        if rounds.size and rounds.max() > np.iinfo(np.int32).max:
            raise LabelError(problem("rounds beyond the int32 range", allowed="rounds < 2**31"))
        new_round = np.zeros_like(self._round)
        new_labels = np.full_like(self._labels, -1)
        new_round[positions] = rounds
        new_labels[positions] = labels
        problems = self._invariant_problems(new_round, new_labels)
        if problems:
            raise LabelError(problem("Saved label state is inconsistent: " + "; ".join(problems)))
        self._round = new_round
        self._labels = new_labels

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> LabelState:
        """A new state built from :meth:`state_dict` output."""
        if not isinstance(state, Mapping) or "pool_ids" not in state or "n_classes" not in state:
            raise ConfigError(
                problem(
                    "not a label-state dict (no pool_ids / n_classes)",
                    allowed="the output of LabelState.state_dict()",
                    fix="load the file the run saved",
                )
            )
        out = cls(state["pool_ids"], state["n_classes"])
        out.load_state_dict(state)
        return out
