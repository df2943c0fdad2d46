"""Revisions in the hub: ModelSnapshots in memory (watched), the revision state of each
ModelDeployment in and out of its status, recording snapshots, their outcomes and
retention. The decisions are :mod:`twinhull.plan.rollout`'s. Effects: hub reads and
writes, memory.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import kopf
import pydantic

from twinhull.api.annotations import RollbackAnnotation
from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.api.tier import ServingTierSpec
from twinhull.clusters.kube import Abandoned, ClusterUnavailable, log_level
from twinhull.handlers.runtime import Key, Runtime, as_mapping, parse_time, rfc3339, rfc3339_micro
from twinhull.plan.render import DEPLOYMENT, MANAGED_BY, OPERATOR, RENDERER
from twinhull.plan.rollout import (
    RevisionPlan,
    RollbackRequest,
    Rollout,
    Snapshot,
    prune,
)

log = logging.getLogger(__name__)

GROUP, VERSION = "serving.twinhull.io", "v1alpha1"
API = f"{GROUP}/{VERSION}"
OUTCOME_RETRY_SECONDS = 60
"""How long an outcome written again waits after a failed write (see ``write_outcomes``)."""


@kopf.on.event(GROUP, VERSION, "modelsnapshots")
async def snapshot_event(event: kopf.RawEvent, body: kopf.Body, namespace: str | None,
                         name: str, memo: Any, **_: Any) -> None:
    """Keep every ModelSnapshot in memory; a new or changed one may let a rollout go on."""
    rt: Runtime = memo.runtime
    key = (namespace or "", name)
    if event["type"] == "DELETED":
        rt.snapshots.pop(key, None)
        rt.outcome_failed.pop(key, None)
        return
    new = key not in rt.snapshots
    remember(rt, dict(body))
    if new:
        rt.poke()


def snapshot_of(body: dict[str, Any]) -> Snapshot | None:
    """A ModelSnapshot object as the planner sees it (None if unreadable). Pure."""
    spec, meta = body.get("spec") or {}, body.get("metadata") or {}
    raw = spec.get("deployment") or {}
    try:
        ModelDeploymentSpec.model_validate(raw)
    except pydantic.ValidationError:
        return None
    return Snapshot(name=meta.get("name", ""), hash=str(spec.get("hash", "")),
                    generation=int(spec.get("generation", 0)),
                    source=json.dumps(raw, separators=(",", ":")),  # see Snapshot.source
                    reason=str(spec.get("reason", "NewRevision")),
                    outcome=(body.get("status") or {}).get("outcome") or "Pending",
                    created=parse_time(meta.get("creationTimestamp")))


def remember(rt: Runtime, body: dict[str, Any]) -> None:
    """Keep a ModelSnapshot, parsed once (not on every round). Effects: memory."""
    meta = body.get("metadata") or {}
    owner = str(((body.get("spec") or {}).get("deploymentRef") or {}).get("name", ""))
    rt.snapshots[(meta.get("namespace", ""), meta.get("name", ""))] = (owner,
                                                                       snapshot_of(body))


def snapshots_by_deployment(rt: Runtime) -> dict[Key, list[Snapshot]]:
    """The recorded snapshots of every ModelDeployment, grouped once per round. Pure
    (reads memory)."""
    out: dict[Key, list[Snapshot]] = {}
    for (namespace, _), (owner, snap) in rt.snapshots.items():
        if snap is not None:
            out.setdefault((namespace, owner), []).append(snap)
    return out


def rollout_of(status: dict[str, Any]) -> Rollout | None:
    """``status.rollout`` as the planner's value; None when it does not parse (the planner
    then starts from what is recorded). Pure."""
    raw = as_mapping(status.get("rollout"))
    since = parse_time(raw.get("since"))
    target = raw.get("target")
    if since is None or not isinstance(target, str) or not target:
        return None
    mode = raw.get("mode", "Rollout")
    done, drained = raw.get("done"), raw.get("drained")
    try:
        paused = max(0.0, float(raw.get("pausedSeconds") or 0))
    except (TypeError, ValueError):
        paused = 0.0
    return Rollout(target=target, mode=mode if mode in ("Initial", "Rollout", "Rollback")
                   else "Rollout", since=since,
                   done=tuple(str(c) for c in (done if isinstance(done, list) else ())),
                   verifying_since=parse_time(raw.get("verifyingSince")),
                   measured_since=parse_time(raw.get("measuredSince")),
                   failed=str(raw.get("failed") or ""),
                   paused_since=parse_time(raw.get("pausedSince")), paused_seconds=paused,
                   drained=tuple(str(c) for c in (drained if isinstance(drained, list)
                                                  else ())))


def rollout_dict(r: Rollout | None) -> dict[str, Any] | None:
    """The planner's rollout as ``status.rollout``. Pure."""
    if r is None:
        return None
    out = {"target": r.target, "mode": r.mode, "since": rfc3339_micro(r.since),
           "done": list(r.done), "verifyingSince": rfc3339_micro(r.verifying_since),
           "measuredSince": rfc3339_micro(r.measured_since), "failed": r.failed,
           "pausedSince": rfc3339_micro(r.paused_since),
           "pausedSeconds": round(r.paused_seconds, 3) or None,
           "drained": list(r.drained) or None}
    return {k: v for k, v in out.items() if v is not None}


