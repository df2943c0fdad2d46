"""Failover drills: who takes part, whether to start, the preflight verdict, the phase
machine of a live drill, its verdict and severity. Pure.

A live drill walks the incident states of the incident process, measured on what the
operator itself did each round:

* ``Detecting``: the fault is injected (the target counts as Down for the deployments in
  scope) and the operator has not failed them over yet;
* ``Investigating``: every deployment in scope failed the target over;
* ``Mitigating``: the target's traffic is 0 for all of them (time to shift); each is at
  capacity once its survivors have every planned replica Ready (time to capacity). The
  fault stays on for ``durationSeconds``;
* ``Monitoring``: the fault is lifted; the target fails back through the tier's steps,
  each step recorded once verified (its replicas Ready);
* ``Resolved``: the target serves its full share again for every deployment.

Guardrails abort a drill (``Aborted``): the target then takes its share back at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from twinhull.api.drill import FailoverDrillSpec
from twinhull.plan.fleet import Condition, DeploymentPlan

LIVE_PHASES = ("Detecting", "Investigating", "Mitigating", "Monitoring")
"""Phases in which a drill acts on traffic (or waits to undo an abort)."""
DONE_PHASES = ("Preflight", "Resolved", "Aborted", "Refused")
FAILBACK_GRACE_SECONDS = 600.0
"""How long a failback may take before the drill fails (every tier's steps and holds are
far shorter)."""
CRITICAL_TARGET = 99.99
"""A tier whose availability target is at least this counts as critical (P0 on loss)."""


def deployment_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def target_key(spec: FailoverDrillSpec) -> str:
    """The failover leg the drill moves: ``cluster`` or ``cluster/zone``."""
    t = spec.target
    return t.cluster if t.zone is None else f"{t.cluster}/{t.zone}"


def in_scope(spec: FailoverDrillSpec, namespace: str,
             deployments: Mapping[tuple[str, str], tuple[Mapping[str, str], Sequence[str],
                                                          Mapping[str, Sequence[str]]]]
             ) -> list[str]:
    """The deployments a drill takes part: in its namespace, carrying the selector's labels,
    placed on the target cluster (and zone). ``deployments`` maps (namespace, name) to
    (labels, placed clusters, zones per placed cluster). Sorted. Pure."""
    t = spec.target
    out = []
    for (ns, name), (labels, clusters, zones) in deployments.items():
        if ns != namespace or t.cluster not in clusters:
            continue
        if t.zone is not None and t.zone not in zones.get(t.cluster, ()):
            continue
        if any(labels.get(k) != v for k, v in spec.selector.match_labels.items()):
            continue
        out.append(deployment_key(ns, name))
    return sorted(out)


@dataclass(frozen=True)
class Fleet:
    """What a drill's start and guardrails depend on beyond its deployments."""

    phases: Mapping[str, str | None]
    """Probed phase per ServingCluster (None: not probed yet)."""
    frozen: Mapping[str, str] = field(default_factory=dict)
    """ServingClusters carrying the drill freeze annotation, to its reason."""
    busy: Mapping[str, str] = field(default_factory=dict)
    """Target cluster to the NAMESPACE/NAME of the drill running on it."""


def refusals(spec: FailoverDrillSpec, me: str, scope: Sequence[str], fleet: Fleet,
             placed: Mapping[str, Sequence[str]], legs: Mapping[str, Mapping[str, str]]
             ) -> list[str]:
    """Why a drill may not start now (empty: it may). ``placed``: the clusters of each
    deployment in scope; ``legs``: their failover legs' states. Pure."""
    out = []
    t = spec.target.cluster
    if fleet.frozen:
        out += [f"drills are frozen by ServingCluster {c}: {why}"
                for c, why in sorted(fleet.frozen.items())]
    if t not in fleet.phases:
        out.append(f"ServingCluster {t} does not exist")
    busy = fleet.busy.get(t)
    if busy is not None and busy != me:
        out.append(f"drill {busy} is already running on {t}: one drill at a time per cluster")
    if not scope:
        out.append(f"no ModelDeployment in scope: none in this namespace is placed on "
                   f"{target_key(spec)} with labels {dict(spec.selector.match_labels)}")
    peers = sorted({c for d in scope for c in placed.get(d, ())})
    for c in peers:
        phase = fleet.phases.get(c)
        if phase != "Healthy":
            out.append(f"cluster {c} is {phase or 'not probed yet'}, not Healthy: no drill "
                       "while it or a peer is really failing")
    for d in scope:
        moved = sorted(k for k, state in legs.get(d, {}).items() if state != "Serving")
        if moved:
            out.append(f"{d} is really failed over ({', '.join(moved)}): no drill until it "
                       "serves everywhere again")
    return out


