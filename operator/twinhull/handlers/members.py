"""ServingCluster handlers: connect to each member, probe its health, keep its status, and
run its writer. Effects: network I/O, status writes, Events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import kopf
import pydantic
import yaml

from twinhull.api.cluster import HealthProbe, ServingClusterSpec
from twinhull.clusters.kube import (
    URGENT,
    ClusterUnavailable,
    InvalidKubeconfig,
    Kube,
    configuration,
)
from twinhull.clusters.member import Member, ProbeResult, ZoneNodes, quantity_count
from twinhull.handlers import events
from twinhull.handlers.runtime import Runtime, Settings, now, parse_time, rfc3339
from twinhull.handlers.supervise import beat, forget, supervised
from twinhull.plan.fleet import ClusterView, ZoneGpus
from twinhull.plan.health import Health, next_health

log = logging.getLogger(__name__)

GROUP, VERSION = "serving.twinhull.io", "v1alpha1"
SECRET_RECHECK_SECONDS = 30.0
"""How often a member's kubeconfig Secret is read again, to follow rotated credentials."""
SECRET_RETRY_SECONDS = 10.0
"""How often it is read again while it has given no usable client yet."""
EVENTS_PENDING = 20
"""Events of one member waiting for the hub at most (a flapping member on a backed-up hub
would otherwise queue one per transition without bound)."""


@kopf.on.event(GROUP, VERSION, "servingclusters")
async def cluster_event(event: kopf.RawEvent, body: kopf.Body, name: str, memo: Any,
                        **_: Any) -> None:
    """Keep the latest ServingCluster in memory; wake the fleet on a spec change."""
    rt: Runtime = memo.runtime
    if event["type"] == "DELETED":
        rt.clusters.pop(name, None)
        rt.views.pop(name, None)
        rt.view_times.pop(name, None)
    else:
        old = rt.clusters.get(name)
        rt.clusters[name] = dict(body)
        if old is not None and old.get("spec") == body.get("spec"):
            return
    rt.poke()


class CredentialsProblem(Exception):
    """The member's kubeconfig Secret cannot give a client: ``reason`` (CamelCase) and a
    message naming the Secret, the key and the fix, never the content."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def _kubeconfig(rt: Runtime, spec: ServingClusterSpec) -> tuple[str, Any]:
    """Read the member's kubeconfig Secret: (its resourceVersion, the parsed kubeconfig).
    Raises :class:`CredentialsProblem` for any bad input or an unreadable Secret.
    Effects: one hub read. Its content is never logged nor quoted."""
    ref = spec.kubeconfig_secret_ref
    namespace = ref.namespace or rt.settings.namespace
    where = f"Secret {namespace}/{ref.name} key {ref.key!r}"
    if namespace != rt.settings.namespace:
        raise CredentialsProblem(
            "SecretNamespace",
            f"spec.kubeconfigSecretRef.namespace must be the operator's namespace "
            f"{rt.settings.namespace!r} (got {namespace!r}); move the Secret there")
    try:
        secret = await rt.hub.get("v1", "Secret", ref.name, namespace=namespace)
    except ClusterUnavailable as exc:
        raise CredentialsProblem("SecretUnreadable",
                                 f"cannot read Secret {namespace}/{ref.name}: {exc}") from None
    data = (secret.get("data") or {}).get(ref.key)
    if not data or not isinstance(data, str):
        raise CredentialsProblem("SecretKeyMissing",
                                 f"Secret {namespace}/{ref.name} has no key {ref.key!r}; add "
                                 "the member's kubeconfig under that key")
    try:
        kubeconfig = yaml.safe_load(base64.b64decode(data, validate=True))
    except Exception:  # bad base64, not UTF-8, not YAML, nested too deep: all bad input
        raise CredentialsProblem("InvalidKubeconfig",
                                 f"{where} is not a kubeconfig (not base64-encoded YAML); "
                                 "store the member's kubeconfig file there") from None
    return str(secret["metadata"].get("resourceVersion", "")), kubeconfig


def _client(name: str, spec: ServingClusterSpec, kubeconfig: Any, *,
            allow_plugins: bool = False) -> Kube:
    """A client of the member; raises :class:`InvalidKubeconfig`. Effects: threads, and
    the kubernetes package's temporary certificate files."""
    return Kube(name, configuration(kubeconfig, allow_plugins=allow_plugins),
                timeout=float(spec.health.timeout_seconds))


