"""How many primary replicas a ModelDeployment needs now, from measured load. Pure.

From demand (tokens per second, or queued requests, or a custom query's value), the
tier's headroom and the deployment's targets, with the stability rules users miss in
HPA and KEDA:

* **missing metrics never scale down**: without a reading the last decision holds and
  ``metrics_available`` is False (KEDA falls back to a fixed count or stalls);
* a **tolerance band** (10 %, HPA's default) ignores small changes;
* **scale-up is rate limited** to doubling or +4 replicas a decision (HPA's default policy);
* **scale-down waits** for the tier's stabilization window: the count only drops to the
  highest recommendation seen within it;
* **queue depth corrects upward**: waiting requests beyond the per-replica target add
  replicas even when token throughput looks fine;
* **pre-warm**: a demand forecast for the coming minutes (e.g. the same time on previous
  days) raises the floor before a recurring peak arrives; given what the same forecast
  said for the last minutes, it **checks its own error** and scales the forecast by the
  measured/forecast ratio (a holiday or a moved peak withdraws it, growth raises it);
* **pre-warm stands down after a miss**: when the forecast's windows said a peak that does
  not come (under :data:`FORECAST_MISS_RATIO` of it, and by at least
  :data:`FORECAST_MISS_REPLICAS` replicas' targets) for
  :data:`FORECAST_MISS_CONFIRM_SECONDS`, the forecast is ignored until
  :data:`FORECAST_MISS_HOLD_SECONDS` after the peak went missing: a day that does not
  follow the earlier days (a holiday, a moved peak) is not pre-warmed for its later peaks
  either, and the next day's are trusted again;
* **headroom adapts to measured variability**: given the recent peak rate, the headroom
  is the recent peak's excess over the rate now, between the tier's headroom and
  :data:`ADAPTIVE_MAX_FACTOR` times it: bursty demand keeps more spare capacity than the
  tier's fixed figure. (Going below the tier's figure for steady demand was tried in
  e2e/bench/scaling and lost: at the start of a ramp the 10 m peak is the rate now, so
  the demand looks steady exactly when it is about to grow.)
* **a queue behind full replicas** (given the running requests): the replicas that
  would run the waiting requests too at the concurrency they run now;
* ``metric: queue`` **keeps a token floor**: the queue empties between bursts while the
  running batch is still full; with a token reading the count never drops below what the
  tokens need (it collapsed to the minimum between CI pulses before).

The p95 latency in :class:`Load` is reported, not decided on. A latency trigger (p95
above the tier's target raises the count by p95/target, 1.2-2x, held while a raise is
starting) was tried in e2e/bench/scaling and lost: in the server model time to first
token stays far under target until the KV cache or sequence limit fills and then jumps
within a tick, at the same time as the queue, so it added 0.4-0.8 GPU-hours a day at
x300 for +0.004 points within target and crossed 99.9 % in no app x seed case of 50; the
misses are bursts that land during cold starts.

Time is an input; the state it needs (the current count and the recent
recommendations, stored only when they change) is kept in status by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from twinhull.api.deployment import Scaling
from twinhull.api.tier import ServingTierSpec
from twinhull.plan.shares import apportion

TOLERANCE = 0.10
"""Relative change below which the count is kept (HPA's default tolerance)."""
UP_FACTOR, UP_STEP = 2.0, 4
"""A decision may at most double the count or add 4 replicas, whichever is more."""
PREWARM_LEAD_SECONDS = 600
"""How far ahead pre-warm looks: a large model's replica takes minutes to load."""
ADAPTIVE_MAX_FACTOR = 2.0
"""Adaptive headroom is at most this many times the tier's."""
FORECAST_RATIO_MAX = 2.0
"""Pre-warm's error check scales a forecast by at most this factor up (growth)."""
FORECAST_RATIO_SLACK = 0.1
"""Fraction of a replica's target added to both sides of the measured/forecast ratio, so
quiet periods (near-zero rates) do not make it swing."""
FORECAST_MISS_RATIO = 0.5
"""A forecast is a miss when what came is under this share of what it said (its ratio)..."""
FORECAST_MISS_REPLICAS = 2.0
"""...and short of it by at least this many replicas' targets (quiet hours never miss)."""
FORECAST_MISS_HOLD_SECONDS = 43200
"""How long pre-warm stands down after a miss: the rest of a day that does not follow the
earlier days' shape."""
FORECAST_MISS_CONFIRM_SECONDS = 300
"""How long the peak must stay missing before pre-warm stands down: a peak that comes a
few minutes later than on the earlier days is not a miss."""
PREWARM_LOOKBACK_DAYS = (1, 7)
"""The earlier days whose same time forecasts now: yesterday, and a week ago."""
DAY_SECONDS = 86400


def prewarm_windows(period: float = DAY_SECONDS, lead: float = PREWARM_LEAD_SECONDS,
                    days: Sequence[int] = PREWARM_LOOKBACK_DAYS) -> list[tuple[float, float]]:
    """The past windows whose demand forecasts ``[now, now + lead)``: for each lookback
    day ``d``, seconds before now of its start and end, ``(d*period, d*period - lead)``.
    The forecast is the highest demand measured in any of them. Pure."""
    return [(d * period, d * period - lead) for d in days if d * period > lead]


@dataclass(frozen=True)
class Load:
    """Measured load over all serving zones; None where the metric is unavailable."""

    tokens_per_second: float | None = None
    waiting: float | None = None
    custom: float | None = None
    forecast_tokens_per_second: float | None = None
    """Expected demand shortly ahead (pre-warm); None when there is no history."""
    running: float | None = None
    """Requests being served (reported, not decided on)."""
    latency_p95_seconds: float | None = None
    """95th percentile latency (time to first token where the runtime has it; reported)."""
    zones: Mapping[str, float] = field(default_factory=dict)
    """Tokens per second per ``cluster/zone`` (reported: the decision is on the total)."""
    tokens_per_second_peak: float | None = None
    """The highest 1 m token rate of the last 10 minutes (``max_over_time`` of the rate):
    with it the headroom grows with the measured variability; None: the tier's headroom."""
    forecast_said_tokens_per_second: float | None = None
    """What the pre-warm forecast's windows said for the last lead time (the same query
    shifted by the lead): with it the forecast is scaled by the measured/forecast ratio,
    and a peak that does not come stands pre-warm down."""


@dataclass(frozen=True)
class Recommendation:
    """A recommended count at a time (kept for the stabilization window)."""

    time: datetime
    replicas: int


@dataclass(frozen=True)
class ScaleResult:
    """The decided total, why, and from what."""

    replicas: int
    reason: str
    metrics_available: bool
    history: tuple[Recommendation, ...]
    inputs: dict[str, Any] = field(default_factory=dict)
    forecast_missed_at: datetime | None = None
    """Since when the earlier days' peak has been missing, while that matters (kept in
    status by the caller): pre-warm stands down once it is confirmed."""


def headroom_percent(tier: ServingTierSpec, load: Load) -> float:
    """The headroom applied to the measured rate: the tier's, or with a recent peak
    reading the peak's excess over the rate now, between the tier's and
    :data:`ADAPTIVE_MAX_FACTOR` times it. Pure."""
    rate, peak = load.tokens_per_second, load.tokens_per_second_peak
    if peak is None or rate is None:
        return float(tier.headroom_percent)
    excess = 100.0 * (peak / rate - 1) if rate > 0 else float(tier.headroom_percent)
    return min(max(excess, float(tier.headroom_percent)),
               ADAPTIVE_MAX_FACTOR * tier.headroom_percent)


def forecast_ratio(spec: Scaling, load: Load) -> float:
    """How far the pre-warm forecast was off over the last lead time: the measured recent
    peak (or rate) over what the forecast's windows said for it, each plus
    :data:`FORECAST_RATIO_SLACK` of a replica's target, at most
    :data:`FORECAST_RATIO_MAX`; 1 without the readings. Pure."""
    said = load.forecast_said_tokens_per_second
    seen = (load.tokens_per_second_peak if load.tokens_per_second_peak is not None
            else load.tokens_per_second)
    if said is None or seen is None:
        return 1.0
    slack = FORECAST_RATIO_SLACK * spec.target_tokens_per_second_per_replica
    return min((seen + slack) / (said + slack), FORECAST_RATIO_MAX)


def forecast_missed(spec: Scaling, load: Load) -> bool:
    """Whether the forecast's windows said a peak for the last lead time that did not come:
    a ratio under :data:`FORECAST_MISS_RATIO` and a shortfall of at least
    :data:`FORECAST_MISS_REPLICAS` replicas' targets. Pure."""
    said = load.forecast_said_tokens_per_second
    seen = (load.tokens_per_second_peak if load.tokens_per_second_peak is not None
            else load.tokens_per_second)
    if load.forecast_tokens_per_second is None or said is None or seen is None:
        return False
    short = said - seen
    return (forecast_ratio(spec, load) < FORECAST_MISS_RATIO
            and short >= FORECAST_MISS_REPLICAS * spec.target_tokens_per_second_per_replica)


def _missing_since(spec: Scaling, load: Load, since: datetime | None, now: datetime
                   ) -> tuple[datetime | None, bool]:
    """Since when the earlier days' peak has been missing (kept by the caller, None: it is
    not), and whether pre-warm stands down now: once the peak has been missing for
    :data:`FORECAST_MISS_CONFIRM_SECONDS`, until :data:`FORECAST_MISS_HOLD_SECONDS` after
    it went missing. A peak that comes before the confirmation clears it. Pure."""
    age = None if since is None else (now - since).total_seconds()
    if age is not None and 0 <= age < FORECAST_MISS_HOLD_SECONDS:
        if age >= FORECAST_MISS_CONFIRM_SECONDS:
            return since, True
        return (since if forecast_missed(spec, load) else None), False
    return (now if forecast_missed(spec, load) else None), False


def _in_progress(load: Load, current: int) -> float:
    """With requests waiting while the replicas run ``running`` (their KV cache or
    sequence limit is full: a server admits while it can), the replicas that would run
    them all at the same concurrency: ``current x (running + waiting) / running``; 0
    without both readings or a queue."""
    if not current or not load.running or not load.waiting or load.waiting <= 0:
        return 0.0
    return current * (load.running + load.waiting) / load.running


def _needed(spec: Scaling, tier: ServingTierSpec, load: Load, current: int
            ) -> float | None:
    """Replicas the load asks for (a real number, before rounding and the stability
    rules); None without a reading."""
    headroom = 1 + headroom_percent(tier, load) / 100
    target = spec.target_tokens_per_second_per_replica
    tokens = None
    if load.tokens_per_second is not None:
        tokens = load.tokens_per_second * headroom / target
    if spec.metric == "tokens":
        if tokens is None:
            return None
        needed = tokens
        if load.waiting is not None:  # queued work beyond the target adds replicas
            excess = load.waiting - spec.target_queue_per_replica * max(current, 1)
            if excess > 0:
                needed = max(needed, current + excess / spec.target_queue_per_replica)
        needed = max(needed, _in_progress(load, current))
    elif spec.metric == "queue":
        if load.waiting is None:
            return None
        needed = load.waiting / spec.target_queue_per_replica
        if tokens is not None:  # the queue empties between bursts, the batch does not
            needed = max(needed, tokens)
        needed = max(needed, _in_progress(load, current))
    else:
        if load.custom is None:
            return None
        needed = load.custom * headroom / target
    if load.forecast_tokens_per_second is not None:
        ahead = load.forecast_tokens_per_second * forecast_ratio(spec, load)
        needed = max(needed, ahead * (1 + tier.headroom_percent / 100) / target)
    return needed


def _prewarming(spec: Scaling, tier: ServingTierSpec, load: Load, current: int) -> bool:
    """Whether the forecast, not the load measured now, sets the count."""
    if load.forecast_tokens_per_second is None:
        return False
    now_only = _needed(spec, tier, replace(load, forecast_tokens_per_second=None), current)
    return now_only is None or now_only < (_needed(spec, tier, load, current) or 0)


def recommend(spec: Scaling, tier: ServingTierSpec, load: Load, *, current: int, zones: int,
              history: Sequence[Recommendation], now: datetime,
              forecast_missed_at: datetime | None = None) -> ScaleResult:
    """The total primary replicas to run now over ``zones`` serving zones;
    ``forecast_missed_at``: since when the peak pre-warm forecast has been missing (the
    last result's, kept by the caller). Pure."""
    low, high = spec.min_replicas_per_zone * zones, spec.max_replicas_per_zone * zones
    window = tier.scale_down_stabilization_seconds
    within = [r for r in history if (now - r.time).total_seconds() <= window]
    older = [r for r in history if (now - r.time).total_seconds() > window]
    # the newest recommendation from before the window shows the window is covered
    kept = (*older[-1:], *within)
    missed, standing_down = _missing_since(spec, load, forecast_missed_at, now)
    planned = load if not standing_down else replace(
        load, forecast_tokens_per_second=None, forecast_said_tokens_per_second=None)
    needed = _needed(spec, tier, planned, current)
    inputs: dict[str, Any] = {
        "metric": spec.metric, "tokensPerSecond": load.tokens_per_second,
        "waiting": load.waiting, "custom": load.custom,
        "forecastTokensPerSecond": load.forecast_tokens_per_second, "current": current,
        "running": load.running, "latencyP95Seconds": load.latency_p95_seconds,
        "tokensPerSecondByZone": {k: round(v, 1) for k, v in sorted(load.zones.items())},
        "headroomPercent": round(headroom_percent(tier, load), 1), "bounds": [low, high],
        "tokensPerSecondPeak": load.tokens_per_second_peak,
        "forecastRatio": round(forecast_ratio(spec, load), 3),
    }
    stood_down = ""
    if missed is not None:
        inputs["forecastMissedAt"] = missed.isoformat()
        inputs["preWarmStoodDown"] = standing_down
        if standing_down and load.forecast_tokens_per_second is not None:
            stood_down = (f"; pre-warm stands down: the earlier days' peak has been missing "
                          f"since {missed:%H:%M} UTC")
    if needed is None:
        held = _bounded(current, low, high)
        return ScaleResult(held, "no metrics: holding the last decision (never scaling "
                           "down without a reading)" + _clamped(current, held, low, high),
                           False, kept, inputs, missed)
    inputs["needed"] = round(needed, 2)
    if current and abs(needed / current - 1) <= TOLERANCE:
        wanted = current  # HPA's rule: the ratio to the current count, before rounding
    else:
        wanted = min(max(math.ceil(needed), low), high)
    # Recommendations are a step function, stored only when they change (so a steady
    # deployment writes nothing): the step active at the window's start counts too.
    latest = Recommendation(now, wanted)
    history_now = kept if kept and kept[-1].replicas == wanted else (*kept, latest)
    recent = (*older[-1:], *within, latest)
    if wanted > current:
        limit = max(math.ceil(current * UP_FACTOR), current + UP_STEP)
        result = min(wanted, limit)
        why = (f"load needs {needed:.1f} replicas" + (f"; limited to {result} this step"
                                                  if result < wanted else ""))
        if _prewarming(spec, tier, planned, current):
            why = (f"pre-warm: the same time on earlier days needed {needed:.1f} replicas"
                   + (f"; limited to {result} this step" if result < wanted else ""))
    elif wanted < current and not older:
        result = current
        why = (f"load needs {needed:.1f} replicas; holding {current} until the {window}s "
               "stabilization window has recommendations")
    elif wanted < current:
        result = max(r.replicas for r in recent)  # the highest within the window
        why = (f"load needs {needed:.1f} replicas; scaling down to {result}, the highest "
               f"recommendation in the last {window}s" if result < current else
               f"load needs {needed:.1f} replicas; holding {current} for the {window}s "
               "stabilization window")
        result = min(result, current)
    else:
        result = current
        why = (f"load needs {needed:.1f} replicas: within {TOLERANCE:.0%} of {current}, "
               "unchanged")
    # Every branch above can keep ``current`` (tolerance, stabilization, rate limit): the
    # spec's bounds win over all of them, so a lowered maximum or raised minimum holds.
    bounded = _bounded(result, low, high)
    return ScaleResult(bounded, why + stood_down + _clamped(result, bounded, low, high), True,
                       history_now, inputs, missed)


def _bounded(replicas: int, low: int, high: int) -> int:
    """``replicas`` within ``[low, high]`` (the maximum wins if they cross)."""
    return max(0, min(max(replicas, low), high))


def _clamped(before: int, after: int, low: int, high: int) -> str:
    """The reason's suffix when the bounds changed the outcome."""
    if before == after:
        return ""
    return (f"; kept within minReplicasPerZone..maxReplicasPerZone x zones = {low}..{high}: "
            f"{after}")


def spread(total: int, cells: Sequence[tuple[str, str]], weights: dict[str, int], *,
           low: int, high: int) -> dict[tuple[str, str], int]:
    """Split a total over (cluster, zone) cells: clusters by traffic weight, zones evenly,
    each zone within [low, high]. Pure."""
    clusters = sorted({c for c, _ in cells})
    by_cluster = apportion(total, {c: float(weights.get(c, 0)) for c in clusters})
    out: dict[tuple[str, str], int] = {}
    for cluster in clusters:
        zones = [cz for cz in cells if cz[0] == cluster]
        share = apportion(by_cluster[cluster], {f"{c}\0{z}": 1.0 for c, z in zones})
        for c, z in zones:
            out[(c, z)] = min(max(share[f"{c}\0{z}"], low), high)
    return out
