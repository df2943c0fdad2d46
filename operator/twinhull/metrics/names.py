"""The names, types and labels of the metrics twinhull itself exports, fixed here before
anything depends on them: the exporter (written from this list), the alerting and
recording rules (:mod:`.rules`) and dashboards all read these constants. Pure.

The names follow controller-runtime and Argo Rollouts: a ``twinhull_`` prefix, counters
ending in ``_total``, base units in the name (``_seconds``, ``_timestamp_seconds``), an
``_info`` gauge of value 1 carrying labels, and one 0/1 series per possible state for
enumerations (as kube-state-metrics writes ``kube_pod_status_phase``), so a rule selects a
state with a label matcher and a state that ends goes to 0 instead of going stale.

Labels that name a ModelDeployment are the ones the model servers' scrape adds
(:mod:`.scrape`): ``namespace`` and ``twinhull_deployment``, plus ``cluster``, ``zone`` and
``role`` where they apply, so the operator's series join the runtimes' on the same labels.
Label values are bounded: names of objects, CamelCase reasons and enumerations, never a
message, an id or a time.

What the exporter must do for the rules to hold:

* **Scrape with ``honor_labels: true``** (``honorLabels: true`` in a ServiceMonitor or
  PodMonitor), as for kube-state-metrics: these series carry ``namespace`` (the
  ModelDeployment's) and ``cluster`` (twinhull's name of the member), and without it
  Prometheus renames them ``exported_namespace`` and ``exported_cluster`` in favour of the
  operator pod's own.
* **Only the replica that holds the Lease** exports the series of deployments, clusters,
  loops and decisions (a standby has no current state); every replica exports
  :data:`LEADER`. The rules still aggregate with ``max by`` so that a replica that just
  lost the Lease cannot double an alert.
* **Counters of events start at 0** for the label sets known at start (every reason of
  :data:`ROLLBACKS_TOTAL` for every ModelDeployment, every result of
  :data:`RECONCILE_TOTAL` for every loop): ``increase()`` cannot see the first event of a
  series born at 1. The rollback alert also catches a series that appears above 0, as a
  safety net.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram", "info"]


@dataclass(frozen=True)
class Metric:
    """One metric family the operator exports."""

    name: str
    """The family name (for a histogram the base: ``_bucket``, ``_sum`` and ``_count``
    are added)."""
    kind: Kind
    """Prometheus type; ``info`` is a gauge of value 1 whose labels are the information."""
    labels: tuple[str, ...]
    """Label names, in the order the exporter declares them."""
    help: str
    """The HELP text."""


DEPLOYMENT = ("namespace", "twinhull_deployment")
"""The labels naming one ModelDeployment, as on the model servers' series."""

RECONCILE_TOTAL = Metric(
    "twinhull_reconcile_total", "counter", ("loop", "result"),
    "Iterations of each operator loop, by result (success or error).")
"""Like ``controller_runtime_reconcile_total``. ``loop`` is the supervised loop's name as
the liveness probe reports it (``fleet``, ``loads``, ``member/<cluster>``,
``writer/<cluster>``); ``result`` is ``success`` or ``error`` (an iteration that raised)."""

RECONCILE_ERRORS_TOTAL = Metric(
    "twinhull_reconcile_errors_total", "counter", ("loop",),
    "Iterations of each operator loop that ended in an error.")
"""Like ``controller_runtime_reconcile_errors_total``: the same as
``twinhull_reconcile_total{result="error"}``, kept because dashboards built for
controller-runtime look for it."""

RECONCILE_DURATION_SECONDS = Metric(
    "twinhull_reconcile_duration_seconds", "histogram", ("loop",),
    "Duration of one iteration of each operator loop.")
"""Like ``controller_runtime_reconcile_time_seconds``. Buckets 0.005 s to 60 s
(controller-runtime's), so a fleet round against slow member API servers still lands in
a finite bucket."""

LOOP_LAST_BEAT_TIMESTAMP_SECONDS = Metric(
    "twinhull_loop_last_beat_timestamp_seconds", "gauge", ("loop",),
    "Unix time of the last completed iteration of each supervised loop.")
"""The beat the liveness probe reads (``Runtime.beats``), per loop. A loop that ended on
purpose (a deleted member's) drops its series. The stale-loop alert fires when a beat is
older than 5 minutes: the liveness probe should have restarted the pod long before."""

