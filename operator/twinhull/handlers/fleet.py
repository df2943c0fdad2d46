"""The fleet loop: plan every ModelDeployment from what was observed, publish the member
objects to each member's writer, and write HTTPRoutes, status and Events in the hub.

Level-based: each round works on the whole observed state, not on the event that woke it.
A round with nothing new writes nothing. Each ModelDeployment is read, planned, rendered and
reported on its own: one that raises or carries bad input is reported on itself and held,
and never stops the others. Effects: hub writes, memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal, TypeVar

import pydantic

from twinhull import __version__
from twinhull.api.annotations import APPROVE, Annotations
from twinhull.api.annotations import parse as parse_annotations
from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.api.tier import ServingTierSpec
from twinhull.clusters.kube import (
    STATE,
    TRAFFIC,
    WRITE_SCOPE,
    Abandoned,
    ClusterUnavailable,
    WriteScope,
    log_level,
)
from twinhull.errors import UnknownTierError
from twinhull.handlers import audit as audit_log
from twinhull.handlers import drills, events, revisions
from twinhull.handlers.counters import reason_of
from twinhull.handlers.members import health_of, probe_bound
from twinhull.handlers.runtime import (
    Key,
    Runtime,
    as_list,
    as_mapping,
    deployment_spec,
    now,
    parse_time,
    rfc3339,
    rfc3339_micro,
)
from twinhull.handlers.scaling import loads_bound
from twinhull.handlers.supervise import beat
from twinhull.plan.drill import drill_freshness
from twinhull.plan.fleet import (
    ClusterView,
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
from twinhull.plan.record import Replay, record_of
from twinhull.plan.render import (
    HASH,
    collisions,
    http_route,
    member_objects,
    priority_class,
    rendered_names,
    workload_name,
)
from twinhull.plan.rollout import (
    RevisionInput,
    RevisionPlan,
    Snapshot,
    effective_spec,
    plan_revision,
    with_revision,
)
from twinhull.plan.scaling import Load, Recommendation

log = logging.getLogger(__name__)
audit = logging.getLogger("twinhull.audit")
"""One JSON line per automated action (what, why, from which inputs), for the cluster's log
pipeline."""

API = "serving.twinhull.io/v1alpha1"
DECISIONS_KEPT = 20
STARTUP_GRACE = 30.0
"""Seconds after start the fleet waits at most for every cluster's first observation."""
ROLES: tuple[Role, ...] = ("primary", "fallback")


LEG_STATES = ("Serving", "FailedOver", "FailingBack")


def _int(value: Any, default: int) -> int:
    """An integer read from status, ``default`` when it is not one. Pure."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return default
    try:
        return int(value)
    except (ValueError, OverflowError):
        return default


def _legs(status: dict[str, Any]) -> dict[str, Leg]:
    """The failover legs persisted in status; an entry that does not parse is dropped (its
    cluster starts again from Serving and is re-evaluated from what is observed). Pure."""
    out = {}
    for cluster, leg in as_mapping(status.get("failover")).items():
        leg = as_mapping(leg)
        state = leg.get("state", "Serving")
        if not isinstance(cluster, str) or state not in LEG_STATES:
            continue
        out[cluster] = Leg(state=state, since=parse_time(leg.get("since")),
                           step=max(-1, min(_int(leg.get("step"), -1), 1000)),
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
    history = as_mapping(status.get("scaling")).get("history")
    for entry in history if isinstance(history, list) else []:
        entry = as_mapping(entry)
        when = parse_time(entry.get("time"))
        if when is not None:
            out.append(Recommendation(when, max(0, min(_int(entry.get("replicas"), 0), 100000))))
    return tuple(out)


def _consumed(status: dict[str, Any]) -> frozenset[str]:
    """Ids of the approvals already applied (``status.approvals``): an approval applies
    once, never to a later decision. Pure."""
    entries = status.get("approvals")
    return frozenset(str(as_mapping(e).get("id")) for e in
                     (entries if isinstance(entries, list) else []) if as_mapping(e).get("id"))


def _scaling_status(plan: DeploymentPlan, old: dict[str, Any], t: str | None
                    ) -> dict[str, Any] | None:
    """Status of scaling: stable while nothing is decided, so load jitter writes nothing."""
    scale = plan.scale
    if scale is None:
        return None
    decided = next((d for d in plan.decisions if d.kind == "Scale"), None)
    pending = plan.pending if plan.pending is not None and plan.pending.kind == "Scale" else None
    latest = decided or pending
    out = as_mapping(old)
    out["replicas"] = plan.scaled
    out["history"] = [{"time": rfc3339(r.time), "replicas": r.replicas} for r in scale.history]
    out["forecastMissedAt"] = (rfc3339(scale.forecast_missed_at)
                               if scale.forecast_missed_at is not None else None)
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


def _condition_dicts(conditions: list[Condition], old: Any, generation: int,
                     t: str | None) -> list[dict[str, Any]]:
    previous = {c.get("type"): c for c in (old if isinstance(old, list) else [])
                if isinstance(c, dict)}
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
    return {"state": leg.state, "since": rfc3339_micro(leg.since), "step": leg.step,
            "stepSince": rfc3339_micro(leg.step_since)}


@dataclass(frozen=True)
class Notes:
    """What the shell adds to a deployment's planned status: problems with inputs the
    planner does not see (annotations, metrics) and approvals applied this round."""

    problems: Mapping[str, str] = field(default_factory=dict)
    """Invalid annotation to why (the annotation is ignored)."""
    metrics_error: str = ""
    """Why this deployment's load could not be read (empty: read, or not scaled)."""
    approved: Decision | None = None
    """The approved decision applied this round (recorded so it never applies again)."""


