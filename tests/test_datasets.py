"""Dataset loaders: shapes, stable ids, splits, subsampling and errors, on real data files."""

from __future__ import annotations

import gzip
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from alcore.datasets import DATASETS, Dataset, Split, load_dataset
from alcore.datasets.image_folder import path_id, read_images
from alcore.errors import ConfigError, DataError, UnknownNameError
from alcore.preprocess import Preprocess

GZ_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is not available")
    return path


@pytest.fixture(scope="module")
def fashion(shared_data: Path) -> Dataset:
    return load_dataset("fashion_mnist", root=str(shared_data / "fashion-mnist"))


@pytest.fixture(scope="module")
def cifar_npz(shared_data: Path) -> Path:
    return shared_data / "cifar10-subset" / "cifar10_genuine_prefix_subset.npz"


def assert_well_formed(ds: Dataset) -> None:
    all_ids = np.concatenate([ds.pool.ids, ds.test.ids])
    assert all_ids.dtype == np.int64
    assert len(np.unique(all_ids)) == len(all_ids)
    for split in (ds.pool, ds.test):
        assert len(split) > 0
        assert split.labels.dtype == np.int64
        assert split.labels.min() >= 0 and split.labels.max() < ds.n_classes
    json.dumps(ds.params)


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_loader() -> None:
    assert set(DATASETS.names()) >= {
        "digits",
        "mnist",
        "fashion_mnist",
        "cifar10",
        "npz",
        "image_folder",
    }
    for name in DATASETS:
        params = inspect.signature(DATASETS.get(name)).parameters
        assert {"max_pool", "max_test", "subset_seed"} <= set(params)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="digits"):
        load_dataset("imagenet")


def test_unknown_param_names_it_and_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match="'seed'.*split_seed"):
        load_dataset("digits", seed=3)


def test_missing_required_param() -> None:
    with pytest.raises(ConfigError, match="'root'"):
        load_dataset("mnist")


@pytest.mark.parametrize(
    "params",
    [{"test_fraction": 1.5}, {"split_seed": "1"}, {"max_pool": 0}, {"max_test": True}],
)
def test_bad_param_values(params: dict) -> None:
    with pytest.raises(ConfigError):
        load_dataset("digits", **params)


# --------------------------------------------------------------------------- digits


def test_digits_shapes_ids_and_split() -> None:
    ds = load_dataset("digits")
    assert ds.name == "digits"
    assert ds.classes == tuple(str(i) for i in range(10))
    assert len(ds.pool) + len(ds.test) == 1797
    assert len(ds.test) == round(0.2 * 1797)
    assert ds.pool.images is not None and ds.test.images is not None
    assert ds.pool.images.shape == (len(ds.pool), 8, 8)
    assert ds.pool.images.dtype == np.uint8 and ds.pool.images.max() == 255
    assert_well_formed(ds)
    assert np.array_equal(np.sort(np.concatenate([ds.pool.ids, ds.test.ids])), np.arange(1797))
    # ids are positions in scikit-learn's order
    from sklearn.datasets import load_digits

    bunch = load_digits()
    i = int(ds.test.ids[5])
    assert ds.test.labels[5] == bunch.target[i]
    expected = np.rint(bunch.images[i] * 255 / 16).astype(np.uint8)
    assert np.array_equal(ds.test.images[5], expected)


def test_digits_split_is_stratified_and_seeded() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert np.array_equal(a.test.ids, b.test.ids)
    assert a.fingerprint() == b.fingerprint()
    counts_test = np.bincount(a.test.labels, minlength=10)
    counts_all = counts_test + np.bincount(a.pool.labels, minlength=10)
    assert np.all(np.abs(counts_test - 0.2 * counts_all) <= 1)
    c = load_dataset("digits", split_seed=1)
    assert not np.array_equal(a.test.ids, c.test.ids)
    assert a.fingerprint() != c.fingerprint()
    d = load_dataset("digits", test_fraction=0.5)
    assert len(d.test) == round(0.5 * 1797)
    assert d.params["test_fraction"] == 0.5


# --------------------------------------------------------------------------- MNIST family


def test_mnist_from_idx_folder(shared_data: Path) -> None:
    ds = load_dataset("mnist", root=str(shared_data / "mnist"))
    assert (len(ds.pool), len(ds.test)) == (60000, 10000)
    assert ds.pool.images.shape == (60000, 28, 28) and ds.pool.images.dtype == np.uint8
    assert np.array_equal(ds.pool.ids, np.arange(60000))
    assert np.array_equal(ds.test.ids, np.arange(60000, 70000))
    assert ds.pool.labels[0] == 5
    assert len(ds.classes) == 10
    assert_well_formed(ds)


