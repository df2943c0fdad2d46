"""Real faults: kill or freeze an API server, partition or slow the network to it, take a
zone's nodes down, lose a whole member, stop Prometheus.

Every fault has an undo (`revive`, `heal`, `zone-up`, `member-up`, `prometheus-start`);
each function has effects on the lab and returns once the fault is in place.
"""

from __future__ import annotations

import json
import signal
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from . import members
from .kube import Kubectl
from .lab import Lab, say
from .layout import Cluster, LabError
from .processes import State
from .waiting import wait_until

ZONE_TIMEOUT = 30.0


def kill(lab: Lab, cluster: Cluster) -> None:
    """SIGKILL the cluster's API server, and a member's Prometheus with it (a member that
    dies takes its monitoring along); etcd and the controllers keep running."""
    names = ("kube-apiserver", "prometheus") if cluster.is_member else ("kube-apiserver",)
    for name in names:
        process = lab.component(cluster.name, name).process
        if not process.signal(signal.SIGKILL):
            say(f"{cluster.name}: {name} is not running")
            continue
        wait_until(
            lambda process=process: process.state() is State.STOPPED,
            5.0,
            f"{cluster.name} {name} to exit",
            interval=0.02,
        )
        say(f"{cluster.name}: {name} killed")


def freeze(lab: Lab, cluster: Cluster) -> None:
    """SIGSTOP the cluster's API server: connections are accepted but calls hang."""
    process = lab.component(cluster.name, "kube-apiserver").process
    if not process.signal(signal.SIGSTOP):
        say(f"{cluster.name}: kube-apiserver is not running")
        return
    wait_until(
        lambda: process.state() is State.FROZEN,
        5.0,
        f"{cluster.name} kube-apiserver to stop",
        interval=0.02,
    )
    say(f"{cluster.name}: kube-apiserver frozen")


def _toxics(lab: Lab, member: Cluster, method: str, path: str = "",
            body: dict[str, Any] | None = None) -> Any:
    url = f"http://127.0.0.1:{lab.layout.toxiproxy_port}/proxies/{member.name}/toxics{path}"
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode()
                                     if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def partition(lab: Lab, member: Cluster) -> None:
    """Black-hole the network between twinhull and the member's API server (toxiproxy's
    `timeout` toxic with no timeout, both ways): open connections stall, new ones are
    accepted and then hear nothing, as behind a dropped route. The member runs on."""
    heal(lab, member, quiet=True)
    for stream in ("upstream", "downstream"):
        _toxics(lab, member, "POST", body={"name": f"partition-{stream}", "type": "timeout",
                                            "stream": stream, "toxicity": 1.0,
                                            "attributes": {"timeout": 0}})
    say(f"{member.name}: partitioned from twinhull")


def slow(lab: Lab, member: Cluster, milliseconds: int) -> None:
    """Delay every packet between twinhull and the member's API server."""
    heal(lab, member, quiet=True)
    _toxics(lab, member, "POST", body={"name": "slow", "type": "latency",
                                        "stream": "downstream", "toxicity": 1.0,
                                        "attributes": {"latency": milliseconds}})
    say(f"{member.name}: {milliseconds} ms added to every answer")


def heal(lab: Lab, member: Cluster, *, quiet: bool = False) -> None:
    """Remove every toxic of the member's proxy."""
    for toxic in _toxics(lab, member, "GET") or []:
        _toxics(lab, member, "DELETE", f"/{toxic['name']}")
    if not quiet:
        say(f"{member.name}: network to twinhull healed")


def member_down(lab: Lab, member: Cluster) -> None:
    """Lose the whole member: its API server and Prometheus killed and its model servers
    gone (the simulator serves nothing there: requests sent to it are dropped)."""
    lab.layout.dataplane_down_dir.mkdir(parents=True, exist_ok=True)
    (lab.layout.dataplane_down_dir / member.name).touch()
    kill(lab, member)
    say(f"{member.name}: the whole member is down")


def member_up(lab: Lab, member: Cluster) -> None:
    """Bring a lost member back: API server, Prometheus, then its model servers."""
    revive(lab, member)
    (lab.layout.dataplane_down_dir / member.name).unlink(missing_ok=True)
    say(f"{member.name}: the member is back")


