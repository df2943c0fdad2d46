"""Kubernetes Events on twinhull's objects: every decision and every health change is one,
with its reason and inputs. Effects: hub writes (failures are logged, never raised)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal

from twinhull.clusters.kube import ClusterUnavailable
from twinhull.handlers.runtime import Runtime, now, rfc3339

log = logging.getLogger(__name__)


def event_for(body: Mapping[str, Any], type_: Literal["Normal", "Warning"], reason: str,
              message: str, *, time: str | None) -> dict[str, Any]:
    """A core/v1 Event about ``body``. Pure."""
    meta = body["metadata"]
    namespace = meta.get("namespace") or "default"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                           "name": meta["name"], "namespace": meta.get("namespace"),
                           "uid": meta.get("uid")},
        "type": type_,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "twinhull"},
        "reportingComponent": "twinhull",
        "reportingInstance": "twinhull",
        "firstTimestamp": time,
        "lastTimestamp": time,
        "count": 1,
    }


async def post(rt: Runtime, body: Mapping[str, Any], type_: Literal["Normal", "Warning"],
               reason: str, message: str) -> None:
    """Post one Event. Effects: one hub write."""
    try:
        await rt.hub.create(event_for(body, type_, reason, message, time=rfc3339(now())))
        rt.hub_writes += 1
    except ClusterUnavailable as exc:
        log.warning("cannot post Event %s on %s: %s", reason, body["metadata"]["name"], exc)
