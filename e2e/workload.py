"""Replayable request traces from the real per-app figures in ``workloads/apps.yaml``. Pure
(stdlib and PyYAML), deterministic for a seed.

What is taken from apps.yaml and what is assumed (the file gives daily totals, peak windows
and token means and maxima, not a request log):

* **volumes xF**: the real volumes are tiny (ide-assistant peaks at ~38 tokens/s, a
  hundredth of one replica), so every app's calls are multiplied by one ``load_factor``;
  the shapes, the ratios between apps and days, and the token distributions are apps.yaml's;
* **days**: day 0 is a Monday; weekdays get ``weekday_calls_per_day``, Saturday and Sunday
  ``weekend_calls_per_day``; where only ``calls_per_day`` (a 30-day mean) is given it is
  split into a weekday and a weekend figure with the mean weekend/weekday ratio of the
  apps that state both; ``daily_volatility`` is the relative standard deviation of a
  day's count around that figure;
* **within a day**: the peak windows get their ``share`` of the day's calls; where only
  ``peaks_share_total`` is given it is split by window length; where no share is given the
  peaks get :data:`DEFAULT_PEAK_SHARE`, split by window length; ``night_calls_per_day``
  (22:00-06:00) where given, else :data:`DEFAULT_NIGHT_SHARE`; the rest is spread evenly
  over 06:00-22:00 outside the peaks. On weekends the peaks carry half their share
  (fewer people keep office hours); inside a segment arrivals are uniform (Poisson);
* **patterns**: ``batch-pulses`` (CI-triggered code review) groups the peak calls into
  pulses every :data:`PULSE_SPACING` seconds, each call a few tens of seconds after its
  pulse starts; ``event-spikes`` (unit-test agent) sends almost nothing until a feature
  lands: once a week, on a weekday drawn from the seed, a burst of a size that keeps the
  app's mean calls per day, spread over :data:`EVENT_SECONDS`;
* **tokens per call** (prompt and generation together) are lognormal with the app's mean,
  its spread fitted so that the stated maximum is the expected largest of the 30 days'
  calls, truncated at that maximum and re-centred so the truncated mean is the stated mean.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import yaml

DAY = 86400
DEFAULT_LOAD_FACTOR = 150.0
"""Volumes x150. At the peaks aiops-platform (the most tokens a day) then needs about
three quarters of its 8 replicas (maxReplicasPerZone 2 x 4 zones), code-review's CI pulses
and unit-test-agent's bursts several replicas each; ide-assistant stays under its floor of
4 (1 per zone). One factor cannot give both critical apps several replicas per zone: at
the examples' targets aiops-platform's peak is 1.7 times ide-assistant's in replicas, and
its maximum is 2 per zone, so a larger factor saturates it under every policy."""
DEFAULT_PEAK_SHARE = 0.60
"""Share of a day's calls in the peak windows where apps.yaml names windows but no share."""
DEFAULT_NIGHT_SHARE = 0.02
"""Share of a day's calls at night (22:00-06:00) where apps.yaml gives no night figure."""
WEEKEND_PEAK_FACTOR = 0.5
"""On weekends the peak windows carry this fraction of their weekday share."""
PULSE_SPACING = 300.0
"""batch-pulses: seconds between CI pulses inside a peak window."""
PULSE_SPREAD = 60.0
"""batch-pulses: mean delay of a call after its pulse starts (exponential), seconds."""
EVENT_DAYS_PER_WEEK = 1
"""event-spikes: features land once a week, on a weekday drawn per week from the seed."""
EVENT_SECONDS = 7200.0
"""event-spikes: how long the burst after a feature lands lasts."""
EVENT_BACKGROUND_SHARE = 0.1
"""event-spikes: share of the app's calls outside events (a trickle on working hours)."""
NIGHT = ((0.0, 6 * 3600.0), (22 * 3600.0, DAY))
DAYTIME = (6 * 3600.0, 22 * 3600.0)


def _clock(text: str) -> float:
    hours, _, minutes = str(text).partition(":")
    return int(hours) * 3600.0 + int(minutes or 0) * 60.0


@dataclass(frozen=True)
class Peak:
    """A peak window, seconds of the day, and its share of the day's calls (None: unstated)."""

    start: float
    end: float
    share: float | None = None


