"""The fleet loop: plan every ModelDeployment from what was observed, publish the member
objects to each member's writer, and write HTTPRoutes, status and Events in the hub.

Level-based: each round works on the whole observed state, not on the event that woke it.
A round with nothing new writes nothing. Effects: hub writes, memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime
from typing import Any, Literal

import pydantic

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.clusters.kube import ClusterUnavailable
from twinhull.errors import UnknownTierError
from twinhull.handlers import events, revisions
from twinhull.handlers.runtime import Key, Runtime, now, parse_time, rfc3339
from twinhull.plan.fleet import (
    Condition,
    Decision,
    DeploymentInput,
    DeploymentPlan,
    Leg,
    Replicas,
    Role,
    Slot,
    plan_fleet,
)
from twinhull.plan.render import HASH, http_route, member_objects, priority_class, workload_name
from twinhull.plan.rollout import (
    Health,
    RevisionInput,
    RevisionPlan,
    Snapshot,
    plan_revision,
    with_revision,
)
from twinhull.plan.scaling import Recommendation

log = logging.getLogger(__name__)

API = "serving.twinhull.io/v1alpha1"
APPROVE = "serving.twinhull.io/approve"
DECISIONS_KEPT = 20
STARTUP_GRACE = 30.0
"""Seconds after start the fleet waits at most for every cluster's first observation."""
ROLES: tuple[Role, ...] = ("primary", "fallback")


def _legs(status: dict[str, Any]) -> dict[str, Leg]:
    out = {}
    for cluster, leg in (status.get("failover") or {}).items():
        out[cluster] = Leg(state=leg.get("state", "Serving"), since=parse_time(leg.get("since")),
                           step=int(leg.get("step", -1)),
                           step_since=parse_time(leg.get("stepSince")))
    return out


def _observed(ready: dict[str, dict[tuple[str, str], tuple[int, int]]], namespace: str,
              name: str, spec: ModelDeploymentSpec) -> dict[Slot, Replicas]:
    """The Deployments of one ModelDeployment, from each member's replica map (built once
    per round by the caller, not once per deployment)."""
    out: dict[Slot, Replicas] = {}
    for p in spec.placement:
        seen = ready.get(p.cluster)
        if seen is None:
            continue
        for zone in p.zones:
            for role in ROLES:
                got = seen.get((namespace, workload_name(name, role, zone)))
                if got is not None:
                    out[(p.cluster, role, zone)] = Replicas(*got)
    return out


def _history(status: dict[str, Any]) -> tuple[Recommendation, ...]:
    out = []
    for entry in (status.get("scaling") or {}).get("history") or []:
        when = parse_time(entry.get("time"))
        if when is not None:
            out.append(Recommendation(when, int(entry.get("replicas", 0))))
    return tuple(out)


def _scaling_status(plan: DeploymentPlan, old: dict[str, Any], t: str | None
                    ) -> dict[str, Any] | None:
    """Status of scaling: stable while nothing is decided, so load jitter writes nothing."""
    scale = plan.scale
    if scale is None:
        return None
    decided = next((d for d in plan.decisions if d.kind == "Scale"), None)
    pending = plan.pending if plan.pending is not None and plan.pending.kind == "Scale" else None
    latest = decided or pending
    out = dict(old) if old else {}
    out["replicas"] = plan.scaled
    out["history"] = [{"time": rfc3339(r.time), "replicas": r.replicas} for r in scale.history]
    if latest is not None:
        out.update({
            "decision": latest.id,
            "recommended": latest.inputs.get("to"),
            "message": latest.reason + ("" if latest is decided else
                                        f"; approve with {APPROVE}={latest.id}"),
            "demandTokensPerSecond": _number(latest.inputs.get("tokensPerSecond")),
            "waiting": _number(latest.inputs.get("waiting")),
            "forecastTokensPerSecond": _number(latest.inputs.get("forecastTokensPerSecond")),
            "running": _number(latest.inputs.get("running")),
            "latencyP95Seconds": _number(latest.inputs.get("latencyP95Seconds"), 2),
            "demandByZone": {z: _number(v) for z, v in
                             (latest.inputs.get("tokensPerSecondByZone") or {}).items()},
        })
    return {k: v for k, v in out.items() if v is not None}


def _number(value: Any, digits: int = 1) -> str | None:
    return None if value is None else f"{float(value):.{digits}f}"


def _condition_dicts(conditions: list[Condition], old: list[dict[str, Any]], generation: int,
                     t: str | None) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in old or []}
    out = []
    for c in conditions:
        before = previous.get(c.type)
        since = (before.get("lastTransitionTime") if before and before.get("status") == c.status
                 else t)
        out.append({"type": c.type, "status": c.status, "reason": c.reason,
                    "message": c.message, "lastTransitionTime": since,
                    "observedGeneration": generation})
    return out


