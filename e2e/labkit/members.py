"""Member clusters: their KWOK nodes, KWOK's stage configuration and node readiness."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from . import layout
from .components import KWOK_NODE_ANNOTATION, NODE_LEASE_SECONDS
from .layout import LABKIT, Cluster, LabError
from .pki import PROMETHEUS_USER

NODE_CAPACITY = {
    "cpu": "64",
    "memory": "512Gi",
    "pods": "110",
    "nvidia.com/gpu": "8",
    "ephemeral-storage": "1Ti",
}

# Label read by kwok's node-not-ready chaos stage (share/kwok-stage/node/chaos).
ZONE_DOWN_NODE_LABEL = "node-not-ready.stage.kwok.x-k8s.io"
# Annotation on the pods of a downed zone: the lab's pod-zone-down stage makes them unready
# and its pod-recover stage leaves them alone.
ZONE_DOWN_POD_ANNOTATION = "lab.twinhull.io/zone-down"
NOT_READY_TAINT = "node.kubernetes.io/not-ready"

# kwok's fast stages (node init, lease heartbeat, pod ready/complete/delete), its
# node-not-ready chaos stage, then the lab's own pod stages.
_KWOK_STAGE_SOURCES = ("fast", "node/chaos/node-not-ready.yaml")
_LAB_STAGES = LABKIT / "kwok" / "lab-stages.yaml"


def pod_cidr(cluster: Cluster, zone: str, node: int) -> str:
    """The pod CIDR of one node: a /24 inside 127.0.0.0/8, so that every pod's IP is a
    loopback address the data-plane simulator can serve the pod's /metrics on (Linux
    routes all of 127/8 to lo). Pure."""
    subnet = cluster.zones.index(zone) * layout.NODES_PER_ZONE + node + 1
    return f"127.{pod_network_octet(cluster)}.{subnet}.0/24"


def pod_network_octet(cluster: Cluster) -> int:
    """The second octet of a member's pod addresses (127.11.x.y for east). Pure."""
    return 10 + cluster.index


def node_objects(cluster: Cluster) -> list[dict[str, Any]]:
    """Node objects for every zone of a member cluster (pure)."""
    key, value = KWOK_NODE_ANNOTATION.split("=")
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {key: value},
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/region": cluster.name,
                    "topology.kubernetes.io/zone": zone,
                    "type": "kwok",
                },
            },
            "spec": {"podCIDR": pod_cidr(cluster, zone, index)},
            "status": {"allocatable": NODE_CAPACITY, "capacity": NODE_CAPACITY},
        }
        for zone in cluster.zones
        for index, name in enumerate(cluster.nodes(zone))
    ]


def canary_deployment(name: str) -> dict[str, Any]:
    """A one-pod Deployment in kube-system that any Ready node may run (no requests, every
    taint tolerated, never a downed zone's node): it becomes Ready only when the
    controller-manager, the scheduler and KWOK all act. Pure."""
    labels = {"app.kubernetes.io/name": name}
    anywhere_up = {
        "matchExpressions": [
            {"key": "type", "operator": "In", "values": ["kwok"]},
            {"key": ZONE_DOWN_NODE_LABEL, "operator": "DoesNotExist"},
        ]
    }
    pod = {
        "containers": [{"name": "canary", "image": "lab.invalid/canary"}],
        "tolerations": [{"operator": "Exists"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [anywhere_up]
                }
            }
        },
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "kube-system", "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod},
        },
    }


MEMBER_RBAC = LABKIT.parent.parent / "policies" / "member-rbac.yaml"
"""What a member grants twinhull, generated from the operator's code (`twinhull crds`)."""
TWINHULL_ACCOUNT = ("twinhull-system", "twinhull-member")
TOKEN_SECONDS = 365 * 24 * 3600


def prometheus_rbac() -> list[dict[str, Any]]:
    """What a member grants its Prometheus: pod discovery and nothing else, as a
    Prometheus installed by a real chart gets (pure)."""
    name = "lab-prometheus"
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": PROMETHEUS_USER}
            ],
        },
    ]


def kwok_config(stage_dir: Path) -> str:
    """KWOK's --config: every stage document, concatenated (reads the stage files)."""
    paths = [path for source in _KWOK_STAGE_SOURCES for path in _stage_files(stage_dir / source)]
    documents = [path.read_text().strip() for path in [*paths, _LAB_STAGES]]
    return "\n---\n".join(documents) + "\n"


def _stage_files(path: Path) -> list[Path]:
    """Stage manifests behind `path`: the file itself, or a kustomization's resources."""
    if path.is_file():
        return [path]
    kustomization = path / "kustomization.yaml"
    if not kustomization.is_file():
        raise LabError(f"no stage file or kustomization at {path}")
    return [
        found
        for resource in _kustomize_resources(kustomization)
        for found in _stage_files(path / resource)
    ]


def _kustomize_resources(kustomization: Path) -> list[str]:
    """The `resources:` list of a kustomization.yaml (a plain block list, as kwok's are)."""
    resources: list[str] = []
    in_resources = False
    for line in kustomization.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line.startswith((" ", "-")):
            in_resources = line.startswith("resources:")
        elif in_resources and line.lstrip().startswith("- "):
            resources.append(line.lstrip()[2:].strip())
    return resources


def ready(node: dict[str, Any]) -> bool:
    """True if the node's Ready condition is True (pure)."""
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def not_ready_tainted(node: dict[str, Any]) -> bool:
    """True if the node lifecycle controller has tainted the node not-ready (pure)."""
    return any(t["key"] == NOT_READY_TAINT for t in node.get("spec", {}).get("taints", []))


def zone_down(node: dict[str, Any]) -> bool:
    """True if `e2e/lab zone-down` has marked this node (pure)."""
    return node["metadata"].get("labels", {}).get(ZONE_DOWN_NODE_LABEL) == "true"


def lease_fresh(lease: dict[str, Any] | None, now: datetime) -> bool:
    """True if KWOK renewed the node lease within one lease duration before `now` (pure)."""
    renewed = (lease or {}).get("spec", {}).get("renewTime")
    if renewed is None:
        return False
    return (now - datetime.fromisoformat(renewed)).total_seconds() < int(NODE_LEASE_SECONDS)
