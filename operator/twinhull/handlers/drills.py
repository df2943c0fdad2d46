"""FailoverDrill controller: keeps the drills in memory, tells the fleet round which
deployments a drill acts on (:func:`faults`), and after each round advances every drill
from what the round planned (:func:`step`): start or refuse, preflight, the incident
phases, guardrails, abort, the freeze switch, schedules. One bad drill never stops the
others or the fleet. Effects: memory, writes the hub."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Literal

import kopf
import pydantic
from cronsim import CronSim, CronSimError

from twinhull import __version__
from twinhull.api.annotations import APPROVE
from twinhull.api.drill import FailoverDrillSpec
from twinhull.clusters.kube import ClusterUnavailable, log_level
from twinhull.handlers import audit as audit_log
from twinhull.handlers import events
from twinhull.handlers.members import health_of
from twinhull.handlers.runtime import Key, Runtime, as_list, as_mapping, parse_time, rfc3339
from twinhull.plan.drill import (
    DONE_PHASES,
    LIVE_PHASES,
    Fleet,
    Observed,
    advance,
    in_scope,
    preflight,
    refusals,
    severity,
    target_key,
)
from twinhull.plan.fleet import (
    FALLBACK,
    Decision,
    DeploymentInput,
    DeploymentPlan,
    DrillFault,
    Replicas,
    decision_id,
    plan_fleet,
)
from twinhull.plan.record import record_of

log = logging.getLogger(__name__)
audit = logging.getLogger("twinhull.audit")

GROUP, VERSION = "serving.twinhull.io", "v1alpha1"
API = f"{GROUP}/{VERSION}"
ABORT = "serving.twinhull.io/abort"
"""On a FailoverDrill: stop it now; the value is the reason, shown in its report."""
FREEZE = "serving.twinhull.io/freeze-drills"
"""On a ServingCluster: stop every running drill and refuse new ones (a real incident, a
freeze window); the value is the reason."""
SCHEDULE_LABEL = "serving.twinhull.io/drill-schedule"
STARTING_DEADLINE = timedelta(hours=1)
"""A scheduled run missed by more than this (the operator was down) is skipped."""


@kopf.on.event(GROUP, VERSION, "failoverdrills")
async def drill_event(event: kopf.RawEvent, body: kopf.Body, namespace: str | None, name: str,
                      memo: Any, **_: Any) -> None:
    """Keep the latest FailoverDrill; wake the fleet on anything but our own status write."""
    rt: Runtime = memo.runtime
    key = (namespace or "", name)
    if event["type"] == "DELETED":
        rt.drills.pop(key, None)
        rt.poke()
        return
    old = rt.drills.get(key)
    new = dict(body)
    rt.drills[key] = new
    meta = new.get("metadata", {})
    if old is None or (old.get("spec"), old.get("metadata", {}).get("annotations")) != (
            new.get("spec"), meta.get("annotations")):
        rt.poke()


def _parsed(body: Mapping[str, Any]) -> FailoverDrillSpec | None:
    try:
        return FailoverDrillSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError:
        return None


def _status(body: Mapping[str, Any]) -> dict[str, Any]:
    return dict(as_mapping(body.get("status")))


def detection_seconds(rt: Runtime, cluster: str) -> float:
    """How long after a cluster's API server stops answering its probes would call it Down:
    the first failed probe comes with the next probe, and ``failureThreshold - 1`` more
    follow, an interval apart. A drill's fault is detected after this, so its time to shift
    is comparable with a real outage's: ``e2e/bench/drill.py`` measures both on the lab (a
    first model, ``failureThreshold - 0.5`` intervals, came out 26 % slow). A frozen API
    server, which makes each probe wait its timeout, takes longer. Pure (memory)."""
    health = health_of(rt, cluster)
    return float((health.failure_threshold - 1) * health.probe_interval_seconds)


def faults(rt: Runtime, t_now: datetime) -> dict[Key, DrillFault]:
    """The deployments a drill acts on now, from the drills' statuses. Pure (memory)."""
    out: dict[Key, DrillFault] = {}
    for (ns, name), body in rt.drills.items():
        spec, status = _parsed(body), _status(body)
        phase = status.get("phase")
        if spec is None or spec.schedule is not None:
            continue
        injected = parse_time(status.get("faultTime"))
        if phase == "Detecting" and injected is not None and (
                t_now - injected).total_seconds() < detection_seconds(rt, spec.target.cluster):
            stage = "Injected"
        elif phase in ("Detecting", "Investigating", "Mitigating"):
            stage = "Out"
        elif phase == "Monitoring":
            stage = "Restoring"
        elif phase == "Aborted" and not status.get("completionTime"):
            stage = "Abort"
        else:
            continue
        for d in as_list(status.get("deployments")):
            dns, _, dname = str(d).partition("/")
            out[(dns, dname)] = DrillFault(
                f"{ns}/{name}", spec.target.cluster, spec.target.zone, stage,  # type: ignore[arg-type]
                outage=spec.mode == "Outage")
    return out


