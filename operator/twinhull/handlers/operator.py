"""Start-up, shutdown and settings of the kopf operator. Effects: hub reads and writes."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from twinhull.clusters.kube import ClusterUnavailable
from twinhull.handlers import revisions
from twinhull.handlers.fleet import fleet_loop
from twinhull.handlers.runtime import Runtime
from twinhull.handlers.scaling import load_loop

log = logging.getLogger(__name__)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """Log in to the hub: the kubeconfig given (``--kubeconfig``/``KUBECONFIG``), else the
    in-cluster service account."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    """Configure kopf, sync the tier policy to the hub, load every ModelDeployment, and start
    the fleet loop."""
    rt: Runtime = memo.runtime
    # State lives in status and our own annotations, not in kopf's default annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
        prefix="serving.twinhull.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="serving.twinhull.io", key="last-handled-configuration")
    settings.persistence.finalizer = "serving.twinhull.io/cleanup"
    settings.posting.level = logging.WARNING  # Events only for decisions and problems
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    for tier in rt.policy.objects():
        try:
            await rt.hub.apply(tier)
        except ClusterUnavailable as exc:
            raise kopf.TemporaryError(f"cannot sync tier {tier['metadata']['name']}: {exc}",
                                      delay=5) from exc
    items = await rt.hub.list("serving.twinhull.io/v1alpha1", "ModelDeployment")
    for item in items:
        meta = item["metadata"]
        rt.deployments.setdefault((meta["namespace"], meta["name"]), item)
    # snapshots before the first round: a restarted operator must know what was recorded
    for snap in await rt.hub.list("serving.twinhull.io/v1alpha1", "ModelSnapshot"):
        meta = snap["metadata"]
        if (meta["namespace"], meta["name"]) not in rt.snapshots:
            revisions.remember(rt, snap)
    routes = await rt.hub.list("gateway.networking.k8s.io/v1", "HTTPRoute",
                               selector="app.kubernetes.io/managed-by=twinhull")
    for route in routes:
        meta = route["metadata"]
        digest = (meta.get("annotations") or {}).get("serving.twinhull.io/content-hash")
        if digest:
            rt.route_hashes[(meta["namespace"], meta["name"])] = digest
    rt.synced = True
    memo.fleet = asyncio.create_task(fleet_loop(rt), name="fleet")
    memo.loads = asyncio.create_task(load_loop(rt), name="loads")
    log.info("twinhull started: %d tier(s) from %s, %d ModelDeployment(s)",
             len(rt.policy.tiers), rt.policy.source, len(items))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """Stop the fleet loop; member daemons are stopped by kopf."""
    for name in ("fleet", "loads"):
        task = memo.get(name)
        if task is not None:
            task.cancel()
