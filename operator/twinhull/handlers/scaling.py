"""The load reader: one batch of Prometheus queries per runtime for the whole fleet, on
an interval, off the event loop. Effects: Prometheus reads, memory, logs.

Failure isolation. A query that fails concerns only the deployments it was read for: a
custom ``query`` its own ModelDeployment, a runtime's preset query the deployments of that
runtime; they get no Load (missing: the planner holds) and a reason in
:attr:`Runtime.load_errors`, every other deployment keeps its fresh Load. Only Prometheus
itself being unusable (:class:`PrometheusDown`, or one of twinhull's own cheap queries
timing out) ends a round early, with no Load for anyone.

Freshness. Loads are served with the time they were read (:attr:`Runtime.loads_time`); a
failed round clears them; :func:`current_loads` refuses loads older than
:func:`loads_bound`, so a late or stuck reader can never pass old values off as current.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.api.deployment import Runtime as ServingRuntime
from twinhull.clusters.kube import ClusterUnavailable
from twinhull.handlers.runtime import Key, Runtime, Settings, deployment_spec, now, parse_time
from twinhull.handlers.supervise import beat
from twinhull.metrics.presets import (
    FLEET,
    FLEET_CELLS,
    FLEET_REVISIONS,
    PRESETS,
    fleet_demand_forecast,
    fleet_demand_peak,
    fleet_demand_tokens,
    fleet_error_percent,
    fleet_latency_p95,
    fleet_requests_ended,
    fleet_running,
    fleet_waiting,
    requests_during,
)
from twinhull.metrics.prometheus import (
    MetricsUnavailable,
    Prometheus,
    PrometheusDown,
    QueryTimeout,
)
from twinhull.metrics.samples import Reading
from twinhull.plan.rollout import Burn, Health
from twinhull.plan.rollout import Reading as HealthReading
from twinhull.plan.scaling import Load, prewarm_windows
from twinhull.plan.slo import PAGE

log = logging.getLogger(__name__)

LOOP = "loads"
GROUP, VERSION = "serving.twinhull.io", "v1alpha1"
"""The name of the load reader in :mod:`.supervise`."""
NEW_SINCE_READ = "not read yet: new since the last round of Prometheus reads"
"""Why a deployment missing from the last round's health has none (see
:attr:`Runtime.health_missing`)."""
QUERY_TIMEOUT = 5.0
"""Seconds one query may take (connect, each read, the whole answer)."""
ROUND_BUDGET = 30.0
"""Seconds of queries one round may start: past it, the remaining queries wait for the
next round (their deployments get no Load this round), so a slow Prometheus or many slow
custom queries cannot stretch a round without bound. Queries whose deployments failed in
the previous round go last, so one slow tenant cannot starve the others."""


def round_bound() -> float:
    """The longest a round of reads can take: its budget, then one query begun just
    before the budget ran out (whose answer may trickle in for up to two timeouts).
    Pure."""
    return ROUND_BUDGET + 2 * QUERY_TIMEOUT


def loads_bound(settings: Settings) -> float:
    """Seconds after which loads count as missing, never as current: one interval, a
    round that took as long as it may, and one more interval of slack. Pure."""
    return 2 * settings.metrics_seconds + round_bound()


def loop_bound(settings: Settings) -> float:
    """Seconds the load reader may go without a beat before it counts as stuck (liveness
    fails): three intervals and the longest round. Pure."""
    return 3 * settings.metrics_seconds + round_bound()


def current_loads(rt: Runtime, at: datetime) -> dict[Key, Load]:
    """The loads the planner may use at ``at``: none when they were never read, the last
    round failed, or they are older than :func:`loads_bound`. Pure (reads memory)."""
    if rt.loads_time is None:
        return {}
    if (at - rt.loads_time).total_seconds() > loads_bound(rt.settings):
        return {}
    return rt.loads


class Source(Protocol):
    """What the reader needs of Prometheus (:class:`Prometheus` is the real one)."""

    def vector(self, query: str, *, max_age: float = 60.0,
               by: tuple[str, ...] = ("cluster", "zone")) -> Reading: ...


@dataclass(frozen=True)
class LoadReading:
    """What one round read: a Load per deployment with usable series, why the others
    have none, and what optional reads failed (logged)."""

    loads: dict[Key, Load] = field(default_factory=dict)
    errors: dict[Key, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def _specs(rt: Runtime) -> dict[Key, ModelDeploymentSpec]:
    out = {}
    for key, body in list(rt.deployments.items()):
        try:
            out[key] = deployment_spec(rt, key, body)
        except (ValueError, TypeError, AttributeError):
            continue  # the fleet reports an invalid spec on its object
    return out


def _scaled(specs: dict[Key, ModelDeploymentSpec]) -> dict[Key, ModelDeploymentSpec]:
    return {k: s for k, s in specs.items() if s.scaling is not None and s.scaling.mode != "Off"}


def _ask(prometheus: Source, query: str, by: tuple[str, ...], deadline: float | None, *,
         own: bool) -> Reading:
    """Run one query within the round's budget. A timeout of one of twinhull's own
    queries (``own``: cheap, aggregated) means Prometheus is stuck, not the query heavy.
    Effects: one HTTP request. Raises :class:`MetricsUnavailable`."""
    if deadline is not None and time.monotonic() > deadline:
        raise MetricsUnavailable("load round", (
            f"not read this round: the round spent its {ROUND_BUDGET:.0f}s on slower "
            "queries; it is read again on the next round"))
    try:
        return prometheus.vector(query, by=by)
    except QueryTimeout as exc:
        if own:
            raise PrometheusDown(exc.where, exc.problem) from None
        raise


def _cells(reading: Reading, only: Collection[Key] | None = None) -> dict[Key, float]:
    """A per-deployment reading keyed by (namespace, name), of the deployments ``only``
    where given. Pure."""
    cells = {(cell[0], cell[1]): v for cell, v in reading.values.items()}
    return cells if only is None else {k: v for k, v in cells.items() if k in only}


def read_health(prometheus: Source, specs: dict[Key, ModelDeploymentSpec], *,
                window: str, failures: str | None, deadline: float | None = None
                ) -> tuple[dict[Key, Health], list[str]]:
    """Error percent and p95 latency of every ModelDeployment and of each revision its
    pods run (their revision label), and each revision's page-level burn inputs (error
    percent over :data:`~twinhull.plan.slo.PAGE`'s long and short windows, requests
    ended over the long one), and the deployment's requests ended over the long window
    (:attr:`Health.recent`), for rollout verification: eight queries per runtime in use
    (errors from the runtime's own failure counter, or from ``failures`` where set), and
    what could not be read. ``failures`` (e.g. a gateway's counter) need not carry the
    pods' revision label, so with it the revisions get latency only. Every deployment
    gets a :class:`Health`; one runtime's failed query marks only its deployments
    unread (:attr:`Health.unread`), which holds their verification.
    Effects: HTTP requests. Raises :class:`PrometheusDown`."""
    errors: dict[Key, float] = {}
    latency: dict[Key, float] = {}
    recent: dict[Key, float] = {}
    revisions: dict[Key, dict[str, HealthReading]] = {}
    burns: dict[Key, dict[str, Burn]] = {}
    problems: list[str] = []
    unread: dict[str, str] = {}
    for runtime in sorted({s.model.runtime for s in specs.values()}):
        # A runtime's queries match every deployment with series of its names: one that
        # ran this runtime within the window (changed runtime) or whose pods export its
        # names too. Only this runtime's deployments take its answers; another's would
        # overwrite the true readings (vLLM's query answered a TGI deployment's 0
        # requests from stray vllm:* series, and readiness alone then verified it).
        mine = {key for key, spec in specs.items() if spec.model.runtime == runtime}
        try:
            recent.update(_cells(_ask(prometheus, fleet_requests_ended(
                runtime, PAGE.long, failures), FLEET, deadline, own=True), mine))
            errors.update(_cells(_ask(prometheus, fleet_error_percent(
                runtime, window, failures), FLEET, deadline, own=True), mine))
            latency.update(_cells(_ask(prometheus, fleet_latency_p95(runtime, window), FLEET,
                                       deadline, own=True), mine))
            by_revision: dict[tuple[str, ...], list[float | None]] = {}
            for i, query in ((1, fleet_latency_p95(runtime, window, FLEET_REVISIONS)),
                             (0, None if failures else fleet_error_percent(
                                 runtime, window, by=FLEET_REVISIONS))):
                if query is None:
                    continue
                for cell, v in _ask(prometheus, query, FLEET_REVISIONS, deadline,
                                    own=True).values.items():
                    if cell[2] and cell[:2] in mine:
                        by_revision.setdefault(cell, [None, None])[i] = v
            for (ns, name, rev), (e, lat) in by_revision.items():
                revisions.setdefault((ns, name), {})[rev] = (e, lat)
            if not failures:
                burn: dict[tuple[str, ...], list[float | None]] = {}
                for i, query in enumerate((
                        fleet_error_percent(runtime, PAGE.long, by=FLEET_REVISIONS),
                        fleet_error_percent(runtime, PAGE.short, by=FLEET_REVISIONS),
                        fleet_requests_ended(runtime, PAGE.long, by=FLEET_REVISIONS))):
                    for cell, v in _ask(prometheus, query, FLEET_REVISIONS, deadline,
                                        own=True).values.items():
                        if cell[2] and cell[:2] in mine:
                            burn.setdefault(cell, [None, None, None])[i] = v
                for (ns, name, rev), (long, short, ended) in burn.items():
                    burns.setdefault((ns, name), {})[rev] = (long, short, ended)
        except PrometheusDown:
            raise
        except MetricsUnavailable as exc:
            problems.append(f"health of the {runtime} deployments: {exc}")
            unread[runtime] = f"the {runtime} health queries failed: {exc}"
    health = {key: Health(errors.get(key), latency.get(key), revisions.get(key, {}),
                          burns.get(key, {}), recent.get(key),
                          unread.get(spec.model.runtime, ""))
              for key, spec in specs.items()}
    return health, problems


def read_loads(prometheus: Source, specs: dict[Key, ModelDeploymentSpec], *,
               window: str = "1m", prewarm: list[tuple[float, float]] | None = None,
               latency: dict[Key, float] | None = None, deadline: float | None = None,
               defer: Collection[Key] = ()) -> LoadReading:
    """Read the load of every scaled ModelDeployment: two queries per runtime in use
    (demand per zone, waiting) that its deployments need, two it may miss (running, and
    one per pre-warm window: the highest demand at the same time on earlier days, for
    ``metric: tokens``), one per custom query (those of ``defer`` last). ``latency`` is
    :func:`read_health`'s p95, reported with the load, not read again. A deployment
    without series, or whose query failed, gets no Load (missing, not zero) and a reason.
    Effects: HTTP requests. Raises :class:`PrometheusDown`."""
    loads: dict[Key, Load] = {}
    failed: dict[Key, str] = {}
    notes: list[str] = []
    latency = latency or {}
    preset: dict[ServingRuntime, list[Key]] = {}
    custom: list[Key] = []
    for key, spec in specs.items():
        if spec.scaling is None:
            continue
        if spec.scaling.metric == "custom":
            custom.append(key)
        else:
            preset.setdefault(spec.model.runtime, []).append(key)
    for runtime, keys in sorted(preset.items()):
        try:
            demand = _ask(prometheus, fleet_demand_tokens(runtime, window, by=FLEET_CELLS),
                          FLEET_CELLS, deadline, own=True)
            waiting = _cells(_ask(prometheus, fleet_waiting(runtime, window=window), FLEET,
                                  deadline, own=True))
        except PrometheusDown:
            raise
        except MetricsUnavailable as exc:
            for key in keys:
                failed[key] = (f"spec.model.runtime {runtime}: its metrics could not be "
                               f"read: {exc.problem}")
            continue
        tokens: dict[Key, float] = {}
        zones: dict[Key, dict[str, float]] = {}
        for (ns, name, cluster, zone), v in demand.values.items():
            tokens[(ns, name)] = tokens.get((ns, name), 0.0) + v
            zones.setdefault((ns, name), {})[f"{cluster}/{zone}"] = v
        running: dict[Key, float] = {}
        forecast: dict[Key, float] = {}
        said: dict[Key, float] = {}
        peak: dict[Key, float] = {}
        try:
            running = _cells(_ask(prometheus, fleet_running(runtime, window=window), FLEET,
                                  deadline, own=True))
            peak = _cells(_ask(prometheus, fleet_demand_peak(runtime, window), FLEET,
                               deadline, own=False))
            for start, end in prewarm or []:
                lead = start - end
                # what the windows forecast now, and what they forecast a lead ago for the
                # minutes that have come since (pre-warm checks its own error)
                for out, shift in ((forecast, 0.0), (said, lead)):
                    past = _ask(prometheus, fleet_demand_forecast(
                        runtime, window, start_s=start + shift, end_s=end + shift), FLEET,
                        deadline, own=False)  # a subquery over days: may be slow, not a sign
                    for k, v in _cells(past).items():
                        out[k] = max(v, out.get(k, 0.0))
        except PrometheusDown:
            raise
        except MetricsUnavailable as exc:
            notes.append(f"running requests or pre-warm forecast of the {runtime} "
                         f"deployments not read: {exc}")
        p = PRESETS[runtime]
        for key in keys:
            spec = specs[key]
            assert spec.scaling is not None
            if key not in tokens and key not in waiting:
                failed[key] = (
                    f"no series of {p.prompt_tokens.name}, {p.generation_tokens.name} or "
                    f"{p.waiting.name} "
                    f"with namespace={key[0]!r}, twinhull_deployment={key[1]!r} scraped in "
                    f"the last {window}: check its pods are Ready and scraped (the chart's "
                    "scrape configuration) and that spec.model.runtime names their server")
                continue
            ahead = (forecast.get(key) if spec.scaling.metric == "tokens"
                     and spec.scaling.pre_warm else None)
            loads[key] = Load(tokens_per_second=tokens.get(key), waiting=waiting.get(key),
                              forecast_tokens_per_second=ahead, running=running.get(key),
                              latency_p95_seconds=latency.get(key),
                              zones=zones.get(key, {}),
                              tokens_per_second_peak=peak.get(key),
                              forecast_said_tokens_per_second=said.get(key)
                              if ahead is not None else None)
    for key in sorted(custom, key=lambda k: (k in defer, k)):
        scaling = specs[key].scaling
        query = scaling.query if scaling is not None else None
        if not query:
            failed[key] = ("spec.scaling.query: missing; metric: custom needs a PromQL query "
                           "returning the load in the unit of the target")
            continue
        try:
            reading = _ask(prometheus, query, (), deadline, own=False)
        except PrometheusDown:
            raise
        except MetricsUnavailable as exc:
            failed[key] = f"spec.scaling.query: {exc.problem}"
            continue
        value = reading.values.get(())
        if value is None:
            why = f" ({'; '.join(reading.dropped)[:300]})" if reading.dropped else ""
            failed[key] = (f"spec.scaling.query: returned no usable value{why}; it must "
                           "return one number, e.g. sum(rate(<counter>[1m])), from series "
                           "scraped recently")
            continue
        loads[key] = Load(custom=value)
    return LoadReading(loads=loads, errors=failed, notes=tuple(notes))


class _Said:
    """What the reader last logged per subject, so a lasting problem is logged once when it
    starts and once when it ends, not on every round."""

    def __init__(self) -> None:
        self.last: dict[Any, str] = {}

    def update(self, problems: dict[Any, str], what: str) -> None:
        """Log problems that are new or changed, and those that are gone. Effects: logs."""
        for subject, text in sorted(problems.items(), key=lambda kv: str(kv[0])):
            if self.last.get(subject) != text:
                log.warning("%s %s: %s", what, subject, text)
        for subject in sorted(set(self.last) - set(problems), key=str):
            log.info("%s %s: resolved", what, subject)
        self.last = dict(problems)


class _Reader:
    """One load reader: its Prometheus, its pre-warm windows and what it last said."""

    def __init__(self, rt: Runtime, source: Source | None = None) -> None:
        settings = rt.settings
        self.rt = rt
        self.prometheus: Source | None = source or (
            Prometheus(settings.prometheus_url, timeout=QUERY_TIMEOUT)
            if settings.prometheus_url else None)
        self.prewarm = (prewarm_windows(settings.prewarm_period_seconds,
                                        settings.prewarm_lead_seconds)
                        if settings.prewarm_period_seconds > 0 else [])
        self.said_round = _Said()
        self.said_load = _Said()
        self.counted: set[Key] = set()
        """Drills whose request counts were written (or tried: one write per drill)."""

    def _publish(self, loads: dict[Key, Load], errors: dict[Key, str],
                 read: datetime | None, *, each: bool = True) -> None:
        """Serve a round's result; wake the fleet if anything it shows changed. ``each``:
        log each deployment's problem (not when one cause, already logged, fails all).
        Effects: memory, logs."""
        rt = self.rt
        if each:
            self.said_load.update(dict(errors), "load of")
        changed = loads != rt.loads or errors != rt.load_errors or (
            (read is None) != (rt.loads_time is None))
        rt.loads, rt.load_errors, rt.loads_time = loads, errors, read
        if changed:
            rt.poke()

    async def round(self) -> None:
        """Read health and load once. Effects: Prometheus reads, memory, logs."""
        rt, settings = self.rt, self.rt.settings
        every = _specs(rt)
        specs = _scaled(every)
        if self.prometheus is None:
            self.said_round.update({}, "Prometheus:")
            rt.health, rt.health_missing = {}, ""
            self._publish({}, {key: "no Prometheus: the operator runs without --prometheus; "
                                    "scaling holds" for key in specs}, None, each=False)
            return
        deadline = time.monotonic() + ROUND_BUDGET
        try:
            health: dict[Key, Health] = {}
            problems: list[str] = []
            if every:
                health, problems = await asyncio.to_thread(
                    read_health, self.prometheus, every, window=settings.rate_window,
                    failures=settings.failure_metric, deadline=deadline)
            if health != rt.health or rt.health_missing != NEW_SINCE_READ:
                rt.health, rt.health_missing = health, NEW_SINCE_READ
                rt.poke()
            p95 = {k: h.latency_p95_seconds for k, h in health.items()
                   if h.latency_p95_seconds is not None}
            reading = LoadReading()
            if specs:
                reading = await asyncio.to_thread(
                    read_loads, self.prometheus, specs, window=settings.rate_window,
                    prewarm=self.prewarm, latency=p95, deadline=deadline,
                    defer=set(rt.load_errors))
        except PrometheusDown as exc:
            self.said_round.update({"round": str(exc)}, "Prometheus:")
            missing = f"Prometheus cannot be read: {exc.problem}"
            if rt.health or rt.health_missing != missing:
                rt.health, rt.health_missing = {}, missing
                rt.poke()
            self._publish({}, {key: f"Prometheus cannot be read: {exc.problem}"
                               for key in specs}, None, each=False)
            return
        self.said_round.update({note.split(": ", 1)[0]: note.split(": ", 1)[-1]
                                for note in (*problems, *reading.notes)}, "Prometheus:")
        self._publish(reading.loads, reading.errors, now())
        await self._count_drills(every)

    async def _count_drills(self, specs: dict[Key, ModelDeploymentSpec]) -> None:
        """Requests served, failed and sent to the fallback during each drill that ended
        and has no counts yet, from the runtimes' counters; written into its results once.
        A query that fails leaves the drill for the next round. Effects: Prometheus reads,
        a hub write per drill."""
        assert self.prometheus is not None
        for key, body in list(self.rt.drills.items()):
            status = body.get("status") or {}
            results = [dict(r) for r in status.get("results") or [] if isinstance(r, dict)]
            if not status.get("completionTime") or not status.get("faultTime") or \
                    key in self.counted or not results:
                continue
            start = parse_time(status.get("faultTime"))
            if start is None:
                continue
            seconds = (now() - start).total_seconds()
            try:
                for r in results:
                    ns, _, name = str(r.get("deployment")).partition("/")
                    spec = specs.get((ns, name))
                    if spec is None or "requestsServed" in r:
                        continue
                    queries = requests_during(spec.model.runtime, ns, name, seconds,
                                              self.rt.settings.failure_metric)
                    for field_name, query in queries.items():
                        reading = await asyncio.to_thread(
                            self.prometheus.vector, query, by=FLEET)
                        r[field_name] = round(sum(reading.values.values()), 1)
            except MetricsUnavailable as exc:
                log.warning("drill %s/%s: requests not counted yet: %s", *key, exc)
                continue
            self.counted.add(key)
            try:
                await self.rt.hub.patch_status(f"{GROUP}/{VERSION}", "FailoverDrill", key[1],
                                               {"results": results}, namespace=key[0])
                self.rt.hub_writes += 1
            except ClusterUnavailable as exc:
                self.counted.discard(key)
                log.warning("drill %s/%s: cannot write request counts: %s", *key, exc)


async def load_loop(rt: Runtime, source: Source | None = None) -> None:
    """Read health and load on the interval from ``source`` (default: the Prometheus of
    ``--prometheus``); wake the fleet when they changed; beat after every round (also one
    with nothing to read or with Prometheus down). On a failed round, forget the loads
    (the planner then holds every decision and says so). An unexpected error clears the
    loads and ends the loop for :mod:`.supervise` to restart. Never returns otherwise.
    Effects: Prometheus reads, memory, logs."""
    rt.loop_bounds[LOOP] = loop_bound(rt.settings)
    reader = _Reader(rt, source)
    while True:
        try:
            await reader.round()
        except Exception:
            rt.loads, rt.loads_time, rt.health = {}, None, {}
            rt.health_missing = "the load reader failed and restarts"
            rt.poke()
            raise
        beat(rt, LOOP)
        await asyncio.sleep(rt.settings.metrics_seconds)