def _status(rt: Runtime, body: dict[str, Any], spec: ModelDeploymentSpec, plan: DeploymentPlan,
            observed: dict[Slot, Replicas], t: str | None, rev: RevisionPlan,
            notes: Notes, views: Mapping[str, ClusterView]) -> dict[str, Any]:
    """The status of one deployment from its plan; each cluster's phase from ``views``
    (the round's, which the plan was made from). Pure (reads memory)."""
    old = as_mapping(body.get("status"))
    generation = int(body["metadata"].get("generation", 0))
    key = (body["metadata"].get("namespace", ""), body["metadata"]["name"])
    clusters: list[dict[str, Any]] = []
    for p in spec.placement:
        view = views.get(p.cluster)
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
        error = member.error_of(*key) if member is not None else ""
        if error:  # only this deployment's own objects' errors, never another's
            message = (message + "; " if message else "") + error
        clusters.append({"name": p.cluster, "phase": (view.phase if view else None) or "Unknown",
                         "weight": plan.weights.get(p.cluster, 0), "zones": zones,
                         "fallbackZones": fallback_zones, "message": message})
    old_decisions = old.get("decisions")
    decisions = [d for d in (old_decisions if isinstance(old_decisions, list) else [])
                 if isinstance(d, dict)]
    for d in [*plan.decisions, *rev.decisions]:
        decisions.append({"id": d.id, "kind": d.kind, "time": t, "reason": d.reason,
                          "applied": True, "inputs": dict(d.inputs)})
    ready = sum(z["ready"] for c in clusters for z in c["zones"].values()
                if plan.legs[c["name"]].state != "FailedOver")
    desired = sum(z["desired"] for c in clusters for z in c["zones"].values()
                  if plan.legs[c["name"]].state != "FailedOver")
    pending = None
    if plan.pending is not None:
        before = as_mapping(old.get("pending"))
        pending = {"id": plan.pending.id, "kind": plan.pending.kind,
                   "time": before.get("time") if before.get("id") == plan.pending.id else t,
                   "reason": plan.pending.reason, "applied": False,
                   "inputs": dict(plan.pending.inputs)}
    old_approvals = old.get("approvals")
    approvals = [a for a in (old_approvals if isinstance(old_approvals, list) else [])
                 if isinstance(a, dict)]
    if notes.approved is not None:
        approvals.append({"id": notes.approved.id, "kind": notes.approved.kind, "time": t})
    conditions = with_gitops(_with_notes(_merged(plan.conditions, rev.conditions), notes))
    fresh = drill_freshness(float(rt.policy.resolve(spec.sla_tier).availability_target),
                            parse_time(body["metadata"].get("creationTimestamp")),
                            parse_time(old.get("lastPassedDrillTime")),
                            old.get("lastPassedDrill"), now())
    if fresh is not None:
        conditions.append(fresh)
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": _condition_dicts(conditions, old.get("conditions"), generation, t),
        "clusters": clusters,
        "traffic": plan.weights,
        "trafficSplit": " ".join(f"{k}={v}" for k, v in plan.weights.items()),
        "replicaSummary": f"{ready}/{desired}",
        "failover": {c: _leg_dict(leg) for c, leg in plan.legs.items()},
        "pending": pending,
        "unservedReplicas": plan.unserved,
        "decisions": decisions[-DECISIONS_KEPT:],
    }
    if approvals:
        status["approvals"] = approvals[-DECISIONS_KEPT:]
    status.update(revisions.revision_status(rev, old, t, now()))
    scaling = _scaling_status(plan, as_mapping(old.get("scaling")), t)
    if scaling is not None:
        status["scaling"] = scaling
    return replacing(status, old, OWNED)


OWNED = ("traffic", "trafficSplit", "failover", "pending", "scaling", "rollout", "heldBack",
         "heldBackReason", "unservedReplicas", "clusters", "replicaSummary")
"""Status fields the planner owns whole: a key it no longer writes is removed, never left
behind by a merge (a cluster that left the placement leaves ``traffic`` too)."""


def replacing(new: dict[str, Any], old: dict[str, Any], owned: Sequence[str]
              ) -> dict[str, Any]:
    """``new`` as a JSON merge patch over ``old`` that *replaces* the ``owned`` fields: a
    null for every key (at any depth of those fields' maps) that ``old`` has and ``new``
    does not. Pure."""

    def nulls(n: Any, o: Any) -> Any:
        if not isinstance(n, dict) or not isinstance(o, dict):
            return n
        out = {k: nulls(v, o.get(k)) for k, v in n.items()}
        out.update({k: None for k in o if k not in n})
        return out

    out = dict(new)
    for k in owned:
        if k in out:
            out[k] = nulls(out[k], old.get(k))
        elif k in old:
            out[k] = None
    return out


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: what the API server stores after a merge-patch. Pure."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _with_notes(conditions: list[Condition], notes: Notes) -> list[Condition]:
    """The planner's conditions with the shell's findings: an invalid annotation makes
    Ready False (reason InvalidAnnotation: it is ignored, the object needs a fix); a
    deployment whose metrics cannot be read says why in MetricsAvailable."""
    out = []
    for c in conditions:
        if c.type == "Ready" and notes.problems:
            text = "; ".join(f"annotation {k}: {v}" for k, v in sorted(notes.problems.items()))
            c = Condition("Ready", "False", "InvalidAnnotation", f"{text} (ignored)")
        elif c.type == "MetricsAvailable" and notes.metrics_error:
            c = Condition("MetricsAvailable", "False", "MetricsUnreadable",
                          f"{notes.metrics_error}; scaling holds its last decision")
        out.append(c)
    return out


STALLING = ("InvalidSpec", "UnknownTier", "NameCollision", "InvalidAnnotation",
            "PlanningFailed")
"""Ready reasons that will not change without a change to the object: Stalled."""
ROLLING = ("RollingOut", "Verifying", "RollingBack", "RolloutPaused", "WaitingToRollOut")
"""Progressing reasons of a revision on its way: the spec is not served yet (Ready=False)."""


