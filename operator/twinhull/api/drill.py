"""``FailoverDrill``: a rehearsed failover of a cluster or zone, ending in a report.

Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

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

DrillMode = Literal["DryRun", "Live"]
DrillPhase = Literal["Pending", "Running", "Restoring", "Succeeded", "Failed"]


class DrillTarget(Spec):
    """What the drill takes out: a whole cluster, or one zone of it."""

    cluster: Name
    """The ServingCluster to fail."""
    zone: Name | None = None
    """One zone of that cluster; the whole cluster when omitted."""


class LabelSelector(Spec):
    """Which ModelDeployments take part (all in the drill's namespace when empty)."""

    match_labels: dict[str, Annotated[str, Field(max_length=63)]] = Field(default_factory=dict)


class FailoverDrillSpec(Spec):
    """A failover rehearsal."""

    target: DrillTarget
    """The cluster or zone to take out of service."""
    selector: LabelSelector = Field(default_factory=LabelSelector)
    """ModelDeployments in scope."""
    duration_seconds: Annotated[int, Field(ge=10, le=86400)] = 300
    """How long the target stays out before traffic fails back."""
    mode: DrillMode = "DryRun"
    """DryRun computes and reports the plan; Live moves traffic for real."""


class TimelineEntry(Status):
    """One step of the drill."""

    time: str
    event: Annotated[str, Field(max_length=64)]
    message: str = ""


class DrillResult(Status):
    """What happened to one ModelDeployment during the drill."""

    deployment: str
    traffic_moved_seconds: str | None = None
    """Seconds from the fault until the target's weight reached 0."""
    recovered_seconds: str | None = None
    """Seconds from the end of the fault until traffic was fully back."""
    degraded: bool = False
    message: str = ""


class FailoverDrillStatus(Status):
    """Timeline and report of the drill."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    phase: DrillPhase = "Pending"
    start_time: str | None = None
    completion_time: str | None = None
    timeline: Annotated[list[TimelineEntry], Field(max_length=500)] = Field(default_factory=list)
    results: list[DrillResult] = Field(default_factory=list)
    report: str = ""
    """Summary in words."""
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
            AGE,
        ),
    )

    kind: Literal["FailoverDrill"] = "FailoverDrill"
    spec: FailoverDrillSpec
    status: FailoverDrillStatus | None = None
