"""What the hub holds before the operator starts.

CRDs, tier policy, member credentials and ServingClusters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .kube import Kubectl
from .layout import MEMBERS, REPO, LabError, Layout
from .waiting import wait_until

SYSTEM_NAMESPACE = "twinhull-system"
_POLICIES = (REPO / "policies" / "tiers.yaml", REPO / "policies" / "admission.yaml")
_CLUSTERS_EXAMPLE = REPO / "examples" / "clusters.yaml"


def bootstrap(hub: Kubectl, layout: Layout, share: Path) -> str:
    """Apply all the hub needs, in dependency order; say what (effects: writes to the hub)."""
    gateway = sorted((share / "gateway-api").glob("gateway.networking.k8s.io_*.yaml"))
    twinhull = sorted((REPO / "crds").glob("*.yaml"))
    hub.apply_files([*gateway, *twinhull])
    wait_until(
        lambda: all(_established(crd) for crd in hub.get("crd")["items"]),
        60.0,
        "hub CRDs to be Established",
    )
    hub.apply_objects(
        [namespace(SYSTEM_NAMESPACE), *(member_secret(layout, m.name) for m in MEMBERS)]
    )
    repo_files = [path for path in (*_POLICIES, _CLUSTERS_EXAMPLE) if path.is_file()]
    hub.apply_files(repo_files)
    extra = [m for m in MEMBERS if m.name not in _EXAMPLE_MEMBERS]
    if extra:
        hub.apply_objects([serving_cluster(m.name, m.zones) for m in extra])
    if _POLICIES[1].is_file():
        wait_until(lambda: _admits(hub), 60.0, "the tier admission policy to be in force")
    return ", ".join(
        [
            f"Gateway API standard channel ({len(gateway)} files)",
            f"{len(twinhull)} files from crds/",
            f"namespace {SYSTEM_NAMESPACE} with member kubeconfig Secrets",
            *(str(path.relative_to(REPO)) for path in repo_files),
            *(f"ServingCluster {m.name} (as the example's)" for m in extra),
        ]
    )


_PROBE = {
    "apiVersion": "serving.twinhull.io/v1alpha1",
    "kind": "ModelDeployment",
    "metadata": {"name": "lab-admission-probe", "namespace": "default"},
    "spec": {
        "slaTier": "best-effort",
        "model": {"name": "probe", "image": "probe:1"},
        "placement": [{"cluster": "east", "zones": {"east-a": 1}}],
    },
}


def _admits(hub: Kubectl) -> bool:
    """True once the API server admits a valid ModelDeployment (dry run): the admission
    policy has resolved its ServingTier parameters. Until then it denies everything."""
    try:
        hub.run("apply", "--dry-run=server", "-f", "-", stdin=json.dumps(_PROBE))
    except LabError:
        return False
    return True


def namespace(name: str) -> dict[str, Any]:
    """A Namespace object (pure)."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


_EXAMPLE_MEMBERS = ("east", "west")
"""The members examples/clusters.yaml declares; a third lab member gets one like them."""


def serving_cluster(name: str, zones: tuple[str, ...]) -> dict[str, Any]:
    """A ServingCluster like the example's east and west (pure)."""
    return {
        "apiVersion": "serving.twinhull.io/v1alpha1",
        "kind": "ServingCluster",
        "metadata": {"name": name},
        "spec": {
            "kubeconfigSecretRef": {"namespace": SYSTEM_NAMESPACE,
                                    "name": f"{name}-kubeconfig", "key": "kubeconfig"},
            "region": name,
            "zones": list(zones),
            "capacity": {"gpus": 32},
            "health": {"probeIntervalSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 3,
                       "recoveryThreshold": 5},
        },
    }


def member_secret(layout: Layout, member: str) -> dict[str, Any]:
    """Secret `twinhull-system/<member>-kubeconfig`: the kubeconfig of the identity the
    member grants twinhull (policies/member-rbac.yaml, see members.twinhull_identity)."""
    kubeconfig = layout.twinhull_kubeconfig_path(member).read_text()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": f"{member}-kubeconfig",
            "namespace": SYSTEM_NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "twinhull-lab"},
        },
        "stringData": {"kubeconfig": kubeconfig},
    }


def _established(crd: dict[str, Any]) -> bool:
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)
