"""The feature store: pre-computed encoder features of a split, in Parquet, with their provenance.

A feature file holds an ``id`` int64 column and a ``features`` column of fixed-size float32
lists (zstd), and a frozen :class:`FeatureSpec` in the file's key-value metadata. Reading gives one
``(N, D)`` float32 numpy array without any per-row Python.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from alcore._io import atomic_path, reading
from alcore.datasets.base import Split
from alcore.device import autocast, resolve_device
from alcore.errors import ConfigError, DataError, FeatureMismatchError, problem

SPEC_KEY = b"alcore.feature_spec"
FORMAT_VERSION = 1

# Fields that must agree for two feature sets to be mixed (compared by check_compatible).
_PROVENANCE = ("encoder_arch", "encoder_source", "weights_digest", "preprocess", "dim", "dtype")


def format_diff(d: dict[str, tuple[Any, Any]], template: str = "{k}: {a!r} vs {b!r}") -> str:
    """One line naming each differing field of a :meth:`FeatureSpec.diff`."""
    return "; ".join(template.format(k=k, a=a, b=b) for k, (a, b) in d.items())


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureSpec:
    """Everything that determines a feature file's content (timm's pretrained-cfg idea)."""

    encoder_arch: str
    encoder_source: str
    weights_digest: str
    preprocess: str  # canonical JSON of Preprocess.to_dict()
    dim: int
    n: int
    ids_digest: str
    dataset: str  # dataset fingerprint
    split: str  # "pool" | "test"
    dtype: str = "float32"
    version: int = FORMAT_VERSION

    @classmethod
    def for_encoder(cls, encoder: Any, split: Split, *, dataset: str, split_name: str) -> FeatureSpec:
        """The spec of ``encoder``'s features of ``split``."""
        cfg = encoder.config
        return cls(
            encoder_arch=cfg.arch,
            encoder_source=cfg.source,
            weights_digest=encoder.weights_digest(),
            preprocess=json.dumps(cfg.preprocess.to_dict(), sort_keys=True),
            dim=int(cfg.feature_dim),
            n=len(split),
            ids_digest=ids_digest(split.ids),
            dataset=dataset,
            split=split_name,
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> FeatureSpec:
        d = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def diff(self, other: FeatureSpec, keys: tuple[str, ...] | None = None) -> dict[str, tuple[Any, Any]]:
        keys = keys or tuple(f.name for f in fields(self))
        return {k: (getattr(self, k), getattr(other, k)) for k in keys if getattr(self, k) != getattr(other, k)}

    def check_compatible(self, other: FeatureSpec) -> None:
        """Raise :class:`FeatureMismatchError` unless both come from the same encoder and recipe."""
        d = self.diff(other, _PROVENANCE)
        if d:
            raise FeatureMismatchError(
                problem(
                    "Feature sets come from different encoders or preprocessing: " + format_diff(d),
                    fix="re-extract both sets with the same encoder (alcore run does this for you)",
                )
            )


@dataclass(frozen=True, eq=False)
class FeatureSet:
    """``ids`` (N,) int64 and ``X`` (N, D) float32, row i belonging to ``ids[i]``."""

    ids: np.ndarray
    X: np.ndarray
    spec: FeatureSpec

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@torch.inference_mode()
def extract_features(
    encoder: torch.nn.Module,
    split: Split,
    *,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = True,
    desc: str = "features",
) -> np.ndarray:
    """Run ``encoder`` over ``split`` in batches: ``(N, D)`` float32, row i for ``split.ids[i]``.

    The encoder runs in eval mode (eval transforms); on CUDA under bf16 autocast.
    """
    if batch_size < 1:
        raise ConfigError(problem(f"batch_size={batch_size}", "an integer >= 1"))
    n = len(split)
    if n == 0:
        raise DataError(problem("The split to extract features from is empty", fix="check the dataset"))
    dev = resolve_device(device)
    preprocess = encoder.config.preprocess
    was_training = encoder.training
    encoder.eval().to(dev)
    out = np.empty((n, int(encoder.config.feature_dim)), dtype=np.float32)
    try:
        with tqdm(total=n, desc=desc, unit="img", disable=not progress, leave=False) as bar:
            for start in range(0, n, batch_size):
                pos = np.arange(start, min(start + batch_size, n))
                x = split.load_batch(pos, preprocess).to(dev, non_blocking=True)
                with autocast(dev):
                    z = encoder(x)
                out[start : start + len(pos)] = z.float().cpu().numpy()
                bar.update(len(pos))
    finally:
        encoder.train(was_training)
    if not np.isfinite(out).all():
        raise DataError(problem("The encoder produced non-finite features", fix="check the weights file"))
    return out


def write_features(
    path: str | os.PathLike[str],
    ids: np.ndarray,
    X: np.ndarray,
    spec: FeatureSpec,
    *,
    extra_metadata: dict[bytes, bytes] | None = None,
) -> None:
    """Write ``ids`` + ``X`` with ``spec`` (and ``extra_metadata``) in the metadata, atomically."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] != ids.shape[0]:
        raise ConfigError(problem(f"features of shape {X.shape} for {ids.shape[0]} ids", "(len(ids), D)"))
    if X.shape[1] != spec.dim or ids.shape[0] != spec.n or ids_digest(ids) != spec.ids_digest:
        raise FeatureMismatchError(problem("The features do not match their spec (dim, n or id order)"))
    d = X.shape[1]
    values = pa.array(X.reshape(-1), type=pa.float32())
    col = pa.FixedSizeListArray.from_arrays(values, d)
    table = pa.table({"id": pa.array(ids), "features": col})
    table = table.replace_schema_metadata({**(extra_metadata or {}), SPEC_KEY: spec.to_json().encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", row_group_size=1 << 16)


_REEXTRACT = "extract the features again: `dvc repro features` (or `alcore run --stage features`); `dvc checkout` restores a cached copy"


def read_spec(path: str | os.PathLike[str]) -> FeatureSpec:
    """The spec of a feature file, from its footer only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            problem(f"No feature file at {path}", fix="run the features stage first (dvc repro or alcore run)")
        )
    with reading(path, "feature file", _REEXTRACT):
        meta = pq.read_schema(path).metadata or {}
    if SPEC_KEY not in meta:
        raise FeatureMismatchError(
            problem(f"{path} has no alcore feature spec", fix="write it with alcore.features.write_features")
        )
    return FeatureSpec.from_json(meta[SPEC_KEY])


