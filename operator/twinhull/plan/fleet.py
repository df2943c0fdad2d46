"""Plan the whole fleet: replicas per cluster and zone, traffic weights, failover and
failback, conditions and decisions, for every ModelDeployment at once. Pure.

Inputs are values (specs, resolved tiers, observed cluster health and workloads, the
failover state persisted in status, the time); the output is the desired state plus the
decisions that changed it, each with its inputs, so a run can be replayed.

The rules:

* A placed cluster is *Serving*, *FailedOver* or *FailingBack* (its "leg"). A Down cluster
  fails over at once (Automatic) or once the decision's id is approved (Manual). A failed
  over cluster that is Healthy again fails back through the tier's steps, one step per
  hold interval, each step only once its replicas are Ready; it fails over again at once
  if it goes Down mid-ramp.
* Replicas of zones that do not serve (their cluster not Serving, or no Ready node in the
  zone) are carried by the serving zones of Healthy clusters, in proportion to their
  declared (or scaled) replicas, within each cluster's GPU capacity.
* GPUs are handed out in tier priority order: each deployment takes its serving zones'
  own replicas, then those it carries for zones that do not serve, then its fallback's,
  from what the higher tiers left. So a critical deployment's failover or scale-up can
  take the GPUs a best-effort deployment was using. What a deployment cannot place is
  *unserved*: it is Degraded (the message names who holds the GPUs), a ``Capacity``
  decision records the change, and that share of traffic goes to the fallback model,
  whose replicas are raised to match (its smaller footprint usually still fits).
* Nothing in a failed cluster is removed: its replica counts stay as declared.
* Traffic weights are integers summing to 100: the fallback gets the unserved share, the
  clusters split the rest in proportion to their Ready primary replicas; a cluster failing
  back gets at most its ramp step's percentage of its normal (declared) share.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.api.tier import ServingTierSpec
from twinhull.plan.health import Phase
from twinhull.plan.scaling import Load, Recommendation, ScaleResult, recommend
from twinhull.plan.shares import apportion

Role = Literal["primary", "fallback"]
Slot = tuple[str, Role, str]
"""(cluster, role, zone): one Deployment in a member cluster."""
LegState = Literal["Serving", "FailedOver", "FailingBack"]
FALLBACK = "fallback"


@dataclass(frozen=True)
class ClusterView:
    """A member cluster as the operator sees it: health and what it may hold."""

    name: str
    phase: Phase | None
    """None before the first probe."""
    zones_ready: Mapping[str, bool]
    """Zone name to whether it has at least one Ready node."""
    gpus: int
    """``spec.capacity.gpus``: GPUs twinhull may place here, over all deployments."""


@dataclass(frozen=True)
class Replicas:
    """One Deployment as observed in its member cluster."""

    desired: int
    ready: int


@dataclass(frozen=True)
class Leg:
    """The failover state of one cluster, or one zone, of a ModelDeployment (kept in
    status under the key `cluster` or `cluster/zone`)."""

    state: LegState = "Serving"
    since: datetime | None = None
    step: int = -1
    """Index into the tier's failback steps while FailingBack; -1 before the first."""
    step_since: datetime | None = None


@dataclass(frozen=True)
class Decision:
    """One decision with the inputs it was made from. ``applied`` is False while it waits
    for approval (``traffic.failover: Manual``)."""

    id: str
    kind: str
    reason: str
    inputs: Mapping[str, Any]
    applied: bool = True


