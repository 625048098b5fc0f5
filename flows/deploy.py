"""``prefect.yaml`` from ``params.yaml``: the deployments of the project on its two work pools.

``python -m flows.deploy`` writes ``prefect.yaml`` (``--check``: fail if it is out of date), with:

- ``alcore-run/<cpu_pool>`` (:func:`flows.pipeline.run_project`) on ``orchestration.cpu_pool``: the
  pipeline itself - data, selection, labels, reports - reading ``params.yaml`` where it runs, with
  ``orchestration.dispatch=pools`` by default;
- ``alcore-gpu/<gpu_pool>`` (:func:`flows.gpu.gpu_step`) on ``orchestration.gpu_pool``: the GPU
  steps (pre-training, extraction, fine-tuning) that the pipeline sends there when
  ``orchestration.dispatch: pools``.

Both pull steps change to ``$ALCORE_ROOT``, the project's directory on the worker's host (a shared
file system: artifacts are files). ``prefect deploy --all`` then registers both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from alcore._io import write_text_atomic
from alcore.config import OrchestrationCfg, load_params

ENTRYPOINTS = {"alcore-run": "flows/pipeline.py:run_project", "alcore-gpu": "flows/gpu.py:gpu_step"}
ENTRYPOINT_FLOWS = {v: k for k, v in ENTRYPOINTS.items()}
HEADER = (
    "# Generated from params.yaml (orchestration) by `python -m flows.deploy`; edit params.yaml and rerun it.\n"
    "# Register with `prefect deploy --all` (README: Running on GPU workers). Workers run flows in\n"
    "# $ALCORE_ROOT: the project's directory on their host, on a file system every host shares.\n"
)


def prefect_yaml(orch: OrchestrationCfg) -> dict[str, Any]:
    """The content of ``prefect.yaml`` for these work pools."""
    from prefect import __version__

    return {
        "name": "alcore",
        "prefect-version": __version__,
        "build": None,
        "push": None,
        "pull": [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $ALCORE_ROOT }}"}}],
        "deployments": [
            {
                "name": orch.cpu_pool,
                "entrypoint": ENTRYPOINTS["alcore-run"],
                "description": "The pipeline (data, selection, labels, reports); GPU steps go to the GPU pool "
                "when orchestration.dispatch is pools.",
                # a run of this deployment sends its GPU steps to the GPU pool, whatever params.yaml says
                "parameters": {
                    "params_file": "params.yaml",
                    "overrides": ["orchestration.dispatch=pools"],
                    "stage": "all",
                    "fresh": False,
                },
                "tags": ["alcore"],
                "work_pool": {"name": orch.cpu_pool, "work_queue_name": None, "job_variables": {}},
            },
            {
                "name": orch.gpu_pool,
                "entrypoint": ENTRYPOINTS["alcore-gpu"],
                "description": "One GPU step (pre-training, feature extraction, fine-tuning) of an alcore run.",
                "parameters": {},
                "tags": ["alcore", "gpu"],
                "work_pool": {"name": orch.gpu_pool, "work_queue_name": None, "job_variables": {}},
            },
        ],
    }


def render(orch: OrchestrationCfg) -> str:
    return HEADER + yaml.safe_dump(prefect_yaml(orch), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flows.deploy", description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="prefect.yaml")
    ap.add_argument("--check", action="store_true", help="fail if --out differs from what params.yaml gives")
    a = ap.parse_args(argv)
    text = render(load_params(a.params).orchestration)  # fails on invalid params, before writing
    out = Path(a.out)
    if a.check:
        if not out.is_file() or out.read_text() != text:
            print(f"{out} is out of date with {a.params}: run python -m flows.deploy", file=sys.stderr)
            return 1
        return 0
    write_text_atomic(out, text)
    names = [f"{ENTRYPOINT_FLOWS[d['entrypoint']]}/{d['name']}" for d in yaml.safe_load(text)["deployments"]]
    print(f"wrote {out}: deployments {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
