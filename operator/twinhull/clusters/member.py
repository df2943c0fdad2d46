"""A member cluster at run time: probe its health, observe twinhull's objects in it, and
bring them to the desired state. Effects: network I/O through :class:`~.kube.Kube`.

Each member has its own loop (see ``handlers``): the fleet planner only publishes the
desired objects here and never waits for a member, so a frozen member delays nothing but
its own writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Any

from twinhull.clusters.informer import POLL_SECONDS, Informer
from twinhull.clusters.kube import ClusterUnavailable, Kube
from twinhull.plan.render import DEPLOYMENT, HASH, INSTALLATION, MANAGED_BY, OPERATOR, REVISION

log = logging.getLogger(__name__)

ZONE_LABEL = "topology.kubernetes.io/zone"
GPU = "nvidia.com/gpu"
SELECTOR = f"{MANAGED_BY}={OPERATOR}"
"""Every twinhull object, of any installation: observation sorts them by their
:data:`INSTALLATION` label (see :meth:`Member.observe`)."""

ObjectKey = tuple[str, str, str, str]
"""(apiVersion, kind, namespace, name); namespace "" for cluster-scoped objects."""

#: Kinds observed and garbage-collected per ModelDeployment, in deletion order.
WORKLOAD_KINDS = (("apps/v1", "Deployment"), ("policy/v1", "PodDisruptionBudget"),
                  ("v1", "Service"))
#: Kinds applied but never deleted by twinhull (shared between deployments).
SHARED_KINDS = (("v1", "Namespace"), ("scheduling.k8s.io/v1", "PriorityClass"))
_ORDER = {"Namespace": 0, "PriorityClass": 0}


def key_of(obj: Mapping[str, Any]) -> ObjectKey:
    """The key of an object. Pure."""
    meta = obj["metadata"]
    return obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"]


@dataclass(frozen=True)
class ZoneNodes:
    """Nodes of one zone as probed."""

    nodes: int = 0
    ready: int = 0
    gpus: int = 0
    """Allocatable GPUs on the Ready nodes."""
    node_gpus: int = 0
    """Allocatable GPUs on all the nodes, Ready or not."""
    largest: int = 0
    """The most allocatable GPUs of one node, Ready or not."""


@dataclass(frozen=True)
class ProbeResult:
    """One health probe: did the API answer, and what the nodes look like."""

    ok: bool
    message: str
    zones: Mapping[str, ZoneNodes] = field(default_factory=dict)


@dataclass(frozen=True)
class Seen:
    """What matters of one observed object."""

    hash: str | None
    replicas: int | None = None
    ready: int = 0
    deployment: str | None = None
    """The ModelDeployment it belongs to (label), if any."""
    revision: str | None = None
    """Deployments: the revision its template runs (annotation)."""
    settled: bool = False
    """Deployments: fully rolled out (no old pods left) and every replica Ready."""
    installation: str | None = None
    """The installation that owns it (label); None for objects from before labels."""


def _node_ready(node: Mapping[str, Any]) -> bool:
    for cond in node.get("status", {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def zones_of(nodes: Iterable[Mapping[str, Any]], zones: Iterable[str]) -> dict[str, ZoneNodes]:
    """Per listed zone: nodes, Ready nodes, allocatable GPUs on Ready nodes and on all,
    and the most one node has. Pure."""
    out = {z: ZoneNodes() for z in zones}
    for node in nodes:
        zone = node.get("metadata", {}).get("labels", {}).get(ZONE_LABEL)
        if zone not in out:
            continue
        ready = _node_ready(node)
        gpus = quantity_count((node.get("status") or {}).get("allocatable", {}).get(GPU))
        z = out[zone]
        out[zone] = ZoneNodes(z.nodes + 1, z.ready + ready, z.gpus + (gpus if ready else 0),
                              z.node_gpus + gpus, max(z.largest, gpus))
    return out


def quantity_count(value: Any) -> int:
    """An extended resource's count as a node reports it (a whole number, as a string
    or not); 0 for anything else. Pure."""
    try:
        count = int(str(value)) if value is not None else 0
    except ValueError:
        return 0
    return max(0, count)


def seen_of(obj: Mapping[str, Any]) -> Seen:
    """The parts of an observed object twinhull compares. Pure."""
    meta = obj.get("metadata", {})
    replicas = ready = None
    settled = False
    if obj.get("kind") == "Deployment":
        replicas = obj.get("spec", {}).get("replicas")
        status = obj.get("status") or {}
        ready = status.get("readyReplicas") or 0
        want = replicas or 0
        # what `kubectl rollout status` waits for: the controller saw this generation,
        # every pod is of the new template (none old left) and Ready
        settled = ((status.get("observedGeneration") or 0) >= (meta.get("generation") or 0)
                   and (status.get("updatedReplicas") or 0) == want
                   and (status.get("replicas") or 0) == want and ready >= want)
    annotations = meta.get("annotations") or {}
    labels = meta.get("labels") or {}
    return Seen(hash=annotations.get(HASH), replicas=replicas, ready=ready or 0,
                deployment=labels.get(DEPLOYMENT), revision=annotations.get(REVISION),
                settled=settled, installation=labels.get(INSTALLATION))


def needs_write(desired: Mapping[str, Any], seen: Seen | None) -> bool:
    """Whether an object must be applied: missing, changed content, not yet labelled with
    its installation (adopted from before labels), or scaled by someone else. Pure."""
    if seen is None:
        return True
    want = desired["metadata"].get("annotations", {}).get(HASH)
    if seen.hash != want:
        return True
    if seen.installation != (desired["metadata"].get("labels") or {}).get(INSTALLATION):
        return True
    return bool(desired["kind"] == "Deployment" and seen.replicas != desired["spec"]["replicas"])


def stamped(obj: Mapping[str, Any], installation: str) -> dict[str, Any]:
    """A copy of a rendered object labelled with its installation (outside the content
    hash, so the label never changes an object's hash). Pure."""
    meta = dict(obj["metadata"])
    meta["labels"] = {**(meta.get("labels") or {}), INSTALLATION: installation}
    return {**obj, "metadata": meta}


async def _pooled(calls: Iterable[Callable[[], Awaitable[None]]], parallel: int) -> None:
    """Await every call, ``parallel`` at a time, in order: ``parallel`` workers take the
    next call as each finishes, so only they exist while the rest wait as the iterator's
    unstarted items. A task per write behind a semaphore made 6,000 tasks at once in each
    member at 2,000 ModelDeployments (a heap census: 18,000 such coroutines, each with its
    task, future and context, while the members converged; RSS at convergence 331 MiB with
    them, 313 without, in two runs of e2e/bench/scale.py). A call
    that raises does not stop the others: the first exception is raised once every call
    has been awaited. Effects: those of the calls."""
    pending = iter(calls)
    raised: list[Exception] = []

    async def worker() -> None:
        for call in pending:  # a shared iterator: each call is taken by one worker
            try:
                await call()
            except Exception as exc:
                raised.append(exc)

    await asyncio.gather(*(worker() for _ in range(max(1, parallel))))
    if raised:
        raise raised[0]


class Member:
    """One member cluster: its client, its last probe and observation, its desired objects.

    With an ``installation`` (the hub's identity), every object is labelled with it when
    published; only objects with that label (or with none: made before labels, adopted
    by the next apply) count as this installation's. Objects labelled by another
    installation are never changed or deleted: a desired object whose name another
    installation holds is reported as an error of its ModelDeployment instead. Without
    one (``""``), every twinhull object counts as this installation's (no sharing).
    """

    def __init__(self, name: str, kube: Kube, zones: list[str], installation: str = "") -> None:
        self.name = name
        self.kube = kube
        self.zones = zones
        self.installation = installation
        self.observed: dict[ObjectKey, Seen] = {}
        """This installation's objects (and unlabelled ones) from the last observation."""
        self.foreign: dict[ObjectKey, str] = {}
        """Objects of other installations from the last observation, to their owner."""
        self.observed_round = 0
        """Increases with every complete observation."""
        self.desired: dict[ObjectKey, Mapping[str, Any]] = {}
        self.desired_published = False
        """True once the fleet has published a complete desired state (orphans may go)."""
        self.kept: set[tuple[str, str]] = set()
        """(namespace, ModelDeployment) whose objects stay as they are: its spec cannot be
        planned now (e.g. an unknown tier), which must not tear down what runs."""
        self._applied: dict[ObjectKey, tuple[str | None, int, int | None]] = {}
        self._sources: dict[ObjectKey, Mapping[str, Any]] = {}
        """The object each desired one was stamped from (see :meth:`publish`)."""
        self.writes = 0
        """Write requests sent (for tests and benchmarks)."""
        self.errors: dict[tuple[str, str], str] = {}
        """(namespace, ModelDeployment) to the first failed write of its objects in the
        last converge; (namespace, "") for its Namespace object."""
        self.last_error = ""
        """The first failed write of an object no ModelDeployment owns (a PriorityClass),
        from the last converge: the cluster's problem, for the ServingCluster's status."""
        self.failed_writes = 0
        """Writes that failed in the last converge."""
        self.informers: list[Informer] = []
        """One per observed kind, started by the first :meth:`observe`."""

    async def probe(self, timeout: float) -> ProbeResult:
        """List the nodes: reachable, Ready per zone, GPUs. Effects: one read."""
        try:
            nodes = await self.kube.list("v1", "Node", timeout=timeout)
        except ClusterUnavailable as exc:
            return ProbeResult(ok=False, message=str(exc))
        zones = zones_of(nodes, self.zones)
        ready = sum(z.ready for z in zones.values())
        return ProbeResult(ok=True, message=f"{ready} Ready node(s) in {len(zones)} zone(s)",
                           zones=zones)

    async def observe(self, timeout: float) -> None:
        """Take the current observation of twinhull's objects from the member's informers
        (a LIST, then a WATCH, per kind, started on the first call: the cost follows what
        changes, not the fleet's size). Raises :class:`ClusterUnavailable` while any of
        them is not synced (its first list, or after a failure until it has listed again);
        the previous observation stays until one succeeds; a first list is waited for up
        to ``timeout``. Effects: threads (the first call), memory."""
        if not self.informers:
            self.informers = [Informer(self.kube, v, k, SELECTOR, seen_of, key_of)
                              for v, k in (*WORKLOAD_KINDS, *SHARED_KINDS)]
            for informer in self.informers:
                informer.start()
        deadline = time.monotonic() + timeout
        while any(i.lists == 0 for i in self.informers) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        observed: dict[ObjectKey, Seen] = {}
        foreign: dict[ObjectKey, str] = {}
        for informer in self.informers:
            items = informer.snapshot()
            if items is None:
                raise ClusterUnavailable(f"{self.name}: {informer.kind}s not observed: "
                                         f"{informer.error}")
            for key, seen in items.items():
                owner = seen.installation
                if self.installation and owner is not None and owner != self.installation:
                    foreign[key] = owner
                else:
                    observed[key] = seen
        self.observed = observed
        self.foreign = foreign
        self.observed_round += 1

    def observe_note(self) -> str:
        """How observation falls short of watching ("" when every kind is watched): the
        kinds listed on a period because watching them is forbidden. Pure."""
        polled = [i.kind for i in self.informers if i.polling]
        return (f"; {', '.join(polled)} listed every {POLL_SECONDS:g}s: watching them is "
                "forbidden (grant watch: policies/member-rbac.yaml)") if polled else ""

    def close(self) -> None:
        """Stop the informers and release the client. Effects: threads."""
        for informer in self.informers:
            informer.stop()
        self.informers = []
        self.kube.close()

    def reconnect(self, kube: Kube) -> None:
        """Use a new client (rotated credentials): the old one and its informers stop, new
        ones start at the next :meth:`observe`. Effects: threads."""
        self.close()
        self.kube = kube

    def publish(self, desired: Iterable[Mapping[str, Any]],
                keep: Iterable[tuple[str, str]] = ()) -> bool:
        """Replace the desired objects, keeping those of the ``keep`` deployments untouched;
        return whether anything changed. Objects rendered for this installation (labelled
        with it, see :func:`~twinhull.plan.render.member_objects`) are kept as they are,
        not copied: a copy of each was 15 of the 59 MiB that 2,000 ModelDeployments'
        objects in three members took. Others are kept as a stamped copy; one published
        again as the same object (a render that was cached) keeps its copy. Either way a
        cached render compares by identity. The objects must not be changed.
        Effects: memory."""
        new: dict[ObjectKey, Mapping[str, Any]] = {}
        sources: dict[ObjectKey, Mapping[str, Any]] = {}
        for o in desired:
            key = key_of(o)
            label = (o["metadata"].get("labels") or {}).get(INSTALLATION)
            if not self.installation or label == self.installation:
                new[key] = o  # nothing to stamp
                continue
            before = self.desired.get(key)
            if before is not None and self._sources.get(key) is o:
                new[key] = before
            else:
                new[key] = stamped(o, self.installation)
            sources[key] = o
        self._sources = sources
        kept = set(keep)
        changed = new != self.desired or kept != self.kept or not self.desired_published
        self.desired = new
        self.kept = kept
        self.desired_published = True
        # what was applied of objects no longer desired is never read again
        for key in [k for k in self._applied if k not in new]:
            del self._applied[key]
        return bool(changed)

    def error_of(self, namespace: str, name: str) -> str:
        """Why the last converge failed to write an object of one ModelDeployment (or its
        namespace); "" if it did not. Pure (reads memory)."""
        return self.errors.get((namespace, name)) or self.errors.get((namespace, ""), "")

    def _owner(self, key: ObjectKey) -> tuple[str, str] | None:
        """(namespace, ModelDeployment) a desired or observed object belongs to;
        (namespace, "") for a Namespace; None for cluster-wide objects. Pure."""
        obj = self.desired.get(key)
        deployment = ((obj["metadata"].get("labels") or {}).get(DEPLOYMENT) if obj else
                      (self.observed[key].deployment if key in self.observed else None))
        if deployment:
            return key[2], deployment
        if key[1] == "Namespace":
            return key[3], ""
        return None

    def conflicts(self) -> dict[ObjectKey, str]:
        """Desired objects whose name an object of another installation holds, to that
        installation: never applied (it is not ours to change). Pure (reads memory)."""
        return {k: self.foreign[k] for k in self.desired if k in self.foreign}

    def ready_replicas(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(namespace, Deployment name) to (spec replicas, ready replicas). Pure."""
        return {(ns, name): (seen.replicas or 0, seen.ready)
                for (_, kind, ns, name), seen in self.observed.items() if kind == "Deployment"}

    def revisions(self) -> dict[tuple[str, str], str | None]:
        """(namespace, ModelDeployment) to the revision all its Deployments here run,
        settled (fully rolled out and Ready); None while any is mixed or not Ready. Pure
        (reads the last observation)."""
        out: dict[tuple[str, str], str | None] = {}
        for (_, kind, ns, _name), seen in self.observed.items():
            if kind != "Deployment" or seen.deployment is None:
                continue
            key = (ns, seen.deployment)
            ok = seen.settled and seen.revision is not None
            if key not in out:
                out[key] = seen.revision if ok else None
            elif out[key] != seen.revision or not ok:
                out[key] = None
        return out

    def _pending(self, key: ObjectKey, obj: Mapping[str, Any]) -> bool:
        if not needs_write(obj, self.observed.get(key)):
            return False
        applied = self._applied.get(key)
        want = (obj["metadata"].get("annotations", {}).get(HASH),
                obj.get("spec", {}).get("replicas") if obj["kind"] == "Deployment" else None)
        # Applied already and not observed since: wait for the next observation.
        return not (applied and (applied[0], applied[2]) == want
                    and applied[1] >= self.observed_round)

    def plan_writes(self) -> tuple[list[Mapping[str, Any]], list[ObjectKey]]:
        """Objects to apply and to delete to reach the desired state. Pure (reads memory).

        Deletes only workload objects (Deployments, PDBs, Services) labelled as twinhull's
        that no ModelDeployment wants any more, and only after a complete desired state
        was published; namespaces and priority classes are never deleted.
        """
        foreign = self.conflicts()
        applies = [o for k, o in self.desired.items()
                   if k not in foreign and self._pending(k, o)]
        applies.sort(key=lambda o: _ORDER.get(o["kind"], 1))
        deletes: list[ObjectKey] = []
        if self.desired_published:
            workload = {k for _, k in WORKLOAD_KINDS}
            deletes = [k for k, seen in self.observed.items()
                       if k[1] in workload and k not in self.desired and seen.deployment
                       and (k[2], seen.deployment) not in self.kept]
        return applies, deletes

    async def converge(self, *, parallel: int = 4) -> int:
        """Apply and delete what :meth:`plan_writes` says. Returns the writes sent.
        Effects: writes. Failures are kept per ModelDeployment (:meth:`error_of`) and in
        :attr:`last_error`, and retried next time."""
        applies, deletes = self.plan_writes()
        log.debug("cluster %s: %d to apply, %d to delete (round %d)", self.name, len(applies),
                  len(deletes), self.observed_round)
        if not applies and not deletes and not self.errors and not self.last_error \
                and not self.foreign:
            return 0
        errors: list[tuple[ObjectKey, str]] = [
            (k, f"{k[1]} {k[2] + '/' if k[2] else ''}{k[3]} in {self.name} belongs to another "
                f"twinhull installation ({owner}); rename this ModelDeployment or remove that "
                "object from the other hub")
            for k, owner in sorted(self.conflicts().items())]
        conflicts = len(errors)

        async def apply(obj: Mapping[str, Any]) -> None:
            try:
                await self.kube.apply(obj)
                self.writes += 1
                self._applied[key_of(obj)] = (
                    obj["metadata"].get("annotations", {}).get(HASH), self.observed_round,
                    obj["spec"]["replicas"] if obj["kind"] == "Deployment" else None)
            except ClusterUnavailable as exc:
                errors.append((key_of(obj), str(exc)))

        async def delete(key: ObjectKey) -> None:
            try:
                await self.kube.delete(key[0], key[1], key[3], namespace=key[2] or None)
                self.writes += 1
                self.observed.pop(key, None)
                self._applied.pop(key, None)
            except ClusterUnavailable as exc:
                errors.append((key, str(exc)))

        if applies or deletes:
            first = [o for o in applies if o["kind"] in _ORDER]
            await _pooled((partial(apply, o) for o in first), parallel)
            await _pooled(chain((partial(apply, o) for o in applies if o["kind"] not in _ORDER),
                                 (partial(delete, k) for k in deletes)), parallel)
        self._record(errors)
        return len(applies) + len(deletes) - (len(errors) - conflicts)

    def _record(self, errors: list[tuple[ObjectKey, str]]) -> None:
        """Keep each failed write's error with the ModelDeployment of its object (the
        first one per deployment), and the cluster-wide ones in :attr:`last_error`.
        Effects: memory, a log line when the errors change."""
        by_owner: dict[tuple[str, str], str] = {}
        cluster_wide = ""
        for key, message in errors:
            owner = self._owner(key)
            if owner is None:
                cluster_wide = cluster_wide or message
            else:
                by_owner.setdefault(owner, message)
        repeated = by_owner == self.errors and cluster_wide == self.last_error
        self.errors = by_owner
        self.last_error = cluster_wide
        self.failed_writes = len(errors)
        if errors and not repeated:  # once per new error, not on every retry
            log.warning("cluster %s: %d write(s) failed, retrying: %s", self.name, len(errors),
                        errors[0][1])

    def objects_of(self, namespace: str, name: str) -> list[ObjectKey]:
        """Observed workload objects of one ModelDeployment. Pure (reads memory)."""
        workload = {k for _, k in WORKLOAD_KINDS}
        return [k for k, seen in self.observed.items()
                if k[1] in workload and k[2] == namespace and seen.deployment == name]
