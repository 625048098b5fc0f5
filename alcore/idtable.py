"""Per-sample tables in Parquet: an ``id`` int64 column, named value columns, and a JSON spec of
their provenance in the footer (pretext losses, AS3L priors). Written atomically."""

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

__all__ = ["read_id_table", "write_id_table"]


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
