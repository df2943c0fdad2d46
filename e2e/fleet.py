"""Reading the fleet's state in the lab for e2e tests and benchmarks: ModelDeployment
status, HTTPRoute weights, member Deployments, API server write counts."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
GROUP, VERSION = "serving.twinhull.io", "v1alpha1"


def kubectl(lab: Any, cluster: str, *args: str, input_: str | None = None,
            check: bool = True) -> str:
    """Run the lab's kubectl against one cluster; return stdout."""
    result = subprocess.run(
        [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig(cluster)), *args],
        input=input_, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def apply(lab: Any, *docs: dict[str, Any]) -> None:
    """Server-side apply objects to the hub."""
    kubectl(lab, "hub", "apply", "--server-side", "-f", "-",
            input_=yaml.safe_dump_all(list(docs)))


def get(lab: Any, cluster: str, kind: str, name: str, namespace: str | None = None
        ) -> dict[str, Any] | None:
    """One object as a dict, or None when it does not exist."""
    args = ["get", kind, name, "-o", "yaml"]
    if namespace:
        args += ["-n", namespace]
    out = kubectl(lab, cluster, *args, check=False)
    return yaml.safe_load(out) if out.strip() else None


def status(lab: Any, namespace: str, name: str) -> dict[str, Any]:
    """A ModelDeployment's status ({} before the operator wrote one)."""
    obj = get(lab, "hub", "modeldeployments.serving.twinhull.io", name, namespace)
    return (obj or {}).get("status") or {}


def condition(lab: Any, namespace: str, name: str, kind: str) -> str | None:
    for c in status(lab, namespace, name).get("conditions") or []:
        if c["type"] == kind:
            return str(c["status"])
    return None


def clusters_healthy(lab: Any) -> bool:
    """Whether every ServingCluster is Healthy (a revived one is Recovering for a while)."""
    items = yaml.safe_load(kubectl(lab, "hub", "get", "servingclusters", "-o", "yaml"))["items"]
    return bool(items) and all((i.get("status") or {}).get("phase") == "Healthy" for i in items)


def route_weights(lab: Any, namespace: str, name: str) -> dict[str, int]:
    """Backend name to weight in the hub's HTTPRoute."""
    route = get(lab, "hub", "httproutes.gateway.networking.k8s.io", name, namespace)
    if not route:
        return {}
    return {b["name"]: b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]}


def deployments(lab: Any, cluster: str, namespace: str) -> dict[str, tuple[int, int]]:
    """Deployment name to (spec replicas, ready replicas) in a member namespace."""
    out = kubectl(lab, cluster, "get", "deployments", "-n", namespace, "-o", "yaml",
                  "--request-timeout=5s", check=False)
    items = (yaml.safe_load(out) or {}).get("items") or []
    return {d["metadata"]["name"]: (d["spec"]["replicas"], d["status"].get("readyReplicas") or 0)
            for d in items}


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str,
             interval: float = 0.5, explain: Callable[[], str] | None = None) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` at the deadline,
    and with what ``explain`` says of the state then (a failure in CI is read once)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError:
            last = None
        if last:
            return last
        time.sleep(interval)
    state = f"; {explain()}" if explain else ""
    raise AssertionError(
        f"timed out after {timeout:g}s waiting for {what} (last: {last!r}){state}")


def explain_deployment(lab: Any, namespace: str, name: str) -> str:
    """A ModelDeployment's conditions, rollout, current snapshot, scaling and last five
    decisions, one line each: what a failed wait prints so that a CI failure says where
    the deployment stood."""
    s = status(lab, namespace, name)
    lines = [f"{c['type']}={c['status']} {c.get('reason', '')}: {c.get('message', '')}"
             for c in s.get("conditions") or []]
    lines.append(f"rollout={s.get('rollout')!r} current={s.get('currentSnapshot')} "
                 f"lastGood={s.get('lastGoodSnapshot')}")
    lines.append(f"scaling={s.get('scaling')!r} unserved={s.get('unservedReplicas')!r}")
    lines.extend(f"decision {d.get('time')} {d.get('kind')}: {d.get('reason')}"
                 for d in (s.get("decisions") or [])[-5:])
    return f"{namespace}/{name}:\n  " + "\n  ".join(lines)


_WRITE = re.compile(
    r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$', re.M)


def write_requests(lab: Any, cluster: str, resources: set[str]) -> int:
    """Write requests (POST, PUT, PATCH, DELETE) the API server has served for the given
    resources, from its own metrics."""
    text = kubectl(lab, cluster, "get", "--raw", "/metrics")
    total = 0
    for match in _WRITE.finditer(text):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels")))
        if labels.get("verb") in {"POST", "PUT", "PATCH", "DELETE", "APPLY"} and \
                labels.get("resource") in resources and labels.get("dry_run", "") == "":
            total += int(float(match.group("value")))
    return total


def deployment_manifest(name: str, namespace: str, *, tier: str = "critical",
                        placement: dict[str, dict[str, int]] | None = None, gpus: int = 1,
                        failover: str = "Automatic", fallback: bool = True) -> dict[str, Any]:
    """A small ModelDeployment for tests: 1 GPU a replica, one replica per zone."""
    placement = placement or {"east": {"east-a": 1, "east-b": 1},
                              "west": {"west-a": 1, "west-b": 1}}
    spec: dict[str, Any] = {
        "slaTier": tier,
        "model": {"name": f"{name}-model", "image": "vllm/vllm-openai:v0.11.0",
                  "resources": {"gpus": gpus, "cpu": "1", "memory": "1Gi"}},
        "placement": [{"cluster": c, "zones": z} for c, z in placement.items()],
        "traffic": {"failover": failover},
    }
    if fallback:
        spec["fallback"] = {"model": {"name": f"{name}-small", "image": "vllm/vllm-openai:v0.11.0",
                                      "resources": {"gpus": gpus}}, "replicasPerZone": 0}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def namespace_manifest(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


ROOT = Path(__file__).resolve().parent.parent


REVISION = "serving.twinhull.io/revision"


def workloads(lab: Any, cluster: str, namespace: str, name: str
              ) -> dict[str, tuple[str, str, bool]] | None:
    """A ModelDeployment's Deployments in a member: name to (revision annotation, image,
    settled: fully rolled out and Ready). None when the member does not answer."""
    out = kubectl(lab, cluster, "get", "deployments", "-n", namespace, "-o", "yaml",
                  "-l", f"serving.twinhull.io/deployment={name}", "--request-timeout=5s",
                  check=False)
    if not out.strip():
        return None
    result = {}
    for d in (yaml.safe_load(out) or {}).get("items") or []:
        spec, st = d["spec"], d.get("status") or {}
        want = spec.get("replicas") or 0
        settled = (st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0)
                   and st.get("updatedReplicas", 0) == want and st.get("replicas", 0) == want
                   and st.get("readyReplicas", 0) >= want)
        result[d["metadata"]["name"]] = (
            (d["metadata"].get("annotations") or {}).get(REVISION, ""),
            spec["template"]["spec"]["containers"][0]["image"], settled)
    return result


def runs(lab: Any, namespace: str, name: str, revision: str) -> bool:
    """Whether every Deployment of a ModelDeployment in both members runs ``revision``,
    settled and Ready."""
    for cluster in ("east", "west"):
        got = workloads(lab, cluster, namespace, name)
        if not got or any(r != revision or not ok for r, _, ok in got.values()):
            return False
    return True
