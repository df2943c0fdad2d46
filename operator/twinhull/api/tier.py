"""``ServingTier``: one SLA tier of the tier policy (cluster-scoped).

The tier policy file (``policies/tiers.yaml``) is a list of these objects. The operator
loads it at start, the offline validator reads it, and the ValidatingAdmissionPolicy in
``policies/admission.yaml`` uses the same objects, synced to the hub, as its ``paramKind``:
one definition read by all three. Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from twinhull.api.base import (
    AGE,
    CrdInfo,
    Quantity,
    Resource,
    Spec,
    column,
    rule,
    validations,
)

Percent = Annotated[int, Field(ge=0, le=100)]


class Failback(
    Spec,
    json_schema_extra=validations(
        rule(
            "self.steps.all(s, self.steps.exists_one(t, t == s))"
            " && self.steps[size(self.steps) - 1] == 100",
            "failback.steps must be distinct percentages ending at 100, e.g. [5, 25, 50, 100]",
            field_path=".steps",
        ),
    ),
):
    """How traffic returns to a recovered cluster: step by step, holding at each step."""

    steps: Annotated[
        list[Annotated[int, Field(ge=1, le=100)]],
        Field(min_length=1, max_length=10),
    ] = Field(default_factory=lambda: [5, 25, 50, 100])
    """Percentages of the recovered cluster's normal share, in increasing order, ending at
    100."""
    hold_seconds: Annotated[int, Field(ge=0, le=86400)] = 60
    """Seconds to hold each step while the cluster stays healthy before the next one."""


class DisruptionBudget(Spec):
    """The PodDisruptionBudget placed with every zone's replicas."""

    max_unavailable: Quantity = 1
    """``maxUnavailable`` of the PodDisruptionBudget (a count or a percentage)."""


class Verification(Spec):
    """What a new revision must show before its snapshot is marked Good."""

    window_seconds: Annotated[int, Field(ge=0, le=86400)] = 120
    """Seconds a Ready revision is watched before it is called Good."""
    max_error_rate_percent: Annotated[str, Field(pattern=r"^\d+(\.\d+)?$")] = "1"
    """Highest error rate (percent of requests) tolerated during verification."""
    max_latency_p95_seconds: Annotated[str, Field(pattern=r"^\d+(\.\d+)?$")] = "5"
    """Highest 95th-percentile time to first token tolerated during verification."""


class ServingTierSpec(Spec):
    """The rules and defaults of one SLA tier."""

    availability_target: Annotated[str, Field(pattern=r"^\d{1,2}(\.\d{1,4})?$|^100$")]
    """Availability target in percent, as a string, e.g. ``"99.99"``."""
    priority: Annotated[int, Field(ge=0, le=1_000_000)]
    """Order in which tiers are served when GPUs are short (higher first)."""
    min_clusters: Annotated[int, Field(ge=1, le=16)] = 1
    """Fewest clusters a ModelDeployment of this tier must be placed in."""
    min_zones_per_cluster: Annotated[int, Field(ge=1, le=16)] = 1
    """Fewest zones each placement entry must spread over."""
    fallback_required: bool = False
    """Whether ``spec.fallback`` must be set."""
    headroom_percent: Percent = 20
    """Spare capacity kept above measured demand: the floor of the adaptive headroom (the
    last 10 minutes' peak rate over the rate now, at most twice this), so bursty demand
    keeps more."""
    scale_down_stabilization_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    """Scale down only after demand stayed lower for this long."""
    failback: Failback = Field(default_factory=Failback)
    """How traffic returns to a recovered cluster."""
    rto_seconds: Annotated[int, Field(ge=1, le=86400)] = 300
    """Recovery time objective: a failover drill passes only if each deployment of the tier
    is fully served elsewhere (traffic shifted, survivors at capacity) within this."""
    disruption_budget: DisruptionBudget = Field(default_factory=DisruptionBudget)
    """The PodDisruptionBudget of each zone."""
    priority_class_name: Annotated[str, Field(max_length=253)] | None = None
    """PriorityClass given to the pods (created by the chart), if any."""
    automatic_rollback: bool = True
    """Roll back to the last Good snapshot automatically when a revision fails."""
    rollback_history_limit: Annotated[int, Field(ge=1, le=100)] = 10
    """Snapshots kept per ModelDeployment unless its spec says otherwise."""
    verification: Verification = Field(default_factory=Verification)
    """What a new revision must show before it counts as Good."""


class ServingTier(Resource):
    """An SLA tier: availability target, placement minimums and operating defaults."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="ServingTier",
        plural="servingtiers",
        singular="servingtier",
        scope="Cluster",
        short_names=("tier",),
        has_status=False,
        printer_columns=(
            column("Availability", ".spec.availabilityTarget"),
            column("Clusters", ".spec.minClusters", type_="integer"),
            column("Zones", ".spec.minZonesPerCluster", type_="integer"),
            column("Fallback", ".spec.fallbackRequired", type_="boolean"),
            column("Priority", ".spec.priority", type_="integer"),
            AGE,
        ),
    )

    kind: Literal["ServingTier"] = "ServingTier"
    spec: ServingTierSpec