def _frozen(rt: Runtime) -> dict[str, str]:
    out = {}
    for name, body in rt.clusters.items():
        reason = as_mapping(as_mapping(body.get("metadata")).get("annotations")).get(FREEZE)
        if reason is not None:
            out[name] = str(reason)[:200] or "no reason given"
    return out


def _placement(d: DeploymentInput) -> tuple[list[str], dict[str, list[str]]]:
    return ([p.cluster for p in d.spec.placement],
            {p.cluster: list(p.zones) for p in d.spec.placement})


def _observed(d: DeploymentInput, plan: DeploymentPlan, rt: Runtime, spec: FailoverDrillSpec,
              observed: Mapping[Any, Replicas] | None = None) -> Observed:
    """One deployment in scope after a plan, for the drill's phase machine."""
    seen = d.observed if observed is None else observed
    target = spec.target

    def out(c: str, z: str) -> bool:
        return c == target.cluster and (target.zone is None or z == target.zone)

    declared: dict[str, int] = {}
    for p in d.spec.placement:
        declared[p.cluster] = declared.get(p.cluster, 0) + sum(p.zones.values())
    ready: dict[str, int] = {}
    capacity_ok, serving = True, 0
    for (c, role, z), n in plan.replicas.items():
        r = seen.get((c, role, z))
        got = r.ready if r is not None else 0
        if role == "primary":
            ready[c] = ready.get(c, 0) + got
        if out(c, z):
            continue
        if role == "primary" and got < n:
            capacity_ok = False
        if plan.weights.get(FALLBACK if role == "fallback" else c, 0) > 0:
            serving += got
    h = rt.health_of((d.namespace, d.name))
    errors, latency = h.error_percent, h.latency_p95_seconds
    return Observed(
        key=f"{d.namespace}/{d.name}", tier=d.spec.sla_tier,
        tier_availability=float(d.tier.availability_target), rto_target=d.tier.rto_seconds,
        plan=plan, declared=declared, ready=ready, capacity_ok=capacity_ok,
        serving_ready=serving, error_percent=errors, latency_p95=latency,
        latency_target=float(d.tier.verification.max_latency_p95_seconds))


def _approval_id(body: Mapping[str, Any]) -> str:
    meta = as_mapping(body.get("metadata"))
    raw = f"{meta.get('uid')}:{meta.get('generation')}:outage"
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def _entry(t: datetime, event: str, message: str) -> dict[str, str]:
    return {"time": rfc3339(t) or "", "event": event, "message": message}


class _Context:
    """What every drill of a round reads."""

    def __init__(self, rt: Runtime, inputs: list[DeploymentInput],
                 plans: Mapping[Key, DeploymentPlan], views: Mapping[str, Any],
                 t_now: datetime) -> None:
        self.rt, self.plans, self.views, self.now = rt, plans, views, t_now
        self.inputs = {(d.namespace, d.name): d for d in inputs}
        self.phases = {c: v.phase for c, v in views.items()}
        for c in rt.clusters:
            self.phases.setdefault(c, None)
        self.frozen = _frozen(rt)
        self.busy: dict[str, str] = {}
        for (ns, name), body in rt.drills.items():
            spec, phase = _parsed(body), _status(body).get("phase")
            if spec is not None and (phase in LIVE_PHASES or phase == "WaitingForApproval"):
                self.busy[spec.target.cluster] = f"{ns}/{name}"

    def scope(self, spec: FailoverDrillSpec, namespace: str) -> list[str]:
        table = {}
        for key, d in self.inputs.items():
            labels = as_mapping(as_mapping(self.rt.deployments.get(key, {}).get("metadata"))
                                .get("labels"))
            clusters, zones = _placement(d)
            table[key] = ({str(k): str(v) for k, v in labels.items()}, clusters, zones)
        return in_scope(spec, namespace, table)

    def input(self, key: str) -> DeploymentInput | None:
        ns, _, name = key.partition("/")
        return self.inputs.get((ns, name))


