"""GPU steps on a GPU work pool: the ``alcore-gpu`` flow and :func:`on_gpu`, which sends a step there.

Prefect work pools run flow runs, not task runs. With ``orchestration.dispatch: pools`` each GPU
step - pre-training the encoder, extracting features (whole or in parts; ASVP's and Standard's
re-extractions too), fine-tuning (Standard's and ASVP's networks, the final one) - becomes a flow
run of the deployment ``alcore-gpu/<orchestration.gpu_pool>``, which a worker on a GPU host picks up
(``prefect.yaml``, README "Running on GPU workers"). The calling flow, on the CPU pool, waits for it
and reads its result. Everything else (selection, labels, the proxy, reports) stays where the
calling flow runs. With ``dispatch: local`` (the default) :func:`on_gpu` returns the step itself.

Arguments and results cross as JSON: pydantic models as dicts, arrays as lists, rebuilt on the GPU
side from the step's type hints. Artifacts are files: both hosts must see the project directory at
the same path (a shared file system) and Prefect's result storage (``PREFECT_LOCAL_STORAGE_PATH`` on
that file system, or a storage block).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import numpy as np
from prefect import flow
from pydantic import BaseModel

from alcore.config import OrchestrationCfg
from alcore.errors import AlcoreError, UnknownNameError, problem
from flows.extract import extract_all
from tasks.encoder import build_encoder
from tasks.finetune import fine_tune

GPU_FLOW = "alcore-gpu"


class DispatchError(AlcoreError):
    """A GPU step sent to the GPU work pool did not complete."""


def deployment_name(orch: OrchestrationCfg) -> str:
    """``flow/deployment`` of the GPU steps: one deployment per GPU pool, named after it."""
    return f"{GPU_FLOW}/{orch.gpu_pool}"


def _steps() -> dict[str, Callable[..., Any]]:
    return {"build_encoder": build_encoder, "extract": extract_all, "fine_tune": fine_tune}


def _fn(step: Any) -> Callable[..., Any]:
    return getattr(step, "fn", step)  # a Prefect task's function, or a plain function


def to_json(value: Any) -> Any:
    """Arguments as JSON: pydantic models as dicts, numpy arrays as lists (recursively)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def from_json(fn: Callable[..., Any], arguments: dict[str, Any]) -> dict[str, Any]:
    """``arguments`` of ``fn`` rebuilt from JSON by its type hints (models, int64 arrays)."""
    hints = typing.get_type_hints(fn)
    out = {}
    for k, v in arguments.items():
        h = hints.get(k)
        if isinstance(h, type) and issubclass(h, BaseModel):
            v = h.model_validate(v)
        elif h is np.ndarray:
            v = np.asarray(v, dtype=np.int64)
        out[k] = v
    return out


@flow(name=GPU_FLOW, persist_result=True, result_serializer="json", validate_parameters=True)
def gpu_step(step: str, arguments: dict[str, Any], refresh_cache: bool = False) -> Any:
    """Run one GPU step (``build_encoder``, ``extract`` or ``fine_tune``) with JSON ``arguments``."""
    steps = _steps()
    if step not in steps:
        raise UnknownNameError(problem(f"Unknown GPU step {step!r}", ", ".join(sorted(steps))))
    target = steps[step]
    kwargs = from_json(_fn(target), arguments)
    if refresh_cache and step != "extract":  # extraction checks its own files (flows.extract)
        target = target.with_options(refresh_cache=True)
    return target(**kwargs)


class _OnGpuPool:
    """A step that runs as a flow run of the GPU deployment; called like the step it stands for."""

    def __init__(self, name: str, step: Any, orch: OrchestrationCfg, refresh_cache: bool = False) -> None:
        self.name, self.step, self.orch, self.refresh_cache = name, step, orch, refresh_cache

    def with_options(self, *, refresh_cache: bool = False) -> _OnGpuPool:
        return _OnGpuPool(self.name, self.step, self.orch, refresh_cache)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from prefect.deployments import run_deployment

        bound = inspect.signature(_fn(self.step)).bind(*args, **kwargs)
        params = {"step": self.name, "arguments": to_json(dict(bound.arguments)), "refresh_cache": self.refresh_cache}
        name = deployment_name(self.orch)
        run = run_deployment(name=name, parameters=params, timeout=None, poll_interval=2)
        if run.state is None or not run.state.is_completed():
            raise DispatchError(
                problem(
                    f"GPU step {self.name!r} ran as flow run {run.name!r} of {name} and ended "
                    f"{run.state.name if run.state else 'without a state'}",
                    fix=f"see that flow run's logs; check that a worker serves the pool "
                    f"(prefect worker start --pool {self.orch.gpu_pool})",
                )
            )
        return run.state.result()


def on_gpu(name: str, orch: OrchestrationCfg) -> Any:
    """The GPU step ``name`` as the calling flow should call it: the step itself (``dispatch:
    local``) or a stand-in that runs it on the GPU work pool (``dispatch: pools``)."""
    step = _steps()[name]
    return step if orch.dispatch == "local" else _OnGpuPool(name, step, orch)