def with_gitops(conditions: list[Condition]) -> list[Condition]:
    """Add the conditions GitOps tools read (kstatus: ``Reconciling``, ``Stalled``) and make
    ``Ready`` mean "the spec is served", so a pipeline waiting on a change waits for it and
    sees a rejected one fail. Pure.

    * Stalled=True (kstatus Failed): the spec's revision was rolled back and is held back,
      a rollout failed with nothing to roll back to, or the object cannot be acted on
      (invalid spec, unknown tier, name collision, invalid annotation, planning failure);
      Ready is then False with the same reason.
    * Reconciling=True (kstatus InProgress): a revision rolls out, is verified, rolls back
      or waits (Ready False with that reason), replicas are not Ready yet, or a decision
      waits for approval.
    * Otherwise both False and Ready stays the planner's (True through a failover, with
      reason ServingDegraded).
    """
    by = {c.type: c for c in conditions}
    ready, rolled, progress = by.get("Ready"), by.get("RolledBack"), by.get("Progressing")
    stalled: Condition | None = None
    if ready is not None and ready.status == "False" and ready.reason in STALLING:
        stalled = ready
    elif rolled is not None and rolled.status == "True":
        stalled = rolled
    elif progress is not None and progress.status == "False" and \
            progress.reason == "RolloutFailed":
        stalled = progress
    reconciling = progress if stalled is None and progress is not None and \
        progress.status == "True" else None
    out = []
    for c in conditions:
        if c.type == "Ready" and stalled is not None:
            c = Condition("Ready", "False", stalled.reason, stalled.message)
        elif c.type == "Ready" and reconciling is not None and reconciling.reason in ROLLING:
            c = Condition("Ready", "False", reconciling.reason, reconciling.message)
        out.append(c)
    out.append(Condition("Reconciling", "True", reconciling.reason, reconciling.message)
               if reconciling is not None else
               Condition("Reconciling", "False", "Reconciled",
                         "nothing is on its way" if stalled is None else
                         "stopped: see Stalled"))
    out.append(Condition("Stalled", "True", stalled.reason, stalled.message)
               if stalled is not None else
               Condition("Stalled", "False", "NotStalled", "nothing failed"))
    return out


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


def _plan_revision(rt: Runtime, d: DeploymentInput, body: dict[str, Any],
                   snapshots: list[Snapshot], settled: Mapping[str, Mapping[Key, str | None]],
                   request: Any, views: Mapping[str, ClusterView], t_now: datetime
                   ) -> tuple[RevisionInput, RevisionPlan]:
    """The revision plan of one deployment, from its status, its snapshots, what runs
    settled in each member and its health. A cluster (or one of its zones) that does not
    serve pauses a rollout instead of failing it. Pure (reads memory)."""
    key = (d.namespace, d.name)
    status = as_mapping(body.get("status"))
    serving: set[str] = set()
    states: dict[str, str] = {}
    for p in d.spec.placement:
        view, leg = views.get(p.cluster), d.legs.get(p.cluster, Leg())
        zones = [z for z in p.zones if d.legs.get(f"{p.cluster}/{z}", Leg()).state != "Serving"]
        if view is None or view.phase != "Healthy":
            states[p.cluster] = view.phase if view is not None and view.phase else \
                "not probed yet"
        elif leg.state != "Serving":
            states[p.cluster] = leg.state
        elif zones:
            states[p.cluster] = f"failed over in zone {', '.join(zones)}"
        else:
            serving.add(p.cluster)
    current, last_good, held_back = (status.get(k) for k in
                                     ("currentSnapshot", "lastGoodSnapshot", "heldBack"))
    i = RevisionInput(
        namespace=d.namespace, name=d.name, spec=d.spec,
        generation=int(body["metadata"].get("generation", 0)), tier=d.tier, now=t_now,
        snapshots=snapshots,
        current=current if isinstance(current, str) else None,
        last_good=last_good if isinstance(last_good, str) else None,
        held_back=held_back if isinstance(held_back, str) else None,
        held_back_why=revisions.held_back_why(status),
        rollout=revisions.rollout_of(status),
        serving=frozenset(serving), states=states,
        settled={p.cluster: settled.get(p.cluster, {}).get(key) for p in d.spec.placement},
        health=rt.health_of(key), request=request)
    return i, plan_revision(i)


def _differs(new: dict[str, Any], old: dict[str, Any]) -> bool:
    """Whether merge-patching ``new`` onto ``old`` changes anything (a null deletes). Pure."""
    return bool(merge_patch(old, new) != old)


def route_projection(route: Mapping[str, Any]) -> Any:
    """What an HTTPRoute routes, in a form the API server's defaulting does not change:
    parents, matches' model header, and each backend's name, port and weight. Pure."""
    spec = as_mapping(route.get("spec"))
    rules = as_list(spec.get("rules"))
    parents = as_list(spec.get("parentRefs"))
    return (
        tuple(sorted((str(as_mapping(p).get("namespace", "")), str(as_mapping(p).get("name", "")))
                     for p in parents)),
        tuple(tuple((str(as_mapping(b).get("name", "")), as_mapping(b).get("port"),
                     as_mapping(b).get("weight", 1))
                    for b in as_list(as_mapping(r).get("backendRefs")))
              for r in rules),
    )


async def _write_route(rt: Runtime, key: Key, route: dict[str, Any]) -> None:
    """Apply the HTTPRoute unless the hub already has exactly it (same content hash written
    and, from the watch, nobody changed what it routes since). Effects: one hub write."""
    want = route["metadata"]["annotations"][HASH]
    if rt.route_hashes.get(key) == want and rt.route_live.get(key) == route_projection(route):
        return
    # what it routes is known before the answer: the watch event of this very write may
    # arrive first and must not count as an edit
    rt.route_live[key] = route_projection(route)
    rt.route_hashes.pop(key, None)  # written again next round unless this write lands
    written = await rt.hub.apply(route, priority=TRAFFIC, queue_seconds=ROUTE_QUEUE_SECONDS)
    rt.hub_writes += 1
    rt.route_hashes[key] = want
    version = resource_version(written)
    if version is not None:
        rt.route_versions[key] = version


def resource_version(obj: Any) -> int | None:
    """An object's resourceVersion as a number (etcd's revision), None when it is not one
    (then every watch event counts as news). Pure."""
    raw = as_mapping(as_mapping(obj).get("metadata")).get("resourceVersion")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def _invalid_status(body: dict[str, Any], reason: str, message: str) -> dict[str, Any]:
    generation = int(body["metadata"].get("generation", 0))
    old = as_mapping(body.get("status")).get("conditions")
    conditions = with_gitops([Condition("Ready", "False", reason, message)])
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


def view_bound(rt: Runtime, cluster: str) -> float:
    """Seconds a cluster's view stays current without a completed probe: the member
    daemon's own bound (:func:`~twinhull.handlers.members.probe_bound`), from the
    ServingCluster's spec. Pure (reads memory)."""
    return probe_bound(health_of(rt, cluster), rt.settings)


def current_views(rt: Runtime, at: datetime) -> dict[str, ClusterView]:
    """The views the planner may trust: a cluster whose last completed probe is older than
    its bound (its probe loop is stuck or dead) is Suspect, never Healthy: it keeps its
    traffic but takes nothing more until it is probed again. A Down view stays Down. Pure
    (reads memory)."""
    out = {}
    for name, view in rt.views.items():
        seen = rt.view_times.get(name)
        if view.phase in ("Healthy", "Recovering") and (
                seen is None or (at - seen).total_seconds() > view_bound(rt, name)):
            view = replace(view, phase="Suspect")
        out[name] = view
    return out


