"""An alcore command that a test can kill at a chosen point.

``python tests/_kill_child.py MODE K [alcore cli args]`` (default args: ``label cycle``), or, much
cheaper, forked from a parent that has done the slow imports once (:mod:`tests._forker`).

At the process's K-th ``os.replace`` (every atomic write and every move out of the inbox goes
through one):

- ``before``: SIGKILL just before it (the new file is complete, not yet in place);
- ``after``: SIGKILL just after it;
- ``pause``: wait just before it until the file ``.resume`` appears in the working directory
  (another run can then find the experiment locked);
- ``count``: no fault; print how many replaces there were at exit.

At the learner's steps:

- ``saved``: SIGKILL just after the K-th save of the run state;
- ``bought``: SIGKILL when the K-th batch of labels has been bought from the oracle (the ``label``
  step returned) and before the state that records them is written;
- ``sigterm`` / ``sigint``: the process sends itself SIGTERM / SIGINT (Ctrl-C) just after the K-th
  save of the run state (it goes on until the signal lands, mid-run);
- ``none``: no fault (the test may still kill the process on a timer).

With ``ALCORE_TEST_ORACLE_LOG`` set, every id the oracle is asked about is appended to that file.
"""

from __future__ import annotations

import os
import signal
import sys
import time

_real_replace = os.replace


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _at_kth(cls: type, name: str, k: int, *, before: bool) -> None:
    real, calls = getattr(cls, name), []

    def hooked(self, *a, **kw):
        calls.append(1)
        if before and len(calls) == k:
            _kill()
        out = real(self, *a, **kw)
        if not before and len(calls) == k:
            _kill()
        return out

    setattr(cls, name, hooked)


def install(mode: str, k: int) -> None:
    """Put the fault of ``mode`` at point ``k`` in place (and the oracle log, when asked for)."""
    count = [0]

    def replace(src, dst, *a, **kw):
        count[0] += 1
        if count[0] == k and mode == "before":
            _kill()
        if count[0] == k and mode == "pause":
            print("PAUSED", flush=True)
            deadline = time.time() + 120
            while not os.path.exists(".resume") and time.time() < deadline:
                time.sleep(0.1)
        out = _real_replace(src, dst, *a, **kw)
        if count[0] == k and mode == "after":
            _kill()
        return out

    if mode in ("before", "after", "pause", "count"):
        os.replace = replace
    if mode == "count":
        import atexit

        atexit.register(lambda: print(f"REPLACES {count[0]}", flush=True))
    if mode == "saved":
        from alcore.run_state import ExperimentState

        _at_kth(ExperimentState, "save", k, before=False)
    if mode in ("sigterm", "sigint"):
        from alcore.run_state import ExperimentState

        sig = signal.SIGTERM if mode == "sigterm" else signal.SIGINT
        real, saves = ExperimentState.save, []

        def save_then_signal(self, *a, **kw):
            real(self, *a, **kw)
            saves.append(1)
            if len(saves) == k:
                os.kill(os.getpid(), sig)

        ExperimentState.save = save_then_signal
    if mode == "bought":
        from alcore.rounds import ActiveLearner

        _at_kth(ActiveLearner, "update", k, before=True)  # the answers are in hand, the state not yet written
    if os.environ.get("ALCORE_TEST_ORACLE_LOG"):
        import alcore.steps

        make = alcore.steps.make_oracle_for

        def logged(*a, **kw):
            oracle = make(*a, **kw)
            query = oracle.query

            def logged_query(ids):
                with open(os.environ["ALCORE_TEST_ORACLE_LOG"], "a") as fh:
                    fh.write("".join(f"{int(i)}\n" for i in ids))
                return query(ids)

            oracle.query = logged_query
            return oracle

        alcore.steps.make_oracle_for = logged


def preload() -> None:
    """The slow imports, so that READY (and a timer) counts from the command's own work."""
    import mlflow  # noqa: F401

    import alcore.cli  # noqa: F401
    from flows import labeling, pipeline  # noqa: F401


def run(argv: list[str]) -> int:
    """``MODE K [alcore cli args]``: install the fault, say READY, run the command."""
    mode, k, args = argv[0], int(argv[1]), argv[2:] or ["label", "cycle"]
    install(mode, k)
    from alcore.cli import main

    print("READY", flush=True)
    return main(args)


if __name__ == "__main__":
    preload()
    sys.exit(run(sys.argv[1:]))
