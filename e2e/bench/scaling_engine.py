"""The offline engine of e2e/bench/scaling on the continuous-batching server model
(e2e/bench/servermodel.py): one app under one policy in simulated time. Pure.

As e2e/bench/scaling_sim.py (which the ``--lab`` comparison keeps, on the lab's model):
every tick (15 s) the policy observes the 1 m rates, the queue and the running requests
and sets the total replica count; added replicas are Ready ``cold_start`` seconds later and
cost GPU-hours from their creation; removed ones are the starting ones first, then the
newest. Requests that arrive in the measured period are counted (those still running at
its end are followed to completion); GPU-hours and reversals over the measured period.

The pre-warm forecast (and what it said for the last lead window, so a policy can check
its own error) is read from the arrivals' 1 m token rate of the earlier days (yesterday and
a week ago, :func:`twinhull.plan.scaling.prewarm_windows`): the history is taken as served
as it arrived, so it need not be simulated.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from scaling_policies import Observation, Policy, sliding_max
from scaling_sim import reversals
from servermodel import VllmParams, VllmPool

from twinhull.plan.scaling import PREWARM_LEAD_SECONDS, prewarm_windows

TICK = 15.0
RATE_WINDOW = 60.0
PEAK_WINDOW = 600.0
"""The window of the recent peak rate a policy may read (max_over_time of the 1 m rate)."""
DRAIN = 1800.0
"""Seconds after the measured period during which its last requests may finish."""


@dataclass
class Measures:
    """What a policy achieved on one app (or on all, summed)."""

    requests: int = 0
    within: int = 0
    dropped: int = 0
    gpu_hours: float = 0.0
    floor_hours: float = 0.0
    """GPU-hours of the minimum replicas over the measured period."""
    reversals: int = 0
    changes: int = 0
    ttft_late: int = 0
    tpot_late: int = 0

    def __add__(self, other: Measures) -> Measures:
        return Measures(
            requests=self.requests + other.requests, within=self.within + other.within,
            dropped=self.dropped + other.dropped, gpu_hours=self.gpu_hours + other.gpu_hours,
            floor_hours=self.floor_hours + other.floor_hours,
            reversals=self.reversals + other.reversals, changes=self.changes + other.changes,
            ttft_late=self.ttft_late + other.ttft_late, tpot_late=self.tpot_late + other.tpot_late)

    def astuple(self) -> tuple[float, ...]:
        return (self.requests, self.within, self.dropped, self.gpu_hours, self.floor_hours,
                self.reversals, self.changes, self.ttft_late, self.tpot_late)

    @property
    def within_target(self) -> float:
        """Percent of the requests served within target (100 without requests)."""
        return 100.0 * self.within / self.requests if self.requests else 100.0

    @property
    def above_floor(self) -> float:
        """GPU-hours above the minimum replicas' floor."""
        return self.gpu_hours - self.floor_hours


