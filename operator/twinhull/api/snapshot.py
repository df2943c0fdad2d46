"""``ModelSnapshot``: an immutable record of one rendered revision of a ModelDeployment.

Pure: no I/O. The spec holds exactly what re-renders the member objects identically:
the ModelDeployment spec, the resolved tier and the renderer version; the content hash
covers all three. Only ``status`` (the outcome) changes after creation.
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
    rule,
    validations,
)
from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.api.tier import ServingTierSpec

SnapshotReason = Literal["NewRevision", "Rollback", "Restore"]
SnapshotOutcome = Literal["Pending", "Good", "Bad"]


class DeploymentRef(Spec):
    """The ModelDeployment a snapshot belongs to (same namespace)."""

    name: Annotated[str, Field(min_length=1, max_length=253)]
    uid: Annotated[str, Field(max_length=64)] | None = None


class ModelSnapshotSpec(
    Spec,
    json_schema_extra=validations(
        rule("self == oldSelf", "a ModelSnapshot is immutable; create a new one instead"),
    ),
):
    """One revision, enough to re-render every member object identically."""

    deployment_ref: DeploymentRef
    """The ModelDeployment."""
    generation: Annotated[int, Field(ge=0)]
    """``metadata.generation`` of the ModelDeployment when recorded."""
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{8,64}$")]
    """Content hash of deployment spec, tier and renderer version."""
    reason: SnapshotReason
    """Why it was recorded."""
    renderer: Annotated[str, Field(max_length=64)]
    """Version of the renderer that turns it into member objects."""
    tier: Name
    """Name of the tier resolved."""
    tier_spec: ServingTierSpec
    """The tier as it was resolved, so a later policy edit cannot change this revision."""
    deployment: ModelDeploymentSpec
    """The ModelDeployment spec of this revision."""


class ModelSnapshotStatus(Status):
    """How the revision turned out."""

    outcome: SnapshotOutcome = "Pending"
    """Pending until verified; Good once Ready everywhere and within targets; Bad otherwise."""
    reason: str = ""
    """CamelCase reason of the outcome."""
    message: str = ""
    """Detail of the outcome."""
    verified_time: str | None = None
    """RFC 3339 time the outcome was decided."""
    conditions: Conditions


class ModelSnapshot(Resource):
    """An immutable revision of a ModelDeployment, for rollback and restore."""

    crd: ClassVar[CrdInfo] = CrdInfo(
        kind="ModelSnapshot",
        plural="modelsnapshots",
        singular="modelsnapshot",
        scope="Namespaced",
        short_names=("msnap",),
        printer_columns=(
            column("Deployment", ".spec.deploymentRef.name"),
            column("Generation", ".spec.generation", type_="integer"),
            column("Hash", ".spec.hash"),
            column("Outcome", ".status.outcome"),
            column("Reason", ".spec.reason", priority=1),
            AGE,
        ),
    )

    kind: Literal["ModelSnapshot"] = "ModelSnapshot"
    spec: ModelSnapshotSpec
    status: ModelSnapshotStatus | None = None