def current_loads(rt: Runtime, at: datetime) -> tuple[dict[Key, Load], str]:
    """The loads the planner may use and, when none, why: loads older than their bound are
    missing (never current), so scaling holds instead of acting on frozen numbers. Pure
    (reads memory)."""
    if rt.settings.prometheus_url is None:
        return {}, ""
    if rt.loads_time is None:
        return {}, "no load read from Prometheus yet (or the last read failed)"
    age, bound = (at - rt.loads_time).total_seconds(), loads_bound(rt.settings)
    if age > bound:
        return {}, (f"the last load read is {age:.0f}s old (bound {bound:.0f}s): the load "
                    "reader is stuck or Prometheus is slow")
    return dict(rt.loads), ""


def _plan_isolated(inputs: list[DeploymentInput], views: Mapping[str, ClusterView],
                   t_now: datetime) -> tuple[dict[Key, DeploymentPlan], dict[Key, str]]:
    """Plan the fleet; if that raises, find the deployments that make it raise (alone, then
    added one by one in priority order) and plan the others without them. Returns the
    plans and, per excluded deployment, the error. Pure."""
    try:
        return plan_fleet(inputs, views, now=t_now), {}
    except Exception:  # a planner bug on one object must not stop the others
        log.exception("fleet planning failed; isolating the deployments that fail it")
    failed: dict[Key, str] = {}
    for d in inputs:
        try:
            plan_fleet([d], views, now=t_now)
        except Exception as exc:
            failed[(d.namespace, d.name)] = f"{type(exc).__name__}: {exc}"
    rest = [d for d in inputs if (d.namespace, d.name) not in failed]
    try:
        return plan_fleet(rest, views, now=t_now), failed
    except Exception:
        log.exception("fleet planning still fails; adding deployments one at a time")
    accepted: list[DeploymentInput] = []
    for d in rest:
        try:
            plan_fleet([*accepted, d], views, now=t_now)
            accepted.append(d)
        except Exception as exc:
            failed[(d.namespace, d.name)] = f"{type(exc).__name__}: {exc}"
    return plan_fleet(accepted, views, now=t_now), failed


BACKOFF_MAX = 300.0
"""The longest a ModelDeployment whose round failed waits before it is tried again."""
STATUS_WRITES_PER_ROUND = 400
"""At most this many status writes start in one round; the others wait for the next round
(started at once), those of deployments with a decision or a changed Ready condition
first. A status is recomputed every round, so a deferred one is never lost. Unbounded, a
start with 2,000 ModelDeployments queued thousands of status writes behind the hub's
write threads each round; most waited out their queue time and failed, and the round
(routes and member objects included) waited for them."""


EVENTS_PER_ROUND = 100
"""At most this many Events are posted by one round, Warnings first; the others are not
posted (counted as ``twinhull_events_total{result="dropped"}`` and logged), as client-go's
spam filter drops what exceeds its budget. Every decision stays in ``status.decisions``,
the audit record and the operator's audit log line, so only the Event is lost. A member
lost at 2,000 ModelDeployments made one round post 5,656 Events (three decisions each)."""
ROUTE_QUEUE_SECONDS = 120.0
"""How long an HTTPRoute write waits for a hub write thread (other writes: 30 s, see
:data:`~twinhull.clusters.kube.WRITE_QUEUE_SECONDS`). Routes go ahead of every write but a
ServingCluster's status, and a member lost at 2,000 ModelDeployments rewrites 2,000 of
them: at ~60 hub writes a second on the lab, the last ones waited ~35 s, and at 30 s a
tenth failed and moved their traffic a round later."""


def _ready_of(status: Any) -> dict[str, Any]:
    """The Ready condition of a status ({} when it has none or the status is not a
    mapping: status is read, never trusted). Pure."""
    return next((c for c in as_list(as_mapping(status).get("conditions"))
                 if isinstance(c, dict) and c.get("type") == "Ready"), {})


