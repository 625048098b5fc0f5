"""Security rules, as tests: no unpickling of files a user hands in, servers on 127.0.0.1 only,
paths from user files never leave their root."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from alcore.cli import main

REPO = Path(__file__).resolve().parents[1]
CODE = [p for d in ("alcore", "tasks", "flows", "scripts", "bench") for p in sorted((REPO / d).rglob("*.py"))]


def _calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            yield (owner.id if isinstance(owner, ast.Name) else ""), node.func.attr, node


def _kw(node: ast.Call, name: str) -> object:
    for k in node.keywords:
        if k.arg == name and isinstance(k.value, ast.Constant):
            return k.value.value
    return None


def test_nothing_is_unpickled_from_files():
    """pickle/joblib/dill loads never; torch.load only with weights_only=True; np.load only with
    allow_pickle left False (numpy's default); yaml only through safe_load."""
    bad = []
    for path in CODE:
        for owner, attr, node in _calls(path):
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if owner in ("pickle", "cloudpickle", "dill", "joblib", "marshal", "shelve") and attr in (
                "load",
                "loads",
                "open",
            ):
                bad.append(f"{where} {owner}.{attr}")
            if owner == "torch" and attr == "load" and _kw(node, "weights_only") is not True:
                bad.append(f"{where} torch.load without weights_only=True")
            if owner == "np" and attr == "load" and _kw(node, "allow_pickle") is True:
                bad.append(f"{where} np.load with allow_pickle=True")
            if owner == "yaml" and attr in ("load", "unsafe_load", "full_load"):
                bad.append(f"{where} yaml.{attr} (use yaml.safe_load)")
    assert bad == []


def test_no_server_binds_beyond_the_machine():
    """No source names 0.0.0.0 (or ::) as a host; every server command line says 127.0.0.1."""
    others = [p for p in sorted((REPO / "tests").glob("*.py")) if p.name != Path(__file__).name]
    texts = {p: p.read_text() for p in [*CODE, REPO / "Makefile", *others]}
    assert [str(p.relative_to(REPO)) for p, t in texts.items() if "0.0.0.0" in t or "'::'" in t] == []
    for p, t in texts.items():
        for line in t.splitlines():
            if "--host" in line and "server" in line and "127.0.0.1" not in line and '--host"' not in line:
                pytest.fail(f"{p.relative_to(REPO)}: a --host that is not 127.0.0.1: {line.strip()}")


@pytest.mark.parametrize("which", ["prefect", "mlflow"])
def test_alcore_ui_binds_127_0_0_1(which, monkeypatch):
    seen = {}
    monkeypatch.setattr("os.execv", lambda exe, cmd: seen.setdefault("cmd", cmd))
    assert main(["ui", which]) == 0
    cmd = seen["cmd"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"


def test_alcore_serve_starts_no_web_server(monkeypatch, tmp_path):
    """serve() only polls the Prefect API; Prefect's optional runner web server stays off (and its
    host setting is the loopback one). What a running serve listens on (Prefect's loopback control
    channel, nothing else) is checked against a real server in tests/test_serve.py."""
    import flows.labeling
    from alcore.config import parse_params
    from tests._tiny import tiny

    seen = {}
    monkeypatch.setattr(flows.labeling.labeling_cycle, "serve", lambda **kw: seen.update(kw))
    flows.labeling.serve_cycle(parse_params(tiny(oracle={"name": "human"})), cron="0 * * * *", name="x", root=tmp_path)
    assert not seen.get("webserver", False) and seen["cron"] == "0 * * * *" and seen["limit"] == 1
    from prefect.settings import PREFECT_RUNNER_SERVER_HOST

    assert PREFECT_RUNNER_SERVER_HOST.value() in ("localhost", "127.0.0.1")


def test_annotation_files_are_never_followed_to_paths(tmp_path):
    """An annotation's image column may say anything: only sample ids and class names are read."""
    import numpy as np

    from alcore.labeling import import_annotations
    from alcore.state import LabelState

    f = tmp_path / "a.csv"
    f.write_text("sample_id,image,label\n1,../../../../etc/shadow,cat\n2,/dev/zero,dog\n")
    res = import_annotations(f, labels=LabelState(np.arange(5), 2), requested=np.array([1, 2]), classes=["cat", "dog"])
    assert res.ids.tolist() == [1, 2] and res.ok
    (tmp_path / "inbox").mkdir()
    (tmp_path / "inbox" / "link.csv").symlink_to(f)
    from alcore.errors import LabelImportError
    from alcore.labeling import read_annotations

    with pytest.raises(LabelImportError, match="symbolic link"):
        read_annotations(tmp_path / "inbox" / "link.csv")


def test_manifest_paths_cannot_escape_the_root(tmp_path):
    from alcore.datasets import load_dataset
    from alcore.errors import DataError

    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "secret.png"
    from PIL import Image

    Image.new("RGB", (4, 4)).save(outside)
    (root / "a" / "link.png").symlink_to(outside)
    for path in ("../secret.png", str(outside), "a/link.png"):
        m = tmp_path / "m.csv"
        m.write_text(f"path,label\n{path},a\n")
        with pytest.raises(DataError, match="outside the root"):
            load_dataset("image_folder", root=str(root), manifest=str(m))


class _Payload:
    """Unpickling this creates the file ``path``: what a planted cache file would run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("planted", ["pickle", "json-object"])
def test_a_result_planted_in_the_cache_is_refused_never_run(planted, prefect_harness, tmp_path, caplog):
    """A file planted where the label task's cached result lives (what a shared .prefect/storage
    allows) is refused before Prefect decodes it: the payload never runs, the task runs again, the
    labels are the oracle's, and the user is told which file was refused and why."""
    import base64
    import json
    import pickle

    from prefect import flow

    from alcore.config import parse_params
    from alcore.steps import load_data
    from tasks.label import label
    from tests._tiny import tiny

    p = parse_params(tiny())
    data = load_data(p.data)
    ids = data.pool.ids[[3, 14, 15, 92]].tolist()
    seed = {"pickle": 4242, "json-object": 4243}[planted]  # keys no other test writes

    @flow
    def buy() -> tuple[dict, str]:
        state = label(p.oracle, p.data, data.fingerprint(), ids, seed=seed, return_state=True)
        return state.result(), state.data.metadata.storage_key

    truth, key = buy()
    stored = Path(key)
    assert stored.is_file()

    marker = tmp_path / "payload-ran"
    record = json.loads(stored.read_text())
    if planted == "pickle":
        record["metadata"]["serializer"] = {"type": "pickle", "picklelib": "pickle"}
        record["result"] = base64.encodebytes(pickle.dumps(_Payload(str(marker)))).decode()
    else:  # JSON, but an object Prefect's decoder would import and build
        record["result"] = json.dumps({"__class__": "pathlib.Path", "data": str(marker)})
    stored.write_text(json.dumps(record))
    caplog.clear()

    again, _ = buy()
    assert not marker.exists()  # the payload never ran
    assert again == truth  # recomputed, not the planted value
    err = caplog.text  # the run's log (Prefect's console and the run's page in the UI)
    assert f"Refused the cached result {stored}" in err and "was not decoded" in err, err
    assert stored.with_name(stored.name + ".refused").is_file()  # kept aside for inspection
    assert ("'pickle', not alcore's plain JSON" if planted == "pickle" else "encoded object (pathlib.Path)") in err
    assert json.loads(stored.read_text())["metadata"]["serializer"]["type"] == "json"  # replaced by the real one