def step(rt: Runtime, inputs: list[DeploymentInput], plans: Mapping[Key, DeploymentPlan],
         views: Mapping[str, Any], t_now: datetime) -> list[Any]:
    """Advance every drill after a fleet round; returns the writes to run. A drill that
    raises is logged and left as it is; the others go on. Effects: memory."""
    ctx = _Context(rt, inputs, plans, views, t_now)
    writes: list[Any] = []
    for key, body in sorted(rt.drills.items()):
        if as_mapping(body.get("metadata")).get("deletionTimestamp"):
            continue
        try:
            writes += _one(ctx, key, body)
        except Exception:  # one bad drill must not stop the others or the fleet
            log.exception("drill %s/%s: round failed; left as it is", *key)
    return writes


def _one(ctx: _Context, key: Key, body: dict[str, Any]) -> list[Any]:
    rt, t_now = ctx.rt, ctx.now
    status = _status(body)
    try:
        spec = FailoverDrillSpec.model_validate(body.get("spec") or {})
    except pydantic.ValidationError as exc:
        if status.get("phase") in (None, "Pending"):
            return [_write(rt, key, body, {**status, "phase": "Refused", "verdict": "Refused",
                                           "reasons": [f"invalid spec: {exc}"]})]
        return []
    if spec.schedule is not None:
        return _schedule(ctx, key, body, spec, status)
    phase = status.get("phase") or "Pending"
    if phase in DONE_PHASES and (phase != "Aborted" or status.get("completionTime")):
        return []
    me = f"{key[0]}/{key[1]}"
    annotations = as_mapping(as_mapping(body.get("metadata")).get("annotations"))
    if phase in ("Pending", "WaitingForApproval"):
        return _start(ctx, key, body, spec, status, annotations)
    scope = [o for d in as_list(status.get("deployments"))
             if (o := _observe(ctx, str(d), spec)) is not None]
    placed = {o.key: list(o.declared) for o in scope}
    abort = None
    if ctx.frozen and phase in LIVE_PHASES:
        abort = "; ".join(f"stopped by the freeze switch on ServingCluster {c}: {why}"
                          for c, why in sorted(ctx.frozen.items()))
    elif annotations.get(ABORT) is not None and phase in LIVE_PHASES:
        abort = f"aborted by annotation {ABORT}: {str(annotations.get(ABORT))[:200]}"
    new = advance(spec, status, scope, ctx.phases, placed, t_now, abort=abort)
    writes = [_write(rt, key, body, new)] if new != status else []
    if new.get("phase") != phase:
        kind: Literal["Normal", "Warning"] = (
            "Warning" if new.get("phase") == "Aborted" else "Normal")
        last = (new.get("timeline") or [{}])[-1]
        writes.append(events.post(rt, body, kind, f"Drill{new.get('phase')}",
                                  str(last.get("message", ""))[:900]))
        log.info("drill %s: %s -> %s", me, phase, new.get("phase"))
        audit.info(json.dumps({"audit": "drill", "object": f"FailoverDrill/{me}",
                               "from": phase, "to": new.get("phase"),
                               "verdict": new.get("verdict"), "reasons": new.get("reasons"),
                               "message": last.get("message"), "time": rfc3339(t_now)},
                              sort_keys=True, default=str))
        writes += _record_step(rt, me, phase, new, str(last.get("message", "")), t_now)
    if new.get("phase") == "Resolved" and new.get("verdict") == "Passed" and \
            spec.mode != "DryRun":
        writes += [_record_pass(rt, str(d), me, new.get("completionTime"))
                   for d in as_list(new.get("deployments"))]
    return writes