class _Round:
    """The writes of one fleet round and the deployments held (whose member objects stay
    as they are). A deployment that fails is reported on itself and backs off; the others
    go on. Effects: memory (writes run at the end of the round)."""

    def __init__(self, rt: Runtime, t_now: datetime, views: Mapping[str, ClusterView]
                 ) -> None:
        self.rt = rt
        self.now = t_now
        self.views = views
        """The cluster views this round plans from (taken once at its start)."""
        self.writes: list[Any] = []
        self.held: set[Key] = set()
        self.statuses: list[tuple[bool, Key, dict[str, Any]]] = []
        """(not urgent, deployment, status) to write, at most
        :data:`STATUS_WRITES_PER_ROUND` of them this round (see :meth:`status_writes`);
        held to twice that while the round reports (:meth:`status`)."""
        self.queued: set[Key] = set()
        """Every deployment with a status to write this round, deferred ones included."""
        self.deferred = 0
        """Statuses left for the next round already (beyond the budget)."""
        self.outcomes: dict[Key, tuple[str, RevisionPlan, str | None]] = {}
        """Snapshot outcomes to write, each just before its deployment's status (see
        :meth:`status_writes`)."""
        self.events: list[tuple[bool, dict[str, Any], Literal["Normal", "Warning"], str, str,
                                str | None]] = []
        """Events to post, sent after every other write of the round, at most
        :data:`EVENTS_PER_ROUND` (see :meth:`event_writes`); held to twice that while the
        round reports (:meth:`event`)."""
        self.unposted: Counter[str] = Counter()
        """The reasons of the Events beyond the budget, not posted."""
        self.audit_gate = asyncio.Semaphore(audit_log.AT_ONCE)
        """The round's audit record writes take turns (:func:`audit_log.record`)."""

    def status(self, key: Key, status: dict[str, Any], *, urgent: bool) -> None:
        """Queue a status write; ``urgent`` ones (a decision, a changed Ready condition)
        go first. Those that cannot be among the round's first
        :data:`STATUS_WRITES_PER_ROUND` (urgent first, then in the order queued) are let
        go as soon as that is certain, not held to the end of the round: after a member
        loss at 2,000 ModelDeployments, 1,600 of the 2,000 statuses built were held only
        to be deferred (``tests/bench/round_memory.py``)."""
        self.queued.add(key)
        self.statuses.append((not urgent, key, status))
        if len(self.statuses) >= 2 * STATUS_WRITES_PER_ROUND:
            self._trim_statuses()

    def _trim_statuses(self) -> None:
        self.statuses, over = _within(self.statuses, STATUS_WRITES_PER_ROUND)
        self.deferred += len(over)

    def status_writes(self) -> list[Any]:
        """This round's status writes, urgent first, within the budget; when some wait,
        the fleet loop is woken for another round. Effects: memory."""
        self._trim_statuses()
        if self.deferred:
            log.info("%d status writes wait for the next round (at most %d a round)",
                     self.deferred, STATUS_WRITES_PER_ROUND)
            self.rt.poke()
        return [*(self._recorded(key, status) for _, key, status in self.statuses),
                *(revisions.write_outcomes(self.rt, *outcome)  # no status this round
                  for key, outcome in self.outcomes.items() if key not in self.queued)]

    async def _recorded(self, key: Key, status: dict[str, Any]) -> None:
        """The deployment's snapshot outcomes, then its status: whoever reads a status
        naming a snapshot Good finds the snapshot's verdict written. A deferred status's
        outcomes wait with it (its decisions are made again next round). Effects: hub
        writes."""
        outcome = self.outcomes.get(key)
        if outcome is None:
            await _patch_status(self.rt, key, status)
            return
        await revisions.write_outcomes(self.rt, *outcome)
        # half recorded: behind the round's other statuses it would wait out its queue
        # time, and the decision would be made (and its outcome written) again
        await _patch_status(self.rt, key, status, priority=TRAFFIC)

    def event(self, body: dict[str, Any], type_: Literal["Normal", "Warning"], reason: str,
              message: str, *, action: str | None = None) -> None:
        """Queue an Event on ``body``; as with statuses (:meth:`status`), one that cannot
        be among the round's first :data:`EVENTS_PER_ROUND` is let go at once."""
        self.events.append((type_ != "Warning", body, type_, reason, message, action))
        if len(self.events) >= 2 * EVENTS_PER_ROUND:
            self._trim_events()

    def _trim_events(self) -> None:
        self.events, over = _within(self.events, EVENTS_PER_ROUND)
        self.unposted.update(e[3] for e in over)

    def event_writes(self) -> list[Any]:
        """This round's Event posts within the budget, Warnings first (in the order they
        were queued); the rest are counted and logged, not posted. Effects: memory."""
        self._trim_events()
        if self.unposted:
            dropped = self.unposted.total()
            self.rt.telemetry.events_dropped.inc(dropped)
            log.warning("%d Events not posted (at most %d a round): %s; the decisions are "
                        "in each status.decisions and the audit record", dropped,
                        EVENTS_PER_ROUND, ", ".join(f"{r} {n}" for r, n in
                                                    self.unposted.most_common(5)))
        return [events.post(self.rt, body, type_, reason, message, action=action)
                for _, body, type_, reason, message, action in self.events]

    def report(self, key: Key, body: dict[str, Any], reason: str, message: str) -> None:
        """Hold the deployment with Ready=False, ``reason`` and ``message``, and post a
        Warning Event when that is news."""
        self.held.add(key)
        status = _invalid_status(body, reason, message)
        before = _ready_of(body.get("status"))
        if _differs(status, as_mapping(body.get("status"))):
            self.status(key, status, urgent=True)
        if (before.get("reason"), before.get("message")) != (reason, message):
            self.event(body, "Warning", reason, message)

    def fail(self, key: Key, body: dict[str, Any], stage: str, error: str) -> None:
        """A deployment's round raised: report it, keep what runs, back off (1 s doubling
        to 5 min) before it is tried again."""
        count = self.rt.backoff.get(key, (0, self.now))[0] + 1
        delay = min(2.0 ** (count - 1), BACKOFF_MAX)
        self.rt.backoff[key] = (count, self.now + timedelta(seconds=delay))
        log.error("%s/%s: %s failed (attempt %d, next in %.0fs): %s", *key, stage, count, delay,
                  error)
        self.report(key, body, "PlanningFailed",
                    f"{stage} failed: {error[:300]}; what runs is kept and this object is "
                    "retried with backoff (other objects are not affected); check the spec "
                    "and status, or report the operator log")

    def backing_off(self, key: Key) -> bool:
        entry = self.rt.backoff.get(key)
        if entry is not None and entry[1] > self.now:
            self.held.add(key)
            return True
        return False


_Ranked = TypeVar("_Ranked", bound=tuple[Any, ...])


def _within(items: list[_Ranked], budget: int) -> tuple[list[_Ranked], list[_Ranked]]:
    """(the first ``budget`` of ``items``, the rest), those whose first field is False
    first, in the order queued within each (a stable sort). A round trims what it queues
    with it as it goes: what it lets go has ``budget`` items ranked ahead of it already,
    and items queued later never move it up, so trimming early picks what one trim at the
    end would. Pure."""
    ordered = sorted(items, key=lambda i: i[0])
    return ordered[:budget], ordered[budget:]


YIELD_SECONDS = 0.02
"""A round gives the event loop back after at most this much work between two deployments
(:class:`_Pause`). In one piece, a steady round over 2,000 ModelDeployments held the loop
for 1.4-2.1 s on an idle machine (0.26 s since: ``tests/bench/round_memory.py``,
``loop_stall_s``), many seconds on the loaded lab: the member probes, which share the
loop, came 3.2 s apart instead of 2, and a killed member of 2,000 deployments was Down in
the hub after 11.9 s (7.0 s since, with probes ~2.1 s apart)."""


class _Preempted(Exception):
    """The round was preempted (:meth:`Runtime.preempt`) before its writes."""


class _Pause:
    """Yield to the event loop when :data:`YIELD_SECONDS` have passed since the last
    yield, so probes, watch events and the Lease's bookkeeping run during a long round.
    What the round reads from memory after a yield may have moved on (a probe changed a
    view, a watch event a body): the round plans from what it took at its start, and its
    writes are level-triggered, so the next round corrects what moved. Raises
    :class:`_Preempted` once ``scope`` is abandoned. Effects: yields."""

    def __init__(self, scope: WriteScope) -> None:
        self.scope = scope
        self.last = time.monotonic()

    async def __call__(self, *, stop: bool = True) -> None:
        """Yield when due; raise :class:`_Preempted` when the round was preempted and
        ``stop`` (once decisions are announced, the round goes on to queue their records:
        its writes then fail as :class:`Abandoned`, each the way a failed write does)."""
        if stop and self.scope.abandoned:
            raise _Preempted
        if time.monotonic() - self.last >= YIELD_SECONDS:
            await asyncio.sleep(0)
            self.last = time.monotonic()


