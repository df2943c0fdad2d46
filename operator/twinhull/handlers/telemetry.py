"""The operator's own metrics (names and meanings: :mod:`twinhull.metrics.names`), served on
``/metrics`` (prometheus-client). Counters and histograms count events as they happen; the
state (weights, phases, replicas, conditions, beats) is read from memory at each scrape,
so a deployment or cluster that is gone has no series left behind. Only the replica that
holds the Lease has state (a standby's memory is empty); every replica says whether it
leads. Effects: memory; :func:`serve` starts an HTTP server thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from twinhull.handlers.counters import CAMEL
from twinhull.handlers.runtime import Runtime, as_list, as_mapping, parse_time
from twinhull.metrics import names as n

log = logging.getLogger(__name__)

PHASES = ("Healthy", "Suspect", "Down", "Recovering")
STATUSES = ("True", "False", "Unknown")


def _gauge(metric: n.Metric) -> GaugeMetricFamily:
    return GaugeMetricFamily(metric.name, metric.help, labels=list(metric.labels))


def _seconds(text: Any) -> float | None:
    t = parse_time(text)
    return t.timestamp() if t is not None else None


class _State(Collector):
    """The state series, read from memory at each scrape."""

    def __init__(self, rt: Runtime, identity: str, leading: Callable[[], bool]) -> None:
        self.rt, self.identity, self.leading = rt, identity, leading

    def describe(self) -> list[Any]:
        return []  # the families vary with the state; none are registered up front

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rt = self.rt
        leader = _gauge(n.LEADER)
        leader.add_metric([self.identity], 1.0 if self.leading() else 0.0)
        yield leader
        beats = _gauge(n.LOOP_LAST_BEAT_TIMESTAMP_SECONDS)
        for loop, t in sorted(dict(rt.beats).items()):
            beats.add_metric([loop], t.timestamp())
        yield beats
        phases = _gauge(n.CLUSTER_PHASE)
        for cluster, view in sorted(dict(rt.views).items()):
            for phase in PHASES:
                phases.add_metric([cluster, phase], 1.0 if view.phase == phase else 0.0)
        yield phases
        objects = _gauge(n.MEMBER_OBJECTS)
        for cluster, member in sorted(dict(rt.members).items()):
            objects.add_metric([cluster], float(len(member.observed)))
        yield objects
        families = {m.name: _gauge(m) for m in (
            n.TRAFFIC_WEIGHT, n.REPLICAS, n.DEPLOYMENT_CONDITION, n.SCALING_RECOMMENDED_REPLICAS,
            n.DRILL_LAST_PASSED_TIMESTAMP_SECONDS, n.DEPLOYMENT_INFO,
            n.DEPLOYMENT_CREATED_TIMESTAMP_SECONDS)}
        for (ns, name), body in sorted(dict(rt.deployments).items()):
            try:
                self._deployment(families, ns, name, body)
            except Exception:  # one odd object never breaks the scrape
                log.exception("metrics of %s/%s skipped", ns, name)
        yield from families.values()

    def _deployment(self, f: dict[str, GaugeMetricFamily], ns: str, name: str,
                    body: dict[str, Any]) -> None:
        meta, spec = as_mapping(body.get("metadata")), as_mapping(body.get("spec"))
        status = as_mapping(body.get("status"))
        tier = spec.get("slaTier")
        if isinstance(tier, str):
            f[n.DEPLOYMENT_INFO.name].add_metric([ns, name, tier], 1.0)
        created = _seconds(meta.get("creationTimestamp"))
        if created is not None:
            f[n.DEPLOYMENT_CREATED_TIMESTAMP_SECONDS.name].add_metric([ns, name], created)
        for cluster, weight in as_mapping(status.get("traffic")).items():
            if isinstance(weight, int | float) and not isinstance(weight, bool):
                f[n.TRAFFIC_WEIGHT.name].add_metric([ns, name, str(cluster)], float(weight))
        for c in as_list(status.get("clusters")):
            c = as_mapping(c)
            for role, key in (("primary", "zones"), ("fallback", "fallbackZones")):
                for zone, r in as_mapping(c.get(key)).items():
                    r = as_mapping(r)
                    for state in ("desired", "ready"):
                        value = r.get(state)
                        if isinstance(value, int) and not isinstance(value, bool):
                            f[n.REPLICAS.name].add_metric(
                                [ns, name, str(c.get("name")), str(zone), role, state],
                                float(value))
        for cond in as_list(status.get("conditions")):
            cond = as_mapping(cond)
            kind = cond.get("type")
            if isinstance(kind, str) and CAMEL.match(kind):
                for s in STATUSES:
                    f[n.DEPLOYMENT_CONDITION.name].add_metric(
                        [ns, name, kind, s], 1.0 if cond.get("status") == s else 0.0)
        scaling = as_mapping(status.get("scaling"))
        recommended = scaling.get("recommended", scaling.get("replicas"))
        if isinstance(recommended, int) and not isinstance(recommended, bool):
            f[n.SCALING_RECOMMENDED_REPLICAS.name].add_metric([ns, name], float(recommended))
        drilled = _seconds(status.get("lastPassedDrillTime"))
        if drilled is not None:
            f[n.DRILL_LAST_PASSED_TIMESTAMP_SECONDS.name].add_metric([ns, name], drilled)


def serve(rt: Runtime, address: str, identity: str, leading: Callable[[], bool]) -> None:
    """Serve ``/metrics`` on ``HOST:PORT`` in a thread (the chart's NetworkPolicy admits
    only the monitoring namespace to it). Effects: a listening socket, a thread."""
    host, _, port = address.rpartition(":")
    rt.telemetry.registry.register(_State(rt, identity, leading))
    start_http_server(int(port), addr=host or "0.0.0.0", registry=rt.telemetry.registry)
    log.info("metrics on http://%s:%s/metrics", host or "0.0.0.0", port)