def _record_step(rt: Runtime, me: str, phase: str | None, new: Mapping[str, Any],
                 message: str, t_now: datetime) -> list[Any]:
    """A drill's step in the durable audit record of every deployment it acts on (what an
    SRE reads with ``twinhull audit``). Effects: none until awaited."""
    inputs = {"drill": me, "from": phase, "to": new.get("phase"),
              "verdict": new.get("verdict"), "reasons": new.get("reasons")}
    writes = []
    for d in as_list(new.get("deployments")):
        ns, _, name = str(d).partition("/")
        decision = Decision(decision_id(ns, name, "DrillStep", {**inputs, "at": rfc3339(t_now)}),
                            "DrillStep", message or f"drill {me}: {phase} -> {new.get('phase')}",
                            inputs)
        writes.append(audit_log.record(rt, (ns, name), [record_of(
            decision, obj=f"ModelDeployment/{ns}/{name}", time=rfc3339(t_now) or "",
            by=f"{rt.identity} (twinhull {__version__}) for FailoverDrill {me}",
            version=__version__, replay=None)]))
    return writes


def _observe(ctx: _Context, key: str, spec: FailoverDrillSpec) -> Observed | None:
    d = ctx.input(key)
    ns, _, name = key.partition("/")
    plan = ctx.plans.get((ns, name))
    if d is None or plan is None:
        return None
    return _observed(d, plan, ctx.rt, spec)


def _start(ctx: _Context, key: Key, body: dict[str, Any], spec: FailoverDrillSpec,
           status: dict[str, Any], annotations: Mapping[str, Any]) -> list[Any]:
    """Start a drill, refuse it, run its preflight, or wait for the Outage approval."""
    rt, t_now = ctx.rt, ctx.now
    me = f"{key[0]}/{key[1]}"
    scope = ctx.scope(spec, key[0])
    placed = {k: _placement(d)[0] for k in scope if (d := ctx.input(k)) is not None}
    legs = {k: {lk: leg.state for lk, leg in d.legs.items()}
            for k in scope if (d := ctx.input(k)) is not None}
    fleet = Fleet(phases=ctx.phases, frozen=ctx.frozen, busy=ctx.busy)
    refused = refusals(spec, me, scope, fleet, placed, legs) if spec.mode != "DryRun" else [
        r for r in refusals(spec, me, scope, fleet, placed, legs)
        if "does not exist" in r or "no ModelDeployment" in r]
    base = {**status, "observedGeneration": as_mapping(body.get("metadata")).get("generation"),
            "startTime": status.get("startTime") or rfc3339(t_now), "deployments": scope}
    if refused:
        new = {**base, "phase": "Refused", "verdict": "Refused", "reasons": refused,
               "completionTime": rfc3339(t_now),
               "timeline": [*as_list(status.get("timeline")),
                            _entry(t_now, "Refused", "; ".join(refused))]}
        return [_write(rt, key, body, new),
                events.post(rt, body, "Warning", "DrillRefused", "; ".join(refused)[:900])]
    out = _what_if(ctx, spec, scope)
    sev = severity(out, target_key(spec))
    if spec.mode == "DryRun":
        verdict, reasons, results = preflight(spec, out, ctx.phases)
        new = {**base, "phase": "Preflight", "verdict": verdict, "reasons": reasons,
               "severity": sev, "results": results, "completionTime": rfc3339(t_now),
               "timeline": [*as_list(status.get("timeline")), _entry(
                   t_now, "Preflight", f"{verdict}: " + ("; ".join(reasons) or
                                                         "the survivors can carry every "
                                                         "deployment in scope"))]}
        return [_write(rt, key, body, new),
                events.post(rt, body, "Normal" if verdict == "Go" else "Warning",
                            f"Drill{verdict}", (new["timeline"][-1]["message"])[:900])]
    if spec.mode == "Outage":
        wanted = _approval_id(body)
        if annotations.get(APPROVE) != wanted:
            if status.get("phase") == "WaitingForApproval":
                return []
            message = (f"an Outage drill scales {target_key(spec)} to 0 for {len(scope)} "
                       f"deployments: approve with kubectl annotate --overwrite "
                       f"failoverdrill/{key[1]} -n {key[0]} {APPROVE}={wanted}")
            new = {**base, "phase": "WaitingForApproval", "pendingApproval": wanted,
                   "severity": sev, "timeline": [*as_list(status.get("timeline")),
                                                 _entry(t_now, "WaitingForApproval", message)]}
            return [_write(rt, key, body, new),
                    events.post(rt, body, "Warning", "ApprovalRequired", message)]
    expected = {o.key: o.plan.weights for o in out}
    new = {**base, "phase": "Detecting", "faultTime": rfc3339(t_now), "severity": sev,
           "pendingApproval": None,
           "results": [{"deployment": o.key, "tier": o.tier, "rtoTargetSeconds": o.rto_target,
                        "expectedWeights": dict(expected[o.key]), "samples": [],
                        "failbackSteps": []} for o in out],
           "timeline": [*as_list(status.get("timeline")), _entry(
               t_now, "Detecting", f"fault injected: {target_key(spec)} "
               f"{'scaled to 0 and ' if spec.mode == 'Outage' else ''}treated as Down for "
               f"{len(scope)} deployments for {spec.duration_seconds}s")]}
    return [_write(rt, key, body, new),
            events.post(rt, body, "Normal", "DrillStarted", new["timeline"][-1]["message"]),
            *_record_step(rt, f"{key[0]}/{key[1]}", status.get("phase"),
                          {**new, "deployments": [o.key for o in out]},
                          new["timeline"][-1]["message"], t_now)]