@dataclass(frozen=True)
class Observed:
    """One deployment in scope after this round's plan."""

    key: str
    tier: str
    tier_availability: float
    rto_target: int
    plan: DeploymentPlan
    declared: Mapping[str, int]
    """Declared share per cluster (primary replicas declared there)."""
    ready: Mapping[str, int]
    """Ready primary replicas per cluster."""
    capacity_ok: bool
    """Every planned primary replica of the serving zones is Ready."""
    serving_ready: int
    """Ready replicas (primary or fallback) in cells that take traffic now."""
    error_percent: float | None = None
    latency_p95: float | None = None
    latency_target: float | None = None
    revision_good: bool = True
    """The revision running is verified Good (preflight)."""


def severity(scope: Sequence[Observed], target: str) -> str:
    """The severity the same outage would have had without failover (incident process
    P0 to P3), from each deployment's tier and the share of its traffic on the target:
    P0 a critical deployment loses all of it; P1 a critical one loses half or more, or any
    loses all; P2 any critical or standard (availability >= 99.9) deployment loses some;
    P3 only lower tiers. Pure."""
    worst = 3
    cluster = target.split("/", 1)[0]
    for o in scope:
        total = sum(o.declared.values()) or 1
        share = o.declared.get(cluster, 0) / total
        critical, standard = o.tier_availability >= CRITICAL_TARGET, o.tier_availability >= 99.9
        if critical and share >= 1:
            worst = min(worst, 0)
        elif (critical and share >= 0.5) or share >= 1:
            worst = min(worst, 1)
        elif (critical or standard) and share > 0:
            worst = min(worst, 2)
    return f"P{worst}"


def _entry(now: datetime, event: str, message: str) -> dict[str, str]:
    return {"time": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "event": event, "message": message}


def _seconds(since: str | None, now: datetime) -> float:
    if not since:
        return 0.0
    start = datetime.strptime(since, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=now.tzinfo)
    return round((now - start).total_seconds(), 1)


def preflight(spec: FailoverDrillSpec, out: Sequence[Observed], phases: Mapping[str, str | None]
              ) -> tuple[str, list[str], list[dict[str, Any]]]:
    """A DryRun's verdict (Go or NoGo), its reasons and per-deployment results, from the
    plans made with the target out and every planned replica assumed Ready. Pure."""
    reasons: list[str] = []
    results = []
    for o in out:
        plan = o.plan
        degraded = plan.unserved > 0
        lacking = [c.message for c in plan.conditions if c.type == "Degraded"
                   and c.status == "True"]
        message = "; ".join(lacking) if degraded else "survivors can carry it"
        if degraded:
            reasons.append(f"{o.key} ({o.tier}) would run {plan.unserved} replicas short "
                           f"with {target_key(spec)} out: {message}")
        if not o.revision_good:
            reasons.append(f"{o.key}: the revision running is not verified Good")
        results.append({"deployment": o.key, "tier": o.tier, "degraded": degraded,
                        "expectedWeights": dict(plan.weights), "rtoTargetSeconds": o.rto_target,
                        "verdict": "NoGo" if degraded or not o.revision_good else "Go",
                        "message": message})
    return ("NoGo" if reasons else "Go"), reasons, results


def _guardrail_breaches(spec: FailoverDrillSpec, scope: Sequence[Observed],
                        phases: Mapping[str, str | None], placed: Mapping[str, Sequence[str]]
                        ) -> list[str]:
    g = spec.guardrails
    out = []
    bound = float(g.max_error_percent)
    for o in scope:
        critical = o.tier_availability >= CRITICAL_TARGET
        if critical and o.error_percent is not None and o.error_percent > bound:
            out.append(f"{o.key} ({o.tier}) failed {o.error_percent:.1f}% of requests, above "
                       f"the guardrail {bound:g}%")
        if (critical and g.latency_within_target and o.latency_p95 is not None
                and o.latency_target is not None and o.latency_p95 > o.latency_target):
            out.append(f"{o.key} ({o.tier}) p95 latency {o.latency_p95:.2f}s is above its "
                       f"target {o.latency_target:g}s")
        if o.serving_ready < g.min_serving_replicas:
            out.append(f"{o.key} has {o.serving_ready} Ready replicas serving, fewer than "
                       f"{g.min_serving_replicas}: left without serving capacity")
    target = spec.target.cluster
    for c in sorted({c for d in placed.values() for c in d} - {target}):
        if phases.get(c) == "Down":
            out.append(f"cluster {c} really failed during the drill")
    return out


