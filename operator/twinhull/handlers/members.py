"""ServingCluster handlers: connect to each member, probe its health, keep its status, and
run its writer. Effects: network I/O, status writes, Events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from typing import Any

import kopf
import yaml

from twinhull.api.cluster import ServingClusterSpec
from twinhull.clusters.kube import ClusterUnavailable, Kube, configuration
from twinhull.clusters.member import Member, ProbeResult, ZoneNodes
from twinhull.handlers import events
from twinhull.handlers.runtime import Runtime, now, parse_time, rfc3339
from twinhull.plan.fleet import ClusterView
from twinhull.plan.health import Health, next_health

log = logging.getLogger(__name__)

GROUP, VERSION = "serving.twinhull.io", "v1alpha1"
SECRET_RECHECK_SECONDS = 30.0
"""How often a member's kubeconfig Secret is read again, to follow rotated credentials."""


@kopf.on.event(GROUP, VERSION, "servingclusters")
async def cluster_event(event: kopf.RawEvent, body: kopf.Body, name: str, memo: Any,
                        **_: Any) -> None:
    """Keep the latest ServingCluster in memory; wake the fleet on a spec change."""
    rt: Runtime = memo.runtime
    if event["type"] == "DELETED":
        rt.clusters.pop(name, None)
        rt.views.pop(name, None)
    else:
        old = rt.clusters.get(name)
        rt.clusters[name] = dict(body)
        if old is not None and old.get("spec") == body.get("spec"):
            return
    rt.poke()


async def _kubeconfig(rt: Runtime, spec: ServingClusterSpec) -> tuple[str, dict[str, Any]]:
    """Read the member's kubeconfig Secret: (its resourceVersion, the parsed kubeconfig).
    Effects: one hub read. Its content is never logged."""
    ref = spec.kubeconfig_secret_ref
    namespace = ref.namespace or rt.settings.namespace
    if namespace != rt.settings.namespace:
        raise kopf.PermanentError(
            f"spec.kubeconfigSecretRef.namespace must be the operator's namespace "
            f"{rt.settings.namespace!r} (got {namespace!r}); move the Secret there")
    try:
        secret = await rt.hub.get("v1", "Secret", ref.name, namespace=namespace)
    except ClusterUnavailable as exc:
        raise kopf.TemporaryError(f"cannot read Secret {namespace}/{ref.name}: {exc}",
                                  delay=5) from exc
    data = (secret.get("data") or {}).get(ref.key)
    if not data:
        raise kopf.TemporaryError(f"Secret {namespace}/{ref.name} has no key {ref.key!r}; "
                                  "add the member's kubeconfig under that key", delay=10)
    try:
        kubeconfig = yaml.safe_load(base64.b64decode(data))
    except (ValueError, yaml.YAMLError) as exc:
        raise kopf.TemporaryError(f"Secret {namespace}/{ref.name} key {ref.key!r} is not a "
                                  "kubeconfig; fix the Secret", delay=10) from exc
    return str(secret["metadata"].get("resourceVersion", "")), kubeconfig


def _client(name: str, spec: ServingClusterSpec, kubeconfig: dict[str, Any]) -> Kube:
    return Kube(name, configuration(kubeconfig), timeout=float(spec.health.timeout_seconds))


def _health_from(status: dict[str, Any]) -> Health:
    return Health(phase=status.get("phase"), failures=status.get("consecutiveFailures", 0),
                  successes=status.get("consecutiveSuccesses", 0),
                  since=parse_time(status.get("phaseSince")))


def _status(spec: ServingClusterSpec, health: Health, probe: ProbeResult, generation: int
            ) -> dict[str, Any]:
    zones = {z: {"nodes": n.nodes, "readyNodes": n.ready, "allocatableGpus": n.gpus}
             for z, n in probe.zones.items()}
    ready = health.phase == "Healthy"
    return {
        "observedGeneration": generation,
        "phase": health.phase,
        "phaseSince": rfc3339(health.since),
        "consecutiveFailures": health.failures,
        "consecutiveSuccesses": health.successes,
        "message": probe.message,
        "zones": zones,
        "allocatableGpus": sum(n.gpus for n in probe.zones.values()),
        "conditions": [
            {"type": "Ready", "status": "True" if ready else "False",
             "reason": health.phase or "Unknown", "message": probe.message,
             "lastTransitionTime": rfc3339(health.since), "observedGeneration": generation},
            {"type": "Reachable", "status": "True" if probe.ok else "False",
             "reason": "ProbeSucceeded" if probe.ok else "ProbeFailed",
             "message": probe.message, "lastTransitionTime": rfc3339(health.since),
             "observedGeneration": generation},
        ],
    }


