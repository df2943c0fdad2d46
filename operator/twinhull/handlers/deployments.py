"""ModelDeployment handlers: keep the latest objects in memory for the fleet loop, and
remove an object's member resources when it is deleted. Effects: memory, waits."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from twinhull.handlers.runtime import Runtime, slim

log = logging.getLogger(__name__)

GROUP, VERSION = "serving.twinhull.io", "v1alpha1"


@kopf.on.event(GROUP, VERSION, "modeldeployments")
async def deployment_event(event: kopf.RawEvent, body: kopf.Body, namespace: str | None,
                           name: str, memo: Any, **_: Any) -> None:
    """Keep the latest ModelDeployment; wake the fleet when anything but our own status
    write changed (a spec change, an annotation, a deletion)."""
    rt: Runtime = memo.runtime
    key = (namespace or "", name)
    if event["type"] == "DELETED":
        rt.deployments.pop(key, None)
        rt.route_hashes.pop(key, None)
        rt.route_live.pop(key, None)
        rt.route_versions.pop(key, None)
        rt.backoff.pop(key, None)
        rt.load_errors.pop(key, None)
        rt.specs.pop(key, None)
        rt.rendered.pop(key, None)
        rt.unrecorded.pop(key, None)
        rt.poke()
        return
    old = rt.deployments.get(key)
    new = slim(body)
    rt.deployments[key] = new
    if old is None or _meaningful(old) != _meaningful(new):
        rt.poke()


def _meaningful(body: dict[str, Any]) -> tuple[Any, ...]:
    meta = body.get("metadata", {})
    return (body.get("spec"), meta.get("generation"), meta.get("annotations"),
            meta.get("deletionTimestamp"))


@kopf.on.delete(GROUP, VERSION, "modeldeployments")
async def deployment_deleted(namespace: str | None, name: str, body: kopf.Body, memo: Any,
                             **_: Any) -> None:
    """Remove the deployment's objects from every reachable member before the finalizer is
    released. An unreachable member does not block deletion: its objects are removed by
    its writer when it returns (they no longer belong to any ModelDeployment)."""
    rt: Runtime = memo.runtime
    namespace = namespace or ""
    rt.deployments[(namespace, name)] = slim(body)
    rt.poke()
    deadline = asyncio.get_running_loop().time() + 20.0
    while True:
        left, unreachable = [], []
        for cluster, member in rt.members.items():
            objects = member.objects_of(namespace, name)
            if not objects:
                continue
            view = rt.views.get(cluster)
            if view is None or view.phase in ("Down", None):
                unreachable.append(cluster)
            else:
                left.append(f"{cluster} ({len(objects)})")
        if not left:
            break
        if asyncio.get_running_loop().time() > deadline:
            raise kopf.TemporaryError(f"still removing objects in {', '.join(left)}", delay=5)
        await asyncio.sleep(1.0)
    if unreachable:
        kopf.warn(body, reason="CleanupDeferred",
                  message=f"{', '.join(unreachable)} unreachable: its objects of {name} are "
                          "removed when it returns")
