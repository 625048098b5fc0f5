"""Atomic file writes: a crash leaves the previous good file, never half of a new one."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alcore.errors import AlcoreError, ConfigError, DataError, StorageError, problem

#: errno values that mean "the disk (or a quota, or a file-size limit) is full".
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
#: how the Rust writers (safetensors) word the same errors.
_FULL_WORDS = ("No space left", "StorageFull", "Disk quota", "QuotaExceeded", "File too large", "FileTooLarge")


def _is_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in _FULL:
        return True
    return not isinstance(err, OSError) and any(w in str(err) for w in _FULL_WORDS)


def _new_temp(beside: Path) -> Path:
    """Create an empty temporary file beside ``beside`` with a plain ``open()``'s permissions
    (0666 less the umask, applied by the kernel), unlike ``mkstemp``'s 0600."""
    name = beside.name
    if len(name.encode()) > 240:  # the temporary name must stay within 255 bytes too
        name = name.encode()[:240].decode("utf-8", errors="ignore")
    for _ in range(100):
        tmp = beside.with_name(f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {beside}")  # pragma: no cover


#: The name of :func:`_new_temp`'s files: ``.<name>.<8 hex digits>.tmp``, and nothing else.
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")


def remove_stale_temps(folder: str | os.PathLike[str], *, recursive: bool = False, min_age: float = 0.0) -> list[Path]:
    """Remove the temporary files that an atomic write killed mid-way left in ``folder`` (only
    names of :data:`TEMP_NAME`'s pattern, only plain files, never links or anything else), those
    last changed at least ``min_age`` seconds ago. Call it where no other writer is at work (under
    the experiment lock), or with a ``min_age`` that no live write lasts. Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now, removed = time.time(), []
    walk = os.walk(folder) if recursive else [(str(folder), [], os.listdir(folder))]  # links not followed
    candidates = [Path(d) / f for d, _, files in walk for f in files if TEMP_NAME.match(f)]
    for path in candidates:
        try:
            st = path.lstat()
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            path.unlink()
        except OSError:  # gone meanwhile, or not ours to remove: leave it
            continue
        removed.append(path)
    return removed


def stat_signature(st: os.stat_result) -> tuple[int, int, int, int]:
    """What tells one version of a file from another: device, inode (every atomic write is a new
    one), size and modification time."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    Whatever the body writes to the yielded path becomes ``path`` only if the body returns
    without raising. The rename is atomic on POSIX file systems. The file gets the permissions a
    plain ``open()`` would give it (0666 less the umask), not the temporary file's 0600: labeling
    jobs and images must be readable by the annotation tool, which may run as another user.

    Raises:
        StorageError: the disk (or a quota, or RLIMIT_FSIZE) is full; names ``path``. The
            temporary file is removed and ``path`` is as it was.
    """
    path = Path(path)
    tmp_path: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _new_temp(path)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except Exception as e:
        if _is_full(e):
            raise StorageError(
                problem(
                    f"no space left to write {path} ({e})",
                    allowed="a disk with room for the file (what was there before is kept as it was)",
                    fix=f"free space on the disk of {path.parent} (df -h {path.parent}), then run the same command "
                    "again: it resumes where it stopped",
                )
            ) from e
        raise
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def file_digest(path: str | os.PathLike[str], algo: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json(path: str | os.PathLike[str], what: str = "file") -> Any:
    """The JSON document in ``path``; a missing, unreadable, truncated or garbage file raises
    :class:`ConfigError` naming the file and ``what`` it should hold (never a bare decoder error)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(problem(f"cannot read the {what} {path}: {e.strerror or e}")) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        detail = f"{e.msg} at line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        state = "is empty" if not raw.strip() else f"is not valid JSON ({detail}; {len(raw)} bytes)"
        raise ConfigError(
            problem(
                f"the {what} {path} {state}: it was cut short or overwritten",
                allowed="the complete file alcore wrote (it writes atomically: a crash leaves the previous one)",
                fix="restore it from a copy or backup (`git`/`dvc checkout` for pipeline outputs); for an experiment "
                "state, `alcore run --fresh` starts over and keeps the damaged file as state.archived-*.json",
            )
        ) from None


@contextlib.contextmanager
def reading(path: str | os.PathLike[str], what: str, fix: str) -> Iterator[None]:
    """Turn a reader's failure on ``path`` (a truncated Parquet file, garbage bytes) into a
    :class:`DataError` that names the file, what it should hold and ``fix``; alcore's own errors
    pass through as they are."""
    try:
        yield
    except AlcoreError:
        raise
    except (OSError, ValueError, EOFError) as e:
        raise DataError(problem(f"cannot read the {what} {path}: it is damaged or cut short ({e})", fix=fix)) from e
    except Exception as e:  # pyarrow's own errors (ArrowException) are not all OSError / ValueError
        if type(e).__module__.split(".")[0] != "pyarrow":
            raise
        raise DataError(problem(f"cannot read the {what} {path}: it is damaged or cut short ({e})", fix=fix)) from e