def _leg_dict(leg: Leg) -> dict[str, Any]:
    return {"state": leg.state, "since": rfc3339(leg.since), "step": leg.step,
            "stepSince": rfc3339(leg.step_since)}


def _status(rt: Runtime, body: dict[str, Any], spec: ModelDeploymentSpec, plan: DeploymentPlan,
            observed: dict[Slot, Replicas], t: str | None, rev: RevisionPlan
            ) -> dict[str, Any]:
    old = dict(body.get("status") or {})
    generation = int(body["metadata"].get("generation", 0))
    clusters: list[dict[str, Any]] = []
    for p in spec.placement:
        view = rt.views.get(p.cluster)
        zones: dict[str, Any] = {}
        fallback_zones: dict[str, Any] = {}
        for (c, role, zone), n in sorted(plan.replicas.items()):
            if c != p.cluster:
                continue
            seen = observed.get((c, role, zone))
            entry = {"desired": n, "ready": seen.ready if seen else 0}
            (zones if role == "primary" else fallback_zones)[zone] = entry
        leg = plan.legs[p.cluster]
        message = "" if leg.state == "Serving" else f"{leg.state} since {rfc3339(leg.since)}"
        member = rt.members.get(p.cluster)
        if member is not None and member.last_error:
            message = (message + "; " if message else "") + member.last_error
        clusters.append({"name": p.cluster, "phase": (view.phase if view else None) or "Unknown",
                         "weight": plan.weights.get(p.cluster, 0), "zones": zones,
                         "fallbackZones": fallback_zones, "message": message})
    decisions = list(old.get("decisions") or [])
    for d in [*plan.decisions, *rev.decisions]:
        decisions.append({"id": d.id, "kind": d.kind, "time": t, "reason": d.reason,
                          "applied": True, "inputs": dict(d.inputs)})
    ready = sum(z["ready"] for c in clusters for z in c["zones"].values()
                if plan.legs[c["name"]].state != "FailedOver")
    desired = sum(z["desired"] for c in clusters for z in c["zones"].values()
                  if plan.legs[c["name"]].state != "FailedOver")
    pending = None
    if plan.pending is not None:
        before = old.get("pending") or {}
        pending = {"id": plan.pending.id, "kind": plan.pending.kind,
                   "time": before.get("time") if before.get("id") == plan.pending.id else t,
                   "reason": plan.pending.reason, "applied": False,
                   "inputs": dict(plan.pending.inputs)}
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": _condition_dicts(_merged(plan.conditions, rev.conditions),
                                       old.get("conditions") or [], generation, t),
        "clusters": clusters,
        "traffic": plan.weights,
        "trafficSplit": " ".join(f"{k}={v}" for k, v in plan.weights.items()),
        "replicaSummary": f"{ready}/{desired}",
        "failover": {c: _leg_dict(leg) for c, leg in plan.legs.items()},
        "pending": pending,
        "unservedReplicas": plan.unserved,
        "decisions": decisions[-DECISIONS_KEPT:],
    }
    status.update(revisions.revision_status(rev, old, t, now()))
    scaling = _scaling_status(plan, dict(old.get("scaling") or {}), t)
    if scaling is not None:
        status["scaling"] = scaling
    return status


def _merged(fleet: list[Condition], revision: list[Condition]) -> list[Condition]:
    """The fleet's conditions with the revision planner's: its Progressing (a rollout)
    replaces the fleet's unless that waits for an approval."""
    theirs = {c.type: c for c in revision}
    out = []
    for c in fleet:
        mine = theirs.pop(c.type, None)
        if mine is None or (c.type == "Progressing" and c.reason == "WaitingForApproval"):
            out.append(c)
        else:
            out.append(mine)
    return out + list(theirs.values())


def _plan_revisions(rt: Runtime, inputs: list[DeploymentInput], bodies: dict[Key, Any],
                    plans: dict[Key, DeploymentPlan], snapshots: dict[Key, list[Snapshot]],
                    t_now: datetime) -> dict[Key, RevisionPlan]:
    """The revision plan of every deployment, from its status, its snapshots, what runs
    settled in each member and its health. Pure (reads memory)."""
    settled = {c: m.revisions() for c, m in rt.members.items()}
    out = {}
    for d in inputs:
        key = (d.namespace, d.name)
        body, plan = bodies[key], plans[key]
        status = body.get("status") or {}
        serving = frozenset(
            c for c, leg in plan.legs.items()
            if leg.state == "Serving" and (v := rt.views.get(c)) is not None
            and v.phase == "Healthy")
        errors, latency = rt.health.get(key, (None, None))
        out[key] = plan_revision(RevisionInput(
            namespace=d.namespace, name=d.name, spec=d.spec,
            generation=int(body["metadata"].get("generation", 0)), tier=d.tier, now=t_now,
            snapshots=snapshots.get(key, []),
            current=status.get("currentSnapshot"), last_good=status.get("lastGoodSnapshot"),
            held_back=status.get("heldBack"), held_back_why=revisions.held_back_why(status),
            rollout=revisions.rollout_of(status),
            serving=serving,
            settled={p.cluster: settled.get(p.cluster, {}).get(key) for p in d.spec.placement},
            health=Health(errors, latency), request=revisions.request_of(body)))
    return out