Connect = Callable[..., Kube]


def _count(value: Any) -> int:
    """A probe counter read back from status (0 unless a small non-negative integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and \
        0 <= value <= 1000 else 0


def _health_from(status: dict[str, Any]) -> Health:
    return Health(phase=status.get("phase"),
                  failures=_count(status.get("consecutiveFailures")),
                  successes=_count(status.get("consecutiveSuccesses")),
                  since=parse_time(status.get("phaseSince")))


def health_of(rt: Runtime, cluster: str) -> HealthProbe:
    """A ServingCluster's probe settings from memory; the defaults when its spec is
    unreadable or it is unknown. Pure (reads memory)."""
    try:
        return ServingClusterSpec.model_validate(
            (rt.clusters.get(cluster) or {}).get("spec")).health
    except pydantic.ValidationError:
        return HealthProbe()


def probe_bound(health: HealthProbe, settings: Settings) -> float:
    """Seconds within which a running member daemon produces a new view: one interval, a
    probe and an observation at their timeouts, and three hub calls (Secret, status,
    Event). A view older than this is stale. Pure."""
    return (health.probe_interval_seconds + 2 * (health.timeout_seconds + 1.0)
            + 3 * (settings.hub_timeout_seconds + 1.0))


WRITER_BOUND = 600.0
"""Seconds a member's writer may go without finishing a round (a converge of many objects
on a slow member takes a while) before it counts as stuck."""


def _status(spec: ServingClusterSpec, health: Health, probe: ProbeResult, generation: int,
            extra: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    zones = {z: {"nodes": n.nodes, "readyNodes": n.ready, "allocatableGpus": n.gpus,
                 "nodeGpus": n.node_gpus, "largestNodeGpus": n.largest}
             for z, n in probe.zones.items()}
    ready = health.phase == "Healthy"
    return {
        "observedGeneration": generation,
        "phase": health.phase,
        "phaseSince": rfc3339(health.since),
        # counted up to their thresholds only (past them nothing changes), so a steady
        # cluster's status is the same probe after probe and costs no write
        "consecutiveFailures": min(health.failures, spec.health.failure_threshold),
        "consecutiveSuccesses": min(health.successes, spec.health.recovery_threshold),
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
            *[{**c, "observedGeneration": generation} for c in extra or ()],
        ],
    }


class _Throttle:
    """Log a repeated problem once when it appears or changes, then at most once a
    minute. Effects: logs."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last: dict[str, tuple[str, datetime]] = {}

    def warn(self, what: str, message: str, *args: Any) -> None:
        text = message % args
        before = self._last.get(what)
        t = now()
        if before is None or before[0] != text or (t - before[1]).total_seconds() >= self.every:
            log.warning("%s", text)
            self._last[what] = (text, t)

    def clear(self, what: str) -> None:
        self._last.pop(what, None)


