"""A throwaway ``prefect server start`` on 127.0.0.1, for the tests and scripts that need a real one."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_healthy(api: str, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    """Wait until the server at ``api`` answers; RuntimeError after ``timeout`` s or if ``proc`` exits."""
    deadline = time.time() + timeout
    while not healthy(api):
        if (proc is not None and proc.poll() is not None) or time.time() > deadline:
            raise RuntimeError(f"prefect server did not start within {timeout:.0f} s")
        time.sleep(1)


def stop(proc: subprocess.Popen) -> None:
    """Stop a process started in its own session, and its children (TERM, then KILL)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def prefect_server(home: str | os.PathLike[str], *, timeout: float = 120, **env: str) -> Iterator[str]:
    """Run ``prefect server start --host 127.0.0.1`` on a free port with its own PREFECT_HOME
    (and extra environment ``env``); yield its API URL; stop it on exit."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    prefect = str(Path(sys.executable).with_name("prefect"))
    server = subprocess.Popen(
        [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_healthy(api, timeout, server)
        yield api
    finally:
        stop(server)
