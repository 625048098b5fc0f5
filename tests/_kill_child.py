"""A labeling cycle that a test can kill at a chosen file operation (run as a script).

``python tests/_kill_child.py MODE K [alcore cli args]``: the process's K-th ``os.replace`` (every
atomic write and every move out of the inbox goes through one) is where the fault strikes.

- ``before``: SIGKILL just before the K-th replace (the new file is complete, not yet in place);
- ``after``: SIGKILL just after it;
- ``pause``: wait just before it until the file ``.resume`` appears in the working directory
  (another run can then find the experiment locked);
- ``none``: no fault (the test may still kill the process on a timer);
- ``count``: no fault; print how many replaces there were at exit.
"""

from __future__ import annotations

import os
import signal
import sys
import time

mode, k = sys.argv[1], int(sys.argv[2])
_real = os.replace
_count = 0


def _replace(src, dst, *a, **kw):
    global _count
    _count += 1
    if _count == k and mode == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    if _count == k and mode == "pause":
        print("PAUSED", flush=True)
        deadline = time.time() + 120
        while not os.path.exists(".resume") and time.time() < deadline:
            time.sleep(0.1)
    out = _real(src, dst, *a, **kw)
    if _count == k and mode == "after":
        os.kill(os.getpid(), signal.SIGKILL)
    return out


if mode != "none":
    os.replace = _replace
if mode == "count":
    import atexit

    atexit.register(lambda: print(f"REPLACES {_count}", flush=True))

from alcore.cli import main  # noqa: E402 - after the hook, so every module sees it
from flows import labeling  # noqa: E402, F401 - the slow imports, before READY

print("READY", flush=True)  # a kill on a timer counts from here: the cycle itself
sys.exit(main(["label", "cycle", *sys.argv[3:]]))