def _what_if(ctx: _Context, spec: FailoverDrillSpec, scope: list[str]) -> list[Observed]:
    """The deployments in scope as the fleet would plan them with the target out and every
    planned replica Ready: the preflight's and the severity's view. Pure (plans only)."""
    fault = DrillFault("preflight", spec.target.cluster, spec.target.zone, "Out",
                       outage=spec.mode == "Outage")
    members = set(scope)
    drilled = [replace(d, drill=fault) if f"{d.namespace}/{d.name}" in members else d
               for d in ctx.inputs.values()]
    first = plan_fleet(drilled, ctx.views, now=ctx.now)
    settled = [replace(d, observed={slot: Replicas(n, n) for slot, n in
                                    first[(d.namespace, d.name)].replicas.items()},
                       legs=first[(d.namespace, d.name)].legs)
               for d in drilled]
    second = plan_fleet(settled, ctx.views, now=ctx.now)
    out = []
    for d in settled:
        k = f"{d.namespace}/{d.name}"
        if k in members:
            plan = second[(d.namespace, d.name)]
            out.append(_observed(d, plan, ctx.rt, spec, observed=d.observed))
    out = [replace(o, revision_good=_good(ctx.rt, o.key)) for o in out]
    return out


def _good(rt: Runtime, key: str) -> bool:
    ns, _, name = key.partition("/")
    status = as_mapping(rt.deployments.get((ns, name), {}).get("status"))
    current, good = status.get("currentSnapshot"), status.get("lastGoodSnapshot")
    return current is None or current == good


def _schedule(ctx: _Context, key: Key, body: dict[str, Any], spec: FailoverDrillSpec,
              status: dict[str, Any]) -> list[Any]:
    """A drill with a schedule starts runs (FailoverDrills it owns) on its cron schedule,
    never two at once (Forbid), and keeps ``historyLimit`` finished runs."""
    rt, t_now = ctx.rt, ctx.now
    assert spec.schedule is not None
    meta = as_mapping(body.get("metadata"))
    runs = sorted(((k, b) for k, b in rt.drills.items() if k[0] == key[0] and as_mapping(
        as_mapping(b.get("metadata")).get("labels")).get(SCHEDULE_LABEL) == key[1]),
        key=lambda kb: str(as_mapping(kb[1].get("metadata")).get("creationTimestamp")),
        reverse=True)
    try:
        last = status.get("lastScheduleTime") or meta.get("creationTimestamp")
        after = datetime.strptime(str(last), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=t_now.tzinfo)
        due = next(CronSim(spec.schedule, after.replace(second=0, microsecond=0)))
        while due <= after:
            due = next(CronSim(spec.schedule, due))
    except (CronSimError, ValueError, StopIteration) as exc:
        new = {**status, "phase": "Refused", "verdict": "Refused",
               "reasons": [f"spec.schedule {spec.schedule!r} is not a cron schedule: {exc}"]}
        return [_write(rt, key, body, new)] if new != status else []
    writes: list[Any] = []
    new = {**status, "phase": "Scheduled"}
    if due <= t_now:
        missed = due
        for later in CronSim(spec.schedule, due):  # the most recent time missed
            if later > t_now:
                break
            missed = later
        active = [k for k, b in runs if _status(b).get("phase") not in DONE_PHASES
                  or (_status(b).get("phase") == "Aborted"
                      and not _status(b).get("completionTime"))]
        new["lastScheduleTime"] = rfc3339(missed)
        if t_now - missed > STARTING_DEADLINE:
            new.setdefault("timeline", [])
            new["timeline"] = [*as_list(status.get("timeline")), _entry(
                t_now, "Skipped", f"the run due at {rfc3339(missed)} was missed by more "
                f"than {STARTING_DEADLINE}")][-100:]
        elif active:
            new["timeline"] = [*as_list(status.get("timeline")), _entry(
                t_now, "Skipped", f"the run due at {rfc3339(missed)} did not start: "
                f"{active[0][1]} is still running (concurrencyPolicy Forbid)")][-100:]
        else:
            run = _run_manifest(body, spec, missed)
            writes.append(_create(rt, run))
            new["timeline"] = [*as_list(status.get("timeline")), _entry(
                t_now, "Started", f"run {run['metadata']['name']}")][-100:]
        due = next(CronSim(spec.schedule, missed))
    new["nextScheduleTime"] = rfc3339(due)
    new["runs"] = [{"name": k[1], "startTime": _status(b).get("startTime"),
                    "verdict": _status(b).get("verdict") or _status(b).get("phase") or ""}
                   for k, b in runs][: spec.history_limit + 1]
    finished = [k for k, b in runs if _status(b).get("phase") in DONE_PHASES
                and (_status(b).get("phase") != "Aborted" or _status(b).get("completionTime"))]
    for k in finished[spec.history_limit:]:
        writes.append(_delete(rt, k))
    if new != status:
        writes.append(_write(rt, key, body, new))
    return writes


