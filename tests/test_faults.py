"""Faults and hostile input (issue 16): a full disk, a decompression bomb, damaged state and
feature files, parameters that escape or make no sense, a ledger that contradicts its labels, label
values that do not start at 0, and files other users must be able to read."""

from __future__ import annotations

import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from alcore.config import parse_params
from alcore.errors import ConfigError, DataError, StorageError
from alcore.experiment import ExperimentState, open_state

REPO = Path(__file__).resolve().parents[1]


def small_state(path: Path) -> ExperimentState:
    st = open_state(
        path, config_digest="t", pool_ids=np.arange(100), n_classes=3, price_per_label=1.0, price_per_hour=3.0
    )
    st.commit(1, np.arange(10), np.arange(10) % 3, {"proxy_training": 1.0})
    st.save(path)
    return st


# ---------------------------------------------------------------- a full disk
def run_with_file_size_limit(code: str, limit: int) -> subprocess.CompletedProcess:
    """``code`` in a child whose files cannot grow beyond ``limit`` bytes (RLIMIT_FSIZE: what a
    full disk does to a writer, without filling one; SIGXFSZ ignored, so writes fail with EFBIG)."""
    prelude = f"""
        import resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def test_a_full_disk_names_the_path_and_keeps_the_previous_state(tmp_path):
    path = tmp_path / "state.json"
    small_state(path)
    before = path.read_bytes()
    r = run_with_file_size_limit(
        f"""
        import numpy as np
        from alcore.errors import StorageError
        from alcore.experiment import ExperimentState
        st = ExperimentState.load({str(path)!r})
        st.commit(2, np.arange(10, 99), np.arange(10, 99) % 3, {{}})  # a state too big for the limit
        try:
            st.save({str(path)!r})
        except StorageError as e:
            print("REFUSED", e)
        """,
        limit=len(before) + 100,
    )
    assert "REFUSED no space left to write" in r.stdout, r.stdout + r.stderr
    assert str(path) in r.stdout and "Fix: free space" in r.stdout
    assert path.read_bytes() == before and ExperimentState.load(path).labels.n_labeled == 10
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


def test_a_full_disk_while_saving_weights_is_a_clear_error(tmp_path):
    r = run_with_file_size_limit(
        f"""
        import torch
        from alcore.errors import StorageError
        from alcore.encoders.core import create_encoder, save_encoder
        enc = create_encoder("cifar_resnet8")
        try:
            save_encoder(enc, {str(tmp_path / "enc.safetensors")!r})
        except StorageError as e:
            print("REFUSED", e)
        """,
        limit=4096,
    )
    assert "REFUSED no space left to write" in r.stdout and "enc.safetensors" in r.stdout, r.stdout + r.stderr
    assert not list(tmp_path.iterdir())


def test_atomic_writes_turn_enospc_into_a_storage_error(tmp_path, monkeypatch):
    from alcore._io import write_text_atomic

    target = tmp_path / "a.txt"
    target.write_text("old")

    def full(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError, match=r"no space left to write .*a\.txt"):
        write_text_atomic(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


# ---------------------------------------------------------------- other users can read what is handed to them
def test_jobs_and_images_are_readable_by_other_users(tmp_path):
    from alcore.datasets import load_dataset
    from alcore.labeling import Batch
    from alcore.oracle import make_oracle

    old = os.umask(0o022)
    try:
        data = load_dataset("digits", max_pool=60, max_test=20)
        o = make_oracle("human", pool=data.pool, classes=list(data.classes), outbox=tmp_path / "out")
        o.export(Batch.unpredicted(1, data.pool.ids[:3]))
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) == 6  # csv, json, label config, three PNGs
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p


# ---------------------------------------------------------------- hostile images
def bomb_png(path: Path, side: int = 20000) -> Path:
    """A PNG header claiming side x side pixels (400 Mpx) and almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def test_a_decompression_bomb_goes_through_the_datasets_error_path(tmp_path):
    from alcore.datasets.image_folder import read_images
    from alcore.labeling import image_data_uri

    bomb = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"Cannot read image .*bomb\.png.*too large to decode safely.*Fix: scale"):
        read_images([str(bomb)], 32)
    with pytest.raises(DataError, match=r"bomb\.png"):
        image_data_uri(bomb, max_side=512, scaled=tmp_path / "small.jpg")


