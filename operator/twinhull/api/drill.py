"""``FailoverDrill``: a rehearsed failover of a cluster or zone, ending in a report.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from twinhull.api.base import (
    AGE,
    Conditions,
    CrdInfo,
    Name,
    Resource,
    Spec,
    Status,
    column,
)

DrillMode = Literal["DryRun", "Drain", "Outage"]
DrillPhase = Literal["Pending", "Preflight", "WaitingForApproval", "Detecting", "Investigating",
                     "Mitigating", "Monitoring", "Resolved", "Aborted", "Refused",
                     "Scheduled"]
"""Where a drill is: the incident states of the incident process (Detecting, Investigating,
Mitigating, Monitoring, Resolved) between the preflight and the end. Aborted and Refused
end a drill early; Scheduled is the phase of a drill with a ``schedule`` (it starts runs)."""
Verdict = Literal["Go", "NoGo", "Passed", "Failed", "Aborted", "Refused"]
Severity = Literal["P0", "P1", "P2", "P3"]
ConcurrencyPolicy = Literal["Forbid"]


class DrillTarget(Spec):
    """What the drill takes out: a whole cluster, or one zone of it."""

    cluster: Name
    """The ServingCluster to fail."""
    zone: Name | None = None
    """One zone of that cluster; the whole cluster when omitted."""


class LabelSelector(Spec):
    """Which ModelDeployments take part: those of the drill's namespace placed on the target
    and carrying these labels (all placed on the target when empty)."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)


class Guardrails(Spec):
    """When a Live drill stops at once and traffic returns without a ramp. Checked every
    round while the fault is on."""

    max_error_percent: Annotated[str, Field(pattern=r"^\d+(\.\d+)?$")] = "5"
    """Abort when a critical deployment in scope fails more than this percent of its
    requests (the runtime's failure series, read from Prometheus)."""
    latency_within_target: bool = True
    """Abort when a critical deployment's 95th-percentile latency exceeds its tier's
    ``verification.maxLatencyP95Seconds`` (fewer than 95 % of requests within target)."""
    min_serving_replicas: Annotated[int, Field(ge=0, le=1000)] = 1
    """Abort when a deployment in scope has fewer Ready primary or fallback replicas than
    this serving traffic (left without serving capacity)."""


