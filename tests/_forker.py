"""Kill-test children forked from one parent that has imported torch, Prefect and MLflow once.

A kill test starts many short-lived alcore commands; as fresh processes each would spend most of
its life importing. :class:`Forker` starts one parent process (``python tests/_forker.py``) that
does the imports and then forks a child per request; :class:`ForkedProc` is the test's handle on a
child, with the parts of ``subprocess.Popen`` the tests use (a ``stdout`` to read, ``poll``,
``wait``, ``communicate``, ``send_signal``, ``returncode``). The parent is single-threaded when it
forks (checked), so a child starts as a clean copy.

Protocol: the test writes one JSON request per line (``argv`` for :func:`tests._kill_child.run`,
``cwd``, ``env``, ``out``: a FIFO the child writes its output to, ``status``: a file the parent
writes the child's wait status to); the parent answers with the child's pid.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


class ForkedProc:
    """A forked child, handled like ``subprocess.Popen`` (text output, stderr merged)."""

    def __init__(self, forker: Forker, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        d = Path(tempfile.mkdtemp(prefix="fork-", dir=forker.dir))
        self._status = d / "status"
        fifo = d / "out"
        os.mkfifo(fifo)
        self.pid = forker.request(
            {"argv": argv, "cwd": str(cwd), "env": env, "out": str(fifo), "status": str(self._status)}
        )
        self.stdout = open(fifo, encoding="utf-8")  # noqa: SIM115 - read until the child is gone
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._status.is_file() and self._status.read_text():
            self.returncode = int(self._status.read_text())
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.time() + timeout
        while self.poll() is None:
            if deadline is not None and time.time() > deadline:
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout)
            time.sleep(0.02)
        return self.returncode  # type: ignore[return-value]

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        """The rest of the output, once the child has closed it (``TimeoutExpired`` first when
        ``timeout`` passes; call again to read on)."""
        deadline = None if timeout is None else time.time() + timeout
        chunks = []
        fd = self.stdout.fileno()
        while True:
            left = None if deadline is None else max(0.0, deadline - time.time())
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                self._pending = "".join(chunks)
                raise subprocess.TimeoutExpired(f"forked pid {self.pid}", timeout)
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data.decode("utf-8", "replace"))
        out = getattr(self, "_pending", "") + "".join(chunks)
        self._pending = ""
        self.stdout.close()
        self.wait(timeout=60)
        return out, None

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)


class Forker:
    """The parent process that forks the children (one per test session)."""

    def __init__(self, env: dict[str, str], dir: Path) -> None:
        self.dir = dir
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "_forker.py")],
            env={**env, "PYTHONPATH": str(HERE.parent)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self.proc.stdout.readline()
        if line.strip() != "FORKER READY":
            raise RuntimeError(f"the forker did not start: {line!r}")

    def request(self, req: dict[str, Any]) -> int:
        with self._lock:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
            return int(json.loads(self.proc.stdout.readline())["pid"])

    def spawn(self, argv: list[str], cwd: Path, env: dict[str, str]) -> ForkedProc:
        return ForkedProc(self, argv, cwd, env)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _serve() -> None:
    from tests._kill_child import preload, run

    preload()
    statuses: dict[int, str] = {}

    def reap(*_: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            path = statuses.pop(pid, None)
            if path is not None:
                tmp = path + ".tmp"
                with open(tmp, "w") as fh:
                    fh.write(str(os.waitstatus_to_exitcode(status)))
                os.rename(tmp, path)

    signal.signal(signal.SIGCHLD, reap)
    print("FORKER READY", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        assert threading.active_count() == 1, threading.enumerate()  # fork only a single-threaded parent
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])  # record the pid before reaping it
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
            code = 1
            try:
                out = os.open(req["out"], os.O_WRONLY)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.chdir(req["cwd"])
                os.environ.clear()
                os.environ.update(req["env"])
                code = run(req["argv"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001 - the child reports and exits, never returns to the loop
                import traceback

                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        statuses[pid] = req["status"]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGCHLD])
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    _serve()