DECISIONS_TOTAL = Metric(
    "twinhull_decisions_total", "counter", ("kind", "reason"),
    "Decisions of the planner, by kind and reason.")
"""``kind`` is the decision's kind (``Scale``, ``Failover``, ``Failback``, ``Rollout``,
``Rollback``…), ``reason`` its CamelCase reason (e.g. ``ClusterDown``), never the
sentence of ``status.decisions[].reason``. A Suggest or Manual decision counts when it is
made, not when it is approved."""

TRAFFIC_WEIGHT = Metric(
    "twinhull_traffic_weight", "gauge", (*DEPLOYMENT, "cluster"),
    "Traffic weight of each cluster of a ModelDeployment, percent (the weights sum to 100).")
"""``status.traffic`` as numbers: ``cluster`` is a ServingCluster's name or ``fallback`` (the
fallback model's share). The HTTPRoute weights the gateway applies."""

CLUSTER_PHASE = Metric(
    "twinhull_cluster_phase", "gauge", ("cluster", "phase"),
    "Health phase of each ServingCluster: 1 for the current phase, 0 for the others.")
"""One series per phase (``Healthy``, ``Suspect``, ``Down``, ``Recovering``) of every
ServingCluster, 1 for ``status.phase`` and 0 for the others."""

MEMBER_OBJECTS = Metric(
    "twinhull_member_objects", "gauge", ("cluster",),
    "Objects of this installation observed in each member (what its watches hold).")
"""Deployments, Services and PodDisruptionBudgets twinhull made there, as its informers
see them now: a count that moves with every object made or removed, so it is a series, not
part of the ServingCluster's ``Observed`` condition (which would be written again at each
change)."""

CLUSTER_PROBE_DURATION_SECONDS = Metric(
    "twinhull_cluster_probe_duration_seconds", "histogram", ("cluster",),
    "Duration of the health probes of each member's API server.")
"""Every probe, failed ones included (a timeout lands in the bucket of the timeout)."""

REPLICAS = Metric(
    "twinhull_replicas", "gauge",
    (*DEPLOYMENT, "cluster", "zone", "role", "state"),
    "Replicas of a ModelDeployment per cluster, zone and role, desired or ready.")
"""``role`` is ``primary`` or ``fallback``, ``state`` is ``desired`` (what the plan asks)
or ``ready`` (what the member reports Ready)."""

DEPLOYMENT_CONDITION = Metric(
    "twinhull_deployment_condition", "gauge", (*DEPLOYMENT, "type", "status"),
    "Conditions of each ModelDeployment: 1 for the current status, 0 for the others.")
"""Like ``kube_node_status_condition``: for every condition ``type`` the ModelDeployment
has (``Ready``, ``Available``, ``Progressing``, ``Degraded``, ``FailedOver``,
``RolledBack``, ``MetricsAvailable``, ``DrillOverdue``, ``Reconciling``, ``Stalled``), one
series per ``status`` (``True``, ``False``, ``Unknown``), 1 for the current one."""

SCALING_RECOMMENDED_REPLICAS = Metric(
    "twinhull_scaling_recommended_replicas", "gauge", DEPLOYMENT,
    "Primary replicas the load asked for at the last scaling decision.")
"""``status.scaling.recommended``: before approval in Suggest mode, so it can differ from
the desired replicas."""

SNAPSHOTS_TOTAL = Metric(
    "twinhull_snapshots_total", "counter", ("outcome",),
    "ModelSnapshots recorded, and verdicts given on them.")
"""``outcome`` is ``Recorded`` (a new snapshot before a revision reaches a member),
``Good`` (verified) or ``Bad`` (failed verification or the progress deadline)."""

ROLLBACKS_TOTAL = Metric(
    "twinhull_rollbacks_total", "counter", (*DEPLOYMENT, "reason"),
    "Rollbacks of a ModelDeployment to an earlier snapshot, by reason.")
"""``reason`` is the rollback's reason: ``ErrorRateExceeded``, ``LatencyExceeded``,
``BurnRateExceeded`` (the page-level burn rate of the tier's availability target),
``ProgressDeadlineExceeded`` (automatic) or ``ManualRollback``. Labelled with the
ModelDeployment (beyond Argo Rollouts' ``{reason}``) so that the alert names what rolled
back; the cardinality is deployments times five."""

