"""The offline runs of e2e/bench/scaling: the apps as cases, every policy on one case, the
oracle's search, the sweep's statistics. Pure except :func:`cases` (reads the examples,
apps.yaml and the tier policy)."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from scaling_engine import (
    TICK,
    Measures,
    forecasts,
    occupancy_needed,
    simulate,
)
from scaling_policies import (
    Hpa,
    Oracle,
    Policy,
    Static,
    Twinhull,
    floor_schedule,
    hpa,
    hpa_tokens,
    keda_tokens_queue,
    static_replicas,
)
from scaling_sim import peak_rate
from servermodel import DEFAULT_TPOT_TARGET, TPOT_TARGETS, VllmParams
from traces import VARIANTS, variant

from twinhull.api.deployment import ModelDeploymentSpec, Scaling
from twinhull.api.tier import ServingTierSpec
from twinhull.policy import load_file
from workload import DAY, DEFAULT_LOAD_FACTOR, deployments, generate, load_apps

POLICIES = ("static", "hpa", "hpa_tokens", "keda", "twinhull", "twinhull_noprewarm",
            "twinhull_live", "oracle")
"""``hpa``: on the request rate, as before; ``twinhull_live``: the planner with only the
inputs today's live reader passes (no recent peak, no forecast check)."""
BASELINES = ("static", "hpa", "hpa_tokens", "keda")
HISTORY_DAYS = 7
WARMUP = 3600.0
"""Seconds every policy runs before the measured period (its windows fill)."""
SLO = 99.9
ORACLE_STEPS = 7
"""Bisection steps of the oracle's capacity factor (to ~1 %)."""


@dataclass
class Case:
    """One app as the benchmark sees it, over one trace."""

    name: str
    arrivals: list[tuple[float, float]]
    scaling: Scaling
    tier: ServingTierSpec
    tier_name: str
    zones: int
    gpus: int
    mean_tokens: float
    mode: str
    begin: float
    end: float
    forecast: list[float | None] = field(default_factory=list)
    said: list[float | None] = field(default_factory=list)

    @property
    def low(self) -> int:
        return self.scaling.min_replicas_per_zone * self.zones

    @property
    def high(self) -> int:
        return self.scaling.max_replicas_per_zone * self.zones

    @property
    def start(self) -> float:
        return self.begin - WARMUP

    @property
    def ttft_target(self) -> float:
        return float(self.tier.verification.max_latency_p95_seconds)

    @property
    def tpot_target(self) -> float:
        return TPOT_TARGETS.get(self.tier_name, DEFAULT_TPOT_TARGET)