@dataclass(frozen=True)
class App:
    """One application's figures from apps.yaml."""

    name: str
    weekday_calls: float
    weekend_calls: float
    tokens_mean: float
    tokens_max: float
    calls_30d: float
    volatility: float = 0.0
    night_calls: float | None = None
    pattern: str | None = None
    peaks: tuple[Peak, ...] = ()
    peaks_share_total: float | None = None


def parse_apps(doc: dict[str, Any]) -> list[App]:
    """The apps of a parsed apps.yaml. Pure."""
    raw = doc.get("apps") or []
    ratios = [a["weekend_calls_per_day"] / a["weekday_calls_per_day"] for a in raw
              if a.get("weekday_calls_per_day") and "weekend_calls_per_day" in a]
    weekend_ratio = sum(ratios) / len(ratios) if ratios else 1.0
    apps = []
    for a in raw:
        if "weekday_calls_per_day" in a:
            weekday, weekend = float(a["weekday_calls_per_day"]), float(
                a.get("weekend_calls_per_day", a["weekday_calls_per_day"]))
        else:  # a 30-day mean: 5 weekdays and 2 weekend days at the others' ratio
            mean = float(a.get("calls_per_day") or a.get("calls_30d", 0) / 30)
            weekday = 7 * mean / (5 + 2 * weekend_ratio)
            weekend = weekday * weekend_ratio
        apps.append(App(
            name=a["name"], weekday_calls=weekday, weekend_calls=weekend,
            tokens_mean=float(a["tokens_per_call_mean"]),
            tokens_max=float(a["tokens_per_call_max"]),
            calls_30d=float(a.get("calls_30d") or 30 * weekday),
            volatility=float(a.get("daily_volatility") or 0.0),
            night_calls=(float(a["night_calls_per_day"]) if "night_calls_per_day" in a
                         else None),
            pattern=a.get("pattern"),
            peaks=tuple(Peak(_clock(p["from"]), _clock(p["to"]),
                             float(p["share"]) if "share" in p else None)
                        for p in a.get("peaks") or []),
            peaks_share_total=(float(a["peaks_share_total"]) if "peaks_share_total" in a
                               else None)))
    return apps


def load_apps(path: Path) -> list[App]:
    """The apps of an apps.yaml file."""
    return parse_apps(yaml.safe_load(Path(path).read_text()))


# -- token sizes -------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenSizes:
    """Lognormal(mu, sigma) truncated at ``maximum``; its truncated mean is the app's mean."""

    mu: float
    sigma: float
    maximum: float

    def mean(self) -> float:
        """The truncated mean. Pure."""
        return _truncated_mean(self.mu, self.sigma, self.maximum)

    def sample(self, rng: random.Random) -> float:
        """One call's tokens (rejection sampling below the maximum)."""
        while True:
            x = rng.lognormvariate(self.mu, self.sigma)
            if x <= self.maximum:
                return max(1.0, x)


def _truncated_mean(mu: float, sigma: float, maximum: float) -> float:
    phi = NormalDist().cdf
    z = (math.log(maximum) - mu) / sigma
    return math.exp(mu + sigma * sigma / 2) * phi(z - sigma) / phi(z)


def token_sizes(app: App) -> TokenSizes:
    """Fit the app's token distribution: sigma such that the maximum is the (1 - 1/N)
    quantile of N = calls_30d calls, then mu so the mean after truncation holds. Pure."""
    mean, maximum = app.tokens_mean, app.tokens_max
    z = NormalDist().inv_cdf(1 - 1 / max(app.calls_30d, 10.0))
    ratio = math.log(maximum / mean)
    sigma = z - math.sqrt(z * z - 2 * ratio) if z * z > 2 * ratio else z / 2
    mu = math.log(mean) - sigma * sigma / 2
    for _ in range(60):  # raise mu until the truncated mean is the stated mean
        mu += math.log(mean / _truncated_mean(mu, sigma, maximum))
    return TokenSizes(mu, sigma, maximum)


# -- arrivals ----------------------------------------------------------------------------

def _peak_shares(app: App, weekend: bool) -> list[tuple[float, float, float]]:
    peaks = app.peaks
    if not peaks:
        return []
    if all(p.share is not None for p in peaks):
        shares = [float(p.share or 0.0) for p in peaks]
    else:
        total = app.peaks_share_total if app.peaks_share_total is not None else (
            DEFAULT_PEAK_SHARE)
        length = sum(p.end - p.start for p in peaks)
        shares = [total * (p.end - p.start) / length for p in peaks]
    factor = WEEKEND_PEAK_FACTOR if weekend else 1.0
    return [(p.start, p.end, s * factor) for p, s in zip(peaks, shares, strict=True)]


