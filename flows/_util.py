"""Small helpers shared by the flows."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from alcore._io import file_digest
from alcore.errors import DataError, problem


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


def say(msg: str = "") -> None:
    print(msg, file=sys.stdout, flush=True)