def advance(spec: FailoverDrillSpec, status: dict[str, Any], scope: Sequence[Observed],
            phases: Mapping[str, str | None], placed: Mapping[str, Sequence[str]],
            now: datetime, *, abort: str | None = None) -> dict[str, Any]:
    """One round of a live drill: the new status (a copy) from the old and what the round's
    plans show. ``abort``: an abort asked for (annotation, freeze switch). Pure."""
    s = {**status, "timeline": list(status.get("timeline") or []),
         "results": [dict(r) for r in status.get("results") or []]}
    phase = s.get("phase")
    target = target_key(spec)
    results = {r["deployment"]: r for r in s["results"]}
    t = _seconds(s.get("faultTime"), now)
    since_start = _seconds(s.get("startTime") or s.get("faultTime"), now)
    for o in scope:
        r = results.setdefault(o.key, {"deployment": o.key, "tier": o.tier,
                                        "rtoTargetSeconds": o.rto_target, "samples": [],
                                        "failbackSteps": []})
        _sample(r, o, since_start)
        if phase in LIVE_PHASES:
            _track(r, o)
    s["results"] = [results[k] for k in sorted(results)]
    if phase == "Aborted":
        if all(_leg(o, target) == "Serving" for o in scope):
            s["completionTime"] = s.get("completionTime") or _stamp(now)
        return s
    if phase not in LIVE_PHASES:
        return s
    breaches = _guardrail_breaches(spec, scope, phases, placed) if phase != "Detecting" \
        else [b for b in _guardrail_breaches(spec, scope, phases, placed)
              if "really failed" in b]
    if abort:
        breaches.insert(0, abort)
    if breaches:
        s.update(phase="Aborted", verdict="Aborted", reasons=breaches, restoreTime=_stamp(now))
        s["timeline"].append(_entry(now, "Aborted", "; ".join(breaches) + ": traffic returns "
                                    "at once"))
        return s
    if phase == "Detecting":
        for o in scope:
            if _leg(o, target) == "FailedOver":
                results[o.key].setdefault("detectedSeconds", t)
        if all(_leg(o, target) == "FailedOver" for o in scope):
            s["phase"] = phase = "Investigating"
            s["timeline"].append(_entry(now, "Investigating", f"{target} treated as Down: "
                                        f"every deployment in scope failed it over ({t:g}s)"))
    if phase == "Investigating":
        for o in scope:
            if _shifted(o, spec) and results[o.key].get("shiftSeconds") is None:
                results[o.key]["shiftSeconds"] = t
        if all(results[o.key].get("shiftSeconds") is not None for o in scope):
            s["phase"] = phase = "Mitigating"
            s["timeline"].append(_entry(now, "Mitigating", f"traffic off {target} for every "
                                        f"deployment in scope ({t:g}s)"))
    if phase == "Mitigating":
        for o in scope:
            r = results[o.key]
            if r.get("shiftSeconds") is None and _shifted(o, spec):
                r["shiftSeconds"] = t
            if o.capacity_ok and o.plan.unserved == 0 and r.get("capacitySeconds") is None:
                r["capacitySeconds"] = t
                r["rtoSeconds"] = max(t, r.get("shiftSeconds") or t)
            if o.plan.unserved > 0:
                r["degraded"] = True
        if t >= spec.duration_seconds:
            s.update(phase="Monitoring", restoreTime=_stamp(now))
            s["timeline"].append(_entry(now, "Monitoring", f"fault lifted after {t:g}s: "
                                        f"{target} fails back through each tier's steps"))
            return s
    if phase == "Monitoring":
        back = _seconds(s.get("restoreTime"), now)
        for o in scope:
            r = results[o.key]
            for d in o.plan.decisions:
                if d.kind in ("FailbackStep", "FailbackComplete") and \
                        d.inputs.get("zone", d.inputs.get("cluster")) == target:
                    step = d.inputs.get("step", 100)
                    r["failbackSteps"].append(f"{step}% at {back:g}s ({d.inputs.get('ready', '?')}"
                                              " Ready)")
            if _back(o, spec) and r.get("failbackSeconds") is None:
                r["failbackSeconds"] = back
        if all(results[o.key].get("failbackSeconds") is not None for o in scope):
            verdict, reasons = _verdict(spec, [results[o.key] for o in scope])
            s.update(phase="Resolved", verdict=verdict, reasons=reasons,
                     completionTime=_stamp(now))
            s["timeline"].append(_entry(now, "Resolved", f"{target} serves its full share "
                                        f"again ({back:g}s after the fault was lifted): "
                                        f"{verdict}"))
        elif back > FAILBACK_GRACE_SECONDS:
            s.update(phase="Resolved", verdict="Failed", completionTime=_stamp(now),
                     reasons=[f"failback of {target} did not complete within "
                              f"{FAILBACK_GRACE_SECONDS:g}s"])
            s["timeline"].append(_entry(now, "Resolved", "; ".join(s["reasons"])))
    return s


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _leg(o: Observed, target: str) -> str:
    leg = o.plan.legs.get(target)
    return leg.state if leg is not None else "Serving"