async def reconcile(rt: Runtime) -> None:
    """One round over the whole fleet. Each ModelDeployment is planned, rendered and
    reported on its own: one that raises is held and reported on itself, never stops the
    others. A round preempted (:meth:`Runtime.preempt`: a member went Down) stops planning
    and sends none of its hub writes still queued; the fleet loop starts the next at
    once. Effects: publishes member objects, writes the hub."""
    scope = WriteScope("the fleet round")
    rt.round_scope = scope
    token = WRITE_SCOPE.set(scope)  # every write the round starts carries it
    try:
        await _round(rt, _Pause(scope))
    except _Preempted:
        log.info("fleet round preempted before its writes (%s); the next round starts now",
                 scope.why)
    finally:
        WRITE_SCOPE.reset(token)
        if rt.round_scope is scope:
            rt.round_scope = None
        if scope.dropped:
            log.info("fleet round preempted (%s): %d of its hub writes not sent; the next "
                     "round decides them again", scope.why, scope.dropped)


async def _round(rt: Runtime, pause: _Pause) -> None:
    """The body of :func:`reconcile`. Effects: as it."""
    t_now = now()
    if not observed_everywhere(rt) and (t_now - rt.started).total_seconds() < STARTUP_GRACE:
        log.debug("waiting for every cluster's first observation")
        return
    t = rfc3339(t_now)
    views = current_views(rt, t_now)
    loads, loads_missing = current_loads(rt, t_now)
    rnd = _Round(rt, t_now, views)
    inputs: list[DeploymentInput] = []
    bodies: dict[Key, dict[str, Any]] = {}
    notes: dict[Key, Annotations] = {}
    # the members as the round starts: one removed while it yields is still published to
    # (its writer is gone; nothing is written)
    members = dict(rt.members)
    ready = {cluster: member.ready_replicas() for cluster, member in members.items()}
    drilled = drills.faults(rt, t_now)
    candidates: dict[Key, tuple[dict[str, Any], ModelDeploymentSpec, ServingTierSpec]] = {}
    for key, body in list(rt.deployments.items()):
        await pause()
        if as_mapping(body.get("metadata")).get("deletionTimestamp"):
            continue
        if rnd.backing_off(key):
            continue
        try:
            spec = deployment_spec(rt, key, body)
            tier = rt.policy.resolve(spec.sla_tier)
        except (pydantic.ValidationError, UnknownTierError) as exc:
            reason = "UnknownTier" if isinstance(exc, UnknownTierError) else "InvalidSpec"
            rnd.held.add(key)
            status = _invalid_status(body, reason, f"{exc}; what runs is left as it is")
            if _differs(status, as_mapping(body.get("status"))):
                rnd.status(key, status, urgent=True)
            continue
        except Exception as exc:
            rnd.fail(key, body, "reading the spec", f"{type(exc).__name__}: {exc}")
            continue
        candidates[key] = (body, spec, tier)
    created = {k: str(as_mapping(b.get("metadata")).get("creationTimestamp") or "")
               for k, (b, _, _) in candidates.items()}
    collided = collisions({k: rendered_names(k[1], s) for k, (_, s, _) in candidates.items()},
                          created)
    for key, (body, spec, tier) in candidates.items():
        await pause()
        if key in collided:
            rnd.report(key, body, "NameCollision", collided[key])
            continue
        try:
            status = as_mapping(body.get("status"))
            parsed = parse_annotations(as_mapping(body.get("metadata")).get("annotations"))
            inputs.append(DeploymentInput(
                namespace=key[0], name=key[1], spec=spec, tier=tier, legs=_legs(status),
                observed=_observed(ready, key[0], key[1], spec),
                traffic={k: _int(v, 0) for k, v in as_mapping(status.get("traffic")).items()
                         if v is not None},
                approved=parsed.approve, consumed=_consumed(status),
                load=loads.get(key), scaled=_scaled_of(status),
                scaling_history=_history(status),
                forecast_missed_at=parse_time(
                    as_mapping(status.get("scaling")).get("forecastMissedAt")),
                unserved=max(0, _int(status.get("unservedReplicas"), 0)),
                drill=drilled.get(key),
            ))
        except Exception as exc:
            rnd.fail(key, body, "reading the status", f"{type(exc).__name__}: {exc}")
            continue
        bodies[key], notes[key] = body, parsed
    snapshots = revisions.snapshots_by_deployment(rt)
    settled = {c: m.revisions() for c, m in members.items()}
    revs: dict[Key, RevisionPlan] = {}
    rev_inputs: dict[Key, RevisionInput] = {}
    effective: dict[Key, ModelDeploymentSpec] = {}
    manifests: dict[Key, dict[str, Any]] = {}
    for d in list(inputs):
        await pause()
        key = (d.namespace, d.name)
        try:
            request = revisions.request_of(bodies[key], notes[key].rollback)
            rev_inputs[key], rev = _plan_revision(rt, d, bodies[key], snapshots.get(key, []),
                                                  settled, request, views, t_now)
            # replicas are planned for the revision the clusters run (a rollback to a
            # snapshot with a fallback the spec dropped runs that fallback)
            effective[key] = effective_spec(d.spec, rev)
            if rev.record is not None:
                manifests[key] = revisions.snapshot_manifest(
                    d.namespace, d.name, bodies[key]["metadata"].get("uid"), rev.record,
                    d.spec.sla_tier, d.tier)
            revs[key] = rev
        except Exception as exc:
            rnd.fail(key, bodies[key], "planning the revision", f"{type(exc).__name__}: {exc}")
    inputs = [d for d in inputs if (d.namespace, d.name) in revs]
    # as the fleet planner is given them (and the audit records)
    planned = {(d.namespace, d.name): replace(
        d, spec=effective[(d.namespace, d.name)],
        drained=frozenset(_drained(revs[(d.namespace, d.name)]))) for d in inputs}
    # pure, on a thread: the loop goes on meanwhile (a third of a round's time at 2,000)
    plans, failed = await asyncio.to_thread(_plan_isolated, list(planned.values()), views,
                                            t_now)
    for key, error in failed.items():
        rnd.fail(key, bodies[key], "planning", error)
    inputs = [d for d in inputs if (d.namespace, d.name) in plans]
    # a revision reaches no member before its ModelSnapshot is recorded
    recording = [k for k in manifests if k in plans]
    recorded = await asyncio.gather(*(revisions.record(rt, manifests[k]) for k in recording),
                                    return_exceptions=True)
    unrecorded = {k for k, ok in zip(recording, recorded, strict=True) if ok is not True}
    rnd.held |= unrecorded
    inputs = [d for d in inputs if (d.namespace, d.name) not in unrecorded]

    desired: dict[str, list[dict[str, Any]]] = {c: [] for c in members}
    tiers_used: set[str] = set()
    rendered: list[DeploymentInput] = []
    routes: list[Coroutine[Any, Any, None]] = []
    for d in inputs:
        await pause()
        key = (d.namespace, d.name)
        plan, rev = plans[key], revs[key]
        try:
            mine: dict[str, list[dict[str, Any]]] = {}
            for p in d.spec.placement:
                if p.cluster in desired:
                    snap = rev.render.get(p.cluster)
                    spec = with_revision(d.spec, snap.spec) if snap is not None else d.spec
                    mine.setdefault(p.cluster, []).extend(rendered_objects(
                        rt, key, p.cluster, spec, d.tier, plan.replicas))
            route = http_route(d.name, d.namespace, bodies[key]["metadata"].get("uid"),
                               effective[key], plan.weights, gateway=rt.settings.gateway)
        except Exception as exc:
            rnd.fail(key, bodies[key], "rendering", f"{type(exc).__name__}: {exc}")
            continue
        for cluster, objects in mine.items():
            desired[cluster] += objects
        tiers_used.add(d.spec.sla_tier)
        rendered.append(d)
        routes.append(_write_route(rt, key, route))
    await pause()  # nothing published, announced or written yet
    for cluster, objects in desired.items():
        for tier_name in sorted(tiers_used):
            pc = priority_class(tier_name, rt.policy.resolve(tier_name), rt.installation)
            if pc is not None:
                objects.insert(0, pc)
        if members[cluster].publish(objects, keep=rnd.held):
            rt.poke_member(cluster)
    # Traffic moves while the round reports: the routes are written from here on, beside
    # the statuses, records and Events still being made. Written with them at the end, a
    # member lost at 2,000 ModelDeployments had its routes wait for the round to report
    # 4,000 decisions (their log lines, statuses and audit records: 7 s on the lab) and
    # then for the records' encoding, which held the event loop.
    traffic = asyncio.gather(*routes, return_exceptions=True)
    try:
        audited: set[Key] = set()
        for d in rendered:
            await pause(stop=False)
            key = (d.namespace, d.name)
            try:
                fresh = _report(rt, rnd, d, bodies[key], plans[key], revs[key],
                                snapshots.get(key, []), notes[key], loads_missing, t)
                rnd.writes.append(_audit(rt, planned[key], plans[key], rev_inputs[key], revs[key],
                                         views, t_now, fresh, rnd.audit_gate))
                audited.add(key)
            except Exception as exc:
                rnd.fail(key, bodies[key], "writing the status", f"{type(exc).__name__}: {exc}")
                continue
            rt.backoff.pop(key, None)
        rnd.writes += drills.step(rt, rendered, plans, views, t_now)
        rnd.writes += audit_log.retries(rt, audited, rnd.audit_gate)
        # Statuses (within the budget, each after its own snapshot outcomes) go ahead of
        # the round's other writes of the same priority (the routes, already on their way,
        # go before them by theirs): a status records the round's decisions, and one that
        # fails makes the next round decide them again. With statuses queued behind every
        # outcome, 2,000 ModelDeployments on a slow hub wrote the same RolloutComplete
        # outcomes round after round and no status for 10 minutes.
        writes = [*rnd.status_writes(), *rnd.writes, *rnd.event_writes()]
        results = await asyncio.gather(*writes, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception) and not isinstance(result, Abandoned):
                log.warning("hub write failed, retrying next round: %s", result)
    finally:
        for result in await traffic:
            if isinstance(result, Exception) and not isinstance(result, Abandoned):
                log.warning("route write failed, retrying next round: %s", result)


