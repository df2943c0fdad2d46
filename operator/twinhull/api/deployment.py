"""``ModelDeployment``: one model served active-active across clusters (namespaced).

Pure: no I/O. The cross-field rules that do not need the tier policy are CEL rules on the
models (``x-kubernetes-validations``); the API server enforces them from the generated CRD
and ``twinhull validate`` evaluates the very same expressions offline.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from twinhull.api.base import (
    AGE,
    READY,
    Conditions,
    CrdInfo,
    Name,
    Quantity,
    Resource,
    Spec,
    Status,
    column,
    rule,
    validations,
)

Runtime = Literal["vllm", "tgi", "sglang", "generic"]
ScalingMode = Literal["Enforce", "Suggest", "Off"]
ScalingMetric = Literal["tokens", "queue", "custom"]
FailoverMode = Literal["Automatic", "Manual"]

ZoneReplicas = Annotated[
    dict[Name, Annotated[int, Field(ge=0, le=1000)]],
    Field(
        min_length=1,
        max_length=16,
        json_schema_extra=validations(
            rule(
                "self.all(z, self[z] >= 0)",
                "zone replica counts must be 0 or more; use 0 to keep a zone empty",
            ),
            rule(
                "self.all(z, z.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",
                "zone names must be DNS labels (lower-case letters, digits, '-'), as listed in"
                " the ServingCluster's zones",
            ),
        ),
    ),
]


class EnvVar(Spec):
    """A plain environment variable for the model server (no secrets: use the image)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    value: Annotated[str, Field(max_length=32768)] = ""


class ModelResources(Spec):
    """Resources requested by one replica."""

    gpus: Annotated[int, Field(ge=0, le=64)] = 1
    """``nvidia.com/gpu`` per replica (the tensor-parallel size)."""
    cpu: Quantity | None = None
    """CPU request, e.g. ``8``."""
    memory: Quantity | None = None
    """Memory request, e.g. ``64Gi``."""


