"""Kubernetes Events on twinhull's objects: every decision and every health change is one,
an ``events.k8s.io/v1`` Event with what was done (``action``), why (``reason``), who did
it (``reportingController``, ``reportingInstance``: the operator replica) and a ``note``
with the change and its inputs. ``kubectl describe`` and ``kubectl events`` show them
(core/v1 and events.k8s.io/v1 are the same objects). Effects: hub writes (failures are
logged, never raised)."""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from twinhull.clusters.kube import NOTICE, Abandoned, ClusterUnavailable
from twinhull.handlers.runtime import Runtime, now

log = logging.getLogger(__name__)

CONTROLLER = "serving.twinhull.io/operator"
"""``reportingController``: the name of the controller, as Kubernetes asks (a qualified
name, like ``kubernetes.io/kubelet``)."""
_CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]{0,127}$")


def _name(owner: str, t: datetime) -> str:
    """``<owner>.<hex nanoseconds><hex random>``: unique, a valid DNS subdomain. Pure
    apart from the random part."""
    return f"{owner[:200]}.{int(t.timestamp() * 1e9):x}{secrets.token_hex(3)}"


def micro_time(t: datetime) -> str:
    """An RFC 3339 time with microseconds, as ``eventTime`` must be. Pure."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_for(body: Mapping[str, Any], type_: Literal["Normal", "Warning"], reason: str,
              message: str, *, time: datetime, instance: str, action: str | None = None
              ) -> dict[str, Any]:
    """An events.k8s.io/v1 Event about ``body``: ``action`` what was done (default: the
    reason), ``reason`` why (CamelCase), ``note`` the message. Pure."""
    meta = body["metadata"]
    namespace = meta.get("namespace") or "default"
    reason = reason if _CAMEL.match(reason) else "Decision"
    return {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        # events.k8s.io validates generateName itself ("x." is not a name): a unique name,
        # as the kubelet and client-go's recorder make them
        "metadata": {"name": _name(meta["name"], time), "namespace": namespace},
        "regarding": {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"),
                      "name": meta["name"], "namespace": meta.get("namespace"),
                      "uid": meta.get("uid")},
        "type": type_,
        "action": (action or reason)[:128],
        "reason": reason,
        "note": message[:1024],
        "eventTime": micro_time(time),
        "reportingController": CONTROLLER,
        "reportingInstance": instance[:128] or "twinhull",
    }


async def post(rt: Runtime, body: Mapping[str, Any], type_: Literal["Normal", "Warning"],
               reason: str, message: str, *, action: str | None = None) -> None:
    """Post one Event. Effects: one hub write."""
    try:
        await rt.hub.create(event_for(body, type_, reason, message, time=now(),
                                      instance=rt.identity, action=action), priority=NOTICE)
        rt.hub_writes += 1
        rt.telemetry.events_posted.inc()
    except Abandoned:  # its round was replaced before it was sent
        rt.telemetry.events_dropped.inc()
    except ClusterUnavailable as exc:
        rt.telemetry.events_failed.inc()
        log.warning("cannot post Event %s on %s: %s", reason, body["metadata"]["name"], exc)