def cases(*, apps: Path, examples: Path, tiers: Path | None, seed: int, load_factor: float,
          days: int, first_day: int = HISTORY_DAYS, trace: str = "base",
          overrides: Sequence[str] = ()) -> list[Case]:
    """The apps with a ModelDeployment in the examples, their traces (``first_day`` is the
    first measured day, after at least a week of history) and pre-warm forecasts. Above
    the default volumes (x150) every app's ``maxReplicasPerZone`` grows in proportion
    (:func:`max_scale`): at x300 aiops-platform's example maximum (2 a zone) is below what
    even the oracle needs."""
    manifests = deployments(examples)
    policy = load_file(tiers)
    out = []
    begin, end = first_day * DAY, (first_day + days) * DAY
    for app in load_apps(apps):
        md = manifests.get(app.name)
        if md is None:
            print(f"{app.name}: no ModelDeployment in {examples}, skipped", file=sys.stderr)
            continue
        spec = ModelDeploymentSpec.model_validate(md["spec"])
        fields = (spec.scaling or Scaling()).model_dump(by_alias=True, exclude_none=True)
        mode = str(fields.get("mode", "Enforce"))
        fields["mode"] = "Enforce"
        for override in overrides:
            target, _, setting = override.partition(":")
            key, _, value = setting.partition("=")
            if target in (app.name, "*"):
                fields[key] = yaml.safe_load(value)
        fields["maxReplicasPerZone"] = math.ceil(
            int(fields.get("maxReplicasPerZone", Scaling().max_replicas_per_zone))
            * max_scale(load_factor))
        scaling = Scaling.model_validate(fields)
        zones = sum(len(p.zones) for p in spec.placement)
        base = generate(app, HISTORY_DAYS + 1 + days, seed=seed, load_factor=load_factor,
                        first_day=first_day - HISTORY_DAYS - 1)
        arrivals = variant(base, trace, begin=begin, end=end, seed=seed, app=app.name)
        case = Case(app.name, arrivals, scaling, policy.resolve(spec.sla_tier), spec.sla_tier,
                    zones, spec.model.resources.gpus, app.tokens_mean, mode, begin, end)
        ticks = int((case.end - case.start) // TICK)
        case.forecast, case.said = forecasts(arrivals, start=case.start, ticks=ticks)
        out.append(case)
    return out


def max_scale(load_factor: float) -> float:
    """How much every app's maximum replicas grow at a volume: in proportion above x150,
    never below the example's. Pure."""
    return max(1.0, load_factor / DEFAULT_LOAD_FACTOR)


def scaled(scaling: Scaling, factor: float) -> Scaling:
    """The spec with its per-replica token target times ``factor`` (the sweep's knob)."""
    return scaling.model_copy(update={"target_tokens_per_second_per_replica": max(
        1, round(scaling.target_tokens_per_second_per_replica * factor))})


def policy_for(case: Case, name: str, factor: float = 1.0, *, respect_modes: bool = False
               ) -> tuple[Policy, int, str]:
    """The policy ``name`` for a case at ``factor`` times its targets: the policy, its
    initial count and a note. Not for the oracle."""
    s = scaled(case.scaling, factor)
    target = float(s.target_tokens_per_second_per_replica)
    headroom = float(case.tier.headroom_percent)
    window = float(case.tier.scale_down_stabilization_seconds)
    if respect_modes and case.mode != "Enforce":
        return Static(case.low), case.low, f"mode {case.mode}: held at the minimum"
    if name == "static":  # sized on the history's peak, as a capacity planner would
        n = static_replicas(peak_rate(case.arrivals, start=case.begin - HISTORY_DAYS * DAY,
                                      end=case.begin),
                            target=target, headroom_percent=headroom, low=case.low,
                            high=case.high)
        return Static(n), n, f"{n} replicas"
    if name == "hpa":
        p: Hpa = hpa(case.low, case.high, target_tokens=target, mean_tokens=case.mean_tokens)
        return p, case.low, f"target {p.target:.3f} req/s"
    if name == "hpa_tokens":
        p = hpa_tokens(case.low, case.high, target_tokens=target, headroom_percent=headroom,
                       down_window=window)
        return p, case.low, f"target {p.target:.0f} tok/s, window {window:g}s"
    if name == "keda":
        p = keda_tokens_queue(case.low, case.high, target_tokens=target,
                              headroom_percent=headroom,
                              target_queue=s.target_queue_per_replica, down_window=window)
        return p, case.low, f"{p.target:.0f} tok/s or {s.target_queue_per_replica} waiting"
    if name in ("twinhull", "twinhull_noprewarm", "twinhull_live"):
        t = Twinhull(s, case.tier, case.zones, prewarm=name != "twinhull_noprewarm",
                     adaptive=name != "twinhull_live")
        return t, case.low, f"target {target:.0f} tok/s"
    raise ValueError(f"unknown policy {name!r}")


def run(case: Case, name: str, *, params: VllmParams, cold_start: float,
        factor: float = 1.0, respect_modes: bool = False) -> tuple[Measures, str]:
    """One app under one policy."""
    if name == "oracle":
        return oracle(case, params=params, cold_start=cold_start)
    policy, initial, note = policy_for(case, name, factor, respect_modes=respect_modes)
    return simulate(case.arrivals, policy, params=params, ttft_target=case.ttft_target,
                    tpot_target=case.tpot_target, gpus=case.gpus, low=case.low,
                    high=case.high, initial=initial, cold_start=cold_start, start=case.start,
                    measure_from=case.begin, end=case.end, forecast=case.forecast,
                    forecast_said=case.said), note


def oracle_measures(case: Case, utilisation: float, *, params: VllmParams,
                    cold_start: float) -> Measures:
    """The oracle's schedule at ``utilisation`` of a replica's capacity, simulated."""
    ticks = int((case.end - case.start) // TICK)
    needed = occupancy_needed(case.arrivals, params=params, tpot=case.tpot_target / 2,
                              start=case.start, ticks=ticks, utilisation=utilisation,
                              low=case.low, high=case.high)
    schedule = floor_schedule(needed, round(cold_start / TICK))
    return simulate(case.arrivals, Oracle(schedule), params=params,
                    ttft_target=case.ttft_target, tpot_target=case.tpot_target,
                    gpus=case.gpus, low=case.low, high=case.high, initial=schedule[0],
                    cold_start=cold_start, start=case.start, measure_from=case.begin,
                    end=case.end)


def oracle(case: Case, *, params: VllmParams, cold_start: float) -> tuple[Measures, str]:
    """The cheapest schedule found that keeps the app at >= the SLO: the future requests
    are known; for a utilisation ``u`` of the KV cache each tick needs the replicas that
    hold its work in progress (:func:`occupancy_needed`); the cheapest schedule whose
    Ready replicas cover that given the cold start is :func:`floor_schedule`; ``u`` is
    bisected (:data:`ORACLE_STEPS` steps between 0.2 and 1.6) for the largest that still
    meets the SLO in the simulation."""
    lo, hi = 0.2, 1.6
    best = oracle_measures(case, lo, params=params, cold_start=cold_start)
    note = f"utilisation {lo:.0%}"
    if best.within_target < SLO:
        return best, note + " (SLO not met)"
    for _ in range(ORACLE_STEPS):
        mid = (lo + hi) / 2
        m = oracle_measures(case, mid, params=params, cold_start=cold_start)
        if m.within_target >= SLO:
            lo, best, note = mid, m, f"utilisation {mid:.0%}"
        else:
            hi = mid
    return best, note


# -- statistics ---------------------------------------------------------------------------

T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
"""Student's t, 97.5 % quantile, for 1..30 degrees of freedom."""


def mean_ci(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95 % confidence interval (Student's t; 0 for one
    value, inf-free). Pure."""
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return math.nan, math.nan
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return m, 0.0
    t = T975[len(xs) - 2] if len(xs) - 1 <= len(T975) else 1.96
    return m, t * statistics.stdev(xs) / math.sqrt(len(xs))


def cost_at_slo(points: Sequence[tuple[float, float]], slo: float = SLO) -> float:
    """GPU-hours (above floor) at exactly ``slo`` within target, from ``(cost, within)``
    points of a sweep: between the cheapest point meeting the SLO and the next cheaper one
    (linear); inf if none meets it. Pure."""
    pts = sorted(points)
    meeting = [i for i, (_, w) in enumerate(pts) if w >= slo]
    if not meeting:
        return math.inf
    i = meeting[0]
    if i == 0:
        return pts[0][0]
    (c0, w0), (c1, w1) = pts[i - 1], pts[i]
    if w1 == w0:
        return c1
    return c0 + (c1 - c0) * (slo - w0) / (w1 - w0)


def measures_dict(m: Measures) -> dict[str, Any]:
    return {"requests": m.requests, "within": m.within, "dropped": m.dropped,
            "gpu_hours": m.gpu_hours, "floor_hours": m.floor_hours,
            "reversals": m.reversals, "changes": m.changes, "ttft_late": m.ttft_late,
            "tpot_late": m.tpot_late}


def measures_of(d: dict[str, Any]) -> Measures:
    return Measures(**d)


VARIANT_NAMES = VARIANTS