def revive(lab: Lab, cluster: Cluster) -> None:
    """Restart a killed API server or thaw a frozen one; wait until it and its nodes are
    ready, and a member's controllers run new pods again (their watches back off while the
    API server is away)."""
    lab.start([lab.component(cluster.name, "kube-apiserver")])
    say(f"{cluster.name}: kube-apiserver ready")
    if cluster.is_member:
        lab.start([lab.component(cluster.name, "prometheus")])
        say(f"{cluster.name}: prometheus ready")
        lab.wait_nodes(cluster)
        lab.wait_controllers(cluster)


def zone_down(lab: Lab, cluster: Cluster, zone: str) -> None:
    """Make the zone's nodes NotReady, then its pods unready.

    kwok's node-not-ready stage acts on the node label, the lab's pod-zone-down stage on the
    pod annotation.
    """
    kubectl = lab.kubectl(cluster)
    nodes = cluster.nodes(zone)
    kubectl.run("label", "nodes", *nodes, f"{members.ZONE_DOWN_NODE_LABEL}=true", "--overwrite")
    took = wait_until(
        lambda: _nodes_match(
            kubectl, nodes, lambda n: not members.ready(n) and members.not_ready_tainted(n)
        ),
        ZONE_TIMEOUT,
        f"{zone} nodes to be NotReady",
    )
    say(f"{cluster.name}: zone {zone} nodes NotReady after {took:.1f}s")
    _mark_pods(kubectl, nodes, zone)
    took = wait_until(
        lambda: not any(_ready(p) for p in _pods_on(kubectl, nodes)),
        ZONE_TIMEOUT,
        f"{zone} pods to be unready",
    )
    say(f"{cluster.name}: zone {zone} is down, its pods unready after {took:.1f}s more")


def zone_up(lab: Lab, cluster: Cluster, zone: str) -> None:
    """Bring the zone's nodes back to Ready, then let the lab's pod-recover stage ready its pods."""
    kubectl = lab.kubectl(cluster)
    nodes = cluster.nodes(zone)
    kubectl.run("label", "nodes", *nodes, f"{members.ZONE_DOWN_NODE_LABEL}-")
    took = wait_until(
        lambda: _nodes_match(
            kubectl, nodes, lambda n: members.ready(n) and not members.not_ready_tainted(n)
        ),
        ZONE_TIMEOUT,
        f"{zone} nodes to be Ready",
    )
    _mark_pods(kubectl, nodes, None)
    say(f"{cluster.name}: zone {zone} is up, nodes Ready after {took:.1f}s; pods follow in seconds")


def prometheus_stop(lab: Lab) -> None:
    """Stop the global Prometheus only (the members' keep scraping); its data stays in the
    run directory."""
    lab.component("hub", "prometheus").process.stop()
    say("prometheus stopped")


def prometheus_reload(lab: Lab) -> None:
    """Make the global Prometheus read its configuration and rule files again (SIGHUP)."""
    lab.layout.rules_dir.mkdir(parents=True, exist_ok=True)
    if not lab.component("hub", "prometheus").process.signal(signal.SIGHUP):
        raise LabError("the global Prometheus is not running")
    say("prometheus reloaded")


def prometheus_start(lab: Lab) -> None:
    """Start Prometheus again and wait until it is ready."""
    lab.start([lab.component("hub", "prometheus")])
    say("prometheus ready")


def _nodes_match(
    kubectl: Kubectl, names: list[str], check: Callable[[dict[str, Any]], bool]
) -> bool:
    nodes = kubectl.get("nodes", *names)["items"]
    return len(nodes) == len(names) and all(check(node) for node in nodes)


def _pods_on(kubectl: Kubectl, nodes: list[str]) -> list[dict[str, Any]]:
    """Pods (all namespaces) bound to any of `nodes`."""
    return [
        p
        for p in kubectl.get("pods", "--all-namespaces")["items"]
        if p["spec"].get("nodeName") in nodes
    ]


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def _mark_pods(kubectl: Kubectl, nodes: list[str], zone: str | None) -> None:
    """Set (zone) or remove (None) the zone-down annotation on the pods bound to `nodes`."""
    key = members.ZONE_DOWN_POD_ANNOTATION
    by_namespace: dict[str, list[str]] = defaultdict(list)
    for pod in _pods_on(kubectl, nodes):
        if zone is not None or key in pod["metadata"].get("annotations", {}):
            by_namespace[pod["metadata"]["namespace"]].append(pod["metadata"]["name"])
    change = f"{key}={zone}" if zone is not None else f"{key}-"
    for namespace, names in by_namespace.items():
        kubectl.run("annotate", "--namespace", namespace, "--overwrite", "pods", *names, change)
