"""``ServingCluster``: a member cluster twinhull may place model servers in (cluster-scoped).

Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field

from twinhull.api.base import (
    AGE,
    READY,
    Conditions,
    CrdInfo,
    Name,
    Resource,
    Spec,
    Status,
    column,
    rule,
    validations,
)


class SecretKeyRef(Spec):
    """Where the member's kubeconfig is kept. Read from the operator's namespace only."""

    namespace: Name | None = None
    """Namespace of the Secret; must be the operator's own (default: the operator's)."""
    name: Annotated[str, Field(min_length=1, max_length=253)]
    """Name of the Secret."""
    key: Annotated[str, Field(min_length=1, max_length=253)] = "kubeconfig"
    """Key in the Secret's data holding the kubeconfig."""


class Capacity(Spec):
    """What twinhull may use in this cluster."""

    gpus: Annotated[int, Field(ge=0, le=1_000_000)]
    """GPUs twinhull may place across all its ModelDeployments in this cluster."""


class HealthProbe(Spec):
    """How the cluster is probed, and how many results flip its phase (hysteresis)."""

    probe_interval_seconds: Annotated[int, Field(ge=1, le=300)] = 2
    """Seconds between probes."""
    timeout_seconds: Annotated[int, Field(ge=1, le=60)] = 2
    """Seconds before a probe counts as failed."""
    failure_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    """Consecutive failed probes before the cluster is Down (one failure makes it Suspect)."""
    recovery_threshold: Annotated[int, Field(ge=1, le=100)] = 5
    """Consecutive good probes before a Down cluster is Healthy again."""


class ServingClusterSpec(
    Spec,
    json_schema_extra=validations(
        rule(
            "self.zones.all(z, self.zones.exists_one(y, y == z))",
            "each zone may appear once in zones; remove the duplicate",
            field_path=".zones",
        ),
    ),
):
    """A member cluster: how to reach it, where it is, what it may hold."""

    kubeconfig_secret_ref: SecretKeyRef
    """The Secret with the kubeconfig twinhull uses for this cluster."""
    region: Name
    """Region of the cluster (``topology.kubernetes.io/region``)."""
    zones: Annotated[list[Name], Field(min_length=1, max_length=16)]
    """Zones of the cluster (``topology.kubernetes.io/zone`` values) twinhull may use."""
    capacity: Capacity
    """What twinhull may place here."""
    health: HealthProbe = Field(default_factory=HealthProbe)
    """Probe interval and thresholds."""


ClusterPhase = Literal["Healthy", "Suspect", "Down", "Recovering"]


class ZoneHealth(Status):
    """What the last probe saw in one zone."""

    nodes: Annotated[int, Field(ge=0)] = 0
    """Nodes labelled with this zone."""
    ready_nodes: Annotated[int, Field(ge=0)] = 0
    """Of those, nodes whose Ready condition is True."""
    allocatable_gpus: Annotated[int, Field(ge=0)] = 0
    """Allocatable ``nvidia.com/gpu`` on the Ready nodes."""
    node_gpus: Annotated[int, Field(ge=0)] = 0
    """Allocatable ``nvidia.com/gpu`` on all the zone's nodes, Ready or not: no more of
    the zone's replicas are planned than this holds."""
    largest_node_gpus: Annotated[int, Field(ge=0)] = 0
    """The most allocatable ``nvidia.com/gpu`` of one node: a replica needing more is not
    planned in this zone."""


class ServingClusterStatus(Status):
    """Observed health of a member cluster."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` this status describes."""
    phase: ClusterPhase | None = None
    """Healthy, Suspect (failing, below the threshold), Down or Recovering."""
    phase_since: str | None = None
    """RFC 3339 time the phase last changed."""
    last_probe_time: str | None = None
    """RFC 3339 time of the last probe written: every probe that changes this status is,
    an unchanged one after the operator's ``--heartbeat`` (5 minutes by default)."""
    consecutive_failures: Annotated[int, Field(ge=0)] = 0
    """Failed probes in a row."""
    consecutive_successes: Annotated[int, Field(ge=0)] = 0
    """Good probes in a row."""
    message: str = ""
    """What the last probe found, e.g. the error of a failed one."""
    zones: dict[str, ZoneHealth] = Field(default_factory=dict)
    """Per-zone readiness from the last good probe."""
    allocatable_gpus: Annotated[int, Field(ge=0)] = 0
    """Allocatable GPUs on Ready nodes in the listed zones."""
    conditions: Conditions
    """``Ready`` (API reachable and healthy) and ``Reachable``."""


NAME_RULES = (
    rule(
        "self.metadata.name != 'fallback'",
        "metadata.name 'fallback' is reserved: it is the traffic key and member Service name"
        " of fallback models; name the cluster otherwise",
    ),
    rule(
        "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')"
        " && size(self.metadata.name) <= 63",
        "metadata.name must be a DNS label (lower-case letters, digits and '-', no dots, at"
        " most 63 characters): ModelDeployments place by it and member Services end with"
        " it; rename the ServingCluster",
    ),
)
"""CEL rules on the whole object, on its name (see ``deployment.NAME_RULES``)."""


class ServingCluster(Resource):
    """A member cluster twinhull places model servers in."""

    name_rules: ClassVar[tuple[dict[str, str], ...]] = NAME_RULES

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="ServingCluster",
        plural="servingclusters",
        singular="servingcluster",
        scope="Cluster",
        short_names=("scl",),
        printer_columns=(
            column("Region", ".spec.region"),
            column("Phase", ".status.phase"),
            READY,
            column("GPUs", ".status.allocatableGpus", type_="integer"),
            column("Capacity", ".spec.capacity.gpus", type_="integer", priority=1),
            column("Last-Probe", ".status.lastProbeTime", type_="date", priority=1),
            AGE,
        ),
    )

    kind: Literal["ServingCluster"] = "ServingCluster"
    spec: ServingClusterSpec
    status: ServingClusterStatus | None = None
