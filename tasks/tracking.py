"""MLflow, touched here and nowhere else: one run per experiment, metrics per round, plots."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# mlflow is imported in the functions that use it: it takes seconds, and a labeling cycle that
# finds no new labels (most scheduled runs) never logs anything.


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd() / 'mlflow.db'}")


def start_run(experiment: str, params: dict[str, Any], run_id: str | None = None) -> str:
    """Create (or reopen, after a resume) the experiment's MLflow run and log its parameters."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except Exception:  # noqa: BLE001 - a run lost with its store: start a new one
            pass
        else:
            if run.info.status != "RUNNING":  # ended by the last cycle (or a stop): it runs again
                client.update_run(run_id, status="RUNNING")
            return run_id
    exp = client.get_experiment_by_name("alcore")
    exp_id = exp.experiment_id if exp else client.create_experiment("alcore", artifact_location=_artifact_root())
    run = client.create_run(exp_id, run_name=experiment, tags={"alcore.experiment": experiment})
    flat = _flatten(params)
    items = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in sorted(flat.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i : i + 100])
    return run.info.run_id


def _artifact_root() -> str:
    return (Path(os.environ.get("ALCORE_MLFLOW_ARTIFACTS", Path.cwd() / "mlartifacts"))).resolve().as_uri()


def log_metrics(run_id: str, metrics: dict[str, float], step: int) -> None:
    """Log numeric metrics at ``step`` (the round)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    import time

    ts = int(time.time() * 1000)
    ms = [mlflow.entities.Metric(k, float(v), ts, int(step)) for k, v in metrics.items() if isinstance(v, (int, float))]
    if ms:
        MlflowClient().log_batch(run_id, metrics=ms)


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Set string tags (e.g. the training mode a network was chosen with)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    for k, v in tags.items():
        client.set_tag(run_id, k, str(v))


def log_artifacts(run_id: str, paths: Iterable[str | Path]) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    for p in paths:
        client.log_artifact(run_id, str(p))


def finish(run_id: str, status: str = "FINISHED") -> None:
    """End the run: FINISHED, FAILED or KILLED (it is never left RUNNING by a flow that ended)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(tracking_uri())
    MlflowClient().set_terminated(run_id, status=status)