def _run_manifest(body: Mapping[str, Any], spec: FailoverDrillSpec, at: datetime
                  ) -> dict[str, Any]:
    meta = as_mapping(body.get("metadata"))
    name = f"{str(meta['name'])[:48]}-{at.strftime('%y%m%d%H%M')}"
    run_spec = spec.model_dump(by_alias=True, exclude_none=True, mode="json")
    for k in ("schedule", "concurrencyPolicy", "historyLimit"):
        run_spec.pop(k, None)
    return {"apiVersion": API, "kind": "FailoverDrill",
            "metadata": {"name": name, "namespace": meta.get("namespace"),
                         "labels": {SCHEDULE_LABEL: str(meta["name"])},
                         "ownerReferences": [{"apiVersion": API, "kind": "FailoverDrill",
                                              "name": meta["name"], "uid": meta.get("uid"),
                                              "controller": True}]},
            "spec": run_spec}


async def _create(rt: Runtime, obj: dict[str, Any]) -> None:
    try:
        await rt.hub.create(obj)
        rt.hub_writes += 1
    except ClusterUnavailable as exc:
        log.log(log_level(exc), "cannot start drill run %s: %s", obj["metadata"]["name"], exc)


async def _delete(rt: Runtime, key: Key) -> None:
    try:
        await rt.hub.delete(API, "FailoverDrill", key[1], namespace=key[0])
        rt.hub_writes += 1
    except ClusterUnavailable as exc:
        log.log(log_level(exc), "cannot remove drill run %s/%s: %s", *key, exc)


async def _write(rt: Runtime, key: Key, body: dict[str, Any], status: dict[str, Any]) -> None:
    patch = dict(status)
    old = _status(body)
    for k in old:  # a merge patch: fields dropped are written as null
        patch.setdefault(k, None)
    try:
        await rt.hub.patch_status(API, "FailoverDrill", key[1], patch, namespace=key[0])
        rt.hub_writes += 1
    except ClusterUnavailable as exc:
        log.log(log_level(exc), "drill %s/%s: cannot write status: %s", *key, exc)
        return
    current = rt.drills.get(key)
    if current is not None:  # our view follows our write until the watch event comes
        rt.drills[key] = {**current, "status": {k: v for k, v in status.items()
                                                 if v is not None}}


async def _record_pass(rt: Runtime, deployment: str, drill: str, at: Any) -> None:
    ns, _, name = deployment.partition("/")
    try:
        await rt.hub.patch_status(API, "ModelDeployment", name, {
            "lastPassedDrill": drill, "lastPassedDrillTime": at}, namespace=ns)
        rt.hub_writes += 1
    except ClusterUnavailable as exc:
        log.log(log_level(exc), "%s: cannot record drill %s: %s", deployment, drill, exc)
