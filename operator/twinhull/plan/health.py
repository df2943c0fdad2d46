"""The health state machine of a member cluster. Pure.

``Healthy → Suspect → Down → Recovering → Healthy`` with hysteresis: one failed probe makes
a cluster Suspect, ``failureThreshold`` failures in a row make it Down; a Down cluster is
Recovering after one good probe and Healthy after ``recoveryThreshold`` good probes in a
row. A blip shorter than the failure threshold never fails anything over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

Phase = Literal["Healthy", "Suspect", "Down", "Recovering"]


@dataclass(frozen=True)
class Health:
    """A cluster's health as persisted in ``ServingCluster.status``."""

    phase: Phase | None = None
    """None before the first probe."""
    failures: int = 0
    """Failed probes in a row."""
    successes: int = 0
    """Good probes in a row."""
    since: datetime | None = None
    """When the phase last changed."""


def next_health(health: Health, *, ok: bool, failure_threshold: int, recovery_threshold: int,
                now: datetime) -> Health:
    """The health after one probe result. Pure.

    ``ok`` is the probe outcome: API reachable within the timeout and answering.
    """
    failures = 0 if ok else health.failures + 1
    successes = health.successes + 1 if ok else 0
    phase: Phase
    if health.phase is None:
        phase = "Healthy" if ok else ("Down" if failures >= failure_threshold else "Suspect")
    elif health.phase in ("Healthy", "Suspect"):
        if ok:
            phase = "Healthy"
        else:
            phase = "Down" if failures >= failure_threshold else "Suspect"
    else:  # Down or Recovering
        if not ok:
            phase = "Down"
        else:
            phase = "Healthy" if successes >= recovery_threshold else "Recovering"
    since = health.since if phase == health.phase else now
    return replace(health, phase=phase, failures=failures, successes=successes, since=since)
