"""Stopping a run on SIGTERM or Ctrl-C (SIGINT): promptly, its state consistent, with the command
that resumes it.

Every purchase and every step is saved atomically as it happens, so a run may stop anywhere. What
must not happen is a run that does not stop: Prefect turns SIGTERM into an exception and then
reports the crash to its API, which hangs when that server was stopped by the same signal (Ctrl-C
reaches the whole process group, the temporary server included), and worker threads of a task
runner keep the process alive until they finish. So :func:`arm` installs one handler for both
signals, in the command line, and :func:`rearm` again at the start of each flow (Prefect's own SIGTERM
handler replaces it while a flow run starts): the first signal raises :class:`RunStopped` in the
main thread (the training loop, selection or wait stops at its next Python instruction) and starts
a watchdog that ends the process after :data:`GRACE_SECONDS` whatever else is still going on; a
second signal ends it at once. The command line then prints what to run to resume.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

#: Seconds a stopping run may take to unwind (report the crash to Prefect, close files) before the
#: watchdog ends the process; ``ALCORE_STOP_GRACE_SECONDS`` overrides it.
GRACE_SECONDS = 20.0

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, Any] = {"signal": None, "resume": None, "armed": False}


class RunStopped(KeyboardInterrupt):
    """A run was asked to stop (SIGTERM, or SIGINT: Ctrl-C). A ``KeyboardInterrupt``: no code's
    ``except Exception`` swallows it, and Prefect marks the run crashed and re-raises it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return exit_code(self.signum)


def exit_code(signum: int) -> int:
    """The shell's exit status of a process stopped by ``signum``."""
    return 128 + signum


def saved(why: str) -> str:
    """``why`` the run stopped, that nothing is lost, and how to resume."""
    return f"{why}; every step so far is saved. {resume_hint()}"


def resume_hint() -> str:
    cmd = _state["resume"]
    return f"Resume with: {cmd}" if cmd else "Run the same command again (without --fresh) to resume"


def _exit_now(signum: int, why: str) -> None:
    os.write(2, f"\n{saved(why)}\n".encode())
    os._exit(exit_code(signum))


def _watchdog(signum: int, grace: float) -> None:
    threading.Event().wait(grace)
    _exit_now(signum, f"still stopping {grace:.0f} s after {signal.Signals(signum).name}: exiting now")


def _handler(signum: int, frame: Any) -> None:
    if _state["signal"] is not None:  # a second signal: no more waiting
        _exit_now(signum, f"{signal.Signals(signum).name} again: exiting now")
    _state["signal"] = signum
    grace = float(os.environ.get("ALCORE_STOP_GRACE_SECONDS", GRACE_SECONDS))
    threading.Thread(target=_watchdog, args=(signum, grace), daemon=True, name="alcore-stop").start()
    os.write(2, f"\nStopping on {signal.Signals(signum).name} (the state is saved after every step) ...\n".encode())
    raise RunStopped(signum)


def arm(resume: str | None = None) -> None:
    """Install the stop handler for SIGINT and SIGTERM (main thread only; elsewhere a no-op): what
    a command line does before it runs a flow. ``resume``: the command that resumes the run."""
    _state["armed"] = True
    if resume is not None:
        _state["resume"] = resume
    rearm()


def rearm() -> None:
    """Take SIGTERM back from Prefect's handler at the start of a flow run, if the command line
    armed the stop handler (a flow called from a notebook or a test leaves signals alone)."""
    if not _state["armed"] or threading.current_thread() is not threading.main_thread():
        return
    for s in _SIGNALS:
        if signal.getsignal(s) is not _handler:
            signal.signal(s, _handler)


def stopped_message(e: RunStopped) -> str:
    return saved(f"stopped by {signal.Signals(e.signum).name}")


def resume_command(prog: str, args: list[str]) -> str:
    """``prog args`` less the options that start over (``--fresh``, ``--discard-labels``)."""
    import shlex

    kept = [a for a in args if a not in ("--fresh", "--discard-labels")]
    return " ".join([prog, *(shlex.quote(a) for a in kept)])


def was_stopped() -> int | None:
    """The signal that stopped this process's run, if any."""
    return _state["signal"]


__all__ = ["GRACE_SECONDS", "RunStopped", "arm", "rearm", "resume_command", "stopped_message", "was_stopped"]