class FailoverDrillSpec(Spec):
    """A failover rehearsal, or with ``schedule``, the template of rehearsals that run on a
    cron schedule."""

    target: DrillTarget
    """The cluster or zone to take out of service."""
    selector: LabelSelector = Field(default_factory=LabelSelector)
    """ModelDeployments in scope."""
    duration_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    """How long the target stays out before traffic fails back."""
    mode: DrillMode = "DryRun"
    """DryRun checks whether the survivors could take over and changes nothing; Drain
    treats the target as Down for the deployments in scope (traffic only) and fails back
    through the tier's steps; Outage also scales the target's replicas of the scope to 0
    (needs the approval annotation with the id in ``status.pendingApproval``)."""
    guardrails: Guardrails = Field(default_factory=Guardrails)
    """When a Live drill aborts by itself."""
    schedule: Annotated[str, Field(min_length=9, max_length=100)] | None = None
    """A cron schedule (five fields, UTC, e.g. ``0 3 1 */3 *`` quarterly): this object then
    starts a drill run (a FailoverDrill it owns, named after it and the time) each time."""
    concurrency_policy: ConcurrencyPolicy = "Forbid"
    """A scheduled run never starts while the previous one is still running."""
    history_limit: Annotated[int, Field(ge=1, le=100)] = 4
    """Finished runs a schedule keeps."""

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        """A schedule is five cron fields (minute hour day-of-month month day-of-week)."""
        if value is None:
            return value
        from datetime import UTC, datetime

        from cronsim import CronSim, CronSimError

        try:
            CronSim(value, datetime(2026, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise ValueError(f"not a cron schedule ({exc}); write five fields, e.g. "
                             "'0 3 1 */3 *' for 03:00 UTC on the first day of every quarter"
                             ) from exc
        return value


class TimelineEntry(Status):
    """One step of the drill."""

    time: str
    event: Annotated[str, Field(max_length=64)]
    message: str = ""


class Sample(Status):
    """The state of one deployment at one moment of the drill (for the timeline chart)."""

    t: Annotated[float, Field(ge=0)]
    """Seconds since the drill started."""
    weights: dict[str, int] = Field(default_factory=dict)
    """Published traffic weight per cluster (and ``fallback``)."""
    ready: dict[str, int] = Field(default_factory=dict)
    """Ready primary replicas per cluster."""


class DrillResult(Status):
    """What happened to one ModelDeployment during the drill."""

    deployment: str
    tier: str = ""
    shift_seconds: float | None = None
    """Seconds from the fault until the target's weight reached 0."""
    capacity_seconds: float | None = None
    """Seconds from the fault until the survivors had every replica planned Ready."""
    failback_seconds: float | None = None
    """Seconds from the end of the fault until the target's share was fully back."""
    rto_seconds: float | None = None
    """Recovery time: the later of shift and capacity (service fully restored elsewhere)."""
    rto_target_seconds: int | None = None
    """The tier's ``rtoSeconds``."""
    failback_steps: list[str] = Field(default_factory=list)
    """Each failback step as it was verified: ``25% at 41.0s (3/3 Ready)``."""
    requests_served: float | None = None
    """Requests served during the drill (Prometheus)."""
    requests_failed: float | None = None
    """Requests that failed during the drill (Prometheus)."""
    fallback_requests: float | None = None
    """Requests served by the fallback model during the drill (Prometheus)."""
    max_error_percent: float | None = None
    max_latency_p95_seconds: float | None = None
    within_target: bool | None = None
    """Whether the 95th-percentile latency stayed within the tier's target throughout."""
    degraded: bool = False
    """Some of its replicas found no GPUs while the target was out."""
    expected_weights: dict[str, int] = Field(default_factory=dict)
    """Weights the plan gives with the target out (DryRun and Live)."""
    verdict: Literal["Passed", "Failed", "Go", "NoGo", ""] = ""
    message: str = ""
    samples: Annotated[list[Sample], Field(max_length=400)] = Field(default_factory=list)


class DrillRun(Status):
    """One run started by a schedule."""

    name: str
    start_time: str | None = None
    verdict: str = ""


class FailoverDrillStatus(Status):
    """Timeline and report of the drill."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    phase: DrillPhase = "Pending"
    verdict: Verdict | None = None
    reasons: list[str] = Field(default_factory=list)
    """Why the verdict: each failed check or abort cause, in words."""
    severity: Severity | None = None
    """The severity the same outage would have had without failover (incident process
    P0-P3), from the tiers and traffic of the deployments in scope."""
    pending_approval: str | None = None
    """An Outage drill waits for this id in the annotation ``serving.twinhull.io/approve``."""
    start_time: str | None = None
    fault_time: str | None = None
    restore_time: str | None = None
    completion_time: str | None = None
    deployments: list[str] = Field(default_factory=list)
    """The ModelDeployments in scope (NAMESPACE/NAME), fixed when the drill starts."""
    timeline: Annotated[list[TimelineEntry], Field(max_length=500)] = Field(default_factory=list)
    results: list[DrillResult] = Field(default_factory=list)
    report: str = ""
    """Summary in words."""
    last_schedule_time: str | None = None
    """A schedule: when it last started a run."""
    next_schedule_time: str | None = None
    runs: list[DrillRun] = Field(default_factory=list)
    """A schedule: its runs, newest first."""
    conditions: Conditions


class FailoverDrill(Resource):
    """A failover drill: take a cluster or zone out, measure, restore, report."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="FailoverDrill",
        plural="failoverdrills",
        singular="failoverdrill",
        scope="Namespaced",
        short_names=("drill",),
        printer_columns=(
            column("Cluster", ".spec.target.cluster"),
            column("Zone", ".spec.target.zone"),
            column("Mode", ".spec.mode"),
            column("Phase", ".status.phase"),
            column("Verdict", ".status.verdict"),
            AGE,
        ),
    )

    kind: Literal["FailoverDrill"] = "FailoverDrill"
    spec: FailoverDrillSpec
    status: FailoverDrillStatus | None = None