def _back(o: Observed, spec: FailoverDrillSpec) -> bool:
    """The target serves its full share again: its leg Serving and, for a cluster, its
    weight back to its declared share (the survivors have returned to their declared
    replicas, so weights follow Ready replicas to the declared split)."""
    if _leg(o, target_key(spec)) != "Serving":
        return False
    if spec.target.zone is not None:
        return True
    total = sum(o.declared.values()) or 1
    share = 100 * o.declared.get(spec.target.cluster, 0) / total
    return o.plan.weights.get(spec.target.cluster, 0) >= share - 1


def _shifted(o: Observed, spec: FailoverDrillSpec) -> bool:
    """The target's traffic is off: a cluster's weight is 0; a zone's leg failed over (the
    cluster's weight then follows its other zones' Ready replicas)."""
    if _leg(o, target_key(spec)) != "FailedOver":
        return False
    return spec.target.zone is not None or o.plan.weights.get(spec.target.cluster, 0) == 0


def _sample(r: dict[str, Any], o: Observed, t: float) -> None:
    samples: list[dict[str, Any]] = r.setdefault("samples", [])
    point = {"t": t, "weights": dict(o.plan.weights), "ready": dict(o.ready)}
    if samples and samples[-1]["weights"] == point["weights"] and \
            samples[-1]["ready"] == point["ready"] and t - samples[-1]["t"] < 10:
        return  # unchanged: one point per 10 s is enough for the chart
    samples.append(point)
    if len(samples) > 400:  # keep the first, thin the middle
        del samples[1:len(samples) // 2:2]


def _track(r: dict[str, Any], o: Observed) -> None:
    """The worst error rate and latency seen during the drill."""
    if o.error_percent is not None:
        r["maxErrorPercent"] = round(max(o.error_percent, r.get("maxErrorPercent") or 0.0), 2)
    if o.latency_p95 is not None:
        r["maxLatencyP95Seconds"] = round(max(o.latency_p95,
                                              r.get("maxLatencyP95Seconds") or 0.0), 3)
        if o.latency_target is not None:
            r["withinTarget"] = bool(r.get("withinTarget", True)) and \
                o.latency_p95 <= o.latency_target


def _verdict(spec: FailoverDrillSpec, results: Sequence[dict[str, Any]]
             ) -> tuple[str, list[str]]:
    """Passed when every deployment shifted, reached capacity within its tier's RTO, was
    never degraded and stayed within the error guardrail; Failed with the reasons. Pure."""
    reasons = []
    for r in results:
        d, target = r["deployment"], r.get("rtoTargetSeconds")
        if r.get("capacitySeconds") is None:
            reasons.append(f"{d}: the survivors never had every planned replica Ready while "
                           f"{target_key(spec)} was out")
        elif target is not None and (r.get("rtoSeconds") or 0) > target:
            reasons.append(f"{d}: recovered in {r['rtoSeconds']:g}s, over its tier's RTO "
                           f"of {target}s")
        if r.get("degraded"):
            reasons.append(f"{d}: ran short of GPUs while {target_key(spec)} was out")
        if r.get("withinTarget") is False:
            reasons.append(f"{d}: p95 latency reached {r.get('maxLatencyP95Seconds')}s, "
                           "above its target")
        r["verdict"] = "Failed" if any(x.startswith(f"{d}:") for x in reasons) else "Passed"
    return ("Failed" if reasons else "Passed"), reasons


DRILL_MAX_AGE_DAYS = 90
"""A critical deployment should pass a failover drill at least this often (the incident
process asks for quarterly P0 drills)."""


def drill_freshness(tier_availability: float, created: datetime | None,
                    last_passed: datetime | None, last_drill: str | None, now: datetime
                    ) -> Condition | None:
    """The DrillOverdue condition of a critical deployment (None for other tiers): True
    once its last passed Drain or Outage drill, or its creation when it never passed one,
    is more than :data:`DRILL_MAX_AGE_DAYS` old. Pure."""
    if tier_availability < CRITICAL_TARGET:
        return None
    since = last_passed or created
    if since is None:
        return None
    age = (now - since).days
    if age > DRILL_MAX_AGE_DAYS:
        what = (f"its last passed failover drill, {last_drill}, was {age} days ago"
                if last_passed else f"it has passed no failover drill in its {age} days")
        return Condition("DrillOverdue", "True", "NoRecentDrill",
                         f"{what}: more than {DRILL_MAX_AGE_DAYS} days; run a Drain drill "
                         "(kind FailoverDrill) on one of its clusters")
    return Condition("DrillOverdue", "False", "DrillRecent",
                     f"passed {last_drill}" if last_passed else
                     f"created {age} days ago; a drill is due within {DRILL_MAX_AGE_DAYS} days")