def _differs(new: dict[str, Any], old: dict[str, Any]) -> bool:
    return any(old.get(k) != v for k, v in new.items())


async def _write_route(rt: Runtime, key: Key, route: dict[str, Any]) -> None:
    want = route["metadata"]["annotations"][HASH]
    if rt.route_hashes.get(key) == want:
        return
    await rt.hub.apply(route)
    rt.hub_writes += 1
    rt.route_hashes[key] = want


def _invalid_status(body: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    generation = int(body["metadata"].get("generation", 0))
    old = (body.get("status") or {}).get("conditions") or []
    conditions = [Condition("Ready", "False", reason, message)]
    return {"observedGeneration": generation,
            "conditions": _condition_dicts(conditions, old, generation, rfc3339(now()))}


def observed_everywhere(rt: Runtime) -> bool:
    """Whether every ServingCluster was probed and (unless Down) observed since start.
    Until then the fleet is not planned, so a restarted operator moves no traffic and
    removes nothing because it has not looked yet. Pure (reads memory)."""
    for name in rt.clusters:
        view, member = rt.views.get(name), rt.members.get(name)
        if view is None:
            return False
        if view.phase != "Down" and (member is None or member.observed_round == 0):
            return False
    return True


async def reconcile(rt: Runtime) -> None:
    """One round over the whole fleet. Effects: publishes member objects, writes the hub."""
    t_now = now()
    if not observed_everywhere(rt) and (t_now - rt.started).total_seconds() < STARTUP_GRACE:
        log.debug("waiting for every cluster's first observation")
        return
    t = rfc3339(t_now)
    inputs: list[DeploymentInput] = []
    bodies: dict[Key, dict[str, Any]] = {}
    writes: list[Any] = []
    held: set[Key] = set()
    ready = {cluster: member.ready_replicas() for cluster, member in rt.members.items()}
    for key, body in list(rt.deployments.items()):
        if body["metadata"].get("deletionTimestamp"):
            continue
        try:
            spec = ModelDeploymentSpec.model_validate(body.get("spec") or {})
            tier = rt.policy.resolve(spec.sla_tier)
        except (pydantic.ValidationError, UnknownTierError) as exc:
            reason = "UnknownTier" if isinstance(exc, UnknownTierError) else "InvalidSpec"
            held.add(key)
            status = _invalid_status(body, reason, f"{exc}; what runs is left as it is")
            if _differs(status, body.get("status") or {}):
                writes.append(_patch_status(rt, key, status))
            continue
        status = dict(body.get("status") or {})
        inputs.append(DeploymentInput(
            namespace=key[0], name=key[1], spec=spec, tier=tier, legs=_legs(status),
            observed=_observed(ready, key[0], key[1], spec),
            traffic=dict(status.get("traffic") or {}),
            approved=(body["metadata"].get("annotations") or {}).get(APPROVE),
            load=rt.loads.get(key), scaled=(status.get("scaling") or {}).get("replicas"),
            scaling_history=_history(status),
            unserved=int(status.get("unservedReplicas") or 0),
        ))
        bodies[key] = body
    plans = plan_fleet(inputs, rt.views, now=t_now)
    snapshots = revisions.snapshots_by_deployment(rt)
    revs = _plan_revisions(rt, inputs, bodies, plans, snapshots, t_now)
    # a revision reaches no member before its ModelSnapshot is recorded
    recording = [(d, revs[(d.namespace, d.name)].record) for d in inputs
                 if revs[(d.namespace, d.name)].record is not None]
    recorded = await asyncio.gather(*(
        revisions.record(rt, revisions.snapshot_manifest(
            d.namespace, d.name, bodies[(d.namespace, d.name)]["metadata"].get("uid"), snap,
            d.spec.sla_tier, d.tier))
        for d, snap in recording if snap is not None))
    unrecorded = {(d.namespace, d.name) for (d, _), ok in zip(recording, recorded, strict=True)
                  if not ok}
    held |= unrecorded
    inputs = [d for d in inputs if (d.namespace, d.name) not in unrecorded]

    desired: dict[str, list[dict[str, Any]]] = {c: [] for c in rt.members}
    tiers_used: set[str] = set()
    for d in inputs:
        tiers_used.add(d.spec.sla_tier)
        plan, rev = plans[(d.namespace, d.name)], revs[(d.namespace, d.name)]
        for p in d.spec.placement:
            if p.cluster in desired:
                snap = rev.render.get(p.cluster)
                spec = with_revision(d.spec, snap.spec) if snap is not None else d.spec
                desired[p.cluster] += member_objects(d.name, d.namespace, p.cluster, spec,
                                                     d.tier, plan.replicas)
    for cluster, objects in desired.items():
        for tier_name in sorted(tiers_used):
            pc = priority_class(tier_name, rt.policy.resolve(tier_name))
            if pc is not None:
                objects.insert(0, pc)
        if rt.members[cluster].publish(objects, keep=held):
            rt.poke_member(cluster)

    for d in inputs:
        key = (d.namespace, d.name)
        body, plan = bodies[key], plans[key]
        route = http_route(d.name, d.namespace, body["metadata"].get("uid"), d.spec,
                           plan.weights, gateway=rt.settings.gateway)
        writes.append(_write_route(rt, key, route))
        rev = revs[key]
        status = _status(rt, body, d.spec, plan, dict(d.observed), t, rev)
        if _differs(status, body.get("status") or {}):
            writes.append(_patch_status(rt, key, status))
        if rev.outcomes:
            writes.append(revisions.write_outcomes(rt, d.namespace, rev, t))
        snaps = snapshots.get(key, [])
        limit = d.spec.rollback.history_limit or d.tier.rollback_history_limit
        if len(snaps) > limit:
            writes.append(revisions.retain(rt, key, snaps, limit, rev))
        for decision in [*plan.decisions, *rev.decisions]:
            writes.append(events.post(rt, body, _event_type(decision), decision.kind,
                                      _event_text(decision)))
            log.info("%s/%s: %s %s: %s", d.namespace, d.name, decision.kind, decision.id,
                     decision.reason)
        old_pending = ((body.get("status") or {}).get("pending") or {}).get("id")
        if plan.pending is not None and old_pending != plan.pending.id:
            writes.append(events.post(
                rt, body, "Warning", "ApprovalRequired",
                f"{plan.pending.reason}; approve with: kubectl annotate md/{d.name} -n "
                f"{d.namespace} {APPROVE}={plan.pending.id}"))
    results = await asyncio.gather(*writes, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.warning("hub write failed, retrying next round: %s", result)


def _short(inputs: Any) -> str:
    return json.dumps(inputs, sort_keys=True, default=str)[:400]


def _event_type(decision: Decision) -> Literal["Normal", "Warning"]:
    losing = decision.kind == "Capacity" and bool(decision.inputs.get("to"))
    bad = decision.kind in ("Failover", "Rollback", "RolloutFailed")
    return "Warning" if bad or losing else "Normal"


def _event_text(decision: Decision) -> str:
    """An Event's message: the change (before -> after), why, and the measurements it was
    decided from, so ``kubectl describe`` alone explains it."""
    i = decision.inputs
    if decision.kind == "Scale":
        measured = ", ".join(f"{label} {_number(i.get(key))}" for key, label in (
            ("tokensPerSecond", "demand tokens/s"), ("waiting", "waiting requests"),
            ("custom", "custom metric"), ("forecastTokensPerSecond", "forecast tokens/s"),
            ("running", "running requests"), ("latencyP95Seconds", "p95 latency s"))
            if i.get(key) is not None)
        return (f"replicas {i.get('from')} -> {i.get('to')}: {decision.reason} "
                f"[{measured or 'no reading'}; needed {i.get('needed')}, headroom "
                f"{i.get('headroomPercent')}%, bounds {i.get('bounds')}] (decision {decision.id})")
    return f"{decision.reason} (decision {decision.id}, inputs {_short(i)})"


async def _patch_status(rt: Runtime, key: Key, status: dict[str, Any]) -> None:
    try:
        await rt.hub.patch_status(API, "ModelDeployment", key[1], status, namespace=key[0])
        rt.hub_writes += 1
    except ClusterUnavailable as exc:
        log.warning("%s/%s: cannot write status: %s", key[0], key[1], exc)
        return
    # Keep our view current until the watch event arrives, so the next round compares
    # against what was written rather than writing it again.
    body = rt.deployments.get(key)
    if body is not None:
        rt.deployments[key] = {**body, "status": {**(body.get("status") or {}), **status}}


async def fleet_loop(rt: Runtime) -> None:
    """Re-plan on every change and at least every resync interval. Effects: as
    :func:`reconcile`."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.wake.wait(), timeout=rt.settings.resync_seconds)
        rt.wake.clear()
        try:
            await reconcile(rt)
        except Exception:  # a bug must not stop the loop: log it and try again next round
            log.exception("fleet round failed")
        await asyncio.sleep(0.2)  # coalesce bursts of events into one round

