"""Supervision of the operator's background loops (fleet round, load reader, member probes
and writers): a loop that dies is restarted with backoff and reported, never left silently
frozen, and every loop reports its freshness so the liveness probe fails when one is stuck.
Effects: memory, logs, timers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from twinhull.handlers.runtime import Runtime, now

log = logging.getLogger(__name__)

BACKOFF_START, BACKOFF_MAX = 1.0, 60.0
"""Seconds before the first restart of a dead loop, and the most it waits between two."""


def beat(rt: Runtime, loop: str) -> None:
    """Record that ``loop`` finished one iteration now. Effects: memory."""
    rt.beats[loop] = now()
    rt.loop_errors.pop(loop, None)
    rt.telemetry.iteration(loop, True)


def forget(rt: Runtime, loop: str) -> None:
    """Stop watching a loop that ended on purpose (e.g. a deleted cluster's). Effects:
    memory."""
    rt.beats.pop(loop, None)
    rt.loop_bounds.pop(loop, None)
    rt.loop_errors.pop(loop, None)
    rt.restarts.pop(loop, None)


def stale_loops(beats: Mapping[str, datetime], bounds: Mapping[str, float], at: datetime
                ) -> dict[str, float]:
    """Loops with a bound that have not beaten within it: name to seconds since their last
    beat (a (re)started loop counts from its start). Pure."""
    out = {}
    for loop, bound in bounds.items():
        last = beats.get(loop)
        if last is None:
            continue
        age = (at - last).total_seconds()
        if age > bound:
            out[loop] = age
    return out


async def supervised(rt: Runtime, loop: str, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` until cancelled; when it raises (or returns while it should not), log
    and record the error, wait (1 s doubling to 60 s, reset after a healthy minute) and
    start it again. Effects: runs the loop."""
    delay = BACKOFF_START
    while True:
        began = now()
        rt.telemetry.start_loop(loop)
        rt.beats[loop] = began  # a (re)started loop gets its whole bound before it is stale
        try:
            await body()
            error = "returned"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or bad input must not end the loop for good
            error = f"{type(exc).__name__}: {exc}"[:500]
            log.exception("loop %s died; restarting in %.0fs", loop, delay)
        else:
            log.error("loop %s returned; restarting in %.0fs", loop, delay)
        rt.loop_errors[loop] = error
        rt.telemetry.iteration(loop, False)
        rt.restarts[loop] = rt.restarts.get(loop, 0) + 1
        if (now() - began).total_seconds() > BACKOFF_MAX:
            delay = BACKOFF_START
        await asyncio.sleep(delay)
        delay = min(delay * 2, BACKOFF_MAX)
