"""Trace variants for e2e/bench/scaling: weeks that do not repeat apps.yaml's weekly shape,
so a policy that learns the shape (pre-warm) is not rewarded for overfitting. Pure,
deterministic for a seed.

Each variant changes only the measured period ``[begin, end)`` of a base trace (generated
by e2e/workload.py); the history before it (what pre-warm reads) keeps the usual shape:

* ``base``: apps.yaml's shape, unchanged;
* ``shifted``: the measured days' arrivals are moved :data:`SHIFT_SECONDS` later within
  their day (a release, a time change, an offsite): the peaks come two hours after the
  history says;
* ``holiday``: the first measured weekday keeps only the weekend/weekday ratio of its
  calls (:data:`HOLIDAY_SHARE`): the history says peak, nobody comes;
* ``burst``: on the first measured day a surprise burst of :data:`BURST_SECONDS` between
  09:00 and 17:00 adds :data:`BURST_FACTOR` times the day's busiest 30 minutes' calls on
  top (an incident, a launch), with the app's own call sizes;
* ``growth``: demand grows through the measured period, from +:data:`GROWTH_START` to
  +:data:`GROWTH_END` (adoption), by repeating calls (the history is last week's level).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

DAY = 86400.0
VARIANTS = ("base", "shifted", "holiday", "burst", "growth")
SHIFT_SECONDS = 2 * 3600.0
HOLIDAY_SHARE = 0.25
BURST_SECONDS = 1800.0
BURST_FACTOR = 1.0
GROWTH_START, GROWTH_END = 0.15, 0.40

Arrivals = list[tuple[float, float]]


def variant(arrivals: Sequence[tuple[float, float]], name: str, *, begin: float, end: float,
            seed: int, app: str) -> Arrivals:
    """The ``name`` variant of ``arrivals`` (sorted ``(time, tokens)``) over the measured
    period ``[begin, end)`` (whole days from a midnight). Pure."""
    rng = random.Random(f"{seed}:{app}:{name}")
    before = [a for a in arrivals if a[0] < begin]
    during = [a for a in arrivals if begin <= a[0] < end]
    after = [a for a in arrivals if a[0] >= end]
    if name == "base":
        changed = during
    elif name == "shifted":
        changed = []
        for t, x in during:
            day = begin + ((t - begin) // DAY) * DAY
            changed.append((day + (t - day + SHIFT_SECONDS) % DAY, x))
    elif name == "holiday":
        first = _first_weekday(begin)
        changed = [(t, x) for t, x in during
                   if not first <= t < first + DAY or rng.random() < HOLIDAY_SHARE]
    elif name == "burst":
        changed = list(during) + _burst(during, begin, rng)
    elif name == "growth":
        changed = []
        for t, x in during:
            grow = GROWTH_START + (GROWTH_END - GROWTH_START) * (t - begin) / (end - begin)
            changed.append((t, x))
            if rng.random() < grow:
                changed.append((t + rng.random() * 60.0, x))
    else:
        raise ValueError(f"unknown trace variant {name!r}; one of {', '.join(VARIANTS)}")
    return before + sorted(a for a in changed if begin <= a[0] < end) + after


def _first_weekday(begin: float) -> float:
    """The first measured weekday's midnight (day 0 is a Monday)."""
    day = int(begin // DAY)
    while day % 7 >= 5:
        day += 1
    return day * DAY


def _burst(during: Sequence[tuple[float, float]], begin: float, rng: random.Random
           ) -> Arrivals:
    day = [a for a in during if begin <= a[0] < begin + DAY]
    if not day:
        return []
    times = [t for t, _ in day]
    busiest = max(bisect.bisect_left(times, t + BURST_SECONDS) - i
                  for i, t in enumerate(times))
    n = max(1, round(busiest * BURST_FACTOR))
    start = begin + 9 * 3600.0 + rng.random() * (8 * 3600.0 - BURST_SECONDS)
    sizes = [x for _, x in day]
    return [(start + rng.random() * BURST_SECONDS, rng.choice(sizes)) for _ in range(n)]