def read_features(
    path: str | os.PathLike[str], *, expect: FeatureSpec | None = None, memory_budget: int | None = None
) -> FeatureSet:
    """Read a feature file; with ``expect``, refuse a file whose spec differs in any field.

    With ``memory_budget`` (bytes), features larger than it (``N * D * 4``) are not loaded: ``X`` is
    a read-only ``numpy.memmap`` of a float32 ``.npy`` written once beside the file (see
    :func:`memmap_features`); ``ids`` are always in memory.
    """
    spec = read_spec(path)
    if expect is not None:
        d = expect.diff(spec)
        if d:
            raise FeatureMismatchError(
                problem(
                    f"{path} was computed with a different spec: "
                    + format_diff(d, "{k}: expected {a!r}, file has {b!r}"),
                    fix="re-extract the features with the current encoder (dvc repro, or alcore run)",
                )
            )
    with reading(path, "feature file", _REEXTRACT):
        if memory_budget is not None and spec.n * spec.dim * np.dtype(spec.dtype).itemsize > memory_budget:
            ids = pq.read_table(path, columns=["id"]).column("id").to_numpy()
            return FeatureSet(ids=ids, X=memmap_features(path, spec), spec=spec)
        table = pq.read_table(path, columns=["id", "features"])
        ids = table.column("id").to_numpy()
        col = table.column("features").combine_chunks()
        X = col.values.to_numpy(zero_copy_only=False).reshape(len(ids), spec.dim)
    if X.dtype != np.float32:
        X = X.astype(np.float32)
    return FeatureSet(ids=ids, X=X, spec=spec)


MEMMAP_SUFFIX = ".memmap.npy"


def memmap_path(path: str | os.PathLike[str], spec: FeatureSpec) -> Path:
    """The ``.npy`` sidecar of a feature file: ``<stem>.<key>.memmap.npy`` beside it.

    ``key`` digests the spec and the file's size and modification time, so a file rewritten with
    other content (the same spec extracted on another device, say) never meets a stale sidecar.
    """
    path = Path(path)
    st = path.stat()
    key = hashlib.sha256(f"{spec.to_json()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return path.with_name(f"{path.stem}.{key}{MEMMAP_SUFFIX}")


def memmap_features(path: str | os.PathLike[str], spec: FeatureSpec | None = None) -> np.memmap:
    """``(N, D)`` float32 features of a feature file as a read-only memory map.

    The first call streams the Parquet file, one row group at a time, into the sidecar
    :func:`memmap_path` (written atomically; older sidecars of the file are removed); later calls
    open it. Memory: one row group, never the whole matrix.
    """
    path = Path(path)
    spec = spec or read_spec(path)
    side = memmap_path(path, spec)
    shape = (spec.n, spec.dim)
    if not side.is_file():
        with atomic_path(side) as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.dtype(spec.dtype), shape=shape)
            pos = 0
            with reading(path, "feature file", _REEXTRACT):
                for batch in pq.ParquetFile(path).iter_batches(columns=["features"], batch_size=1 << 16):
                    rows = batch.column(0).flatten().to_numpy(zero_copy_only=False).reshape(-1, spec.dim)
                    mm[pos : pos + len(rows)] = rows
                    pos += len(rows)
            if pos != spec.n:
                raise FeatureMismatchError(problem(f"{path} holds {pos} rows but its spec says n={spec.n}"))
            mm.flush()
            del mm
        for old in path.parent.glob(f"{path.stem}.*{MEMMAP_SUFFIX}"):
            if old != side:
                old.unlink(missing_ok=True)
    X = np.load(side, mmap_mode="r")
    if X.shape != shape or X.dtype != np.dtype(spec.dtype):
        raise FeatureMismatchError(
            problem(
                f"{side} holds {X.dtype} {X.shape}, not the {spec.dtype} {shape} of {path}",
                fix=f"delete {side}; it is rebuilt on the next read",
            )
        )
    return X
