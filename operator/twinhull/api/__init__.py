"""The twinhull API (``serving.twinhull.io/v1alpha1``) as pydantic models. Pure: no I/O."""

from twinhull.api.base import API_VERSION, GROUP, VERSION, Condition, Resource
from twinhull.api.cluster import ServingCluster, ServingClusterSpec, ServingClusterStatus
from twinhull.api.deployment import ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus
from twinhull.api.drill import FailoverDrill, FailoverDrillSpec, FailoverDrillStatus
from twinhull.api.snapshot import ModelSnapshot, ModelSnapshotSpec, ModelSnapshotStatus
from twinhull.api.tier import ServingTier, ServingTierSpec

RESOURCES: tuple[type[Resource], ...] = (
    ServingCluster,
    ModelDeployment,
    ModelSnapshot,
    FailoverDrill,
    ServingTier,
)
"""Every kind of the API, in the order the CRDs are written."""

KINDS: dict[str, type[Resource]] = {r.crd.kind: r for r in RESOURCES}
"""Kind name to model."""

__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "RESOURCES",
    "VERSION",
    "Condition",
    "FailoverDrill",
    "FailoverDrillSpec",
    "FailoverDrillStatus",
    "ModelDeployment",
    "ModelDeploymentSpec",
    "ModelDeploymentStatus",
    "ModelSnapshot",
    "ModelSnapshotSpec",
    "ModelSnapshotStatus",
    "Resource",
    "ServingCluster",
    "ServingClusterSpec",
    "ServingClusterStatus",
    "ServingTier",
    "ServingTierSpec",
]
