"""Sample ids: the one index from ids to positions, and per-sample tables in Parquet.

:class:`IdIndex` is how every part of alcore finds the rows of given ids in a fixed id order: the
label state in the pool's order, a feature file in its row order, an oracle in its table, the
selection in the features it reads. It sorts once and answers by binary search (O(k log N) per
lookup, no per-id Python).

A per-sample table holds an ``id`` int64 column, named value columns, and a JSON spec of their
provenance in the footer (pretext losses, AS3L priors). Written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from alcore._io import atomic_path, reading
from alcore.errors import ConfigError, DataError, FeatureMismatchError, problem

__all__ = ["IdIndex", "read_id_table", "write_id_table"]


class IdIndex:
    """Positions of ids in the fixed order ``ids`` (``(N,)`` int64, unique).

    >>> IdIndex([30, 10, 20]).positions([20, 30]).tolist()
    [2, 0]
    """

    def __init__(self, ids: Any) -> None:
        self.ids = np.ascontiguousarray(ids, dtype=np.int64)
        if self.ids.ndim != 1:
            raise ConfigError(problem(f"ids of shape {self.ids.shape}", allowed="a 1-D array of ids"))
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted = self.ids[self._order]

    def __len__(self) -> int:
        return int(self.ids.size)

    def duplicates(self) -> np.ndarray:
        """The ids that occur more than once (sorted; empty when all are unique)."""
        dup = self._sorted[1:][self._sorted[1:] == self._sorted[:-1]]
        return np.unique(dup)

    def lookup(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(positions, found)``: where each of ``ids`` is, and whether it is there at all
        (the position of an id not found is meaningless)."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._sorted.size == 0:
            return np.zeros(ids.size, dtype=np.int64), np.zeros(ids.size, dtype=bool)
        at = np.minimum(np.searchsorted(self._sorted, ids), self._sorted.size - 1)
        return self._order[at], self._sorted[at] == ids

    def contains(self, ids: Any) -> np.ndarray:
        """``(k,)`` bool: which of ``ids`` are in the index."""
        return self.lookup(ids)[1]

    def positions(self, ids: Any, *, error: type[Exception] = ConfigError, where: str = "this id order") -> np.ndarray:
        """``(k,)`` int64 positions of ``ids``; ``error`` naming the first missing ones otherwise."""
        pos, found = self.lookup(ids)
        if not found.all():
            missing = np.asarray(ids, dtype=np.int64)[~found]
            more = f" ... ({missing.size} in all)" if missing.size > 5 else ""
            raise error(
                problem(
                    f"ids not in {where}: {missing[:5].tolist()}{more}",
                    allowed=f"ids of {where}",
                    fix="check that the ids come from the same dataset and split",
                )
            )
        return pos


def write_id_table(
    path: str | os.PathLike[str], ids: np.ndarray, columns: dict[str, np.ndarray], spec: dict[str, Any], *, key: bytes
) -> None:
    """Write ``ids`` (N,) and each ``(N,)`` column, with ``spec`` under the footer ``key``."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if ids.ndim != 1 or any(np.shape(v) != ids.shape for v in columns.values()):
        shapes = {k: np.shape(v) for k, v in columns.items()}
        raise ConfigError(problem(f"columns {shapes} for {ids.shape} ids", allowed="one value per id"))
    if np.unique(ids).size != ids.size:
        raise ConfigError(problem("duplicate ids in a per-sample table", fix="give each sample once"))
    table = pa.table({"id": pa.array(ids), **{k: pa.array(np.ascontiguousarray(v)) for k, v in columns.items()}})
    table = table.replace_schema_metadata({key: json.dumps(spec, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_id_table(
    path: str | os.PathLike[str], names: tuple[str, ...], *, key: bytes, what: str, stage: str
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """``(ids, {name: column}, spec)`` of a table written by :func:`write_id_table` with ``key``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(problem(f"no {what} file at {path}", fix=f"run the {stage} (dvc repro)"))
    with reading(path, f"{what} file", f"re-run the {stage}"):
        meta = pq.read_schema(path).metadata or {}
    if key not in meta:
        raise FeatureMismatchError(problem(f"{path} is not an alcore {what} file", fix=f"re-run the {stage}"))
    with reading(path, f"{what} file", f"re-run the {stage}"):
        table = pq.read_table(path, columns=["id", *names])
    cols = {n: table.column(n).to_numpy() for n in names}
    return table.column("id").to_numpy().astype(np.int64), cols, json.loads(meta[key])