def rendered_objects(rt: Runtime, key: Key, cluster: str, spec: ModelDeploymentSpec,
                     tier: ServingTierSpec, replicas: Mapping[Slot, int]
                     ) -> list[dict[str, Any]]:
    """A ModelDeployment's objects in one member (:func:`member_objects`), rendered again
    only when what they are rendered from changed: every round renders every deployment,
    and rendering and hashing 18,000 objects each round at 2,000 deployments took a
    quarter of the operator's time. The same list (and objects) is returned while its
    inputs are equal, so the member's comparison of desired objects stops at identity.
    They are rendered labelled with the installation, so the member keeps them as they
    are. The objects must not be changed. Effects: memory."""
    inputs = (spec, tier, {s: n for s, n in replicas.items() if s[0] == cluster},
              rt.installation)
    mine = rt.rendered.setdefault(key, {})
    hit = mine.get(cluster)
    if hit is not None and hit[0] == inputs:
        return hit[1]
    objects = member_objects(key[1], key[0], cluster, spec, tier, replicas, rt.installation)
    mine[cluster] = (inputs, objects)
    return objects


def _drained(rev: RevisionPlan) -> tuple[str, ...]:
    """Clusters the revision plan drains while it rolls back (none otherwise). Pure."""
    return rev.rollout.drained if rev.rollout is not None else ()


def _scaled_of(status: dict[str, Any]) -> int | None:
    raw = as_mapping(status.get("scaling")).get("replicas")
    value = _int(raw, -1) if raw is not None else -1
    return value if 0 <= value <= 100000 else None