def tick_tokens(arrivals: Sequence[tuple[float, float]], ticks: int, start: float = 0.0,
                tick: float = TICK) -> list[float]:
    """Tokens arriving in each tick from ``start``. Pure."""
    out = [0.0] * ticks
    for t, tokens in arrivals:
        k = int((t - start) // tick)
        if 0 <= k < ticks:
            out[k] += tokens
    return out


def forecasts(arrivals: Sequence[tuple[float, float]], *, start: float, ticks: int,
              tick: float = TICK) -> tuple[list[float | None], list[float | None]]:
    """Per tick from ``start``: the pre-warm forecast (the highest 1 m arrival rate in the
    windows of :func:`prewarm_windows`) and what the same windows said for the last lead
    time (``[now - lead, now]`` a day and a week ago), None without history. Pure."""
    w = max(1, round(RATE_WINDOW / tick))
    lead = round(PREWARM_LEAD_SECONDS / tick)
    back = max(a for a, _ in prewarm_windows())
    first = start - back - PREWARM_LEAD_SECONDS
    n = ticks + round((start - first) / tick)
    raw = tick_tokens(arrivals, n, first, tick)
    acc, rates = 0.0, []
    for k, x in enumerate(raw):
        acc += x - (raw[k - w] if k >= w else 0.0)
        rates.append(acc / RATE_WINDOW)
    peak = sliding_max(rates, lead + 1)  # max over [k - lead, k]
    offset = round((start - first) / tick)
    ahead: list[float | None] = []
    said: list[float | None] = []
    for k in range(ticks):
        j = k + offset
        a = [peak[j - round(d / tick) + lead] for d, _ in prewarm_windows()
             if j - round(d / tick) >= 0 and j - round(d / tick) + lead < len(peak)]
        b = [peak[j - round(d / tick)] for d, _ in prewarm_windows()
             if j - round(d / tick) - lead >= 0]
        ahead.append(max(a) if a else None)
        said.append(max(b) if b else None)
    return ahead, said


def simulate(arrivals: Sequence[tuple[float, float]], policy: Policy, *, params: VllmParams,
             ttft_target: float, tpot_target: float, gpus: int, low: int, high: int,
             initial: int, cold_start: float, start: float, measure_from: float, end: float,
             forecast: Sequence[float | None] | None = None,
             forecast_said: Sequence[float | None] | None = None,
             tick: float = TICK) -> Measures:
    """Run ``policy`` on one app's sorted ``(time, tokens)`` arrivals from ``start`` to
    ``end``, measuring from ``measure_from``; ``forecast``/``forecast_said`` per tick from
    ``start`` (see :func:`forecasts`). Pure."""
    ticks = int((end - start) // tick)
    window = max(1, round(RATE_WINDOW / tick))
    peak_ticks = max(1, round(PEAK_WINDOW / tick))
    pool = VllmPool(params, ttft_target, tpot_target, ready=initial, count_from=measure_from,
                    start=start)
    alive = [start] * initial
    served = [0.0] * (ticks + 1)
    arrived = [0] * (ticks + 1)
    rates: list[float] = []
    recent: deque[int] = deque()
    counts: list[int] = []
    gpu_seconds = 0.0
    i, n = 0, len(arrivals)
    while i < n and arrivals[i][0] < start:
        i += 1
    first = i
    for k in range(ticks):
        now = start + k * tick
        while i < n and arrivals[i][0] < now:
            pool.arrive(*arrivals[i])
            i += 1
        pool.advance(now)
        ready = sum(1 for r in alive if r <= now)
        if ready != pool.ready:
            pool.set_ready(now, ready)
        served[k], arrived[k] = pool.served, i - first
        back = max(0, k - window)
        span = (k - back) * tick or tick
        rates.append((served[k] - served[back]) / span)
        while recent and rates[recent[-1]] <= rates[k]:
            recent.pop()
        recent.append(k)
        while recent[0] <= k - peak_ticks:
            recent.popleft()
        obs = Observation(
            now=now, current=len(alive), ready=ready,
            requests_per_second=(arrived[k] - arrived[back]) / span,
            tokens_per_second=rates[k], waiting=pool.waiting,
            forecast_tokens_per_second=forecast[k] if forecast else None,
            tick=k, running=pool.running, tokens_per_second_peak=rates[recent[0]],
            forecast_said_tokens_per_second=forecast_said[k] if forecast_said else None)
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
    while i < n and arrivals[i][0] < end:
        pool.arrive(*arrivals[i])
        i += 1
    pool.advance(end + DRAIN)
    hours = (end - measure_from) / 3600
    return Measures(pool.requests, pool.within, pool.dropped, gpu_seconds / 3600,
                    low * gpus * hours, reversals(counts),
                    sum(1 for a, b in itertools.pairwise(counts) if a != b),
                    pool.ttft_late, pool.tpot_late)


def needed_replicas(tokens_per_tick: Sequence[float], *, capacity: float, low: int,
                    high: int, tick: float = TICK, window_ticks: int = 4) -> list[int]:
    """Replicas each tick's coming demand needs at ``capacity`` tokens per second per
    replica (the demand of the next ``window_ticks`` averaged). Pure."""
    n = len(tokens_per_tick)
    ahead, acc = [0.0] * n, 0.0
    for k in range(n - 1, -1, -1):
        acc += tokens_per_tick[k] - (tokens_per_tick[k + window_ticks]
                                     if k + window_ticks < n else 0.0)
        ahead[k] = acc
    per = window_ticks * tick * capacity
    return [min(max(math.ceil(d / per), low), high) for d in ahead]


def occupancy_needed(arrivals: Sequence[tuple[float, float]], *, params: VllmParams,
                     tpot: float, start: float, ticks: int, utilisation: float, low: int,
                     high: int, tick: float = TICK) -> list[int]:
    """Replicas each tick needs for the work in progress if every request started at once:
    a request holds its KV-cache tokens (prompt and generation) and a sequence slot from
    its arrival for its prefill (at a lone replica's speed) plus its generated tokens at
    ``tpot`` each; a tick needs its peak KV tokens over ``utilisation`` of a replica's
    cache (and its sequences over the sequence limit). Pure."""
    kv = [0.0] * (ticks + 1)
    seqs = [0.0] * (ticks + 1)
    alone, _ = params.step(0.0, 1.0, 0.0)
    prefill_rate = (params.max_num_batched_tokens / alone)
    for t, tokens in arrivals:
        if t < start:
            continue
        k = int((t - start) // tick)
        if k >= ticks:
            break
        prompt, gen = params.split(tokens)
        end = t + prompt / prefill_rate + gen * tpot
        e = min(ticks, int((end - start) // tick) + 1)
        kv[k] += prompt + gen
        kv[e] -= prompt + gen
        seqs[k] += 1
        seqs[e] -= 1
    out, held, running = [], 0.0, 0.0
    for k in range(ticks):
        held += kv[k]
        running += seqs[k]
        need = max(held / (utilisation * params.kv_cache_tokens),
                   running / params.max_num_seqs)
        out.append(min(max(math.ceil(need - 1e-9), low), high))
    return out