class ModelSpec(Spec):
    """A model server: which model, which runtime, which image."""

    name: Name
    """Model name clients route by (the routing key)."""
    runtime: Runtime = "vllm"
    """Serving runtime; selects metric names and probes."""
    image: Annotated[str, Field(min_length=1, max_length=1024)]
    """Container image of the model server."""
    args: Annotated[list[Annotated[str, Field(max_length=4096)]], Field(max_length=64)] = Field(
        default_factory=list
    )
    """Arguments of the server."""
    env: Annotated[list[EnvVar], Field(max_length=64)] = Field(default_factory=list)
    """Environment of the server."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """Port the server listens on (HTTP, OpenAI-compatible)."""
    resources: ModelResources = Field(default_factory=ModelResources)
    """Resources of one replica."""


class ClusterPlacement(Spec):
    """Replicas per zone in one member cluster."""

    cluster: Name
    """Name of a ``ServingCluster``."""
    zones: ZoneReplicas
    """Replicas per zone, e.g. ``{east-a: 2, east-b: 2}``; zones the cluster lists."""


class Fallback(Spec):
    """The degrade path: a smaller model that serves when the primary cannot."""

    model: ModelSpec
    """The fallback model server."""
    replicas_per_zone: Annotated[int, Field(ge=0, le=1000)] = 1
    """Warm standby replicas in every placed zone; 0 = cold, started on failover."""


class Scaling(
    Spec,
    json_schema_extra=validations(
        rule(
            "self.minReplicasPerZone <= self.maxReplicasPerZone",
            "minReplicasPerZone must not exceed maxReplicasPerZone; lower the minimum or raise"
            " the maximum",
            field_path=".minReplicasPerZone",
        ),
        rule(
            "self.metric != 'custom' || has(self.query)",
            "metric: custom needs a PromQL query in scaling.query; add one or use tokens/queue",
            field_path=".query",
        ),
        rule(
            "self.metric == 'custom' || !has(self.query)",
            "scaling.query is only read when metric is custom; remove it or set metric: custom",
            field_path=".query",
        ),
    ),
):
    """Elastic scaling from Prometheus load."""

    mode: ScalingMode = "Enforce"
    """Enforce applies decisions; Suggest records them until approved; Off keeps placement."""
    metric: ScalingMetric = "tokens"
    """What load means: tokens per second, queued requests, or a custom PromQL query."""
    query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """PromQL returning demand in the unit of the target (only with ``metric: custom``)."""
    target_tokens_per_second_per_replica: Annotated[int, Field(ge=1, le=10_000_000)] = 2500
    """Tokens per second one replica should serve at the target utilisation."""
    target_queue_per_replica: Annotated[int, Field(ge=1, le=100_000)] = 4
    """Waiting requests per replica above which the replica count is raised."""
    min_replicas_per_zone: Annotated[int, Field(ge=0, le=1000)] = 1
    """Fewest replicas per placed zone."""
    max_replicas_per_zone: Annotated[int, Field(ge=0, le=1000)] = 8
    """Most replicas per placed zone."""
    pre_warm: bool = True
    """Raise the floor ahead of a recurring peak: the demand measured at the same time
    yesterday and a week ago, a start-up time ahead (the operator's ``--prewarm-*``
    flags). Only with ``metric: tokens``."""


class Traffic(Spec):
    """How traffic moves when a cluster fails."""

    failover: FailoverMode = "Automatic"
    """Automatic moves traffic at once; Manual records the shift and waits for approval."""


class RollbackPolicy(Spec):
    """Snapshot retention and rollout deadline."""

    history_limit: Annotated[int, Field(ge=1, le=100)] | None = None
    """Snapshots kept (the last Good one is always kept); default from the tier."""
    progress_deadline_seconds: Annotated[int, Field(ge=30, le=86400)] = 600
    """Seconds a new revision may take to become Ready everywhere before it is failed."""


class ModelDeploymentSpec(
    Spec,
    json_schema_extra=validations(
        rule(
            "self.placement.all(p, self.placement.exists_one(q, q.cluster == p.cluster))",
            "each cluster may appear once in spec.placement; merge the duplicate entries",
            field_path=".placement",
        ),
        rule(
            "!has(self.fallback) || self.fallback.model.name != self.model.name",
            "fallback.model.name must differ from model.name; the fallback is another model",
            field_path=".fallback.model.name",
        ),
        rule(
            "self.placement.all(p, p.cluster != 'fallback')",
            "no cluster may be called 'fallback' in spec.placement: it is the traffic key and"
            " Service name of the fallback model; rename the ServingCluster",
            field_path=".placement",
        ),
        rule(
            "!has(self.fallback) || self.placement.all(p, p.zones.all(z, p.zones.all(y,"
            " z != 'fallback-' + y)))",
            "with a fallback, zones 'fallback-<zone>' and '<zone>' of one cluster render the"
            " same Deployment name (<name>-fallback-<zone>); place only one of them",
            field_path=".placement",
        ),
    ),
):
    """The desired serving fleet of one model."""

    sla_tier: Name
    """Name of a tier of the tier policy (``critical``, ``standard``, ``best-effort``…)."""
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    """Rank within the tier when GPUs are short (higher first); compared before measured
    demand, so 0 everywhere lets the busiest deployment keep its primary model."""
    model: ModelSpec
    """The primary model server."""
    placement: Annotated[
        list[ClusterPlacement],
        # An atomic list (not a list-map keyed by cluster): the CEL rule then reports a
        # duplicate cluster in its own words, the same as `twinhull validate`.
        Field(min_length=1, max_length=16),
    ]
    """Replicas per zone, per cluster; every cluster serves at once (active-active)."""
    fallback: Fallback | None = None
    """The degrade path when the primary cannot serve."""
    scaling: Scaling | None = None
    """Elastic scaling; without it the placement numbers are kept exactly."""
    traffic: Traffic = Field(default_factory=Traffic)
    """Failover behaviour."""
    rollback: RollbackPolicy = Field(default_factory=RollbackPolicy)
    """Snapshot retention and rollout deadline."""


class ZoneReplicaStatus(Status):
    """Replicas of one zone."""

    desired: Annotated[int, Field(ge=0)] = 0
    ready: Annotated[int, Field(ge=0)] = 0


class ClusterServingStatus(Status):
    """What runs in one member cluster."""

    name: str
    """The ServingCluster."""
    phase: str = "Unknown"
    """The cluster's health phase as the operator last saw it."""
    weight: Annotated[int, Field(ge=0, le=100)] = 0
    """Share of traffic sent to this cluster, percent."""
    zones: dict[str, ZoneReplicaStatus] = Field(default_factory=dict)
    """Replicas per zone."""
    fallback_zones: dict[str, ZoneReplicaStatus] = Field(default_factory=dict)
    """Fallback replicas per zone."""
    message: str = ""
    """Why the cluster is not fully serving, if it is not."""