class MemberDaemon:
    """The state of one member's daemon across probes: its client (none while the first
    kubeconfig is unusable), health, the conditions it reports and its writer.

    Nothing the member, the Secret or the hub does ends it: a bad kubeconfig is reported
    as ``CredentialsValid=False`` (the previous client is kept), an unreachable member is
    a failed probe, a failed observation or write is a condition; only :meth:`close`
    ends it, and it then removes the cluster's view so no frozen phase stays behind.
    """

    def __init__(self, rt: Runtime, name: str, body: Mapping[str, Any], *,
                 connect: Connect = _client) -> None:
        self.rt = rt
        self.name = name
        self.body = dict(body)
        self.connect = connect
        self.member: Member | None = None
        self.writer: asyncio.Task[None] | None = None
        self.version = ""
        """resourceVersion of the Secret the client was built from."""
        self.ref: Any = None
        self.secret_checked: datetime | None = None
        self.health = _health_from(dict(body.get("status") or {}))
        self.credentials: tuple[str, str, str] = ("Unknown", "NotRead", "")
        """CredentialsValid condition: (status, reason, message)."""
        self.observe_error = ""
        self.transitions: dict[str, tuple[str, str | None]] = {}
        self.last_written: dict[str, Any] = {}
        self.last_probe_written: datetime | None = None
        self.wanted: dict[str, Any] | None = None
        """The status the last probe made, not yet taken by the status writer."""
        self.status_task: asyncio.Task[None] | None = None
        self.posting: set[asyncio.Task[None]] = set()
        """Events being posted (see :meth:`_post`)."""
        self.throttle = _Throttle()
        self.loop = f"member/{name}"
        self.writer_loop = f"writer/{name}"
        self.status_loop = f"status/{name}"
        """Where a failed status write is reported (``rt.loop_errors``)."""
        rt.telemetry.start_loop(self.status_loop)

    # -- credentials --------------------------------------------------------------------------

    def _due(self, spec: ServingClusterSpec) -> bool:
        ref = spec.kubeconfig_secret_ref
        if self.secret_checked is None or ref != self.ref:
            return True
        every = SECRET_RETRY_SECONDS if self.member is None else SECRET_RECHECK_SECONDS
        return (now() - self.secret_checked).total_seconds() >= every

    async def credentials_step(self, spec: ServingClusterSpec, current: Mapping[str, Any]
                               ) -> None:
        """Read the kubeconfig Secret when due (at start, after a change of the reference,
        every 30 s, every 10 s while there is no client) and connect with a new or
        rotated one. Effects: a hub read, a new client, Events."""
        if not self._due(spec):
            return
        self.secret_checked = now()
        self.ref = spec.kubeconfig_secret_ref
        try:
            version, kubeconfig = await _kubeconfig(self.rt, spec)
            if self.member is not None and version == self.version:
                await self._credentials_ok(current)
                return
            kube = self.connect(self.name, spec, kubeconfig,
                                allow_plugins=self.rt.settings.allow_exec_plugins)
        except CredentialsProblem as exc:
            await self._credentials_bad(current, exc.reason, str(exc))
            return
        except InvalidKubeconfig as exc:
            ref = spec.kubeconfig_secret_ref
            where = (f"Secret {ref.namespace or self.rt.settings.namespace}/{ref.name} key "
                     f"{ref.key!r}")
            await self._credentials_bad(current, "InvalidKubeconfig", f"{where}: {exc}")
            return
        self.version = version
        if self.member is None:
            self.member = Member(self.name, kube, list(spec.zones),
                                 installation=self.rt.installation)
            self.rt.members[self.name] = self.member
            self.rt.member_wake[self.name] = asyncio.Event()
            self.rt.loop_bounds[self.writer_loop] = WRITER_BOUND
            member = self.member
            self.writer = asyncio.create_task(
                supervised(self.rt, self.writer_loop, lambda: _writer(self.rt, member)),
                name=f"writer-{self.name}")
        else:  # rotated credentials: reconnect
            self.member.reconnect(kube)
            log.info("cluster %s: kubeconfig Secret changed, reconnected", self.name)
        await self._credentials_ok(current)

    async def _credentials_ok(self, current: Mapping[str, Any]) -> None:
        before = self.credentials
        self.credentials = ("True", "Loaded", "the kubeconfig Secret gives a working client")
        self.throttle.clear("credentials")
        if before[0] == "False":
            self._post(current, "Normal", "CredentialsValid",
                       f"{self.name}: the kubeconfig Secret is usable again")

    async def _credentials_bad(self, current: Mapping[str, Any], reason: str, message: str
                               ) -> None:
        if self.member is not None:
            message += "; the previous credentials are kept meanwhile"
        before = self.credentials
        status = "Unknown" if reason == "SecretUnreadable" else "False"
        self.credentials = (status, reason, message)
        self.throttle.warn("credentials", "cluster %s: %s", self.name, message)
        if status == "False" and before != self.credentials:
            self._post(current, "Warning", "CredentialsInvalid", f"{self.name}: {message}")

    # -- one probe ----------------------------------------------------------------------------

    async def probe(self, spec: ServingClusterSpec) -> ProbeResult:
        """Probe and observe the member. Effects: two reads of the member."""
        timeout = float(spec.health.timeout_seconds)
        if self.member is None:
            why = self.credentials[2] or "the kubeconfig Secret was not read yet"
            return ProbeResult(ok=False, message=f"no client: {why}")
        self.member.zones = list(spec.zones)
        began = time.monotonic()
        probe = await self.member.probe(timeout)
        self.rt.telemetry.probe.labels(self.name).observe(time.monotonic() - began)
        if probe.ok:
            try:
                await self.member.observe(timeout)
                self.observe_error = ""
                self.throttle.clear("observe")
            except ClusterUnavailable as exc:
                self.observe_error = str(exc)
                self.throttle.warn("observe", "cluster %s: cannot observe twinhull's objects "
                                   "(the last observation is kept): %s", self.name, exc)
        return probe

    def _condition(self, type_: str, status: str, reason: str, message: str
                   ) -> dict[str, Any]:
        before = self.transitions.get(type_)
        since = before[1] if before and before[0] == status else rfc3339(now())
        self.transitions[type_] = (status, since)
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": since}

    def conditions(self) -> list[dict[str, Any]]:
        """CredentialsValid, Observed and Synced. Pure apart from remembering when each
        last changed."""
        member = self.member
        out = [self._condition("CredentialsValid", *self.credentials)]
        if member is not None:
            out.append(self._condition(
                "Observed", "False" if self.observe_error else "True",
                "ObserveFailed" if self.observe_error else "Observed",
                # no count here: it moves with every object made, and each move would
                # be a status write (twinhull_member_objects has it)
                self.observe_error or "the objects of this installation are observed"
                + member.observe_note()))
            failed = member.failed_writes
            out.append(self._condition(
                "Synced", "False" if failed else "True",
                "WritesFailed" if failed else "Synced",
                f"{failed} write(s) failed in the last round, retrying: "
                f"{member.last_error or next(iter(member.errors.values()), '')}" if failed
                else "the desired objects were written"))
        return out

    async def step(self) -> None:
        """One probe round: credentials, probe, health, view, Events, status. Effects:
        member reads, hub reads and writes, memory."""
        rt, name = self.rt, self.name
        current = rt.clusters.get(name, self.body)
        spec = ServingClusterSpec.model_validate(current["spec"])
        await self.credentials_step(spec, current)
        probe = await self.probe(spec)
        before = self.health.phase
        self.health = health = next_health(
            self.health, ok=probe.ok, failure_threshold=spec.health.failure_threshold,
            recovery_threshold=spec.health.recovery_threshold, now=now())
        last = rt.views.get(name)
        zones_ready = ({z: n.ready > 0 for z, n in probe.zones.items()} if probe.ok else
                       (last.zones_ready if last is not None else {}))
        zone_gpus = ({z: ZoneGpus(n.node_gpus, n.largest) for z, n in probe.zones.items()
                      if n.nodes} if probe.ok else
                     (last.zone_gpus if last is not None else {}))
        view = ClusterView(name=name, phase=health.phase, zones_ready=zones_ready,
                           zone_gpus=zone_gpus,
                           gpus=spec.capacity.gpus)
        changed_view = rt.views.get(name) != view
        rt.views[name] = view
        rt.view_times[name] = now()
        if before != health.phase:
            self._post(current, "Normal" if health.phase == "Healthy" else "Warning",
                       f"Cluster{health.phase}",
                       f"{name}: {before or 'new'} -> {health.phase}: {probe.message}")
            log.info("cluster %s: %s -> %s (%s)", name, before, health.phase, probe.message)
            if health.phase == "Down":  # the round running planned with it serving
                rt.preempt(f"cluster {name} went Down")
        if changed_view or probe.ok:
            rt.poke()  # new health or new observed replicas: re-plan
        status = _status(spec, health, probe if probe.ok else
                         ProbeResult(ok=False, message=probe.message,
                                     zones=member_zones(rt, name)),
                         int(current["metadata"].get("generation", 0)), self.conditions())
        self._publish(status)
        beat(rt, self.loop)

    # -- hub writes, off the probe loop -------------------------------------------------------

    def _post(self, body: Mapping[str, Any], type_: Literal["Normal", "Warning"],
              reason: str, message: str) -> None:
        """Post an Event without waiting for it. Events are the hub's last writes (behind a
        fleet round's thousands, up to their queue time); awaited in the probe loop they
        held the next probe back: at 2,000 ModelDeployments a killed member was Down
        after 18.7 s (11.9 s since; 5.1 s at 30 deployments). At most
        :data:`EVENTS_PENDING` wait; more are counted as dropped (the phase is in the
        status). Effects: a task."""
        if len(self.posting) >= EVENTS_PENDING:
            self.rt.telemetry.events_dropped.inc()
            self.throttle.warn("events", "cluster %s: %d Events wait for the hub; %s not "
                               "posted", self.name, len(self.posting), reason)
            return
        task = asyncio.create_task(events.post(self.rt, body, type_, reason, message),
                                   name=f"event-{self.name}")
        self.posting.add(task)
        task.add_done_callback(self._posted)

    def _posted(self, task: asyncio.Task[None]) -> None:
        self.posting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("cluster %s: posting an Event failed", self.name,
                      exc_info=task.exception())

    def _publish(self, status: dict[str, Any]) -> None:
        """Have ``status`` written without waiting: one write at a time, the newest status
        when the one in flight ends (a probe's status supersedes the ones before it), so
        a slow hub neither delays the probes nor reorders what the status says. Effects:
        a task."""
        self.wanted = status
        if self.status_task is None or self.status_task.done():
            self.status_task = asyncio.create_task(self._write_wanted(),
                                                   name=f"status-{self.name}")

    async def _write_wanted(self) -> None:
        while self.wanted is not None:
            status, self.wanted = self.wanted, None
            try:
                await self._write(status)
            except Exception as exc:  # a bug must not stop the next status being written
                log.exception("cluster %s: writing the status failed", self.name)
                self.rt.loop_errors[self.status_loop] = f"{type(exc).__name__}: {exc}"[:300]
                self.rt.telemetry.iteration(self.status_loop, False)
            else:
                self.rt.loop_errors.pop(self.status_loop, None)

    async def drain(self) -> None:
        """Wait until the status and Events handed over so far are written (for tests: a
        stopping daemon cancels its status write, the next leader writes its own).
        Effects: waits."""
        while (self.status_task is not None and not self.status_task.done()) or self.posting:
            await asyncio.gather(*([self.status_task] if self.status_task else []),
                                 *self.posting, return_exceptions=True)

    async def _write(self, status: dict[str, Any]) -> None:
        t = now()
        heartbeat = self.rt.settings.heartbeat_seconds
        stale = self.last_probe_written is None or (
            heartbeat > 0 and (t - self.last_probe_written).total_seconds() >= heartbeat)
        if status == self.last_written and not stale:
            return
        status = {**status, "lastProbeTime": rfc3339(t)}
        try:
            await self.rt.hub.patch_status(f"{GROUP}/{VERSION}", "ServingCluster", self.name,
                                           status, priority=URGENT)
            self.rt.hub_writes += 1
            self.last_written = {k: v for k, v in status.items() if k != "lastProbeTime"}
            self.last_probe_written = t
        except ClusterUnavailable as exc:
            self.throttle.warn("status", "cluster %s: cannot write status: %s", self.name, exc)

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        """Probe on the cluster's interval until stopped; an error in one round is logged
        and the next round goes on. Effects: see :meth:`step`."""
        spec = ServingClusterSpec.model_validate(self.body["spec"])
        self.rt.loop_bounds[self.loop] = max(60.0, 3 * probe_bound(spec.health, self.rt.settings))
        try:
            while not stopped:
                began = time.monotonic()
                try:
                    await self.step()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a bug or odd input: this round only
                    self.throttle.warn("step", "cluster %s: probe round failed: %s: %s",
                                       self.name, type(exc).__name__, exc)
                    log.debug("cluster %s: probe round failed", self.name, exc_info=True)
                    # the loop is alive (liveness is for stuck loops: one cluster's bad
                    # round must not restart the operator for every cluster); its view
                    # goes stale, so the fleet sees the cluster as Suspect
                    beat(self.rt, self.loop)
                    self.rt.loop_errors[self.loop] = f"{type(exc).__name__}: {exc}"[:300]
                    self.rt.telemetry.iteration(self.loop, False)
                current = self.rt.clusters.get(self.name, self.body)
                try:
                    interval = ServingClusterSpec.model_validate(
                        current["spec"]).health.probe_interval_seconds
                except (pydantic.ValidationError, KeyError, TypeError):
                    interval = HealthProbe().probe_interval_seconds
                # probes keep their cadence: a probe that waited out its timeout (a frozen
                # or partitioned API server) is followed at once by the next, so each
                # failure comes one interval after the last, as when connections are
                # refused, instead of an interval plus a timeout
                await stopped.wait(max(0.0, interval - (time.monotonic() - began)))
        finally:
            self.close()

    def close(self) -> None:
        """Stop the writer, drop the client and the cluster's view: a stopped daemon
        leaves no view behind (the fleet then sees the cluster as unknown, never as
        Healthy). Effects: memory, threads."""
        rt, name = self.rt, self.name
        if self.writer is not None:
            self.writer.cancel()
        if self.status_task is not None:
            self.status_task.cancel()
        if self.member is not None and rt.members.get(name) is self.member:
            rt.members.pop(name, None)
            rt.member_wake.pop(name, None)
        rt.views.pop(name, None)
        rt.view_times.pop(name, None)
        forget(rt, self.loop)
        forget(rt, self.writer_loop)
        forget(rt, self.status_loop)
        if self.member is not None:
            self.member.close()