@kopf.daemon(GROUP, VERSION, "servingclusters", cancellation_timeout=5.0)
async def cluster_daemon(name: str, body: kopf.Body, memo: Any,
                         stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Probe one member on its interval: health state machine, zones, observed objects;
    run its writer alongside. Never blocks on the member beyond its probe timeout."""
    rt: Runtime = memo.runtime
    spec = ServingClusterSpec.model_validate(body["spec"])
    version, kubeconfig = await _kubeconfig(rt, spec)
    member = Member(name, _client(name, spec, kubeconfig), list(spec.zones))
    secret_checked = now()
    rt.members[name] = member
    rt.member_wake[name] = asyncio.Event()
    writer = asyncio.create_task(_writer(rt, member, stopped), name=f"writer-{name}")
    health = _health_from(dict(body.get("status") or {}))
    last_written: dict[str, Any] = {}
    last_probe_written = None
    try:
        while not stopped:
            current = rt.clusters.get(name, dict(body))
            spec = ServingClusterSpec.model_validate(current["spec"])
            member.zones = list(spec.zones)
            if (now() - secret_checked).total_seconds() >= SECRET_RECHECK_SECONDS:
                secret_checked = now()
                with contextlib.suppress(kopf.TemporaryError):
                    new_version, kubeconfig = await _kubeconfig(rt, spec)
                    if new_version != version:  # rotated credentials: reconnect
                        version, old = new_version, member.kube
                        member.kube = _client(name, spec, kubeconfig)
                        old.close()
                        log.info("cluster %s: kubeconfig Secret changed, reconnected", name)
            probe = await member.probe(float(spec.health.timeout_seconds))
            if probe.ok:
                with contextlib.suppress(ClusterUnavailable):
                    await member.observe(float(spec.health.timeout_seconds))
            before = health.phase
            health = next_health(health, ok=probe.ok,
                                 failure_threshold=spec.health.failure_threshold,
                                 recovery_threshold=spec.health.recovery_threshold, now=now())
            zones_ready = ({z: n.ready > 0 for z, n in probe.zones.items()} if probe.ok else
                           (rt.views[name].zones_ready if name in rt.views else {}))
            view = ClusterView(name=name, phase=health.phase, zones_ready=zones_ready,
                               gpus=spec.capacity.gpus)
            changed_view = rt.views.get(name) != view
            rt.views[name] = view
            if before != health.phase:
                await events.post(
                    rt, current, "Normal" if health.phase == "Healthy" else "Warning",
                    f"Cluster{health.phase}",
                    f"{name}: {before or 'new'} -> {health.phase}: {probe.message}")
                log.info("cluster %s: %s -> %s (%s)", name, before, health.phase, probe.message)
            if changed_view or probe.ok:
                rt.poke()  # new health or new observed replicas: re-plan
            status = _status(spec, health, probe if probe.ok else
                             ProbeResult(ok=False, message=probe.message,
                                         zones=member_zones(rt, name)),
                             int(current["metadata"].get("generation", 0)))
            t = now()
            stale = (last_probe_written is None or
                     (t - last_probe_written).total_seconds() >= rt.settings.heartbeat_seconds)
            if status != last_written or stale:
                status["lastProbeTime"] = rfc3339(t)
                try:
                    await rt.hub.patch_status(f"{GROUP}/{VERSION}", "ServingCluster", name,
                                              status)
                    rt.hub_writes += 1
                    last_written = {k: v for k, v in status.items() if k != "lastProbeTime"}
                    last_probe_written = t
                except ClusterUnavailable as exc:
                    log.warning("cluster %s: cannot write status: %s", name, exc)
            await stopped.wait(spec.health.probe_interval_seconds)
    finally:
        writer.cancel()
        rt.members.pop(name, None)
        rt.member_wake.pop(name, None)
        member.kube.close()


def member_zones(rt: Runtime, name: str) -> dict[str, ZoneNodes]:
    """The zones of the last good probe, kept while the cluster does not answer."""
    status = (rt.clusters.get(name) or {}).get("status") or {}
    return {z: ZoneNodes(v.get("nodes", 0), v.get("readyNodes", 0), v.get("allocatableGpus", 0))
            for z, v in (status.get("zones") or {}).items()}


async def _writer(rt: Runtime, member: Member, stopped: kopf.DaemonStopped) -> None:
    """Bring the member to its desired objects whenever they or its observation change;
    skip while the cluster is Down (its objects converge when it returns)."""
    wake = rt.member_wake[member.name]
    while not stopped:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=2.0)
        wake.clear()
        view = rt.views.get(member.name)
        if view is None or view.phase in (None, "Down") or not member.observed_round:
            continue
        if not rt.synced:
            continue
        try:
            await member.converge()
        except Exception:  # a bug must not stop the writer: log it and retry next round
            log.exception("cluster %s: converge failed", member.name)
