"""Test settings: no network, no telemetry, Prefect and MLflow isolated in temporary folders."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="alcore-tests-"))
_ENV = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_HOME": str(_SESSION_TMP / "prefect-home"),
    "PREFECT_LOCAL_STORAGE_PATH": str(_SESSION_TMP / "prefect-storage"),
    "PREFECT_LOGGING_LEVEL": "INFO",  # as flows._env sets it: INFO to the API, warnings on the console
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_TRACKING_URI": f"sqlite:///{_SESSION_TMP / 'mlflow.db'}",
    "ALCORE_MLFLOW_ARTIFACTS": str(_SESSION_TMP / "mlartifacts"),
    "TQDM_DISABLE": "1",
}
os.environ.update(_ENV)
os.environ.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def one_thread():
    """Tiny models on tiny batches: one CPU thread is much faster than contended OpenMP ones."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (real MNIST, Fashion-MNIST, CIFAR-10 subset, weights)."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for the whole session (it costs seconds to start)."""
    from prefect.testing.utilities import prefect_test_harness

    import flows  # noqa: F401 - sets the project env defaults (already overridden above)

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture(scope="session")
def tiny_stages(tmp_path_factory, prefect_harness) -> Path:
    """A project root with the tiny experiment's prepare, encoder and features stages done once.

    Tests copy ``data/``, ``models/`` and ``features/`` from it (``tests._tiny.copy_stages``) instead of
    training the same encoder again.
    """
    from alcore.config import parse_params
    from flows.pipeline import encoder, features, prepare
    from tests._tiny import tiny

    root = tmp_path_factory.mktemp("tiny-stages")
    params = parse_params(tiny())
    for stage in (prepare, encoder, features):
        stage(params, root=str(root))
    return root


@pytest.fixture(scope="session")
def forker(prefect_harness, tmp_path_factory):
    """Kill-test children forked from one pre-imported parent (``tests/_forker.py``); they use
    the session's Prefect server, so a killed child leaves no temporary server behind."""
    from prefect.settings import PREFECT_API_URL

    from tests._forker import Forker

    f = Forker({**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}, tmp_path_factory.mktemp("forks"))
    yield f
    f.close()