def _audit(rt: Runtime, d: DeploymentInput, plan: DeploymentPlan, rev_in: RevisionInput,
           rev: RevisionPlan, views: Mapping[str, ClusterView], t_now: datetime,
           fresh: set[str], gate: asyncio.Semaphore) -> Coroutine[Any, Any, None]:
    """The audit records of one deployment's decisions this round that are ``fresh`` (not
    announced before), each with what its planner was given (the fleet planner's input,
    views and the GPUs it was left; or the revision planner's input), written as one
    patch, encoded when ``gate`` (the round's) gives it its turn (see
    :func:`audit_log.record`). Effects: none until awaited."""
    obj, t = f"ModelDeployment/{d.namespace}/{d.name}", rfc3339(t_now) or ""
    records = []
    for decision in (x for x in plan.decisions if x.id in fresh):
        by = f"{rt.identity} (twinhull {__version__})"
        if plan.consumed == decision.id:
            by += f"; approved through the {APPROVE} annotation"
        replay = (Replay("fleet", t_now, deployment=d, clusters=dict(views), basis=plan.basis)
                  if plan.basis is not None else None)
        records.append(record_of(decision, obj=obj, time=t, by=by, version=__version__,
                                 replay=replay))
    for decision in (x for x in rev.decisions if x.id in fresh):
        records.append(record_of(decision, obj=obj, time=t,
                                 by=f"{rt.identity} (twinhull {__version__})",
                                 version=__version__,
                                 replay=Replay("revision", t_now, revision=rev_in)))
    return audit_log.record(rt, (d.namespace, d.name), records, gate=gate)


def _report(rt: Runtime, rnd: _Round, d: DeploymentInput, body: dict[str, Any],
            plan: DeploymentPlan, rev: RevisionPlan, snaps: list[Snapshot],
            parsed: Annotations, loads_missing: str, t: str | None) -> set[str]:
    """Queue one deployment's status, snapshot outcomes, retention and Events; return the
    ids of the decisions announced now (those announced in an earlier round whose status
    has not landed yet are not announced again: see ``Runtime.unrecorded``). Effects:
    memory (the writes run at the end of the round)."""
    key = (d.namespace, d.name)
    approved = next((x for x in plan.decisions if parsed.approve and x.id == parsed.approve),
                    None)
    scaled = d.spec.scaling is not None and d.spec.scaling.mode != "Off"
    metrics_error = (rt.load_errors.get(key) or (loads_missing if d.load is None else "")
                     if scaled else "")
    note = Notes(problems=parsed.problems, metrics_error=metrics_error, approved=approved)
    status = _status(rt, body, d.spec, plan, dict(d.observed), t, rev, note, rnd.views)
    old = as_mapping(body.get("status"))
    if _differs(status, old):
        was, now_ready = _ready_of(old), _ready_of(status)
        changed = (was.get("status"), was.get("reason")) != (now_ready.get("status"),
                                                             now_ready.get("reason"))
        rnd.status(key, status, urgent=bool(plan.decisions or rev.decisions or changed))
    old_problems = next((c.get("message") for c in as_list(old.get("conditions"))
                         if isinstance(c, dict) and c.get("reason") == "InvalidAnnotation"), None)
    if parsed.problems:
        ready = _ready_of(status)
        if ready["message"] != old_problems:
            rnd.event(body, "Warning", "InvalidAnnotation", ready["message"])
    if rev.outcomes:
        rnd.outcomes[key] = (d.namespace, rev, t)
    limit = d.spec.rollback.history_limit or d.tier.rollback_history_limit
    if len(snaps) > limit:
        rnd.writes.append(revisions.retain(rt, key, snaps, limit, rev))
    rt.telemetry.deployment(d.namespace, d.name)
    announced = rt.unrecorded.setdefault(key, set())
    fresh = [x for x in [*plan.decisions, *rev.decisions] if x.id not in announced]
    announced.update(x.id for x in fresh)
    for decision in fresh:
        rt.telemetry.decided(d.namespace, d.name, decision)
        rnd.event(body, _event_type(decision), reason_of(decision), _event_text(decision),
                  action=decision.kind)
        log.info("%s/%s: %s %s: %s", d.namespace, d.name, decision.kind, decision.id,
                 decision.reason)
        audit.info(json.dumps({"audit": "decision", "object": f"ModelDeployment/{d.namespace}/"
                               f"{d.name}", "id": decision.id, "kind": decision.kind,
                               "reason": decision.reason, "inputs": decision.inputs,
                               "by": f"{rt.identity} (twinhull {__version__})",
                               "installation": rt.installation, "time": t},
                              sort_keys=True, default=str))
    old_pending = as_mapping(old.get("pending")).get("id")
    if plan.pending is not None and old_pending != plan.pending.id:
        rnd.event(
            body, "Warning", "ApprovalRequired",
            f"{plan.pending.reason}; approve with: kubectl annotate --overwrite md/{d.name} -n "
            f"{d.namespace} {APPROVE}={plan.pending.id}")
    if not _differs(status, old):  # nothing waits to be recorded
        rt.unrecorded.pop(key, None)
    return {x.id for x in fresh}


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


async def _patch_status(rt: Runtime, key: Key, status: dict[str, Any], *,
                        priority: int = STATE) -> None:
    try:
        await rt.hub.patch_status(API, "ModelDeployment", key[1], status, namespace=key[0],
                                  priority=priority)
        rt.hub_writes += 1
    except ClusterUnavailable as exc:
        log.log(log_level(exc), "%s/%s: cannot write status: %s", key[0], key[1], exc)
        return
    rt.unrecorded.pop(key, None)  # its decisions are in the status now
    # Keep our view current until the watch event arrives, so the next round compares
    # against what was written rather than writing it again.
    body = rt.deployments.get(key)
    if body is not None:
        rt.deployments[key] = {**body, "status": merge_patch(body.get("status"), status)}


async def fleet_loop(rt: Runtime) -> None:
    """Re-plan on every change and at least every resync interval; beat after every round
    (run under :func:`~twinhull.handlers.supervise.supervised`, which restarts it).
    Effects: as :func:`reconcile`."""
    rt.loop_bounds["fleet"] = 3 * rt.settings.resync_seconds + 60.0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(rt.wake.wait(), timeout=rt.settings.resync_seconds)
        rt.wake.clear()
        began = time.monotonic()
        try:
            await reconcile(rt)
        except Exception:  # a bug must not stop the loop: log it and try again next round
            log.exception("fleet round failed")
            rt.loop_errors["fleet"] = "a round failed; see the operator log"
            rt.telemetry.iteration("fleet", False, time.monotonic() - began)
        else:
            rt.telemetry.duration.labels("fleet").observe(time.monotonic() - began)
            beat(rt, "fleet")
        await asyncio.sleep(0.2)  # coalesce bursts of events into one round
