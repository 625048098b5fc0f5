"""Environment for the orchestration stack, set before Prefect or MLflow is imported.

Everything stays inside the project (``.prefect/``, ``mlflow.db``, ``mlartifacts/``) unless the user
has set these variables, and no telemetry tries the network.
"""

from __future__ import annotations

import os
from pathlib import Path


def configure(root: str | os.PathLike[str] | None = None) -> None:
    root = Path(root or Path.cwd()).resolve()
    defaults = {
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DVC_NO_ANALYTICS": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_HOME": str(root / ".prefect"),
        "PREFECT_LOCAL_STORAGE_PATH": str(root / ".prefect" / "storage"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # 20 s is too short on a busy 2-core machine
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "ALCORE_MLFLOW_ARTIFACTS": str(root / "mlartifacts"),
        "TQDM_MININTERVAL": "1",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