def _minus(span: tuple[float, float], holes: Iterable[tuple[float, float]]
           ) -> list[tuple[float, float]]:
    parts = [span]
    for h0, h1 in holes:
        parts = [q for a, b in parts for q in ((a, min(b, h0)), (max(a, h1), b)) if q[1] > q[0]]
    return parts


def day_profile(app: App, *, weekend: bool, calls: float) -> list[tuple[float, float, float]]:
    """Segments ``(start, end, share)`` of one day (seconds of the day) whose shares add
    up to 1: the peaks, the night, the rest of the daytime. Pure."""
    peaks = _peak_shares(app, weekend)
    night = (min(app.night_calls / calls, 1.0) if app.night_calls is not None and calls
             else DEFAULT_NIGHT_SHARE)
    rest = max(0.0, 1.0 - night - sum(s for _, _, s in peaks))
    day = _minus(DAYTIME, [(a, b) for a, b, _ in peaks])
    length = sum(b - a for a, b in day) or 1.0
    night_length = sum(b - a for a, b in NIGHT)
    out = [*peaks, *((a, b, night * (b - a) / night_length) for a, b in NIGHT),
           *((a, b, rest * (b - a) / length) for a, b in day)]
    total = sum(s for _, _, s in out)
    return [(a, b, s / total) for a, b, s in out if s > 0]


def day_calls(app: App, day: int, rng: random.Random, load_factor: float) -> int:
    """Calls on day ``day`` (0 is a Monday), with the app's day-to-day volatility."""
    base = app.weekend_calls if day % 7 >= 5 else app.weekday_calls
    noise = max(0.0, 1.0 + rng.gauss(0.0, app.volatility)) if app.volatility else 1.0
    return round(base * load_factor * noise)


def _uniform(rng: random.Random, segments: Sequence[tuple[float, float, float]], n: int,
             offset: float) -> list[float]:
    if n <= 0 or not segments:
        return []
    cum, acc = [], 0.0
    for _, _, s in segments:
        acc += s
        cum.append(acc)
    picks = rng.choices(range(len(segments)), cum_weights=cum, k=n)
    return [offset + segments[i][0] + rng.random() * (segments[i][1] - segments[i][0])
            for i in picks]


