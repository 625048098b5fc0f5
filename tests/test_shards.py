"""Parts of a split (plan, write, check, publish) and features read by memory map."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from alcore.config import ProxyCfg
from alcore.datasets import load_dataset
from alcore.encoders import create_encoder
from alcore.errors import ConfigError, FeatureMismatchError
from alcore.features import FeatureSpec, extract_features, ids_digest, read_features, write_features
from alcore.shards import Shard, part_path, plan_shards, publish_parts, read_part, remove_stale_parts, write_part
from alcore.steps import fit_proxy, select_batch
from alcore.strategies import STRATEGIES

# ------------------------------------------------------------------------------------ the plan


@pytest.mark.parametrize(
    "n,shards,bs,bounds",
    [
        (1000, 4, 100, [0, 200, 500, 700, 1000]),  # 10 batches: 2, 3, 2, 3
        (1001, 2, 100, [0, 500, 1001]),  # the short last batch goes with the last part
        (250, 8, 100, [0, 100, 200, 250]),  # fewer batches than shards: one part per batch
        (50, 3, 128, [0, 50]),
        (7, 1, 2, [0, 7]),
    ],
)
def test_plan_known_answers(n, shards, bs, bounds):
    plan = plan_shards(n, shards, batch_size=bs)
    assert [s.start for s in plan] + [plan[-1].stop] == bounds
    assert [s.index for s in plan] == list(range(len(plan))) and {s.of for s in plan} == {len(plan)}


@pytest.mark.parametrize("n", [1, 63, 64, 65, 999, 4096])
@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_plan_tiles_the_rows_on_batch_boundaries(n, shards):
    plan = plan_shards(n, shards, batch_size=64)
    assert plan[0].start == 0 and plan[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(plan, plan[1:], strict=False))
    assert all(s.start % 64 == 0 and len(s) > 0 for s in plan)
    assert len(plan) == min(shards, -(-n // 64))
    sizes = [-(-len(s) // 64) for s in plan]  # batches per part
    assert max(sizes) - min(sizes) <= 1


def test_plan_refuses_nonsense():
    for bad in ({"n": 0, "shards": 1}, {"n": 5, "shards": 0}):
        with pytest.raises(ConfigError):
            plan_shards(bad["n"], bad["shards"], batch_size=4)


# ------------------------------------------------------------------------ write, check, publish


def _spec(ids: np.ndarray, dim: int, **kw) -> FeatureSpec:
    d = dict(
        encoder_arch="a",
        encoder_source="s",
        weights_digest="w",
        preprocess="{}",
        dim=dim,
        n=len(ids),
        ids_digest=ids_digest(ids),
        dataset="d",
        split="pool",
    )
    return FeatureSpec(**{**d, **kw})


@pytest.fixture
def split_features():
    rng = np.random.default_rng(0)
    ids = rng.permutation(np.arange(10_000, 10_000 + 530)).astype(np.int64)  # not sorted: the split's own order
    X = rng.standard_normal((530, 12)).astype(np.float32)
    return ids, X, _spec(ids, 12)


def _write_parts(tmp_path, ids, X, whole, shards=3, bs=50):
    out = tmp_path / "pool.parquet"
    paths = []
    for s in plan_shards(len(ids), shards, batch_size=bs):
        p = part_path(out, s)
        write_part(p, s, ids[s.start : s.stop], X[s.start : s.stop], whole)
        paths.append(p)
    return out, paths


def test_publish_equals_one_file(tmp_path, split_features):
    ids, X, whole = split_features
    out, paths = _write_parts(tmp_path, ids, X, whole)
    assert out.parent / "pool.parts" == paths[0].parent
    shard, spec, w = read_part(paths[1])
    assert w == whole and spec.n == len(shard) == shard.stop - shard.start and shard.of == 3
    assert publish_parts(list(reversed(paths)), out) == whole  # any order in: the parts' order out
    fs = read_features(out, expect=whole)
    assert fs.ids.tobytes() == ids.tobytes() and fs.X.tobytes() == X.tobytes()


def test_publish_of_a_real_encoder_equals_a_single_pass(tmp_path):
    """Parts on batch boundaries: the encoder sees the same batches, so the floats are the same."""
    ds = load_dataset("digits", max_pool=300, max_test=10)
    enc = create_encoder("cifar_resnet8").eval()
    whole = FeatureSpec.for_encoder(enc, ds.pool, dataset=ds.fingerprint(), split_name="pool")
    X = extract_features(enc, ds.pool, batch_size=64, device="cpu", progress=False)
    out = tmp_path / "pool.parquet"
    paths = []
    for s in plan_shards(len(ds.pool), 3, batch_size=64):
        part = ds.pool.subset(np.arange(s.start, s.stop))
        Xp = extract_features(enc, part, batch_size=64, device="cpu", progress=False)
        write_part(part_path(out, s), s, part.ids, Xp, whole)
        paths.append(part_path(out, s))
    publish_parts(paths, out, expect=whole)
    single = tmp_path / "single.parquet"
    write_features(single, ds.pool.ids, X, whole)
    a, b = read_features(out), read_features(single)
    assert a.spec == b.spec and a.ids.tobytes() == b.ids.tobytes() and a.X.tobytes() == b.X.tobytes()


def test_publish_refuses_missing_duplicate_foreign_and_mixed_parts(tmp_path, split_features):
    ids, X, whole = split_features
    out, paths = _write_parts(tmp_path, ids, X, whole)
    with pytest.raises(FeatureMismatchError, match="parts 0..2 of 3"):
        publish_parts([paths[0], paths[2]], out)  # one missing
    with pytest.raises(FeatureMismatchError, match="parts 0..2 of 3"):
        publish_parts([paths[0], paths[1], paths[1], paths[2]], out)  # one twice

    s1, _, _ = read_part(paths[1])
    dup = ids.copy()
    dup[s1.start : s1.start + 5] = ids[:5]  # part 1 holds five of part 0's ids
    write_part(paths[1], s1, dup[s1.start : s1.stop], X[s1.start : s1.stop], whole)
    with pytest.raises(FeatureMismatchError, match="5 ids are in more than one part"):
        publish_parts(paths, out)

    foreign = ids.copy()
    foreign[s1.start] = 1  # an id the split does not have
    write_part(paths[1], s1, foreign[s1.start : s1.stop], X[s1.start : s1.stop], whole)
    with pytest.raises(FeatureMismatchError, match="not the split's 530 ids in its order"):
        publish_parts(paths, out)

    other = replace(whole, weights_digest="other")  # part 1 from another encoder
    write_part(paths[1], s1, ids[s1.start : s1.stop], X[s1.start : s1.stop], other)
    with pytest.raises(FeatureMismatchError, match="weights_digest"):
        publish_parts(paths, out)
    write_part(paths[1], s1, ids[s1.start : s1.stop], X[s1.start : s1.stop], whole)
    with pytest.raises(FeatureMismatchError, match="expected 'elsewhere'"):
        publish_parts(paths, out, expect=replace(whole, dataset="elsewhere"))

    bad = Shard(index=1, of=3, start=s1.start + 50, stop=s1.stop + 50)  # a gap after part 0
    write_part(paths[1], bad, ids[bad.start : bad.stop], X[bad.start : bad.stop], whole)
    with pytest.raises(FeatureMismatchError, match="starts at row"):
        publish_parts(paths, out)
    assert not out.exists()  # every refusal leaves the published file alone

    write_features(tmp_path / "plain.parquet", ids, X, whole)
    with pytest.raises(FeatureMismatchError, match="not a part"):
        publish_parts([tmp_path / "plain.parquet"], out)


def test_remove_stale_parts(tmp_path, split_features):
    ids, X, whole = split_features
    out, old = _write_parts(tmp_path, ids, X, whole, shards=2)
    _, new = _write_parts(tmp_path, ids, X, whole, shards=3)
    half = old[0].parent / f".{new[1].name}.abc.tmp"  # a killed writer's temporary file
    half.write_bytes(b"x")
    gone = remove_stale_parts(out, keep=new)
    assert sorted(gone) == sorted([*old, half]) and sorted(old[0].parent.iterdir()) == sorted(new)


# ------------------------------------------------------------------------------ memory map


def test_read_by_memory_map_over_budget(tmp_path, split_features):
    ids, X, whole = split_features
    path = tmp_path / "pool.parquet"
    write_features(path, ids, X, whole)
    whole_bytes = X.nbytes
    assert type(read_features(path, memory_budget=whole_bytes).X) is np.ndarray  # fits: loaded
    assert type(read_features(path).X) is np.ndarray  # no budget: loaded (as before)
    fs = read_features(path, memory_budget=whole_bytes - 1)
    assert isinstance(fs.X, np.memmap) and not fs.X.flags.writeable
    assert fs.X.tobytes() == X.tobytes() and fs.ids.tobytes() == ids.tobytes() and fs.spec == whole
    sidecars = list(tmp_path.glob("pool.*.memmap.npy"))
    assert len(sidecars) == 1
    mtime = sidecars[0].stat().st_mtime_ns
    read_features(path, memory_budget=0)
    assert sidecars[0].stat().st_mtime_ns == mtime  # reused, not rebuilt

    X2 = X + 1  # the same spec, other floats (another device, say): a new sidecar, the old one removed
    write_features(path, ids, X2, whole)
    again = read_features(path, memory_budget=0)
    assert np.array_equal(again.X, X2) and not sidecars[0].exists()
    assert len(list(tmp_path.glob("pool.*.memmap.npy"))) == 1


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """A pool of 600 points in 4 classes written to Parquet; in memory and by memory map."""
    rng = np.random.default_rng(3)
    centers = rng.standard_normal((4, 16)) * 3
    y = rng.integers(0, 4, 600)
    X = (centers[y] + rng.standard_normal((600, 16))).astype(np.float32)
    ids = np.arange(600, dtype=np.int64) * 3 + 7
    path = Path(tmp_path_factory.mktemp("mm")) / "pool.parquet"
    write_features(path, ids, X, _spec(ids, 16))
    mem, mapped = read_features(path), read_features(path, memory_budget=0)
    assert isinstance(mapped.X, np.memmap) and not isinstance(mem.X, np.memmap)
    lab = np.arange(0, 600, 15)  # 40 labeled
    cfg = ProxyCfg(hidden=32, epochs=20, dropout=0.2)  # dropout: BALD has something to sample
    runs = [(fs, fit_proxy(fs, ids[lab], y[lab], cfg, n_classes=4, seed=0, device="cpu")) for fs in (mem, mapped)]
    return runs, ids[lab], y[lab]


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategies_pick_the_same_ids_from_a_memory_map(clustered, name):
    runs, lab_ids, lab_y = clustered
    extras = {"pretext_loss": np.sin(np.arange(600.0))}  # any per-sample side array (PT4AL reads it)
    got = [
        select_batch(
            name, {}, fs, lab_ids, lab_y, 25, n_classes=4, proxy=proxy, seed=1, round=2, n_rounds=4, extras=extras
        ).tolist()
        for fs, proxy in runs
    ]
    assert got[0] == got[1] and len(set(got[0])) == 25


def test_memmap_sidecar_of_the_wrong_shape_is_refused(tmp_path, split_features):
    ids, X, whole = split_features
    path = tmp_path / "pool.parquet"
    write_features(path, ids, X, whole)
    read_features(path, memory_budget=0)
    side = next(tmp_path.glob("pool.*.memmap.npy"))
    np.save(side, np.zeros((3, 3), np.float32))
    with pytest.raises(FeatureMismatchError, match="delete"):
        read_features(path, memory_budget=0)