class ScalingRecommendation(Status):
    """A recommended replica count and when it was made (kept when it changes)."""

    time: str
    replicas: Annotated[int, Field(ge=0)]


class ScalingStatus(Status):
    """The last scaling decision and what it was based on."""

    replicas: Annotated[int, Field(ge=0)] | None = None
    """Primary replicas in all, as decided by scaling."""
    demand_tokens_per_second: str | None = None
    """Measured demand, tokens per second."""
    waiting: str | None = None
    """Measured queued requests."""
    forecast_tokens_per_second: str | None = None
    """Pre-warm: the highest demand at the same time on earlier days, a lead time ahead."""
    running: str | None = None
    """Requests being served."""
    latency_p95_seconds: str | None = None
    """95th percentile time to first token (or request latency, per runtime)."""
    demand_by_zone: dict[str, str] = Field(default_factory=dict)
    """Measured tokens per second per ``cluster/zone``."""
    recommended: Annotated[int, Field(ge=0)] | None = None
    """What the load asked for at the last decision (before approval in Suggest mode)."""
    decision: str | None = None
    """Id of the last Scale decision (approve a Suggest decision by this id)."""
    message: str = ""
    """Why, in words."""
    history: Annotated[list[ScalingRecommendation], Field(max_length=100)] = Field(
        default_factory=list)
    """Recent recommendations (for the scale-down stabilization window)."""
    forecast_missed_at: str | None = None
    """Since when the peak the pre-warm forecast said has been missing; once it has been
    for 5 minutes pre-warm stands down until 12 h after this time."""


