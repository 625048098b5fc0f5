"""Sharded feature extraction: cut a split into parts, write each part, check the parts and publish them.

A part is a contiguous range ``[start, stop)`` of the split's id order whose boundaries fall on
multiples of the batch size, so every batch the encoder sees is a batch a single pass would have
seen: the published features equal a single pass's, float for float. Each part is a feature file of
its own (its rows, with a spec for those rows) that also records its place in the whole (``index``,
``of``, ``start``, ``stop``) and the spec of the whole split. :func:`publish_parts` checks that the
parts agree (one spec), that their ids are disjoint and complete in the split's order, and streams
them into one feature file, one part in memory at a time. Readers of the published file
(:func:`alcore.features.read_features`) cannot tell it from a single pass's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from alcore._io import atomic_path
from alcore.errors import ConfigError, FeatureMismatchError, problem
from alcore.features import SPEC_KEY, FeatureSpec, format_diff, ids_digest, read_spec, write_features

__all__ = [
    "PART_KEY",
    "Shard",
    "part_path",
    "parts_dir",
    "plan_shards",
    "publish_parts",
    "read_part",
    "remove_stale_parts",
    "write_part",
]

PART_KEY = b"alcore.feature_part"


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``of``: rows ``start:stop`` of the split (positions in its id order)."""

    index: int
    of: int
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def plan_shards(n: int, shards: int, *, batch_size: int) -> list[Shard]:
    """Cut ``n`` rows into ``min(shards, ceil(n / batch_size))`` contiguous parts on batch boundaries.

    The parts hold whole batches (the last part also the split's last, short one) and differ by at
    most one batch in size. A part never holds less than one batch: a split of fewer batches than
    ``shards`` gets one part per batch.
    """
    for name, v in (("n", n), ("shards", shards), ("batch_size", batch_size)):
        if int(v) < 1:
            raise ConfigError(problem(f"{name}={v}", "an integer >= 1"))
    n_batches = -(-n // batch_size)
    k = min(shards, n_batches)
    bounds = [min(n, (i * n_batches // k) * batch_size) for i in range(k + 1)]
    return [Shard(index=i, of=k, start=bounds[i], stop=bounds[i + 1]) for i in range(k)]


def parts_dir(out: str | os.PathLike[str]) -> Path:
    """Where the parts of the feature file ``out`` live: ``features/pool.parquet`` -> ``features/pool.parts/``."""
    out = Path(out)
    return out.with_name(f"{out.stem}.parts")


def part_path(out: str | os.PathLike[str], shard: Shard) -> Path:
    return parts_dir(out) / f"part-{shard.index:05d}-of-{shard.of:05d}.parquet"


def write_part(path: str | os.PathLike[str], shard: Shard, ids: np.ndarray, X: np.ndarray, whole: FeatureSpec) -> None:
    """Write part ``shard`` of the split ``whole`` describes: rows ``ids``, ``X`` (atomically)."""
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if len(ids) != len(shard):
        raise ConfigError(problem(f"part {shard.index} has {len(ids)} ids for rows {shard.start}:{shard.stop}"))
    spec = replace(whole, n=len(ids), ids_digest=ids_digest(ids))
    meta = {**asdict(shard), "whole": json.loads(whole.to_json())}
    write_features(path, ids, X, spec, extra_metadata={PART_KEY: json.dumps(meta, sort_keys=True).encode()})


def read_part(path: str | os.PathLike[str]) -> tuple[Shard, FeatureSpec, FeatureSpec]:
    """``(shard, spec of the part's rows, spec of the whole split)`` from a part's footer."""
    spec = read_spec(path)
    meta = pq.read_schema(path).metadata or {}
    if PART_KEY not in meta:
        raise FeatureMismatchError(
            problem(f"{path} is a feature file but not a part", fix="write parts with alcore.shards.write_part")
        )
    d = json.loads(meta[PART_KEY])
    whole = FeatureSpec.from_json(json.dumps(d.pop("whole")))
    return Shard(**d), spec, whole


def _check_parts(paths: list[Path], expect: FeatureSpec | None) -> tuple[FeatureSpec, np.ndarray]:
    """The whole split's spec and the parts' order, after every check :func:`publish_parts` promises."""
    if not paths:
        raise ConfigError(problem("No parts to publish", fix="extract the split's parts first"))
    info = [read_part(p) for p in paths]
    whole = info[0][2]
    for p, (_, _, w) in zip(paths, info, strict=True):
        d = whole.diff(w)
        if d:
            raise FeatureMismatchError(
                problem(
                    f"Parts of one split have different specs: {paths[0].name} vs {p.name}: " + format_diff(d),
                    fix="extract every part with the same encoder, data and batch size (rerun the features stage)",
                )
            )
    if expect is not None and expect.diff(whole):
        d = format_diff(expect.diff(whole), "{k}: expected {a!r}, parts have {b!r}")
        raise FeatureMismatchError(
            problem(
                f"The parts were extracted with another spec: {d}", fix="re-extract the parts with the current encoder"
            )
        )
    order = np.argsort([s.index for s, _, _ in info], kind="stable")
    shards = [info[i][0] for i in order]
    expected = list(range(shards[0].of))
    if [s.index for s in shards] != expected or any(s.of != shards[0].of for s in shards):
        raise FeatureMismatchError(
            problem(
                f"Parts {[s.index for s in shards]} of {sorted({s.of for s in shards})}",
                f"parts {expected[0]}..{expected[-1]} of {len(expected)}, each once",
                "extract the missing parts (rerun the features stage)",
            )
        )
    stop = 0
    for s in shards:
        if s.start != stop:
            raise FeatureMismatchError(
                problem(f"Part {s.index} starts at row {s.start} but the parts before it end at row {stop}")
            )
        stop = s.stop
    for i in order:
        shard, spec, _ = info[i]
        if spec.diff(replace(whole, n=len(shard), ids_digest=spec.ids_digest)):
            raise FeatureMismatchError(problem(f"{paths[i]} does not hold the rows its footer names"))
    if stop != whole.n:
        raise FeatureMismatchError(problem(f"The parts end at row {stop}; the split has {whole.n} rows"))
    return whole, order


def publish_parts(
    paths: list[str | os.PathLike[str]], out: str | os.PathLike[str], *, expect: FeatureSpec | None = None
) -> FeatureSpec:
    """Check the parts of one split and write them as the single feature file ``out`` (atomically).

    Checks: every part names the same whole-split spec (and ``expect``'s, when given), the parts
    are ``0..k-1`` of ``k`` and tile the rows ``0..n``, and their ids, concatenated in part order,
    are unique and are the split's ids in its order (the spec's ``n`` and ``ids_digest``). Any
    failure raises :class:`FeatureMismatchError` and leaves ``out`` untouched. Memory: the ids, and
    one part's features at a time.

    Returns:
        The spec of the published file (the whole split's).
    """
    paths = [Path(p) for p in paths]
    whole, order = _check_parts(paths, expect)
    ids = np.concatenate([pq.read_table(paths[i], columns=["id"]).column("id").to_numpy() for i in order])
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        where = sorted(
            {paths[i].name for i in order if np.isin(pq.read_table(paths[i], columns=["id"]).column("id"), dup).any()}
        )
        raise FeatureMismatchError(
            problem(
                f"{len(dup)} ids are in more than one part (e.g. {dup[:5].tolist()}, in {where})",
                "each id in exactly one part",
                "delete the parts directory and extract again",
            )
        )
    if len(ids) != whole.n or ids_digest(ids) != whole.ids_digest:
        raise FeatureMismatchError(
            problem(
                f"The parts hold {len(ids)} ids that are not the split's {whole.n} ids in its order",
                fix="delete the parts directory and extract again",
            )
        )
    schema = pq.read_schema(paths[order[0]]).with_metadata({SPEC_KEY: whole.to_json().encode()})
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as w:
            for i in order:
                for batch in pq.ParquetFile(paths[i]).iter_batches(columns=["id", "features"], batch_size=1 << 16):
                    w.write_batch(batch)
    return whole


def remove_stale_parts(out: str | os.PathLike[str], keep: list[str | os.PathLike[str]]) -> list[Path]:
    """Delete what else lies in ``out``'s parts directory: parts of an earlier plan (another shard
    count) and temporary files of writers that were killed. Returns what was deleted."""
    keep_set = {Path(p).resolve() for p in keep}
    gone = []
    d = parts_dir(out)
    for f in [*d.glob("part-*.parquet"), *d.glob(".part-*.tmp")]:
        if f.resolve() not in keep_set:
            f.unlink(missing_ok=True)
            gone.append(f)
    return gone
