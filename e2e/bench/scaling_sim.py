"""The offline engine of e2e/bench/scaling: one app under one policy in simulated time,
with the data-plane simulator's model (e2e/dataplane.py :class:`Pool`). Pure.

Every tick (15 s) the policy observes the 1 m rates and the queue and sets the total
replica count; replicas it adds start ``cold_start`` seconds later (model loading) and
count for GPU-hours from the moment they are created; replicas it removes are the ones
still starting first, then the newest (a ReplicaSet deletes not-ready pods first).
Requests, within-target requests and dropped requests are counted for requests arriving
in the measured period; GPU-hours and reversals over the measured period."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

from scaling_policies import Observation, Policy

from dataplane import Pool, ServerModel, within_target_share
from twinhull.plan.scaling import prewarm_windows

TICK = 15.0
"""Seconds between decisions: the HPA's sync period; twinhull decides at least as often."""
RATE_WINDOW = 60.0
"""The window of every measured rate: the operator's ``--rate-window`` default (1m)."""


@dataclass
class Measures:
    """What a policy achieved on one app (or on all, summed)."""

    requests: int = 0
    within: int = 0
    dropped: int = 0
    gpu_hours: float = 0.0
    reversals: int = 0
    changes: int = 0

    def __add__(self, other: Measures) -> Measures:
        return Measures(self.requests + other.requests, self.within + other.within,
                        self.dropped + other.dropped, self.gpu_hours + other.gpu_hours,
                        self.reversals + other.reversals, self.changes + other.changes)

    @property
    def within_target(self) -> float:
        """Percent of the requests served within the latency target."""
        return within_target_share(self.within, self.requests)


def measures_from_counters(before: dict[str, float], after: dict[str, float], *,
                           gpu_hours: float, reversals: int) -> Measures:
    """Measures from two readings of loadsim's counters (``requests``: all requests
    arrived, ``twinhull_sim_requests_total``; ``within``:
    ``twinhull_sim_requests_within_target_total``; ``dropped``:
    ``twinhull_sim_dropped_requests_total``) for a lab run. Pure."""
    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)
    return Measures(round(delta("requests")), round(delta("within")), round(delta("dropped")),
                    gpu_hours, reversals)


def reversals(counts: Sequence[int]) -> int:
    """Direction changes (up then down, or down then up) of a replica count. Pure."""
    out, last = 0, 0
    for a, b in itertools.pairwise(counts):
        if b == a:
            continue
        direction = 1 if b > a else -1
        if last and direction != last:
            out += 1
        last = direction
    return out


def tick_tokens(arrivals: Sequence[tuple[float, float]], ticks: int, tick: float = TICK
                ) -> list[float]:
    """Tokens arriving in each tick. Pure."""
    out = [0.0] * ticks
    for t, tokens in arrivals:
        k = int(t // tick)
        if 0 <= k < ticks:
            out[k] += tokens
    return out


def simulate(arrivals: Sequence[tuple[float, float]], policy: Policy, *, model: ServerModel,
             target_seconds: float, gpus: int, low: int, high: int, initial: int,
             cold_start: float, measure_from: float, end: float, tick: float = TICK,
             forecast_window: float = RATE_WINDOW, rate_window: float = RATE_WINDOW,
             trace: Callable[[float, int, int], None] | None = None) -> Measures:
    """Run ``policy`` on one app's ``arrivals`` (sorted ``(time, tokens)``) from 0 to
    ``end`` seconds; measure from ``measure_from``. The pre-warm forecast is the highest
    rate over ``forecast_window`` in the windows of ``prewarm_windows()`` (the operator's
    query uses its rate window, 1 m). Pure (``trace`` is called with
    ``(now, replicas, ready)`` at each tick if given)."""
    ticks = int(end // tick)
    window = max(1, round(rate_window / tick))
    pool = Pool(model, target_seconds, ready=initial, count_from=measure_from)
    alive = [0.0] * initial  # when each replica is (or was) Ready
    served = [0.0] * (ticks + 1)
    arrived = [0] * (ticks + 1)
    rates = [0.0] * (ticks + 1)
    slow = [0.0] * (ticks + 1)
    slow_window = max(1, round(forecast_window / tick))
    windows = [(round(a / tick), round(b / tick)) for a, b in prewarm_windows()]
    counts: list[int] = []
    gpu_seconds = 0.0
    i, n = 0, len(arrivals)
    for k in range(ticks):
        now = k * tick
        while i < n and arrivals[i][0] < now:
            pool.arrive(*arrivals[i])
            i += 1
        pool.advance(now)
        ready = sum(1 for r in alive if r <= now)
        if ready != pool.ready:
            pool.set_ready(now, ready)
        served[k], arrived[k] = pool.served, i
        back = max(0, k - window)
        span = (k - back) * tick or tick
        rates[k] = (served[k] - served[back]) / span
        slow_back = max(0, k - slow_window)
        slow[k] = (served[k] - served[slow_back]) / ((k - slow_back) * tick or tick)
        forecast = None
        if policy.wants_forecast:
            seen = [max(slow[k - a:k - b + 1]) for a, b in windows if k - a >= 0]
            forecast = max(seen) if seen else None
        obs = Observation(now=now, current=len(alive), ready=ready,
                          requests_per_second=(arrived[k] - arrived[back]) / span,
                          tokens_per_second=rates[k], waiting=pool.waiting,
                          forecast_tokens_per_second=forecast, tick=k)
        desired = min(max(policy.decide(obs), low), high)
        if desired > len(alive):
            alive += [now + cold_start] * (desired - len(alive))
        elif desired < len(alive):
            alive = sorted(alive)[:desired]
        ready = sum(1 for r in alive if r <= now)
        if ready != pool.ready:
            pool.set_ready(now, ready)
        if now >= measure_from:
            counts.append(len(alive))
            gpu_seconds += len(alive) * gpus * tick
        if trace is not None:
            trace(now, len(alive), ready)
    while i < n and arrivals[i][0] < end:
        pool.arrive(*arrivals[i])
        i += 1
    pool.advance(end)
    return Measures(pool.requests, pool.within, pool.dropped, gpu_seconds / 3600,
                    reversals(counts), sum(1 for a, b in itertools.pairwise(counts) if a != b))


def peak_rate(arrivals: Sequence[tuple[float, float]], *, start: float, end: float,
              window: float = RATE_WINDOW) -> float:
    """The highest tokens-per-second rate over ``window`` (sampled every tick) between
    ``start`` and ``end``: the peak a capacity planner reads off a dashboard. Pure."""
    ticks = tick_tokens([(t - start, x) for t, x in arrivals if start <= t < end],
                        math.ceil((end - start) / TICK))
    w = max(1, round(window / TICK))
    best = acc = 0.0
    for k, x in enumerate(ticks):
        acc += x - (ticks[k - w] if k >= w else 0.0)
        best = max(best, acc / window)
    return best
