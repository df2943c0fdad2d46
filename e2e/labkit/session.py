"""One user of a lab at a time: an e2e session or a benchmark holds the lab's session lock
while it runs.

Two sessions on one lab share its one leader Lease and its namespaces: the second
session's operator stands by behind the first's (which then handles the second's objects
with its own code), and one session's cleanup deletes the other's objects. Both then fail
in ways that look like bugs of the operator. A session therefore takes an exclusive
``flock`` on a file beside the lab's run directory (not in it: ``lab down --purge``
deletes the run directory), waits for the holder to finish (up to ``wait`` seconds, saying
once who holds it), and keeps the lock until it ends. The kernel drops the lock when the
holder's process dies, so a killed session never leaves it held.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from pathlib import Path
from typing import IO

from .layout import Layout


class LabBusy(RuntimeError):
    """Another session kept the lab past the wait."""


def lock_path(layout: Layout) -> Path:
    """The session lock of the lab at ``layout`` (beside its run directory). Pure."""
    return layout.run.with_name(layout.run.name + ".session.lock")


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "an unknown session"
    if not isinstance(info, dict):
        return "an unknown session"
    return (f"{info.get('what', 'a session')} (pid {info.get('pid', '?')}, in "
            f"{info.get('cwd', '?')}, since {info.get('since', '?')})")


def claim(layout: Layout, what: str, *, wait: float = 1800.0, poll: float = 2.0) -> IO[str]:
    """Take the lab's session lock for ``what`` (e.g. "e2e session"), waiting up to
    ``wait`` seconds for another holder to finish. Returns the open lock file: the lock
    lasts while it stays open (close it, or end the process, to release). Raises
    :class:`LabBusy` naming the holder when the wait runs out.
    Effects: creates the lock file's directory and the file; writes who holds it."""
    path = lock_path(layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    deadline, said = time.monotonic() + wait, False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            holder = _holder(path)
            if time.monotonic() >= deadline:
                handle.close()
                raise LabBusy(
                    f"the lab at {layout.run} is in use by {holder} and stayed in use for "
                    f"{wait:.0f}s: wait for it to end, or run this one on a lab of its own "
                    "(other TWINHULL_LAB_RUN and TWINHULL_LAB_PORT_BASE)") from None
            if not said:
                print(f"waiting for the lab at {layout.run}: in use by {holder}",
                      file=sys.stderr, flush=True)
                said = True
            time.sleep(poll)
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"what": what, "pid": os.getpid(), "cwd": os.getcwd(),
                             "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}))
    handle.flush()
    return handle
