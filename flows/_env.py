"""Environment for the orchestration stack, set before Prefect or MLflow is imported.

Everything stays inside the project (``.prefect/``, ``mlflow.db``, ``mlartifacts/``) unless the user
has set these variables, and no telemetry tries the network.
"""

from __future__ import annotations

import logging
import os
import traceback
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
        # INFO reaches the API (a run's page shows what it did, why a retry happened); the console
        # shows warnings and errors only: alcore prints its own progress lines (flows._util.say)
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # 20 s is too short on a busy 2-core machine
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "ALCORE_MLFLOW_ARTIFACTS": str(root / "mlartifacts"),
        "TQDM_MININTERVAL": "1",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


#: Where the tracebacks of refusals alcore raised on purpose go (relative to PREFECT_HOME).
ERRORS_LOG = "alcore-errors.log"


class _ExpectedRefusals(logging.Filter):
    """On Prefect's console, a refusal alcore raised on purpose (an :class:`AlcoreError`: the
    experiment lock, a refused file, a bad parameter) is not a 30-line traceback: the command line
    prints its one clear message. The full record, traceback included, is appended to
    :data:`ERRORS_LOG` (and still reaches the Prefect API, so the run's page shows it)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.written = False

    def _append(self, text: str) -> bool:
        """Append ``text`` to the log; False when it cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            return False
        self.written = True
        return True

    def keep(self, exc: BaseException) -> bool:
        """Append ``exc`` with its traceback (an error the command line reports in one line that
        no flow logged); False when the log cannot be written."""
        return self._append("".join(traceback.format_exception(exc)) + "\n")

    def filter(self, record: logging.LogRecord) -> bool:
        from alcore.errors import AlcoreError

        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, AlcoreError):
            return True
        text = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record) + "\n\n"
        # no log file: better the traceback on the console than nowhere
        return not self._append(text)


_REFUSALS: _ExpectedRefusals | None = None


def quiet_refusals() -> _ExpectedRefusals:
    """Install :class:`_ExpectedRefusals` on every Prefect console handler (Prefect must be
    imported: it sets its logging up then). Idempotent; returns the filter (``.path``, ``.written``)."""
    global _REFUSALS
    from prefect.logging.handlers import PrefectConsoleHandler

    if _REFUSALS is None:
        home = Path(os.environ.get("PREFECT_HOME", Path.cwd() / ".prefect"))
        _REFUSALS = _ExpectedRefusals(home / ERRORS_LOG)
    loggers = [
        logging.getLogger(),
        *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)),
    ]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, PrefectConsoleHandler) and _REFUSALS not in h.filters:
                h.addFilter(_REFUSALS)
    return _REFUSALS