def request_of(body: dict[str, Any], parsed: RollbackAnnotation | None
               ) -> RollbackRequest | None:
    """The manual rollback request of a ModelDeployment (its validated annotation, see
    :mod:`twinhull.api.annotations`), if not handled yet. Pure."""
    if parsed is None:
        return None
    request = RollbackRequest(id=parsed.id, to=parsed.to or None, by=parsed.by, at=parsed.at)
    handled = as_mapping(as_mapping(body.get("status")).get("rollbackRequest")).get("id")
    return None if handled == request.id else request


def held_back_why(status: dict[str, Any]) -> tuple[str, str] | None:
    """``status.heldBackReason`` as (reason, message). Pure."""
    raw = status.get("heldBackReason")
    if not raw:
        return None
    reason, _, message = str(raw).partition(": ")
    return reason, message


def snapshot_manifest(namespace: str, deployment: str, uid: str | None, snap: Snapshot,
                      tier_name: str, tier: ServingTierSpec) -> dict[str, Any]:
    """The ModelSnapshot object recording one revision. Pure."""
    metadata: dict[str, Any] = {
        "name": snap.name, "namespace": namespace,
        "labels": {DEPLOYMENT: deployment, MANAGED_BY: OPERATOR},
    }
    if uid:  # owned by the deployment: deleted with it (kept while it exists: retention)
        metadata["ownerReferences"] = [{"apiVersion": API, "kind": "ModelDeployment",
                                        "name": deployment, "uid": uid}]
    ref: dict[str, Any] = {"name": deployment}
    if uid:
        ref["uid"] = uid
    return {
        "apiVersion": API, "kind": "ModelSnapshot", "metadata": metadata,
        "spec": {
            "deploymentRef": ref, "generation": snap.generation, "hash": snap.hash,
            "reason": snap.reason, "renderer": RENDERER, "tier": tier_name,
            "tierSpec": tier.model_dump(mode="json", by_alias=True, exclude_none=True),
            "deployment": snap.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
    }


async def record(rt: Runtime, manifest: dict[str, Any]) -> bool:
    """Create a ModelSnapshot (an existing one with that name is the same content).
    Effects: one hub write."""
    meta = manifest["metadata"]
    try:
        created = await rt.hub.create(manifest)
    except Abandoned:
        return False  # its round was replaced; the next records it
    except ClusterUnavailable as exc:
        # Recorded only if a snapshot of that name exists with this very content: an error
        # text is never guessed at (a 403 in namespace "team-409" is not "already exists").
        try:
            existing = await rt.hub.get(API, "ModelSnapshot", meta["name"],
                                        namespace=meta["namespace"])
        except ClusterUnavailable:
            existing = {}
        if (existing.get("spec") or {}).get("hash") == manifest["spec"]["hash"]:
            remember(rt, existing)
            return True
        log.warning("cannot record %s: %s", meta["name"], exc)
        return False
    rt.hub_writes += 1
    rt.telemetry.snapshots.labels("Recorded").inc()
    remember(rt, created or manifest)
    return True


async def write_outcomes(rt: Runtime, namespace: str, plan: RevisionPlan, t: str | None
                         ) -> None:
    """Patch the outcome of every snapshot the plan decided on; one written again
    (``plan.again``) waits :data:`OUTCOME_RETRY_SECONDS` after a failed write. Effects: hub
    writes."""
    for name, (outcome, reason, message) in plan.outcomes.items():
        failed = rt.outcome_failed.get((namespace, name))
        if name in plan.again and failed is not None \
                and time.monotonic() - failed < OUTCOME_RETRY_SECONDS:
            continue
        status = {"outcome": outcome, "reason": reason, "message": message,
                  "verifiedTime": t}
        try:
            await rt.hub.patch_status(API, "ModelSnapshot", name, status, namespace=namespace)
            rt.hub_writes += 1
            if outcome in ("Good", "Bad"):
                rt.telemetry.snapshots.labels(outcome).inc()
        except ClusterUnavailable as exc:
            rt.outcome_failed[(namespace, name)] = time.monotonic()
            log.log(log_level(exc), "%s/%s: cannot write the outcome: %s%s", namespace, name,
                    exc, "; the status went ahead and states it: written again in "
                    f"{OUTCOME_RETRY_SECONDS} s" if name in plan.again else "")
            continue
        rt.outcome_failed.pop((namespace, name), None)
        owner, snap = rt.snapshots.get((namespace, name), ("", None))
        if snap is not None:
            rt.snapshots[(namespace, name)] = (owner, replace(snap, outcome=outcome))


async def retain(rt: Runtime, key: Key, snapshots: list[Snapshot], limit: int,
                 plan: RevisionPlan) -> None:
    """Delete the snapshots beyond the history limit, never the current one, the last Good
    one or the rollout's target. Effects: hub deletes."""
    keep = {plan.current, *(n for n in (plan.last_good,) if n)}
    if plan.rollout is not None:
        keep.add(plan.rollout.target)
    for name in prune(snapshots, limit, keep):
        try:
            await rt.hub.delete(API, "ModelSnapshot", name, namespace=key[0])
            rt.hub_writes += 1
            rt.snapshots.pop((key[0], name), None)
            log.info("%s/%s: pruned snapshot %s (history limit %d)", *key, name, limit)
        except ClusterUnavailable as exc:
            log.log(log_level(exc), "%s/%s: cannot prune %s: %s", *key, name, exc)


def revision_status(plan: RevisionPlan, old: dict[str, Any], t: str | None,
                    when: datetime) -> dict[str, Any]:
    """The revision part of a ModelDeployment's status. Pure."""
    out: dict[str, Any] = {
        "currentSnapshot": plan.current, "lastGoodSnapshot": plan.last_good,
        "rollout": rollout_dict(plan.rollout), "heldBack": plan.held_back,
        "heldBackReason": (f"{plan.held_back_why[0]}: {plan.held_back_why[1]}"
                           if plan.held_back_why else None),
    }
    if plan.handled is not None:
        h = plan.handled
        out["rollbackRequest"] = {
            "id": h.id, "to": h.to, "by": h.by, "at": h.at or rfc3339(when),
            "result": plan.request_error or f"rolling back to {h.to}"}
    elif old.get("rollbackRequest"):
        out["rollbackRequest"] = old["rollbackRequest"]
    return out