# ---------------------------------------------------------------- damaged files
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "a list"])
def test_a_damaged_state_file_names_itself(tmp_path, damage):
    path = tmp_path / "state.json"
    small_state(path)
    raw = path.read_bytes()
    path.write_bytes(
        {"truncated": raw[: len(raw) // 2], "garbage": b"\x00\xffPK\x03", "empty": b"", "a list": b"[1, 2]"}[damage]
    )
    with pytest.raises(ConfigError, match=str(path)):
        ExperimentState.load(path)


def test_a_ledger_that_contradicts_the_labels_is_refused_at_load(tmp_path):
    path = tmp_path / "state.json"
    small_state(path)
    d = json.loads(path.read_text())
    d["ledger"]["rounds"][0]["labels"] = 6  # 6 paid, 10 labeled
    path.write_text(json.dumps(d))
    with pytest.raises(ConfigError, match=r"contradicts its labels \(6 labels paid, 10 labeled; round 1: 6 paid"):
        ExperimentState.load(path)


def test_a_truncated_feature_file_names_itself(tmp_path):
    from alcore.features import FeatureSpec, ids_digest, read_features, write_features

    path = tmp_path / "pool.parquet"
    spec = FeatureSpec(
        "arch", "src", "0" * 16, "{}", dim=4, n=50, ids_digest=ids_digest(np.arange(50)), dataset="d", split="pool"
    )
    write_features(path, np.arange(50), np.ones((50, 4), np.float32), spec)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(
        DataError, match=r"cannot read the feature file .*pool\.parquet.*damaged or cut short.*dvc repro features"
    ):
        read_features(path)


# ---------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("section", "values", "needle"),
    [
        ("experiment", {"name": ".."}, "experiment.name"),
        ("experiment", {"name": "."}, "experiment.name"),
        ("experiment", {"name": "../elsewhere"}, "experiment.name"),
        ("experiment", {"name": ".hidden"}, "experiment.name"),
        ("experiment", {"seed": -1}, "experiment.seed"),
        ("experiment", {"seed": 2**40}, "experiment.seed"),
        ("al", {"rounds": True}, "al.rounds: Value error, a number is required, not a boolean"),
        ("al", {"batch": False}, "al.batch"),
        ("cost", {"price_per_hour": float("inf")}, "cost.price_per_hour: Input should be a finite number"),
        ("oracle", {"price_per_label": float("nan")}, "oracle.price_per_label"),
        ("compare", {"seeds": [0, True]}, "compare.seeds"),
        ("labeling", {"conflicts": "vote"}, "labeling.conflicts"),
    ],
)
def test_parameters_that_make_no_sense_are_refused(section, values, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        parse_params({section: values})


def test_alcore_check_refuses_a_negative_seed(tmp_path, capsys):
    from alcore.cli import main

    assert main(["check", "--params", str(REPO / "params.yaml"), "--set", "experiment.seed=-1"]) == 2
    assert "experiment.seed" in capsys.readouterr().err
    assert main(["check", "--params", str(REPO / "params.yaml"), "--set", "experiment.name=.."]) == 2
    assert "experiment.name" in capsys.readouterr().err


# ---------------------------------------------------------------- labels that do not start at 0
def emnist_like(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "letters.npz"
    y_train = np.repeat(np.arange(1, 27), 4)  # 1..26, as EMNIST letters
    y_test = np.repeat(np.arange(1, 27), 2)
    np.savez(
        path,
        train_x=rng.integers(0, 255, (y_train.size, 8, 8), dtype=np.uint8),
        train_y=y_train,
        test_x=rng.integers(0, 255, (y_test.size, 8, 8), dtype=np.uint8),
        test_y=y_test,
    )
    return path


def test_label_values_that_skip_a_class_are_warned_about_and_can_be_mapped(tmp_path):
    from alcore.datasets import load_dataset

    path = emnist_like(tmp_path)
    with pytest.warns(UserWarning, match=r"1 of its 27 classes have no image \('0'\).*labels=values"):
        as_index = load_dataset("npz", path=str(path))
    assert as_index.n_classes == 27
    mapped = load_dataset("npz", path=str(path), labels="values")
    assert mapped.n_classes == 26 and mapped.classes[:2] == ("1", "2") and mapped.classes[-1] == "26"
    assert mapped.pool.labels.min() == 0 and mapped.pool.labels.max() == 25
    assert np.array_equal(np.asarray(mapped.classes)[mapped.pool.labels].astype(int) - 1, mapped.pool.labels)
    letters = [chr(ord("a") + i) for i in range(26)]
    named = load_dataset("npz", path=str(path), labels="values", classes=letters)
    assert named.classes[0] == "a" and named.classes[25] == "z"
    with pytest.raises(DataError, match="25 class names for the 26 label values"):
        load_dataset("npz", path=str(path), labels="values", classes=letters[:25])
