"""Start-up, shutdown and settings of the kopf operator. Effects: hub reads and writes."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from twinhull.clusters.kube import ClusterUnavailable
from twinhull.handlers import members, revisions
from twinhull.handlers.fleet import fleet_loop, resource_version, route_projection
from twinhull.handlers.runtime import Runtime, now, slim
from twinhull.handlers.scaling import load_loop
from twinhull.handlers.supervise import stale_loops, supervised

log = logging.getLogger(__name__)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in to the hub: the kubeconfig given (``--kubeconfig``/``KUBECONFIG``), else the
    in-cluster service account."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


class Undiffed(kopf.DiffBaseStorage):
    """No diff-base: kopf keeps one (a copy of each object's spec, in an annotation) to
    tell a creation from an update for ``on.create``/``on.update`` handlers, and twinhull
    has none (the fleet loop plans every ModelDeployment from what it is, each round; kopf
    only adds the finalizer and runs ``on.delete``). Storing it cost a patch of every
    ModelDeployment when first seen (2,000 at start, beside the finalizer's) and one more
    at each spec change. Each event is then a creation with no handler: nothing is
    written."""

    def fetch(self, *, body: kopf.Body) -> None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: Any) -> None:
        return None


WORKER_IDLE_SECONDS = 0.5
"""How long kopf keeps an object's worker, and its slot of ``--max-workers``, waiting for
that object's next event once it has handled the last (kopf's default: 5 s)."""


def configure(settings: kopf.OperatorSettings, max_workers: int) -> None:
    """kopf's settings for twinhull. Effects: changes ``settings``."""
    # State lives in status and our own annotations, not in kopf's default annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="serving.twinhull.io")
    settings.persistence.diffbase_storage = Undiffed()
    settings.persistence.finalizer = "serving.twinhull.io/cleanup"
    settings.posting.level = logging.WARNING  # Events only for decisions and problems
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    # kopf hands each object's events to a worker of its own; at most ``max_workers`` run
    # per kind (bounded requests in flight: unbounded, a start with 2,000
    # ModelDeployments patched them all at once, the hub answered 429 and the Lease could
    # not be renewed). The others wait their turn with every event of theirs queued, whole
    # bodies. A worker that has handled its object's last event holds its slot for the
    # idle time: at kopf's default of 5 s (after a patch, the wait for its echo first),
    # 20 slots let 2-4 objects a second through per kind (by arithmetic). At 2,000
    # ModelDeployments a heap census found ~20,000 deques for minutes, most of them kopf's
    # per-object queues (an asyncio Queue and Event, four deques an object) of the
    # ModelDeployments, ModelSnapshots and HTTPRoutes waiting, each with its events (the
    # echoes of the status and route writes among them). At 0.5 s: ~6,000 deques at 60 s,
    # kopf's finalizer on all 2,000 at 144 s, RSS at convergence 331 MiB instead of 374.
    # Handling an event takes milliseconds here; a worker that exits is started again by
    # the next event.
    settings.queueing.worker_limit = max_workers
    settings.queueing.idle_timeout = WORKER_IDLE_SECONDS


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf, sync the tier policy to the hub, load every ModelDeployment, and start
    the fleet loop."""
    rt: Runtime = memo.runtime
    try:  # before any member is connected: every member object carries it
        rt.installation = await members.installation_id(rt.hub, rt.settings)
    except ClusterUnavailable as exc:
        raise kopf.TemporaryError(f"cannot read the installation id: {exc}", delay=5) from exc
    log.info("installation %s", rt.installation)
    configure(settings, rt.settings.max_workers)
    for tier in rt.policy.objects():
        try:
            await rt.hub.apply(tier)
        except ClusterUnavailable as exc:
            raise kopf.TemporaryError(f"cannot sync tier {tier['metadata']['name']}: {exc}",
                                      delay=5) from exc
    items = await rt.hub.list("serving.twinhull.io/v1alpha1", "ModelDeployment")
    for item in items:
        meta = item["metadata"]
        rt.deployments.setdefault((meta["namespace"], meta["name"]), slim(item))
    # snapshots before the first round: a restarted operator must know what was recorded
    for snap in await rt.hub.list("serving.twinhull.io/v1alpha1", "ModelSnapshot"):
        meta = snap["metadata"]
        if (meta["namespace"], meta["name"]) not in rt.snapshots:
            revisions.remember(rt, snap)
    routes = await rt.hub.list("gateway.networking.k8s.io/v1", "HTTPRoute",
                               selector=ROUTES)
    for route in routes:
        _remember_route(rt, route)
    rt.synced = True
    memo.fleet = asyncio.create_task(supervised(rt, "fleet", lambda: fleet_loop(rt)),
                                     name="fleet")
    memo.loads = asyncio.create_task(supervised(rt, "loads", lambda: load_loop(rt)),
                                     name="loads")
    log.info("twinhull started: %d tier(s) from %s, %d ModelDeployment(s)",
             len(rt.policy.tiers), rt.policy.source, len(items))


ROUTES = "app.kubernetes.io/managed-by=twinhull"


def _remember_route(rt: Runtime, route: dict[str, Any]) -> None:
    meta = route["metadata"]
    key = (meta["namespace"], meta["name"])
    digest = (meta.get("annotations") or {}).get("serving.twinhull.io/content-hash")
    if digest:
        rt.route_hashes[key] = digest
    rt.route_live[key] = route_projection(route)


@kopf.on.event("gateway.networking.k8s.io", "v1", "httproutes",
               labels={"app.kubernetes.io/managed-by": "twinhull"})
async def route_event(event: kopf.RawEvent, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Follow twinhull's HTTPRoutes: one edited by hand (or deleted) no longer routes what
    was written, so the next round writes it again."""
    rt: Runtime = memo.runtime
    route = dict(body)
    key = (route["metadata"].get("namespace", ""), route["metadata"]["name"])
    if event["type"] == "DELETED":
        rt.route_hashes.pop(key, None)
        rt.route_live.pop(key, None)
        rt.route_versions.pop(key, None)
        rt.poke()
        return
    version, ours = resource_version(route), rt.route_versions.get(key)
    if version is not None and ours is not None and version <= ours:
        return  # our own write, or an echo of an earlier one
    before = rt.route_live.get(key)
    rt.route_live[key] = route_projection(route)
    if before is not None and before != rt.route_live[key]:
        log.info("HTTPRoute %s/%s changed outside twinhull; it is written again", *key)
        rt.poke()


@kopf.on.probe(id="loops")
def loops(memo: Any, **_: Any) -> dict[str, Any]:
    """Liveness: every background loop (fleet round, load reader, member probes and
    writers) beat within its bound; a stuck or dead one fails the probe, so the kubelet
    restarts the operator instead of leaving it silently frozen."""
    rt: Runtime = memo.runtime
    at = now()
    stale = stale_loops(rt.beats, rt.loop_bounds, at)
    if stale:
        detail = ", ".join(f"{loop} {age:.0f}s (bound {rt.loop_bounds[loop]:.0f}s"
                           + (f", last error {rt.loop_errors[loop]}" if loop in rt.loop_errors
                              else "") + ")"
                           for loop, age in sorted(stale.items()))
        raise kopf.PermanentError(f"stale loops: {detail}")
    return {loop: {"ageSeconds": round((at - t).total_seconds(), 1),
                   "restarts": rt.restarts.get(loop, 0)}
            for loop, t in sorted(rt.beats.items())}


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the fleet loop; member daemons are stopped by kopf."""
    for name in ("fleet", "loads"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
