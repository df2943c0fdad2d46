"""A corpus of hostile or careless objects for the hub: ModelDeployments with malformed
annotations, broken custom queries and colliding names, and ServingClusters whose kubeconfig
Secrets are malformed or would run a command. Used by e2e/test_hostile.py and by
``e2e/bench/failover.py --hostile`` (the failover figure with a hostile neighbour)."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from fleet import deployment_manifest, namespace_manifest

HOSTILE_NS = "e2e-hostile"
ROLLBACK, APPROVE = "serving.twinhull.io/rollback", "serving.twinhull.io/approve"
TOKEN = "hostile-bearer-token-6f1d2c"
"""The bearer token inside the hostile kubeconfig Secrets: it must appear nowhere."""


def _kubeconfig(**user: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "x",
        "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "x", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}]})


SECRETS = {
    # not YAML at all, with the token inside it
    "garbled": f"{TOKEN}: [unclosed\n\t- {{",
    # a command taken from the Secret, run by the operator: refused
    "execs": _kubeconfig(token=TOKEN, exec={"apiVersion": "client.authentication.k8s.io/v1",
                                            "command": "/bin/sh",
                                            "args": ["-c", "touch /tmp/twinhull-pwned"]}),
    # a list, not a kubeconfig
    "listy": yaml.safe_dump([TOKEN, TOKEN]),
}


def cluster(name: str) -> dict[str, Any]:
    return {"apiVersion": "serving.twinhull.io/v1alpha1", "kind": "ServingCluster",
            "metadata": {"name": f"hostile-{name}"},
            "spec": {"kubeconfigSecretRef": {"namespace": "twinhull-system",
                                             "name": f"hostile-{name}", "key": "kubeconfig"},
                     "region": "nowhere", "zones": ["nowhere-a"], "capacity": {"gpus": 8},
                     "health": {"probeIntervalSeconds": 2, "timeoutSeconds": 2,
                                "failureThreshold": 3, "recoveryThreshold": 5}}}


def secret(name: str, content: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": f"hostile-{name}", "namespace": "twinhull-system"},
            "data": {"kubeconfig": base64.b64encode(content.encode()).decode()}}


def deployment(name: str, **kw: Any) -> dict[str, Any]:
    md = deployment_manifest(name, HOSTILE_NS, tier="best-effort",
                             placement={"east": {"east-a": 1}, "west": {"west-a": 1}}, **kw)
    return md


def _annotated(name: str, annotations: dict[str, str]) -> dict[str, Any]:
    md = deployment(name)
    md["metadata"]["annotations"] = annotations
    return md


def _custom(name: str, query: str) -> dict[str, Any]:
    md = deployment(name)
    md["spec"]["scaling"] = {"mode": "Enforce", "metric": "custom", "query": query,
                             "minReplicasPerZone": 1,
                             "maxReplicasPerZone": 2}
    return md


def corpus() -> list[dict[str, Any]]:
    """The hostile ModelDeployments (1 GPU each, best-effort, one zone per cluster)."""
    older = deployment("hx")  # has a fallback: renders hx-fallback-<zone>
    return [
        _annotated("deep-json", {ROLLBACK: "[" * 50000}),
        _annotated("list-to", {ROLLBACK: '{"id": "r1", "to": ["x"]}'}),
        _annotated("bad-approve", {APPROVE: "'; rm -rf /"}),
        _custom("scalar-query", "scalar(vector(7))"),
        _custom("string-query", '"text"'),
        _custom("broken-query", "sum(rate(nothing[1m]"),
        older,
    ]


def colliding() -> dict[str, Any]:
    return deployment("hx-fallback", fallback=False)  # its Deployments are hx's fallback names


def objects() -> list[dict[str, Any]]:
    """Everything but the colliding newer ModelDeployment (apply it a second later, so it
    is the newer one) in apply order: Secrets, ServingClusters, the namespace, the corpus."""
    return [*(secret(n, c) for n, c in SECRETS.items()), *(cluster(n) for n in SECRETS),
            namespace_manifest(HOSTILE_NS), *corpus()]