@dataclass(frozen=True)
class Condition:
    """A condition to report: type, status, CamelCase reason, message."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str


@dataclass(frozen=True)
class DeploymentInput:
    """Everything the planner needs about one ModelDeployment."""

    namespace: str
    name: str
    spec: ModelDeploymentSpec
    tier: ServingTierSpec
    legs: Mapping[str, Leg] = field(default_factory=dict)
    """The persisted failover state per placed cluster."""
    observed: Mapping[Slot, Replicas] = field(default_factory=dict)
    """Deployments observed in the members (missing: not there or not yet seen)."""
    traffic: Mapping[str, int] = field(default_factory=dict)
    """The weights currently published."""
    approved: str | None = None
    """Value of the approval annotation: the id of a decision an SRE approved."""
    load: Load | None = None
    """Measured load (None: no reading, e.g. Prometheus unreachable)."""
    scaled: int | None = None
    """Primary replicas in all, as last decided by scaling (None: the placement's)."""
    scaling_history: tuple[Recommendation, ...] = ()
    """Recent scaling recommendations (kept in status)."""
    unserved: int = 0
    """Replicas reported unserved last time (status), to decide only on a change."""


@dataclass(frozen=True)
class DeploymentPlan:
    """The desired state of one ModelDeployment and why."""

    replicas: dict[Slot, int]
    weights: dict[str, int]
    legs: dict[str, Leg]
    decisions: list[Decision]
    pending: Decision | None
    conditions: list[Condition]
    unserved: int
    """Declared primary replicas that no cluster can carry now."""
    scale: ScaleResult | None = None
    """The scaling recommendation, when scaling is on (Enforce or Suggest)."""
    scaled: int | None = None
    """Primary replicas in all after this plan (None: the placement's numbers)."""


def decision_id(namespace: str, name: str, kind: str, inputs: Mapping[str, Any]) -> str:
    """A stable id for a decision: same deployment, kind and inputs, same id. Pure."""
    raw = json.dumps([namespace, name, kind, inputs], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def declared(spec: ModelDeploymentSpec) -> dict[tuple[str, str], int]:
    """Declared primary replicas per (cluster, zone). Pure."""
    return {(p.cluster, z): n for p in spec.placement for z, n in p.zones.items()}


def baseline_gpus(spec: ModelDeploymentSpec) -> dict[str, int]:
    """GPUs per cluster the declared primary and warm fallback replicas take. Pure."""
    per = spec.model.resources.gpus
    out: dict[str, int] = {}
    for p in spec.placement:
        used = sum(p.zones.values()) * per
        if spec.fallback is not None:
            fallback = spec.fallback
            used += fallback.replicas_per_zone * len(p.zones) * fallback.model.resources.gpus
        out[p.cluster] = out.get(p.cluster, 0) + used
    return out


class _Ledger:
    """Free GPUs per cluster while the fleet is planned in tier priority order, and who
    holds them (to explain to a deployment that got less why)."""

    def __init__(self, clusters: Mapping[str, ClusterView]) -> None:
        self.free = {c: v.gpus for c, v in clusters.items()}
        self.capacity = dict(self.free)
        self.holders: dict[str, dict[str, int]] = {c: {} for c in clusters}

    def take(self, cluster: str, gpus: int, want: int, holder: str) -> int:
        """Reserve up to ``want`` replicas of ``gpus`` each for ``holder``; return how many
        fit."""
        if gpus <= 0 or want <= 0:
            return max(want, 0)
        fit = max(0, min(want, self.free.get(cluster, 0) // gpus))
        if fit:
            self.free[cluster] -= fit * gpus
            held = self.holders.setdefault(cluster, {})
            held[holder] = held.get(holder, 0) + fit * gpus
        return fit

    def explain(self, cluster: str, exclude: str) -> str:
        """Who holds a cluster's GPUs, largest first, e.g. ``east: 32 GPUs, 30 held by
        ai/ide (critical) 18, ai/aiops (critical) 12``."""
        held = {h: g for h, g in self.holders.get(cluster, {}).items() if h != exclude}
        top = sorted(held.items(), key=lambda kv: (-kv[1], kv[0]))
        who = ", ".join(f"{h} {g}" for h, g in top[:4]) + (", ..." if len(top) > 4 else "")
        return (f"{cluster}: {self.capacity.get(cluster, 0)} GPUs, "
                f"{sum(held.values())} held by higher or equal priority "
                f"{who or 'nobody'}, {self.free.get(cluster, 0)} free")


def _spread(total: int, slots: Mapping[tuple[str, str], int], ledger: _Ledger, gpus: int,
            holder: str) -> dict[tuple[str, str], int]:
    """Place ``total`` replicas over slots in proportion to their weights, within GPU
    capacity; slots that are full pass their share on to the others."""
    placed = dict.fromkeys(slots, 0)
    open_slots = dict(slots)
    left = total
    while left > 0 and open_slots:
        keys = {f"{c}\0{z}": w for (c, z), w in open_slots.items()}
        shares = apportion(left, keys)
        progress = 0
        for key, share in shares.items():
            cluster, zone = key.split("\0")
            fit = ledger.take(cluster, gpus, share, holder)
            placed[(cluster, zone)] += fit
            progress += fit
            if fit < share:
                open_slots.pop((cluster, zone), None)
        left -= progress
        if progress == 0:
            break
    return placed


def _pct(value: int) -> str:
    return f"{value}%"


class _Planner:
    """Plans one deployment; a class only to share its inputs between the steps."""

    def __init__(self, d: DeploymentInput, clusters: Mapping[str, ClusterView],
                 ledger: _Ledger, now: datetime) -> None:
        self.d = d
        self.spec = d.spec
        self.clusters = clusters
        self.ledger = ledger
        self.now = now
        self.declared = declared(d.spec)
        self.placed = [p.cluster for p in d.spec.placement]
        self.decisions: list[Decision] = []
        self.pending: Decision | None = None
        self.holder = f"{d.namespace}/{d.name} ({d.spec.sla_tier})"
        self.shortage = ""
        """Why replicas are unserved: who holds the GPUs of the clusters concerned."""

    def decide(self, kind: str, reason: str, inputs: Mapping[str, Any], *,
               identity: Mapping[str, Any] | None = None) -> Decision:
        """A decision whose id is a hash of ``identity`` (default: all its inputs); give the
        stable part when inputs include measurements, so an approval stays valid."""
        key = inputs if identity is None else identity
        return Decision(decision_id(self.d.namespace, self.d.name, kind, key), kind, reason,
                        dict(inputs))

    def phase(self, cluster: str) -> Phase | None:
        view = self.clusters.get(cluster)
        return view.phase if view is not None else None

    def ready(self, cluster: str, role: Role, zone: str) -> int:
        seen = self.d.observed.get((cluster, role, zone))
        return seen.ready if seen is not None else 0

    # -- failover and failback ---------------------------------------------------------

    def step_legs(self) -> dict[str, Leg]:
        """Advance the failover state of every placed cluster, then of every zone of the
        clusters that serve. Keys: ``cluster`` and ``cluster/zone``."""
        legs: dict[str, Leg] = {}
        for cluster in self.placed:
            phase = self.phase(cluster)
            # Only a cluster seen Down fails over: no probe yet (a restarted operator) or no
            # ServingCluster by that name is no evidence of failure.
            legs[cluster] = self._advance(
                cluster, f"cluster {cluster}", down=phase == "Down",
                healthy=phase == "Healthy", cells=[cz for cz in self.declared if cz[0] == cluster],
                inputs={"cluster": cluster, "phase": phase or "Unknown"},
                gated=self.spec.traffic.failover == "Manual")
        for (cluster, zone), count in self.declared.items():
            key = f"{cluster}/{zone}"
            leg = self.d.legs.get(key, Leg(since=self.now))
            phase = self.phase(cluster)
            if legs[cluster].state != "Serving" or phase in (None, "Down") or count == 0:
                legs[key] = leg  # the cluster's own failover covers the zone meanwhile
                continue
            up = self.zone_up(cluster, zone)
            # A zone without a Ready node cannot serve, approved or not: zones move at once.
            legs[key] = self._advance(
                key, f"zone {key}", down=not up, healthy=up and phase == "Healthy",
                cells=[(cluster, zone)], inputs={"zone": key, "phase": phase,
                                                 "readyNodes": up}, gated=False)
        return legs

    def _advance(self, key: str, what: str, *, down: bool, healthy: bool,
                 cells: list[tuple[str, str]], inputs: dict[str, Any], gated: bool) -> Leg:
        leg = self.d.legs.get(key, Leg(since=self.now))
        steps = self.d.tier.failback.steps
        hold = self.d.tier.failback.hold_seconds
        inputs = {**inputs, "from": leg.state}
        if leg.state == "Serving" and down:
            decision = self.decide("Failover", f"{what} is down: its traffic moves to the "
                                   "serving zones, which take its replicas", inputs)
            if gated and self.d.approved != decision.id:
                self.pending = replace(decision, applied=False)
                return leg
            self.decisions.append(decision)
            return Leg("FailedOver", since=self.now)
        if leg.state == "FailedOver" and healthy:
            decision = self.decide(
                "Failback", f"{what} is healthy again: traffic returns in steps of "
                f"{', '.join(map(_pct, steps))} of its share, {hold}s apart", inputs)
            if gated and self.d.approved != decision.id:
                self.pending = replace(decision, applied=False)
                return leg
            self.decisions.append(decision)
            return Leg("FailingBack", since=self.now, step=-1, step_since=self.now)
        if leg.state != "FailingBack":
            return leg
        if down:
            self.decisions.append(self.decide(
                "Failover", f"{what} failed again while failing back: its weight drops to 0 "
                "at once", {**inputs, "step": leg.step}))
            return Leg("FailedOver", since=self.now)
        since = leg.step_since or leg.since or self.now
        if not healthy or (self.now - since).total_seconds() < hold:
            return leg
        want = sum(self.declared[cz] for cz in cells)
        ready = sum(self.ready(c, "primary", z) for c, z in cells)
        if ready < want:
            return leg  # hold the step until the returning replicas are Ready
        nxt = leg.step + 1
        if steps[nxt] >= 100:
            self.decisions.append(self.decide(
                "FailbackComplete", f"{what} carries its full share again; the other zones "
                "return to their declared replicas", {**inputs, "ready": ready,
                                                       "declared": want}))
            return Leg("Serving", since=self.now)
        self.decisions.append(self.decide(
            "FailbackStep", f"{what} takes {steps[nxt]}% of its share after {hold}s healthy "
            "at the previous step", {**inputs, "step": steps[nxt], "ready": ready}))
        return replace(leg, step=nxt, step_since=self.now)

    # -- replicas ----------------------------------------------------------------------

    def zone_up(self, cluster: str, zone: str) -> bool:
        view = self.clusters.get(cluster)
        return view is not None and view.zones_ready.get(zone, False)

    def serves(self, legs: Mapping[str, Leg], cluster: str, zone: str) -> bool:
        """Whether a zone takes its full share: its cluster and itself Serving, and up."""
        zone_leg = legs.get(f"{cluster}/{zone}")
        return (legs[cluster].state == "Serving" and self.zone_up(cluster, zone)
                and (zone_leg is None or zone_leg.state == "Serving"))

    def plan_replicas(self, legs: Mapping[str, Leg]) -> tuple[dict[Slot, int], int]:
        """Replicas per slot within the GPUs left by higher-priority deployments: each
        serving zone's own replicas first, then the replicas of zones that do not serve
        (or did not fit) on the Healthy serving zones, then the fallback model's warm
        replicas plus one for each replica still unserved."""
        spec = self.spec
        me = self.holder
        gpus = spec.model.resources.gpus
        serving = [cz for cz in self.declared if self.serves(legs, *cz)]
        own = {cz: self.ledger.take(cz[0], gpus, self.declared[cz], me) for cz in serving}
        missing = sum(n - own.get(cz, 0) for cz, n in self.declared.items())
        takers = {cz: max(1, self.declared[cz]) for cz in serving
                  if self.phase(cz[0]) == "Healthy"}
        extra = _spread(missing, takers, self.ledger, gpus, me)
        unserved = missing - sum(extra.values())
        replicas: dict[Slot, int] = {
            (c, "primary", z): (own[(c, z)] + extra.get((c, z), 0) if (c, z) in own else n)
            for (c, z), n in self.declared.items()
        }
        if spec.fallback is not None:
            base, fb_gpus = spec.fallback.replicas_per_zone, spec.fallback.model.resources.gpus
            warm = {cz: self.ledger.take(cz[0], fb_gpus, base, me) if cz in own else base
                    for cz in self.declared}
            fb_extra = _spread(unserved, takers, self.ledger, fb_gpus, me)
            for c, z in self.declared:
                replicas[(c, "fallback", z)] = warm[(c, z)] + fb_extra.get((c, z), 0)
        if unserved:
            short = sorted({c for (c, z) in self.declared if (c, z) in own or c in
                            {cc for cc, _ in takers}})
            self.shortage = "; ".join(self.ledger.explain(c, me) for c in short)
        return replicas, unserved

    # -- traffic -----------------------------------------------------------------------

    def plan_weights(self, legs: Mapping[str, Leg], replicas: Mapping[Slot, int],
                     unserved: int) -> dict[str, int]:
        total = sum(self.declared.values()) or 1
        steps = self.d.tier.failback.steps
        live = [c for c in self.placed if legs[c].state != "FailedOver"]
        # A cluster or zone failing back takes its step's percentage of its declared share,
        # and that much less goes to the fallback.
        ramp: dict[str, float] = {}
        for c in live:
            ramping: list[tuple[Leg, list[tuple[str, str]]]] = []
            if legs[c].state == "FailingBack":
                ramping.append((legs[c], [cz for cz in self.declared if cz[0] == c]))
            else:
                ramping += [(legs[f"{c}/{z}"], [(c, z)]) for (cc, z) in self.declared
                            if cc == c and legs.get(f"{c}/{z}", Leg()).state == "FailingBack"]
            for leg, cells in ramping:
                if leg.step >= 0 and any(self.ready(cc, "primary", z) > 0 for cc, z in cells):
                    mine = sum(self.declared[cz] for cz in cells)
                    ramp[c] = ramp.get(c, 0.0) + steps[leg.step] / 100 * mine / total
        carried = sum(ramp.values()) * total
        served = 1.0 - max(0.0, unserved - carried) / total
        if self.spec.fallback is None:
            served = 1.0
        serving = [c for c in live if legs[c].state == "Serving"]
        mass = {c: float(sum(self.ready(c, "primary", z) for (cc, z) in self.declared
                             if cc == c and self.serves(legs, c, z))) for c in serving}
        if not any(mass.values()) and not ramp:
            fallback_ready = any(self.ready(c, "fallback", z) for (c, z) in self.declared
                                 if c in live and self.zone_up(c, z))
            if fallback_ready and self.spec.fallback is not None:
                served = 0.0  # no primary replica Ready anywhere: the fallback serves
            else:  # nothing Ready yet: route by plan
                mass = {c: float(sum(n for (cc, r, z), n in replicas.items()
                                     if cc == c and r == "primary" and self.zone_up(c, z)))
                        for c in live}
        rest = max(0.0, served - sum(ramp.values()))
        parts: dict[str, float] = dict.fromkeys(self.placed, 0.0)
        parts.update(ramp)
        weight = sum(mass.values())
        if weight:
            for c, m in mass.items():
                parts[c] += rest * m / weight
        elif ramp:  # only clusters failing back are left: they carry what is served
            for c, share in ramp.items():
                parts[c] += rest * share / sum(ramp.values())
        parts[FALLBACK] = 1.0 - served if self.spec.fallback is not None else 0.0
        if not any(parts.values()):
            return {**dict.fromkeys(self.placed, 0), FALLBACK: 0}
        return apportion(100, parts)

    # -- conditions --------------------------------------------------------------------

    def conditions(self, legs: Mapping[str, Leg], replicas: Mapping[Slot, int],
                   weights: Mapping[str, int], unserved: int) -> list[Condition]:
        failed = sorted(c for c, leg in legs.items() if leg.state == "FailedOver")
        ramping = sorted(c for c, leg in legs.items() if leg.state == "FailingBack")
        lagging = sorted(
            f"{c}/{z}{'' if r == 'primary' else ' (fallback)'} {self.ready(c, r, z)}/{n}"
            for (c, r, z), n in replicas.items()
            if legs[c].state != "FailedOver" and self.zone_up(c, z) and self.ready(c, r, z) < n
        )
        zones_down = sorted(f"{c}/{z}" for (c, z) in self.declared
                            if legs[c].state != "FailedOver" and not self.zone_up(c, z))
        serving = sum(w for k, w in weights.items() if k != FALLBACK)
        ready_primary = sum(self.ready(c, "primary", z) for (c, z) in self.declared
                            if legs[c].state != "FailedOver")
        out = []
        if ready_primary or (weights.get(FALLBACK, 0) and any(
                self.ready(c, "fallback", z) for (c, z) in self.declared)):
            out.append(Condition("Available", "True", "Serving",
                                 f"{serving}% of traffic on the primary model"))
        else:
            out.append(Condition("Available", "False", "NoReadyReplicas",
                                 "no Ready replica serves this model yet"))
        if unserved:
            total = sum(self.declared.values())
            where = "fallback model" if self.spec.fallback else "remaining replicas (no fallback)"
            out.append(Condition(
                "Degraded", "True", "InsufficientCapacity",
                f"{unserved} of {total} replicas cannot be placed in the serving zones' GPU "
                f"capacity ({self.shortage}); {weights.get(FALLBACK, 0)}% of traffic goes to "
                f"the {where}"))
        elif zones_down:
            out.append(Condition("Degraded", "True", "ZoneUnavailable",
                                 f"no Ready node in {', '.join(zones_down)}; other zones carry "
                                 "their replicas"))
        else:
            out.append(Condition("Degraded", "False", "FullCapacity",
                                 "every declared replica has a serving zone"))
        if failed or ramping:
            parts = [f"{c} failed over" for c in failed]
            parts += [f"{c} failing back at {self._step_text(legs[c])}" for c in ramping]
            out.append(Condition("FailedOver", "True",
                                 "ClusterDown" if failed else "FailingBack", "; ".join(parts)))
        else:
            out.append(Condition("FailedOver", "False", "AllClustersServing",
                                 "every placed cluster takes its share"))
        if self.pending is not None:
            out.append(Condition("Progressing", "True", "WaitingForApproval",
                                 f"{self.pending.kind} {self.pending.id} waits for approval: "
                                 f"annotate serving.twinhull.io/approve={self.pending.id}"))
        elif lagging:
            out.append(Condition("Progressing", "True", "ReplicasNotReady",
                                 "waiting for " + ", ".join(lagging)))
        else:
            out.append(Condition("Progressing", "False", "Converged",
                                 "every Deployment has its desired replicas Ready"))
        ok = not lagging and not unserved and ready_primary > 0
        out.append(Condition(
            "Ready", "True" if ok else "False",
            "Serving" if ok else ("InsufficientCapacity" if unserved else
                                  "ReplicasNotReady" if lagging or not ready_primary
                                  else "Unknown"),
            "all desired replicas Ready at the declared capacity" if ok else
            "; ".join(c.message for c in out if c.type in ("Degraded", "Progressing")
                      and c.status == "True") or "no Ready replica yet"))
        return out

    def _step_text(self, leg: Leg) -> str:
        steps = self.d.tier.failback.steps
        return f"{steps[leg.step]}%" if leg.step >= 0 else "0% (holding)"

    def scale(self) -> tuple[ScaleResult | None, int | None]:
        """Apply the scaling recommendation to the baseline per zone (``self.declared``):
        the total from load, spread over the placed zones in the placement's proportions
        (failover then moves the share of failed zones, as it does for declared numbers)."""
        scaling = self.spec.scaling
        if scaling is None or scaling.mode == "Off":
            return None, None
        cells = list(self.declared)
        current = self.d.scaled if self.d.scaled is not None else sum(self.declared.values())
        result = recommend(scaling, self.d.tier, self.d.load or Load(), current=current,
                           zones=len(cells), history=self.d.scaling_history, now=self.now)
        total = current
        if result.replicas != current:
            inputs = {**result.inputs, "from": current, "to": result.replicas}
            decision = self.decide("Scale", f"{result.reason}: {current} -> {result.replicas} "
                                   "replicas", inputs,
                                   identity={"from": current, "to": result.replicas})
            if scaling.mode == "Suggest" and self.d.approved != decision.id:
                if self.pending is None:
                    self.pending = replace(decision, applied=False)
            else:
                self.decisions.append(decision)
                total = result.replicas
        shares = apportion(total, {f"{c}\0{z}": float(max(n, 1))
                                   for (c, z), n in self.declared.items()})
        low, high = scaling.min_replicas_per_zone, scaling.max_replicas_per_zone
        self.declared = {(c, z): min(max(shares[f"{c}\0{z}"], low), high) for c, z in cells}
        return result, total

    def plan(self) -> DeploymentPlan:
        scale, scaled = self.scale()
        legs = self.step_legs()
        replicas, unserved = self.plan_replicas(legs)
        weights = self.plan_weights(legs, replicas, unserved)
        if dict(self.d.traffic) != weights and self.d.traffic:
            self.decisions.append(self.decide(
                "ShiftTraffic",
                "weights follow Ready primary capacity, failover and failback state"
                + (f" and {unserved} unserved replicas" if unserved else ""),
                {"from": dict(self.d.traffic), "to": weights,
                 "readyPrimary": {c: sum(self.ready(c, "primary", z) for (cc, z) in self.declared
                                         if cc == c) for c in self.placed},
                 "legs": {c: legs[c].state for c in self.placed}, "unserved": unserved}))
        if unserved != self.d.unserved:
            total = sum(self.declared.values())
            self.decisions.append(self.decide(
                "Capacity",
                (f"{unserved} of {total} replicas cannot be placed ({self.shortage}); "
                 f"{weights.get(FALLBACK, 0)}% of traffic goes to the fallback model"
                 if unserved else f"all {total} replicas placed again"),
                {"from": self.d.unserved, "to": unserved, "tier": self.spec.sla_tier,
                 "priority": self.d.tier.priority, "shortage": self.shortage}))
        conditions = self.conditions(legs, replicas, weights, unserved)
        if scale is not None:
            conditions.append(Condition(  # a steady message: load jitter must not write
                "MetricsAvailable", "True" if scale.metrics_available else "False",
                "MetricsRead" if scale.metrics_available else "NoMetrics",
                "load is read from Prometheus" if scale.metrics_available else scale.reason))
        return DeploymentPlan(
            replicas=replicas, weights=weights, legs=legs, decisions=self.decisions,
            pending=self.pending, unserved=unserved, conditions=conditions, scale=scale,
            scaled=scaled,
        )


def plan_fleet(deployments: Sequence[DeploymentInput], clusters: Mapping[str, ClusterView],
               *, now: datetime) -> dict[tuple[str, str], DeploymentPlan]:
    """Plan every deployment, highest tier priority first: each takes the GPUs it needs
    (its own zones, then what failed over or scaled up, then its fallback) from what the
    higher tiers left. Pure."""
    ledger = _Ledger(clusters)
    order = sorted(deployments, key=lambda d: (-d.tier.priority, d.namespace, d.name))
    return {(d.namespace, d.name): _Planner(d, clusters, ledger, now).plan() for d in order}
