"""Polling with a deadline: the lab waits for observable state, never for a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable

from .layout import LabError


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, interval: float = 0.25
) -> float:
    """Poll `check` until it is true; return the seconds it took or raise LabError naming `what`."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start