class Decision(Status):
    """One decision of the planner, with its inputs, so it can be replayed and audited."""

    id: str
    """Stable id: hash of the decision and its inputs."""
    kind: Annotated[str, Field(max_length=64)]
    """Scale, ShiftTraffic, Failover, Failback, Rollback…"""
    time: str
    """RFC 3339 time of the decision."""
    reason: str
    """Why, in words."""
    applied: bool = True
    """False while waiting for approval (Suggest or Manual mode)."""
    inputs: dict[str, Any] = Field(
        default_factory=dict, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """The observed values the decision was computed from."""


class FailoverLeg(Status):
    """Failover state of one placed cluster, kept so a restarted operator resumes it."""

    state: Literal["Serving", "FailedOver", "FailingBack"] = "Serving"
    """Serving its share, failed over (weight 0), or failing back step by step."""
    since: str | None = None
    """RFC 3339 time the state began."""
    step: int = -1
    """Index of the tier's failback step reached (-1: holding before the first)."""
    step_since: str | None = None
    """RFC 3339 time the current step began."""


class RolloutStatus(Status):
    """A revision on its way to the clusters (kept so a restarted operator resumes it)."""

    target: str
    """The ModelSnapshot being rolled out, or rolled back to."""
    mode: Literal["Initial", "Rollout", "Rollback"]
    """Initial: the first revision, everywhere at once; Rollout: one cluster at a time;
    Rollback: a known-Good snapshot, everywhere at once."""
    since: str
    """RFC 3339 time it started (the progress deadline counts from here)."""
    done: list[str] = Field(default_factory=list)
    """Clusters running the target, Ready."""
    verifying_since: str | None = None
    """RFC 3339 time every cluster ran it: the verification window counts from here."""
    measured_since: str | None = None
    """RFC 3339 time Prometheus first had series of the revision itself (its pods' revision
    label) while every cluster ran it: the window counts its own readings from here."""
    failed: str = ""
    """Why it failed when it could not be rolled back (it then stops)."""
    paused_since: str | None = None
    """RFC 3339 time it was paused because a placed cluster stopped serving (None: not
    paused)."""
    paused_seconds: Annotated[float, Field(ge=0)] = 0
    """Seconds paused so far: the progress deadline does not count them."""
    drained: list[str] = Field(default_factory=list)
    """Rollback: clusters where the Bad revision was Ready when it failed on its own
    requests; they get no traffic while another cluster has Ready capacity, until they run
    the target again."""


class RollbackRequestStatus(Status):
    """The last manual rollback request handled (``twinhull rollback``)."""

    id: str
    to: str | None = None
    by: str = ""
    at: str = ""
    result: str = ""


class ModelDeploymentStatus(Status):
    """What the operator observed and decided for one ModelDeployment."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` this status describes."""
    conditions: Conditions
    """Ready, Available, Progressing, Degraded, FailedOver, RolledBack."""
    clusters: list[ClusterServingStatus] = Field(default_factory=list)
    """Per cluster: phase, weight, replicas per zone."""
    traffic: dict[str, Annotated[int, Field(ge=0, le=100)]] = Field(default_factory=dict)
    """Traffic percent per cluster name and ``fallback``; sums to 100."""
    traffic_split: str | None = None
    """The same split in one line, e.g. ``east=50 west=50 fallback=0``."""
    replica_summary: str | None = None
    """Ready/desired primary replicas over all serving clusters, e.g. ``4/4``."""
    scaling: ScalingStatus | None = None
    """The last scaling decision."""
    current_snapshot: str | None = None
    """The ModelSnapshot running now."""
    last_good_snapshot: str | None = None
    """The newest ModelSnapshot verified Good."""
    rollout: RolloutStatus | None = None
    """The revision on its way, if any."""
    held_back: str | None = None
    """Revision hash of the spec that was rolled back: not retried until the spec changes."""
    held_back_reason: str | None = None
    """Why it was rolled back: the reason (CamelCase), a colon, and the message."""
    rollback_request: RollbackRequestStatus | None = None
    """The last manual rollback request handled."""
    failover: dict[str, FailoverLeg] = Field(default_factory=dict)
    """Failover state per placed cluster."""
    pending: Decision | None = None
    """A decision waiting for approval (``traffic.failover: Manual``): annotate the
    ModelDeployment ``serving.twinhull.io/approve=<id>`` to apply it."""
    unserved_replicas: Annotated[int, Field(ge=0)] = 0
    """Declared primary replicas no serving zone can carry now."""
    decisions: Annotated[list[Decision], Field(max_length=50)] = Field(default_factory=list)
    """Recent decisions, newest last."""
    last_passed_drill: str | None = None
    """NAMESPACE/NAME of the last FailoverDrill (Drain or Outage) it passed."""
    last_passed_drill_time: str | None = None
    """When that drill ended; the condition DrillOverdue says when a critical deployment
    has gone more than 90 days without one."""


MAX_NAME = 63 - len("-fallback")
"""The longest ModelDeployment name: its fallback Service ``<name>-fallback`` in each member
must be a DNS-1035 label (63 characters at most)."""

NAME_RULES = (
    rule(
        "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
        "metadata.name must be a DNS-1035 label (lower-case letters, digits and '-', starting"
        " with a letter, no dots): member Services are named after it; rename the"
        " ModelDeployment",
    ),
    rule(
        f"size(self.metadata.name) <= {MAX_NAME}",
        f"metadata.name must be at most {MAX_NAME} characters, so that the member Service"
        " <name>-fallback fits in 63; shorten the name",
    ),
    rule(
        "self.spec.placement.all(p, size(self.metadata.name) + size(p.cluster) <= 62)",
        "metadata.name, '-' and each placed cluster's name must fit in 63 characters (the"
        " member Service <name>-<cluster>); shorten the name",
    ),
)
"""CEL rules on the whole object (the API server gives rules at the schema's root
``self.metadata.name``): the names of the member objects rendered from a ModelDeployment
are valid. Collisions between two ModelDeployments are found at run time
(``plan.render.collisions``)."""


class ModelDeployment(Resource):
    """A model deployment, declared once, served active-active in several clusters."""

    name_rules: ClassVar[tuple[dict[str, str], ...]] = NAME_RULES

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="ModelDeployment",
        plural="modeldeployments",
        singular="modeldeployment",
        scope="Namespaced",
        short_names=("md", "mdep"),
        printer_columns=(
            column("Tier", ".spec.slaTier"),
            column("Model", ".spec.model.name"),
            READY,
            column("Replicas", ".status.replicaSummary"),
            column("Traffic", ".status.trafficSplit"),
            column("Snapshot", ".status.currentSnapshot", priority=1),
            AGE,
        ),
    )

    kind: Literal["ModelDeployment"] = "ModelDeployment"
    spec: ModelDeploymentSpec
    status: ModelDeploymentStatus | None = None
