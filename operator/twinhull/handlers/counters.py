"""The counters and histograms of the operator's own metrics (names and meanings:
:mod:`twinhull.metrics.names`): events counted as they happen, in a registry of the
process's own. Effects: memory.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from twinhull.metrics import names as n
from twinhull.plan.fleet import Decision

ROLLBACK_REASONS = ("ErrorRateExceeded", "LatencyExceeded", "BurnRateExceeded",
                    "ProgressDeadlineExceeded", "ManualRollback")
RECONCILE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
                     20.0, 30.0, 45.0, 60.0)
disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the series for no alert's use
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]{0,62}$")


class Telemetry:
    """The counters and histograms of one operator process, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)

        def name(metric: n.Metric) -> str:  # prometheus-client adds _total itself
            return metric.name.removesuffix("_total")

        self.reconcile = Counter(name(n.RECONCILE_TOTAL), n.RECONCILE_TOTAL.help,
                                 n.RECONCILE_TOTAL.labels, registry=self.registry)
        self.reconcile_errors = Counter(
            name(n.RECONCILE_ERRORS_TOTAL), n.RECONCILE_ERRORS_TOTAL.help,
            n.RECONCILE_ERRORS_TOTAL.labels, registry=self.registry)
        self.duration = Histogram(
            n.RECONCILE_DURATION_SECONDS.name, n.RECONCILE_DURATION_SECONDS.help,
            n.RECONCILE_DURATION_SECONDS.labels, buckets=RECONCILE_BUCKETS,
            registry=self.registry)
        self.probe = Histogram(
            n.CLUSTER_PROBE_DURATION_SECONDS.name, n.CLUSTER_PROBE_DURATION_SECONDS.help,
            n.CLUSTER_PROBE_DURATION_SECONDS.labels, registry=self.registry,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0))
        self.decisions = Counter(name(n.DECISIONS_TOTAL), n.DECISIONS_TOTAL.help,
                                 n.DECISIONS_TOTAL.labels, registry=self.registry)
        self.snapshots = Counter(name(n.SNAPSHOTS_TOTAL), n.SNAPSHOTS_TOTAL.help,
                                 n.SNAPSHOTS_TOTAL.labels, registry=self.registry)
        self.rollbacks = Counter(name(n.ROLLBACKS_TOTAL), n.ROLLBACKS_TOTAL.help,
                                 n.ROLLBACKS_TOTAL.labels, registry=self.registry)
        audit = Counter(name(n.AUDIT_RECORDS_TOTAL), n.AUDIT_RECORDS_TOTAL.help,
                        n.AUDIT_RECORDS_TOTAL.labels, registry=self.registry)
        self.audit_records, self.audit_errors = audit.labels("written"), audit.labels("failed")
        self.audit_dropped = audit.labels("dropped")
        posted = Counter(name(n.EVENTS_TOTAL), n.EVENTS_TOTAL.help, n.EVENTS_TOTAL.labels,
                         registry=self.registry)
        self.events_posted, self.events_failed, self.events_dropped = (
            posted.labels(r) for r in ("posted", "failed", "dropped"))
        self.preempted = Counter(name(n.ROUNDS_PREEMPTED_TOTAL), n.ROUNDS_PREEMPTED_TOTAL.help,
                                 registry=self.registry)
        for outcome in ("Recorded", "Good", "Bad"):
            self.snapshots.labels(outcome)
        self.known: set[tuple[str, str]] = set()

    def iteration(self, loop: str, ok: bool, seconds: float | None = None) -> None:
        """One iteration of a supervised loop ended. Effects: memory."""
        self.reconcile.labels(loop, "success" if ok else "error").inc()
        if not ok:
            self.reconcile_errors.labels(loop).inc()
        if seconds is not None:
            self.duration.labels(loop).observe(max(0.0, seconds))

    def start_loop(self, loop: str) -> None:
        """Counters of a loop start at 0 (``increase()`` cannot see a series born at 1)."""
        for result in ("success", "error"):
            self.reconcile.labels(loop, result)
        self.reconcile_errors.labels(loop)

    def deployment(self, namespace: str, name: str) -> None:
        """A ModelDeployment's rollback counters start at 0. Effects: memory."""
        if (namespace, name) not in self.known:
            self.known.add((namespace, name))
            for reason in ROLLBACK_REASONS:
                self.rollbacks.labels(namespace, name, reason)

    def decided(self, namespace: str, name: str, decision: Decision) -> None:
        """Count one decision (and a rollback by its reason). Effects: memory."""
        reason = reason_of(decision)
        self.decisions.labels(decision.kind, reason).inc()
        if decision.kind == "Rollback":
            self.deployment(namespace, name)
            self.rollbacks.labels(namespace, name, reason if reason in ROLLBACK_REASONS
                                  else "ManualRollback").inc()


def reason_of(decision: Decision) -> str:
    """A decision's CamelCase reason (a rollback's ``ErrorRateExceeded``…), else its kind:
    the ``reason`` of its counter and its Event. Pure."""
    raw = decision.inputs.get("reason")
    return raw if isinstance(raw, str) and CAMEL.match(raw) else decision.kind