def _pulses(rng: random.Random, peaks: Sequence[tuple[float, float, float]], n: int,
            offset: float) -> list[float]:
    """Calls of the peak windows grouped into CI pulses."""
    starts = [offset + a + k * PULSE_SPACING + rng.random() * PULSE_SPACING / 3
              for a, b, _ in peaks for k in range(max(1, int((b - a) // PULSE_SPACING)))]
    weights = [s / max(1, int((b - a) // PULSE_SPACING)) for a, b, s in peaks
               for _ in range(max(1, int((b - a) // PULSE_SPACING)))]
    picks = rng.choices(starts, weights=weights, k=n) if starts and n > 0 else []
    return [t + rng.expovariate(1 / PULSE_SPREAD) for t in picks]


def _day_times(app: App, day: int, rng: random.Random, load_factor: float, seed: int
               ) -> list[float]:
    offset = day * DAY
    weekend = day % 7 >= 5
    if app.pattern == "event-spikes":
        event_day = random.Random(f"{seed}:{app.name}:week{day // 7}").randrange(5)
        mean_day = (5 * app.weekday_calls + 2 * app.weekend_calls) / 7
        times = _uniform(rng, [(9 * 3600.0, 18 * 3600.0, 1.0)],
                         round(mean_day * 7 / 5 * EVENT_BACKGROUND_SHARE * load_factor
                               * (0.0 if weekend else 1.0)), offset)
        if day % 7 == event_day:
            size = mean_day * 7 * (1 - EVENT_BACKGROUND_SHARE) / EVENT_DAYS_PER_WEEK
            size *= max(0.2, 1 + rng.gauss(0.0, app.volatility))
            start = 9 * 3600.0 + rng.random() * 7 * 3600.0
            times += _uniform(rng, [(start, start + EVENT_SECONDS, 1.0)],
                              round(size * load_factor), offset)
        return times
    n = day_calls(app, day, rng, load_factor)
    profile = day_profile(app, weekend=weekend, calls=n / load_factor)
    if app.pattern == "batch-pulses":
        peaks = _peak_shares(app, weekend)
        in_peaks = sum(s for _, _, s in peaks)
        k = sum(1 for _ in range(n) if rng.random() < in_peaks)
        others = [seg for seg in profile if (seg[0], seg[1]) not in
                  {(a, b) for a, b, _ in peaks}]
        return _pulses(rng, peaks, k, offset) + _uniform(rng, others, n - k, offset)
    return _uniform(rng, profile, n, offset)


def generate(app: App, days: int, *, seed: int = 1, load_factor: float = DEFAULT_LOAD_FACTOR,
             first_day: int = 0) -> list[tuple[float, float]]:
    """Arrivals ``(seconds since day 0 00:00, tokens)`` over days ``first_day`` to
    ``first_day + days - 1`` (day 0 is a Monday), sorted. Deterministic for a seed: a day
    is the same whichever window it is generated in."""
    sizes = token_sizes(app)
    out: list[tuple[float, float]] = []
    for day in range(first_day, first_day + days):
        rng = random.Random(f"{seed}:{app.name}:{day}")
        times = _day_times(app, day, rng, load_factor, seed)
        out += [(t, sizes.sample(rng)) for t in times]
    out.sort()
    return out


# -- deployments and replay --------------------------------------------------------------

def deployments(examples: Path) -> dict[str, dict[str, Any]]:
    """ModelDeployment manifests of a directory, by name (the apps' names). Reads files."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(Path(examples).glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "ModelDeployment":
                out[doc["metadata"]["name"]] = doc
    return out


def rates(arrivals: Sequence[tuple[float, float]], *, start: float, end: float, step: float
          ) -> list[float]:
    """Tokens per second arriving in each ``step`` from ``start`` to ``end``. Pure."""
    out = [0.0] * max(1, math.ceil((end - start) / step))
    for t, tokens in arrivals:
        if start <= t < end:
            out[int((t - start) // step)] += tokens / step
    return out


def trace_points(arrivals: dict[str, Sequence[tuple[float, float]]], *, start: float,
                 hours: float, compress: float = 1.0, step: float = 60.0
                 ) -> list[dict[str, Any]]:
    """``--trace`` points (``{at, deployment, tokensPerSecond}``, each held until the next)
    replaying ``hours`` from ``start`` (seconds since day 0) of each deployment's arrivals
    (``ns/name`` to arrivals), ``compress`` times faster: ``at`` is divided by it, the rates
    are the real ones (the day's shape passes faster, the load on a replica is real). A
    point is written only when the rate changes, and a last one of 0 at the window's end.
    Pure."""
    end = start + hours * 3600
    points: list[dict[str, Any]] = []
    for deployment, series in sorted(arrivals.items()):
        last = None
        for i, tps in enumerate(rates(series, start=start, end=end, step=step)):
            value = round(tps, 1)
            if value != last:
                points.append({"at": round(i * step / compress, 3), "deployment": deployment,
                               "tokensPerSecond": value})
                last = value
        # the end of the window: the replay (loadsim runs to its last point) covers it all
        points.append({"at": round(hours * 3600 / compress, 3), "deployment": deployment,
                       "tokensPerSecond": 0.0})
    return sorted(points, key=lambda p: (p["at"], p["deployment"]))


def replay_points(apps_file: Path, examples: Path, *, day: int, start: str, hours: float,
                  compress: float, step: float | None = None, seed: int = 1,
                  load_factor: float = DEFAULT_LOAD_FACTOR) -> list[dict[str, Any]]:
    """Trace points of all apps with a ModelDeployment in ``examples`` for ``hours`` from
    ``start`` ("HH:MM") on day ``day`` (0 is a Monday). Reads the files."""
    manifests = deployments(examples)
    begin = day * DAY + _clock(start)
    days = math.ceil((begin + hours * 3600) / DAY) - day
    series = {}
    for app in load_apps(apps_file):
        md = manifests.get(app.name)
        if md is None:
            continue
        key = f"{md['metadata']['namespace']}/{md['metadata']['name']}"
        series[key] = generate(app, days, seed=seed, load_factor=load_factor, first_day=day)
    return trace_points(series, start=begin, hours=hours, compress=compress,
                        step=step if step is not None else max(60.0, compress))