@kopf.daemon(GROUP, VERSION, "servingclusters", cancellation_timeout=5.0)
async def cluster_daemon(name: str, body: kopf.Body, memo: Any,
                         stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Probe one member on its interval: health state machine, zones, observed objects;
    run its writer alongside. Never blocks on the member beyond its probe timeout, and
    never ends on bad input (see :class:`MemberDaemon`)."""
    await MemberDaemon(memo.runtime, name, body).run(stopped)


def member_zones(rt: Runtime, name: str) -> dict[str, ZoneNodes]:
    """The zones of the last good probe, kept while the cluster does not answer."""
    status = (rt.clusters.get(name) or {}).get("status") or {}
    return {z: ZoneNodes(*(quantity_count(v.get(k)) for k in (
                "nodes", "readyNodes", "allocatableGpus", "nodeGpus", "largestNodeGpus")))
            for z, v in (status.get("zones") or {}).items() if isinstance(v, dict)}


async def _writer(rt: Runtime, member: Member) -> None:
    """Bring the member to its desired objects whenever they or its observation change;
    skip while the cluster is Down (its objects converge when it returns). Runs until
    cancelled (by its daemon), supervised; beats after every round. Effects: writes."""
    wake = rt.member_wake.setdefault(member.name, asyncio.Event())
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=2.0)
        wake.clear()
        view = rt.views.get(member.name)
        if (view is not None and view.phase not in (None, "Down") and member.observed_round
                and rt.synced):
            try:
                await member.converge()
            except Exception:  # a bug must not stop the writer: log it and retry next round
                log.exception("cluster %s: converge failed", member.name)
        beat(rt, f"writer/{member.name}")


_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")


async def installation_id(hub: Kube, settings: Settings) -> str:
    """This installation's identity, stamped on every member object: the configured
    ``--installation-id``, else the UID of the hub's ``kube-system`` Namespace (stable for
    the hub's life, distinct between hubs). Raises ``ValueError`` for a configured id that
    is not a label value, :class:`ClusterUnavailable` when the hub cannot be read.
    Effects: one hub read."""
    if settings.installation_id:
        if not _LABEL_VALUE.match(settings.installation_id):
            raise ValueError(
                f"--installation-id {settings.installation_id!r} is not a label value; use "
                "at most 63 letters, digits, '-', '_' or '.', starting and ending with a "
                "letter or digit")
        return settings.installation_id
    namespace = await hub.get("v1", "Namespace", "kube-system")
    uid = str((namespace.get("metadata") or {}).get("uid") or "")
    if not _LABEL_VALUE.match(uid):
        raise ValueError(f"the hub's kube-system Namespace has no usable uid ({uid!r}); "
                         "give the operator --installation-id")
    return uid
