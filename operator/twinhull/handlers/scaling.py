"""The load reader: one batch of Prometheus queries per runtime for the whole fleet, on
an interval, off the event loop. Effects: Prometheus reads, memory."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.api.deployment import Runtime as ServingRuntime
from twinhull.handlers.runtime import Key, Runtime, now
from twinhull.metrics.presets import (
    FLEET,
    FLEET_CELLS,
    fleet_demand_forecast,
    fleet_demand_tokens,
    fleet_error_percent,
    fleet_latency_p95,
    fleet_running,
    fleet_waiting,
)
from twinhull.metrics.prometheus import MetricsUnavailable, Prometheus
from twinhull.plan.scaling import Load, prewarm_windows

log = logging.getLogger(__name__)


def _specs(rt: Runtime) -> dict[Key, ModelDeploymentSpec]:
    out = {}
    for key, body in rt.deployments.items():
        try:
            out[key] = ModelDeploymentSpec.model_validate(body.get("spec") or {})
        except ValueError:
            continue
    return out


def _scaled(specs: dict[Key, ModelDeploymentSpec]) -> dict[Key, ModelDeploymentSpec]:
    return {k: s for k, s in specs.items() if s.scaling is not None and s.scaling.mode != "Off"}


def read_health(prometheus: Prometheus, specs: dict[Key, ModelDeploymentSpec], *,
                window: str, failures: str | None
                ) -> dict[Key, tuple[float | None, float | None]]:
    """Error percent and p95 latency of every ModelDeployment, for rollout verification:
    two queries per runtime in use (one without a failure metric). Effects: HTTP
    requests. Raises :class:`MetricsUnavailable`."""
    errors: dict[Key, float] = {}
    latency: dict[Key, float] = {}
    for runtime in sorted({s.model.runtime for s in specs.values()}):
        if failures:
            reading = prometheus.vector(fleet_error_percent(runtime, failures, window), by=FLEET)
            errors.update({(k[0], k[1]): v for k, v in reading.values.items()})
        slow = prometheus.vector(fleet_latency_p95(runtime, window), by=FLEET)
        latency.update({(k[0], k[1]): v for k, v in slow.values.items()})
    return {key: (errors.get(key), latency.get(key)) for key in specs
            if key in errors or key in latency}


def read_loads(prometheus: Prometheus, specs: dict[Key, ModelDeploymentSpec], *,
               window: str = "1m", prewarm: list[tuple[float, float]] | None = None,
               latency: dict[Key, float] | None = None) -> dict[Key, Load]:
    """Read the load of every scaled ModelDeployment: three queries per runtime in use
    (demand per zone, waiting, running), one per pre-warm window and runtime (the highest
    demand at the same time on earlier days, for ``metric: tokens``), one per custom
    query. ``latency`` is :func:`read_health`'s p95, reported with the load, not read
    again. A deployment without series gets no Load (missing, not zero).
    Effects: HTTP requests. Raises :class:`MetricsUnavailable`."""
    loads: dict[Key, Load] = {}
    runtimes: set[ServingRuntime] = {s.model.runtime for s in specs.values()
                                     if s.scaling is not None and s.scaling.metric != "custom"}
    tokens: dict[Key, float] = {}
    zones: dict[Key, dict[str, float]] = {}
    waiting: dict[Key, float] = {}
    running: dict[Key, float] = {}
    latency = latency or {}
    forecast: dict[Key, float] = {}
    for runtime in sorted(runtimes):
        demand = prometheus.vector(fleet_demand_tokens(runtime, window, by=FLEET_CELLS),
                                   by=FLEET_CELLS)
        for (ns, name, cluster, zone), v in demand.values.items():
            tokens[(ns, name)] = tokens.get((ns, name), 0.0) + v
            zones.setdefault((ns, name), {})[f"{cluster}/{zone}"] = v
        queued = prometheus.vector(fleet_waiting(runtime), by=FLEET)
        waiting.update({(k[0], k[1]): v for k, v in queued.values.items()})
        busy = prometheus.vector(fleet_running(runtime), by=FLEET)
        running.update({(k[0], k[1]): v for k, v in busy.values.items()})
        for start, end in prewarm or []:
            past = prometheus.vector(fleet_demand_forecast(runtime, window, start_s=start,
                                                           end_s=end), by=FLEET)
            for k, v in past.values.items():
                forecast[(k[0], k[1])] = max(v, forecast.get((k[0], k[1]), 0.0))
    for key, spec in specs.items():
        assert spec.scaling is not None
        if spec.scaling.metric == "custom" and spec.scaling.query:
            reading = prometheus.vector(spec.scaling.query, by=())
            custom = reading.values.get(())
            if custom is not None:
                loads[key] = Load(custom=custom)
        elif key in tokens or key in waiting:
            ahead = (forecast.get(key) if spec.scaling.metric == "tokens"
                     and spec.scaling.pre_warm else None)
            loads[key] = Load(tokens_per_second=tokens.get(key), waiting=waiting.get(key),
                              forecast_tokens_per_second=ahead, running=running.get(key),
                              latency_p95_seconds=latency.get(key),
                              zones=zones.get(key, {}))
    return loads


async def load_loop(rt: Runtime) -> None:
    """Read load on the interval; wake the fleet when it changed. On failure, forget the
    loads (the planner then holds every decision and says so)."""
    if rt.settings.prometheus_url is None:
        return
    prometheus = Prometheus(rt.settings.prometheus_url, timeout=5.0)
    settings = rt.settings
    prewarm = (prewarm_windows(settings.prewarm_period_seconds, settings.prewarm_lead_seconds)
               if settings.prewarm_period_seconds > 0 else [])
    while True:
        every = _specs(rt)
        health: dict[Key, tuple[float | None, float | None]] = {}
        if every:
            try:
                health = await asyncio.to_thread(read_health, prometheus, every,
                                                 window=settings.rate_window,
                                                 failures=settings.failure_metric)
            except MetricsUnavailable as exc:
                log.warning("cannot read health: %s", exc)
            if health != rt.health:
                rt.health = health
                rt.poke()
        specs = _scaled(every)
        if specs:
            try:
                p95 = {k: v for k, (_, v) in health.items() if v is not None}
                loads = await asyncio.to_thread(read_loads, prometheus, specs,
                                                window=settings.rate_window, prewarm=prewarm,
                                                latency=p95)
                fresh: dict[Any, Any] = loads
                rt.loads_time = now()
            except MetricsUnavailable as exc:
                log.warning("cannot read load: %s", exc)
                fresh = {}
                rt.loads_time = None
            if fresh != rt.loads:
                rt.loads = fresh
                rt.poke()
        await asyncio.sleep(rt.settings.metrics_seconds)