def test_fashion_mnist_from_idx_folder(fashion: Dataset) -> None:
    assert (len(fashion.pool), len(fashion.test)) == (60000, 10000)
    assert fashion.pool.labels[0] == 9
    assert fashion.classes[9] == "Ankle boot"
    assert fashion.test.ids[0] == 60000 and fashion.test.ids[-1] == 69999
    assert_well_formed(fashion)


def test_fashion_mnist_torchvision_layout_with_gz_symlinks(shared_data: Path, tmp_path: Path, fashion: Dataset) -> None:
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in GZ_FILES:
        (raw / f).symlink_to(shared_data / "fashion-mnist" / f)
    ds = load_dataset("fashion_mnist", root=str(tmp_path))
    assert np.array_equal(ds.pool.images, fashion.pool.images)
    assert np.array_equal(ds.test.labels, fashion.test.labels)
    assert sorted(p.name for p in raw.iterdir()) == sorted(GZ_FILES)  # nothing written


def test_torchvision_reader_matches_idx_reader(shared_data: Path, tmp_path: Path) -> None:
    """Uncompressed files in ROOT/MNIST/raw are read by torchvision.datasets.MNIST itself."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in GZ_FILES[1:]:  # small ones plus the test images; train images below
        with gzip.open(shared_data / "mnist" / f) as src, open(raw / f[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    with gzip.open(shared_data / "mnist" / GZ_FILES[0]) as src:
        (raw / GZ_FILES[0][:-3]).write_bytes(src.read())
    via_tv = load_dataset("mnist", root=str(tmp_path))
    via_idx = load_dataset("mnist", root=str(shared_data / "mnist"))
    assert np.array_equal(via_tv.pool.images, via_idx.pool.images)
    assert np.array_equal(via_tv.test.labels, via_idx.test.labels)
    assert via_tv.classes == via_idx.classes


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_missing_root_names_the_path(name: str, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere") as err:
        load_dataset(name, root=str(missing))
    assert "Fix:" in str(err.value)


def test_root_without_idx_files(tmp_path: Path) -> None:
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(DataError, match="no idx files"):
        load_dataset("mnist", root=str(tmp_path))


def test_corrupt_idx_file(tmp_path: Path) -> None:
    for f in GZ_FILES:
        with gzip.open(tmp_path / f, "wb") as fh:
            fh.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # says 5 bytes, holds 3
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_dataset("mnist", root=str(tmp_path))


# --------------------------------------------------------------------------- npz


def test_npz_cifar_subset(cifar_npz: Path) -> None:
    ds = load_dataset("npz", path=str(cifar_npz))
    assert (len(ds.pool), len(ds.test)) == (5085, 1017)
    assert ds.pool.images.shape == (5085, 32, 32, 3)
    assert ds.classes == tuple(str(i) for i in range(10))
    assert ds.test.ids[0] == 5085 and ds.test.ids[-1] == 5085 + 1017 - 1
    assert_well_formed(ds)


def _write_npz(path: Path, **overrides: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "train_x": rng.integers(0, 256, (12, 5, 5), dtype=np.uint8),
        "train_y": np.arange(12) % 3,
        "test_x": rng.integers(0, 256, (6, 5, 5), dtype=np.uint8),
        "test_y": np.arange(6) % 3,
    }
    arrays.update(overrides)
    np.savez(path, **arrays)
    return path


def test_npz_classes_param(tmp_path: Path) -> None:
    path = _write_npz(tmp_path / "d.npz")
    ds = load_dataset("npz", path=str(path), classes=["a", "b", "c", "d"])
    assert ds.classes == ("a", "b", "c", "d")
    assert ds.params["classes"] == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("overrides", "classes", "match"),
    [
        ({"test_y": np.array([0, 1, 2, 0, 1, -1])}, None, "outside"),
        ({}, ["a", "b"], r"outside \[0, 2\)"),
        ({"train_x": np.zeros((12, 5, 5), np.float32)}, None, "uint8"),
        ({"train_y": np.zeros(11, np.int64)}, None, "train_y"),
        ({"test_x": np.zeros((6, 4, 4), np.uint8)}, None, "same image shape"),
    ],
)
def test_npz_invalid(tmp_path: Path, overrides: dict, classes: list | None, match: str) -> None:
    path = _write_npz(tmp_path / "d.npz", **overrides)
    with pytest.raises(DataError, match=match):
        load_dataset("npz", path=str(path), classes=classes)


def test_npz_missing_key_and_missing_file(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", train_x=np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match="lacks"):
        load_dataset("npz", path=str(tmp_path / "x.npz"))
    with pytest.raises(DataError, match="absent.npz"):
        load_dataset("npz", path=str(tmp_path / "absent.npz"))


# --------------------------------------------------------------------------- subsampling


def test_max_pool_keeps_ids_and_is_deterministic(fashion: Dataset, shared_data: Path) -> None:
    root = str(shared_data / "fashion-mnist")
    a = load_dataset("fashion_mnist", root=root, max_pool=1000, max_test=200)
    b = load_dataset("fashion_mnist", root=root, max_pool=1000, max_test=200)
    assert (len(a.pool), len(a.test)) == (1000, 200)
    assert np.array_equal(a.pool.ids, b.pool.ids) and np.array_equal(a.test.ids, b.test.ids)
    assert np.all(np.diff(a.pool.ids) > 0)
    # ids keep pointing at the same images and labels as in the full dataset
    assert np.array_equal(a.pool.images, fashion.pool.images[a.pool.ids])
    assert np.array_equal(a.test.labels, fashion.test.labels[a.test.ids - 60000])
    # stratified: Fashion-MNIST is balanced, so exactly 100 / 20 per class
    assert np.all(np.bincount(a.pool.labels, minlength=10) == 100)
    assert np.all(np.bincount(a.test.labels, minlength=10) == 20)
    c = load_dataset("fashion_mnist", root=root, max_pool=1000, max_test=200, subset_seed=1)
    assert not np.array_equal(a.pool.ids, c.pool.ids)
    assert a.params["max_pool"] == 1000 and "download" not in a.params
    assert len({a.fingerprint(), c.fingerprint(), fashion.fingerprint()}) == 3


def test_max_pool_above_size_keeps_everything() -> None:
    full, capped = load_dataset("digits"), load_dataset("digits", max_pool=10**6)
    assert np.array_equal(full.pool.ids, capped.pool.ids)


def test_tiny_max_pool_stays_exact() -> None:
    ds = load_dataset("digits", max_pool=7, max_test=3)
    assert (len(ds.pool), len(ds.test)) == (7, 3)
    assert len(np.unique(ds.pool.labels)) == 7


# --------------------------------------------------------------------------- image_folder


def _write_image_tree(root: Path, n_per_class: int = 5) -> dict[str, list[str]]:
    from PIL import Image

    rng = np.random.default_rng(0)
    files: dict[str, list[str]] = {}
    for c, ext in (("cat", "png"), ("dog", "jpg"), ("emu", "bmp")):
        (root / c).mkdir(parents=True)
        files[c] = []
        for i in range(n_per_class):
            size = (6 + i, 9)  # images of different sizes
            pixels = rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / c / f"{i}.{ext}")
            files[c].append(f"{c}/{i}.{ext}")
    (root / "cat" / "notes.txt").write_text("not an image")
    return files


def test_image_folder_from_class_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    files = _write_image_tree(root)
    ds = load_dataset("image_folder", root=str(root), test_fraction=0.4)
    assert ds.classes == ("cat", "dog", "emu")
    assert (len(ds.pool), len(ds.test)) == (9, 6)
    assert ds.pool.images is None and ds.pool.paths is not None
    assert np.all(np.bincount(ds.test.labels) == 2)
    assert_well_formed(ds)
    by_id = dict(
        zip(
            np.concatenate([ds.pool.ids, ds.test.ids]).tolist(),
            (ds.pool.paths or ()) + (ds.test.paths or ()),
            strict=True,
        )
    )
    rel = files["dog"][3]
    assert by_id[path_id(rel)] == str((root / rel).resolve())
    # ids are stable when an image is added
    from PIL import Image

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "emu" / "new.png")
    grown = load_dataset("image_folder", root=str(root), test_fraction=0.4)
    grown_ids = set(np.concatenate([grown.pool.ids, grown.test.ids]).tolist())
    assert set(by_id) < grown_ids and len(grown_ids) == 16


def _manifest_rows(files: dict[str, list[str]]) -> list[dict]:
    rows = []
    for c, paths in files.items():
        for i, p in enumerate(paths):
            rows.append({"path": p, "label": c, "split": "test" if i == 0 else "pool"})
    return rows


def test_image_folder_from_csv_manifest(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    files = _write_image_tree(root)
    lines = ["path,label,split,id"]
    for k, r in enumerate(_manifest_rows(files)):
        lines.append(f"{r['path']},{r['label']},{r['split']},{100 + k}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(lines) + "\n")
    ds = load_dataset("image_folder", root=str(root), manifest=str(manifest))
    assert (len(ds.pool), len(ds.test)) == (12, 3)
    assert ds.classes == ("cat", "dog", "emu")
    assert np.array_equal(np.sort(np.concatenate([ds.pool.ids, ds.test.ids])), 100 + np.arange(15))
    assert ds.params["manifest"] == str(manifest)
    assert_well_formed(ds)


def test_image_folder_from_parquet_manifest(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "imgs"
    files = _write_image_tree(root)
    rows = _manifest_rows(files)
    table = pa.table({"path": [r["path"] for r in rows], "label": [r["label"] for r in rows]})
    pq.write_table(table, tmp_path / "m.parquet")
    ds = load_dataset("image_folder", root=str(root), manifest=str(tmp_path / "m.parquet"), test_fraction=0.4)
    assert (len(ds.pool), len(ds.test)) == (9, 6)
    expected = {path_id(r["path"]) for r in rows}
    assert set(np.concatenate([ds.pool.ids, ds.test.ids]).tolist()) == expected
    # the same images through the folder walk get the same ids and split
    walked = load_dataset("image_folder", root=str(root), test_fraction=0.4)
    assert set(walked.test.ids.tolist()) == set(ds.test.ids.tolist())


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_manifest_path_escaping_root_is_refused(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "imgs"
    files = _write_image_tree(root)
    outside = tmp_path / "secret.png"
    shutil.copy(root / files["cat"][0], outside)
    bad = {"dotdot": "../secret.png", "absolute": str(outside), "symlink": "cat/link.png"}[kind]
    if kind == "symlink":
        (root / "cat" / "link.png").symlink_to(outside)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label\ncat/0.png,cat\n{bad},dog\n")
    with pytest.raises(DataError, match="outside the root"):
        load_dataset("image_folder", root=str(root), manifest=str(manifest))


def test_folder_symlink_escaping_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    files = _write_image_tree(root)
    (root / "dog" / "link.png").symlink_to(root / files["cat"][0])  # inside: allowed
    load_dataset("image_folder", root=str(root))
    shutil.copy(root / files["cat"][0], tmp_path / "secret.png")
    (root / "dog" / "out.png").symlink_to(tmp_path / "secret.png")
    with pytest.raises(DataError, match="outside the root"):
        load_dataset("image_folder", root=str(root))


def test_manifest_errors(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _write_image_tree(root)
    manifest = tmp_path / "m.csv"
    cases = {
        "path,label\ncat/0.png,cat\ncat/9.png,dog\n": "do not exist",
        "path,label\ncat/0.png,cat\ncat/0.png,dog\n": "listed twice",
        "path,label,split\ncat/0.png,cat,pool\ncat/1.png,dog,train\n": "'train'",
        "path,label,split\ncat/0.png,cat,pool\ncat/1.png,dog,pool\n": "empty test",
        "path,label,id\ncat/0.png,cat,1\ncat/1.png,dog,1\n": "id 1",
        "path,kind\ncat/0.png,cat\n": "lacks column",
    }
    for text, match in cases.items():
        manifest.write_text(text)
        with pytest.raises(DataError, match=match):
            load_dataset("image_folder", root=str(root), manifest=str(manifest))


def test_image_folder_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no_such_dir"):
        load_dataset("image_folder", root=str(tmp_path / "no_such_dir"))


# --------------------------------------------------------------------------- batches


def test_read_images_shape(tmp_path: Path) -> None:
    files = _write_image_tree(tmp_path)
    batch = read_images([str(tmp_path / p) for p in files["cat"][:3]], 16)
    assert batch.shape == (3, 16, 16, 3) and batch.dtype == np.uint8
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png"):
        read_images([str(tmp_path / "broken.png")], 16)


@pytest.mark.parametrize("source", ["digits", "npz", "image_folder"])
def test_load_batch_in_memory_and_path_based(source: str, tmp_path: Path, cifar_npz: Path) -> None:
    if source == "digits":
        ds = load_dataset("digits")
    elif source == "npz":
        ds = load_dataset("npz", path=str(cifar_npz), max_pool=50, max_test=10)
    else:
        _write_image_tree(tmp_path)
        ds = load_dataset("image_folder", root=str(tmp_path))
    split: Split = ds.pool
    pre = Preprocess(input_size=24)
    x = split.load_batch(np.array([0, 2, 1]), pre)
    assert isinstance(x, torch.Tensor)
    assert x.shape == (3, 3, 24, 24) and x.dtype == torch.float32
    raw = split.load_batch_unnormalized(np.array([0]), pre)
    assert float(raw.min()) >= 0.0 and float(raw.max()) <= 1.0
