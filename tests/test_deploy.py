"""Work pools: prefect.yaml is what params.yaml says, names real flows, and GPU steps reach the GPU pool."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from alcore.config import load_params, parse_params
from tests._tiny import tiny

REPO = Path(__file__).resolve().parents[1]


def _flow_at(entrypoint: str):
    path, name = entrypoint.split(":")
    return getattr(importlib.import_module(path.removesuffix(".py").replace("/", ".")), name)


def test_prefect_yaml_is_generated_from_params_and_names_existing_flows():
    from prefect import Flow

    from flows.deploy import ENTRYPOINTS, main, render

    orch = load_params(REPO / "params.yaml").orchestration
    text = (REPO / "prefect.yaml").read_text()
    assert text == render(orch), "prefect.yaml is out of date: run python -m flows.deploy"
    assert main(["--params", str(REPO / "params.yaml"), "--out", str(REPO / "prefect.yaml"), "--check"]) == 0
    doc = yaml.safe_load(text)
    pools = {}
    for d in doc["deployments"]:
        flow = _flow_at(d["entrypoint"])  # the entrypoint imports and is a Prefect flow
        assert isinstance(flow, Flow) and ENTRYPOINTS[flow.name] == d["entrypoint"]
        pools[flow.name] = (d["name"], d["work_pool"]["name"])
        assert set(d["parameters"]) <= set(flow.parameters.properties)  # parameters the flow takes
    assert pools == {"alcore-run": (orch.cpu_pool, orch.cpu_pool), "alcore-gpu": (orch.gpu_pool, orch.gpu_pool)}
    step = doc["pull"][0]["prefect.deployments.steps.set_working_directory"]
    assert step["directory"] == "{{ $ALCORE_ROOT }}"


def test_configured_pool_names_flow_into_the_deployments(tmp_path):
    from flows.deploy import main
    from flows.gpu import deployment_name

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"orchestration": {"gpu_pool": "a100s", "cpu_pool": "big-memory"}}))
    out = tmp_path / "prefect.yaml"
    assert main(["--params", str(p), "--out", str(out), "--check"]) == 1  # absent: out of date
    assert main(["--params", str(p), "--out", str(out)]) == 0
    doc = yaml.safe_load(out.read_text())
    got = {d["entrypoint"]: (d["name"], d["work_pool"]["name"]) for d in doc["deployments"]}
    assert got == {
        "flows/pipeline.py:run_project": ("big-memory", "big-memory"),
        "flows/gpu.py:gpu_step": ("a100s", "a100s"),
    }
    orch = load_params(p).orchestration
    assert deployment_name(orch) == "alcore-gpu/a100s"  # where dispatch: pools sends the GPU steps


def test_gpu_arguments_cross_as_json_and_come_back_typed():
    import numpy as np

    from alcore.config import DataCfg, TrainCfg
    from flows.gpu import from_json, to_json
    from tasks.finetune import fine_tune

    args = {
        "encoder": {"path": "m.safetensors", "sha256": "x"},
        "data": DataCfg(name="digits", params={"max_pool": 5}),
        "ids": np.array([3, 1, 2], dtype=np.int64),
        "train": TrainCfg(mode="lp"),
        "seed": np.int64(4),
    }
    wire = json.loads(json.dumps(to_json(args)))
    back = from_json(fine_tune.fn, wire)
    assert back["data"] == args["data"] and back["train"] == args["train"] and back["seed"] == 4
    assert back["ids"].dtype == np.int64 and back["ids"].tolist() == [3, 1, 2]


@pytest.mark.slow  # a whole flow per pool through the Prefect harness: 16 s; the deployments and the GPU arguments are tested fast above
def test_dispatch_pools_sends_every_gpu_step_to_the_gpu_deployment(tmp_path, prefect_harness, monkeypatch):
    """``dispatch: pools`` end to end, with Prefect's run_deployment replaced by a stand-in that sends
    the parameters through JSON and runs the GPU flow (a worker on the GPU pool would)."""
    import prefect.deployments

    from alcore.layout import Layout
    from flows.gpu import gpu_step
    from flows.pipeline import pipeline

    sent = []

    def fake_run_deployment(name, parameters, **kwargs):
        sent.append((name, parameters["step"]))
        result = gpu_step(**json.loads(json.dumps(parameters)))  # only JSON crosses to the worker
        return SimpleNamespace(name="fake", state=SimpleNamespace(is_completed=lambda: True, result=lambda: result))

    monkeypatch.setattr(prefect.deployments, "run_deployment", fake_run_deployment)
    params = parse_params(tiny(experiment={"name": "pools"}, orchestration={"dispatch": "pools", "gpu_pool": "h100"}))
    metrics = pipeline(params, root=str(tmp_path))
    assert metrics["labels"] == 30
    assert {s for _, s in sent} == {"build_encoder", "extract", "fine_tune"}
    assert {n for n, _ in sent} == {"alcore-gpu/h100"}
    assert Layout(tmp_path).final_model("pools").is_file()


def test_a_failed_gpu_run_is_named(monkeypatch):
    import prefect.deployments

    from alcore.config import OrchestrationCfg
    from flows.gpu import DispatchError, on_gpu

    failed = SimpleNamespace(name="crashed", is_completed=lambda: False)
    monkeypatch.setattr(
        prefect.deployments, "run_deployment", lambda **k: SimpleNamespace(name="bold-fox", state=failed)
    )
    step = on_gpu("build_encoder", OrchestrationCfg(dispatch="pools"))
    with pytest.raises(DispatchError, match="bold-fox.*ended crashed.*prefect worker start --pool gpu"):
        step(None, None, "fp", seed=0, device="cpu", out="x")
