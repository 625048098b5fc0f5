"""Small helpers shared by the flows: artifact freshness, stage sidecars, console lines, and the
command line of a flow module run as a script (``python -m flows.NAME``, what ``dvc.yaml`` runs)."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alcore._io import file_digest
from alcore.config import Params, load_params
from alcore.errors import AlcoreError, DataError, problem


def is_fresh(r: dict[str, str]) -> bool:
    """Whether the file an artifact ref names is still there with the content it had."""
    p = Path(r["path"])
    return p.is_file() and file_digest(p) == r["sha256"]


def ensure_artifact(task: Any, key: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run ``task``; if its (possibly cached) result names a file that is gone or changed since,
    run it again with a fresh cache. Cached results outlive files that DVC or a user removed."""
    out = task(*args, **kwargs)
    if not is_fresh(out[key]):
        out = task.with_options(refresh_cache=True)(*args, **kwargs)
    return out


def read_json(path: Path, stage: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(problem(f"{path} is missing", fix=f"run the {stage!r} stage first (dvc repro, or alcore run)"))
    return json.loads(path.read_text())


def archive(path: Path) -> Path:
    """Move an old experiment state aside (never delete bought labels)."""
    dest = path.with_name(f"{path.stem}.archived-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
    shutil.move(str(path), dest)
    return dest


def clean_stale_temps(L: Any, run_dir: Path) -> None:
    """Remove what atomic writes killed mid-way left behind: in the run's folder (under its lock:
    no other writer), and in ``reports/`` those older than a minute (a report being written by
    another run is younger). Only alcore's own ``.<name>.<8 hex>.tmp`` files."""
    from alcore._io import remove_stale_temps

    gone = remove_stale_temps(run_dir, recursive=True) + remove_stale_temps(L.reports, min_age=60)
    if gone:
        say(
            f"Removed {len(gone)} temporary file(s) that an interrupted run left: {', '.join(p.name for p in gone[:5])}"
        )


def say(msg: str = "") -> None:
    """A progress line: printed, and inside a flow or task run logged at INFO through Prefect's run
    logger, so that the run's page in the Prefect UI says what it did (the console shows Prefect's
    own records from WARNING up only: the line is not printed twice)."""
    print(msg, file=sys.stdout, flush=True)
    if msg.strip():
        log = run_logger()
        if log is not None:
            log.info(msg)


def run_logger() -> Any:
    """Prefect's logger of the current flow or task run, or None outside a run."""
    from prefect import get_run_logger
    from prefect.context import FlowRunContext, TaskRunContext

    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return None
    return get_run_logger()


def flow_main(
    prog: str,
    argv: list[str] | None,
    run: Callable[[Params, argparse.Namespace], Any],
    options: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """``python -m flows.NAME [--params FILE] [--set key=value ...] [options]``: read and validate
    the parameters, then ``run(params, args)``. An alcore error prints ``error: ...`` with its fix
    and exits 2 (as ``alcore`` does); SIGTERM or Ctrl-C stops the run and prints the command that
    resumes it (exit code 128 + the signal)."""
    ap = argparse.ArgumentParser(prog=prog)
    ap.add_argument("--params", "-p", default="params.yaml", help="the parameters file")
    ap.add_argument("--set", "-s", action="append", default=[], dest="overrides", help="key=value override")
    if options is not None:
        options(ap)
    argv = sys.argv[1:] if argv is None else argv
    args = ap.parse_args(argv)
    from flows._stop import RunStopped, arm, resume_command, stopped_message

    arm(resume=resume_command(prog, argv))
    try:
        run(load_params(args.params, args.overrides), args)
    except AlcoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunStopped as e:
        print(stopped_message(e), file=sys.stderr)
        return e.exit_code
    return 0
