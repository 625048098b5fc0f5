"""Cache keys are derived from every input that can change a result, and from nothing else.

For every cached task: changing any one of its inputs gives another key (a cache miss), except the
inputs that say where and how the work runs (``alcore.keys.IGNORED_INPUTS``: the same key, a hit);
so does changing any field of a config it reads. The same inputs give the same key in a new
process under another ``PYTHONHASHSEED``. And Prefect does use these keys: a second call is served
from the cache, a changed input is computed, and results are stored as JSON, never pickled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prefect import Task
from prefect.utilities.callables import get_call_parameters

from alcore.config import DataCfg, EncoderCfg, OracleCfg, PretextCfg, ProxyCfg, TrainCfg
from alcore.keys import IGNORED_INPUTS, cache_key, canonical_bytes, ref
from alcore.shards import Shard

REPO = Path(__file__).resolve().parents[1]
A = {"path": "features/pool.parquet", "sha256": "a" * 64}
B = {"path": "features/pool.parquet", "sha256": "b" * 64}

#: Per input name: a value, and another value that must change the result. Task-specific entries
#: (``task.param``) override the shared ones.
VALUES: dict[str, tuple[Any, Any]] = {
    "data": (DataCfg(), DataCfg(params={"max_pool": 100})),
    "data_fingerprint": ("fp0", "fp1"),
    "seed": (0, 1),
    "device": ("cpu", "cuda"),
    "progress": (True, False),
    "memory_budget": (None, 1024),
    "threads": (None, 2),
    "out": ("runs/a/file", "runs/b/file"),
    "ids": (np.array([1, 2, 3]), np.array([1, 2, 4])),
    "labels": (np.array([0, 1, 0]), np.array([0, 1, 1])),
    "labeled_ids": (np.array([1, 2, 3]), np.array([1, 2, 4])),
    "labeled_labels": (np.array([0, 1, 0]), np.array([0, 1, 1])),
    "test_labels": (np.array([0, 1]), np.array([1, 1])),
    "features": (A, B),
    "test_features": (A, B),
    "weights": (A, B),
    "model": (A, B),
    "scorer": (None, A),
    "pretext": (None, A),
    "exclude": (None, np.array([7])),
    "pool_ids": (None, np.array([7])),
    "n_classes": (10, 11),
    "split": ("pool", "test"),
    "batch_size": (256, 128),
    "shard": (Shard(0, 2, 0, 10), Shard(1, 2, 10, 20)),
    "parts": ([{"part": A, "seconds": 1.0}], [{"part": B, "seconds": 1.0}]),
    "strategy": ("margin", "entropy"),
    "strategy_params": ({}, {"purity": 0.9}),
    "n": (10, 11),
    "round": (1, 2),
    "n_rounds": (None, 5),
    "oracle": (OracleCfg(), OracleCfg(noise_rate=0.1)),
    "train": (TrainCfg(), TrainCfg(ft_epochs=3)),
    "mode": ("lp", "ft"),
    "trigger": ("logme_drop", "ped_gap"),
    "trigger_params": ({}, {"tolerance": 0.1}),
    "history": ([], [{"logme": 1.0, "version": 0}]),
    "fired_at": ([], [500]),
    "cfg": (PretextCfg(), PretextCfg(epochs=2)),
    "build_encoder.encoder": (EncoderCfg(), EncoderCfg(arch="cifar_resnet8")),
    "pretext_losses.encoder": (A, B),
    "fine_tune.encoder": (A, B),
    "train_proxy.proxy": (ProxyCfg(), ProxyCfg(hidden=2, epochs=1, lr=1e-6)),
    "evaluate_proxy.proxy": (A, B),
    "predict_labels.scorer": (A, B),
}


def cached_tasks() -> dict[str, Task]:
    import tasks.encoder
    import tasks.evaluate
    import tasks.features
    import tasks.finetune
    import tasks.label
    import tasks.labeling
    import tasks.pretext
    import tasks.proxy
    import tasks.realign
    import tasks.select
    from tasks._common import CACHE

    found = {}
    for mod in (
        tasks.encoder,
        tasks.evaluate,
        tasks.features,
        tasks.finetune,
        tasks.label,
        tasks.labeling,
        tasks.pretext,
        tasks.proxy,
        tasks.realign,
        tasks.select,
    ):
        for obj in vars(mod).values():
            if isinstance(obj, Task) and obj.cache_policy is CACHE:
                found[obj.name] = obj
    return found


TASKS = cached_tasks()


def value(task: str, param: str, which: int) -> Any:
    pair = VALUES.get(f"{task}.{param}", VALUES.get(param))
    assert pair is not None, f"no test value for {task}({param}=...): add one to VALUES"
    return pair[which]


def inputs_of(task: Task, **changed: Any) -> dict[str, Any]:
    import inspect

    names = list(inspect.signature(task.fn).parameters)
    given = {n: changed[n] if n in changed else value(task.name, n, 0) for n in names}
    return get_call_parameters(task.fn, (), given)  # as Prefect binds a call


def key_of(task: Task, inputs: dict[str, Any]) -> str:
    return task.cache_policy.compute_key(task_ctx=SimpleNamespace(task=task), inputs=inputs, flow_parameters={})


CASES = [(t, p) for t, task in sorted(TASKS.items()) for p in __import__("inspect").signature(task.fn).parameters]


def test_every_step_that_computes_is_a_cached_task_named_after_it():
    from prefect.cache_policies import NO_CACHE

    import alcore.steps
    import tasks.data

    assert {"build_encoder", "extract_features", "train_proxy", "select", "label", "fine_tune", "evaluate"} <= set(
        TASKS
    )
    for name, task in TASKS.items():
        assert task.fn is getattr(alcore.steps, name)  # the task wraps the library step of its own name
    assert tasks.data.describe_data.cache_policy is NO_CACHE  # its input is the data on disk


@pytest.mark.parametrize("task, param", CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_each_input_changes_the_key_unless_it_says_where_the_work_runs(task, param):
    t = TASKS[task]
    base = key_of(t, inputs_of(t))
    changed = key_of(t, inputs_of(t, **{param: value(task, param, 1)}))
    if param in IGNORED_INPUTS:
        assert changed == base, f"{task}: {param} says where the work runs, yet it changed the key"
    else:
        assert changed != base, f"{task}: changing {param} gives the same key: a stale result would be served"


@pytest.mark.parametrize(
    "task, param, cfg",
    [("train_proxy", "proxy", ProxyCfg()), ("fine_tune", "train", TrainCfg()), ("label", "oracle", OracleCfg())],
)
def test_every_field_of_a_config_a_task_reads_is_in_its_key(task, param, cfg):
    t = TASKS[task]
    base = key_of(t, inputs_of(t, **{param: cfg}))
    for field, v in cfg.model_dump().items():
        other = (not v) if isinstance(v, bool) else (v * 2 + 1 if isinstance(v, int | float) else f"{v}x")
        changed = key_of(t, inputs_of(t, **{param: cfg.model_copy(update={field: other})}))
        assert changed != base, f"{task}: {param}.{field} is not in the key"


def test_a_file_is_keyed_by_its_content_not_its_place():
    t = TASKS["select"]
    moved = {"path": "/elsewhere/pool.parquet", "sha256": A["sha256"]}
    assert key_of(t, inputs_of(t, features=moved)) == key_of(t, inputs_of(t))


def test_canonical_forms():
    a = np.arange(6, dtype=np.int64)
    assert canonical_bytes(a) != canonical_bytes(a.astype(np.int32))  # dtype matters
    assert canonical_bytes(a) != canonical_bytes(a.reshape(2, 3))  # shape matters
    assert canonical_bytes(a[::2]) == canonical_bytes(np.array([0, 2, 4]))  # layout does not
    assert canonical_bytes({"x": 1, "y": 2}) == canonical_bytes({"y": 2, "x": 1})
    p1 = DataCfg(params={"a": 1, "b": 2})
    assert canonical_bytes(p1) == canonical_bytes(DataCfg(params={"b": 2, "a": 1}))
    assert canonical_bytes(1) != canonical_bytes(1.0) != canonical_bytes("1") != canonical_bytes(True)
    assert cache_key("s", {"device": "cpu", "x": 1}) == cache_key("s", {"device": "cuda", "x": 1})
    with pytest.raises(TypeError, match="no canonical form"):
        canonical_bytes(object())


def test_ref_digests_the_content(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"one")
    r1 = ref(f)
    f.write_bytes(b"two")
    assert ref(f)["sha256"] != r1["sha256"] and ref(f)["path"] == str(f)


PROBE = """
import json, sys
sys.path.insert(0, {repo!r})
from tests.test_keys import TASKS, inputs_of, key_of
print(json.dumps({{name: key_of(t, inputs_of(t)) for name, t in sorted(TASKS.items())}}))
"""


@pytest.mark.slow  # a fresh interpreter importing alcore and Prefect: 21 s; every input -> miss and the ignored inputs -> hit run by default
def test_the_same_inputs_give_the_same_keys_in_other_processes_and_hash_seeds():
    here = {name: key_of(t, inputs_of(t)) for name, t in sorted(TASKS.items())}
    other = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"  # never this process's seed
    procs = [  # one other process, another hash seed: it spends its life importing
        subprocess.Popen(
            [sys.executable, "-c", PROBE.format(repo=str(REPO))],
            env={**os.environ, "PYTHONHASHSEED": seed},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (other,)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out.strip().splitlines()[-1]) == here


def test_prefect_serves_the_cache_by_these_keys_and_stores_json(prefect_harness, monkeypatch):
    """The label task through Prefect: the same ids again are answered from the cache (the oracle
    is not asked twice), other ids are not; the stored results are JSON."""
    import alcore.steps
    from alcore.steps import describe_data
    from tasks.label import label

    asked = []
    real = alcore.steps.make_oracle_for

    def spy(*a, **k):
        oracle = real(*a, **k)
        asked.append(1)
        return oracle

    monkeypatch.setattr(alcore.steps, "make_oracle_for", spy)
    data = DataCfg(params={"max_pool": 50, "max_test": 20, "subset_seed": 123})
    fp = describe_data(data)["fingerprint"]
    ids = np.array([int(i) for i in alcore.steps.load_data(data).pool.ids[:3]])
    first = label(OracleCfg(), data, fp, ids, seed=0)
    again = label(OracleCfg(), data, fp, ids, seed=0)
    assert again == first and len(asked) == 1
    other = label(OracleCfg(), data, fp, ids[:2], seed=0)
    assert len(asked) == 2 and other["ids"] == first["ids"][:2]
    storage = Path(os.environ["PREFECT_LOCAL_STORAGE_PATH"])
    key = key_of(label, inputs_of(label, oracle=OracleCfg(), data=data, data_fingerprint=fp, ids=ids, seed=0))
    record = json.loads((storage / key).read_text())  # the result record, JSON all through
    assert record["metadata"]["serializer"]["type"] == "json"