AUDIT_RECORDS_TOTAL = Metric(
    "twinhull_audit_records_total", "counter", ("result",),
    "Decisions written to the durable audit record, and writes that failed.")
"""``result`` is ``written``, ``failed`` (records in a write that failed, counted at every
attempt: they wait in memory and are written with the next round) or ``dropped`` (never
written: more waited than the deployment's audit keeps, the oldest went). A failed write
is logged with the decision ids; the decision itself stands, and its Event and audit log
line were emitted."""

EVENTS_TOTAL = Metric(
    "twinhull_events_total", "counter", ("result",),
    "Kubernetes Events twinhull posted, failed to post, or dropped over its budget.")
"""``result`` is ``posted``, ``failed`` (the hub refused or did not answer; logged, not
retried) or ``dropped`` (over the fleet round's budget of 100 Events, Warnings first, as
client-go's spam filter drops: the decisions are still in ``status.decisions`` and the
audit record). A steady ``dropped`` rate means many decisions a round (a member lost at
thousands of ModelDeployments)."""

LEADER = Metric(
    "twinhull_leader", "gauge", ("identity",),
    "1 while this operator replica holds the leader Lease, 0 otherwise.")
"""Exported by every replica, ``identity`` being its Lease holder identity. No series at 1
for 5 minutes means nothing acts on the fleet."""

DRILL_LAST_PASSED_TIMESTAMP_SECONDS = Metric(
    "twinhull_drill_last_passed_timestamp_seconds", "gauge", DEPLOYMENT,
    "Unix time the last passed Drain or Outage FailoverDrill of a ModelDeployment ended.")
"""``status.lastPassedDrillTime``; no series for a deployment that never passed one (its
``DrillOverdue`` condition counts from its creation instead)."""

DEPLOYMENT_INFO = Metric(
    "twinhull_deployment_info", "info", (*DEPLOYMENT, "tier"),
    "1 for each ModelDeployment, labelled with its resolved SLA tier.")
"""The join that gives the runtimes' series their tier, which no runtime series carries:
``… * on (namespace, twinhull_deployment) group_left (tier) twinhull_deployment_info``.
Its presence also means the ModelDeployment exists."""

DEPLOYMENT_CREATED_TIMESTAMP_SECONDS = Metric(
    "twinhull_deployment_created_timestamp_seconds", "gauge", DEPLOYMENT,
    "Unix time each ModelDeployment was created.")
"""``metadata.creationTimestamp``, like ``kube_pod_created``: the idle and unavailable
alerts leave new deployments alone (a first start pulls and loads a model for minutes,
and a week-old deployment without tokens differs from a new one)."""

ROUNDS_PREEMPTED_TOTAL = Metric(
    "twinhull_rounds_preempted_total", "counter", (),
    "Fleet rounds cut short because a member went Down while they ran.")
"""The round stops planning and sends none of its hub writes still queued (the next round
plans with the member Down at once and decides them again); the number of writes not
sent is in the operator's log. A member lost at 2,000 ModelDeployments had its routes
wait ~20 s behind the statuses of the round before."""

ALL: tuple[Metric, ...] = (
    RECONCILE_TOTAL, RECONCILE_ERRORS_TOTAL, RECONCILE_DURATION_SECONDS,
    LOOP_LAST_BEAT_TIMESTAMP_SECONDS, DECISIONS_TOTAL, TRAFFIC_WEIGHT, CLUSTER_PHASE,
    MEMBER_OBJECTS, CLUSTER_PROBE_DURATION_SECONDS, REPLICAS, DEPLOYMENT_CONDITION,
    SCALING_RECOMMENDED_REPLICAS, SNAPSHOTS_TOTAL, ROLLBACKS_TOTAL, AUDIT_RECORDS_TOTAL,
    EVENTS_TOTAL, ROUNDS_PREEMPTED_TOTAL, LEADER,
    DRILL_LAST_PASSED_TIMESTAMP_SECONDS, DEPLOYMENT_INFO,
    DEPLOYMENT_CREATED_TIMESTAMP_SECONDS,
)
"""Every metric family the operator exports."""
