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
  if it goes Down mid-ramp. If the tier policy changed mid-failback and the persisted step
  is past the new list, the leg continues from the new list's last step below 100 (never
  a jump to the full share, never an error); the step after it completes the failback.
* A cluster not observed yet (no ServingCluster view, or no probe result) is no evidence
  of anything: its zones count as up, it never fails over, and it keeps the weight last
  published for it (a restarted operator moves no traffic); the others share the rest.
* Replicas of zones that do not serve (their cluster not Serving, or no Ready node in the
  zone) are carried by the serving zones of Healthy clusters, in proportion to their
  declared (or scaled) replicas, within each cluster's GPU capacity. A zone declared 0
  stays empty: it carries nothing, scaling gives it nothing, and it gets no fallback.
* One ledger per cluster counts every replica the plan runs there, so no cluster is
  planned past ``capacity.gpus``. Deployments take GPUs in rank order (below), each in
  this order: its serving zones' own replicas; the replicas kept in zones that do not
  serve (failed over, failing back, or in a Down cluster: nothing there is removed, so
  a returning cluster finds its replicas and a failback can complete); those it carries
  for zones that do not serve; its fallback's warm replicas; then one fallback replica
  per primary replica still unserved. When a cluster cannot hold the kept replicas (a
  higher-ranked deployment took the GPUs), they are lowered to what fits: they were not
  serving, the serving zones carry their share, and failback raises them again.
* Rank: tier priority first, then ``spec.priority`` (higher first), then measured demand
  (tokens per second: the deployment serving the most tokens keeps its primary model, so
  the fewest tokens go to a smaller fallback). A deployment that is fully placed keeps
  its rank until another's demand exceeds its own by a quarter (``HOLD_MARGIN``), so load
  jitter never swaps two deployments' GPUs back and forth. Deployments without a reading
  rank after those with one, by namespace and name. What a deployment cannot place is
  *unserved*: it is Degraded (the message names who holds the GPUs and the rule that
  ranked them), a ``Capacity`` decision records the change, and that share of traffic
  goes to the fallback model, whose replicas are raised to match.
* Traffic weights are integers summing to exactly 100: the fallback gets the unserved
  share, the clusters split the rest in proportion to their Ready primary replicas; a
  cluster failing back gets at most its ramp step's percentage of its normal (declared)
  share. When nothing can serve (every placed cluster Down or failed over, no fallback
  that can run), the weights keep the declared shares and ``Available`` says why.
  ``Available`` counts only Ready replicas in cells that can serve: never stale counts
  of a Down or failed-over cluster or of a zone without Ready nodes.
* Approvals (``traffic.failover: Manual``, ``scaling.mode: Suggest``) approve one
  decision of one incident: a Failover or Failback id includes the time its leg entered
  its current state, a Scale id includes the approvals already consumed, and an id in
  ``DeploymentInput.consumed`` (applied once already) approves nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
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
HOLD_MARGIN = 1.25
"""Within a tier and ``spec.priority``, a fully placed deployment ranks as if its demand
were this much higher: another must exceed it by a quarter to take its GPUs."""


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
    zone_gpus: Mapping[str, ZoneGpus] = field(default_factory=dict)
    """Per zone, what its nodes hold as last probed (a zone not listed, or a cluster
    never probed, limits nothing but the cluster's ``gpus``)."""


@dataclass(frozen=True)
class ZoneGpus:
    """The GPUs of one zone's nodes, Ready or not: a node that is NotReady for a while
    holds its pods, and moving replicas at every node flap would reload models."""

    total: int = 0
    """Allocatable GPUs of the zone's nodes."""
    largest: int = 0
    """The most allocatable GPUs of any one node: a replica needing more never starts."""


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


DrillStage = Literal["Injected", "Out", "Restoring", "Abort"]


@dataclass(frozen=True)
class DrillFault:
    """A failover drill acting on one deployment.

    * ``Injected``: the fault is on but not detected yet (the probes that would see it have
      not all failed): nothing changes but, with ``outage``, its replicas on the target
      are scaled to 0;
    * ``Out``: its target (a cluster, or one zone of it) counts as Down for this deployment
      alone, and with ``outage`` its replicas there stay at 0;
    * ``Restoring``: the target is seen as it really is and fails back through the tier's
      steps;
    * ``Abort``: the target takes its full share back at once, without the ramp (unless it
      is really Down).

    Failover and failback of a drilled target need no approval: starting the drill
    approved them."""

    drill: str
    """NAMESPACE/NAME of the FailoverDrill."""
    cluster: str
    zone: str | None = None
    stage: DrillStage = "Out"
    outage: bool = False


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
    forecast_missed_at: datetime | None = None
    """Since when the peak pre-warm forecast has been missing (kept in status): pre-warm
    stands down once that is confirmed (:func:`twinhull.plan.scaling.recommend`)."""
    unserved: int = 0
    """Replicas reported unserved last time (status), to decide only on a change."""
    consumed: frozenset[str] = frozenset()
    """Ids of decisions already applied by an approval (kept in status): an ``approved``
    id among them approves nothing, so an annotation left in place is never replayed."""
    drill: DrillFault | None = None
    """A failover drill acting on this deployment now."""
    drained: frozenset[str] = frozenset()
    """Clusters whose Ready pods may run a revision being rolled back for failing its own
    requests (the revision planner's ``Rollout.drained``): they get no traffic while
    another placed cluster has Ready primary capacity, and the others carry their share of
    replicas on top of their own meanwhile."""


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
    consumed: str | None = None
    """The approved id this plan applied: record it with ``DeploymentInput.consumed`` so
    it never approves anything again."""
    basis: LedgerState | None = None
    """The GPUs left to it by the deployments ranked ahead, when it decided anything: with
    its input and the cluster views, enough to plan it again alone (:func:`replan`)."""


@dataclass(frozen=True)
class LedgerState:
    """The capacity ledger as one deployment found it: every cluster's GPUs, who held
    them (ledger holder name to GPUs) and why each holder ranked ahead of it."""

    capacity: Mapping[str, int]
    held: Mapping[str, Mapping[str, int]]
    ahead: Mapping[str, str]
    reserved: Mapping[str, int] = field(default_factory=dict)
    """GPUs per cluster that the deployments ranked after it need for their declared
    replicas and warm fallbacks (:func:`baseline_gpus`): a rollback's surge leaves them
    (:meth:`_Planner._surge`)."""
    zone_free: Mapping[str, int] = field(default_factory=dict)
    """Free GPUs per ``cluster/zone`` as it found them (zones with a probed size only;
    a record made before zones were counted has none, and was planned without them)."""


def decision_id(namespace: str, name: str, kind: str, inputs: Mapping[str, Any]) -> str:
    """A stable id for a decision: same deployment, kind and inputs, same id. Pure."""
    raw = json.dumps([namespace, name, kind, inputs], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:12]


def declared(spec: ModelDeploymentSpec) -> dict[tuple[str, str], int]:
    """Declared primary replicas per (cluster, zone). Pure."""
    return {(p.cluster, z): n for p in spec.placement for z, n in p.zones.items()}


def baseline_gpus(spec: ModelDeploymentSpec) -> dict[str, int]:
    """GPUs per cluster the declared primary and warm fallback replicas take (a zone
    declared 0 stays empty: no warm fallback either). Pure."""
    per = spec.model.resources.gpus
    out: dict[str, int] = {}
    for p in spec.placement:
        used = sum(p.zones.values()) * per
        if spec.fallback is not None:
            fallback = spec.fallback
            zones = sum(1 for n in p.zones.values() if n > 0)
            used += fallback.replicas_per_zone * zones * fallback.model.resources.gpus
        out[p.cluster] = out.get(p.cluster, 0) + used
    return out


KEPT_HOLDERS = 5
"""Holders a :class:`LedgerState` names per cluster, by GPUs and by name: one more than
the four a shortage's message names, so its "..." is kept too."""

OTHERS = "(others)"
"""A :class:`LedgerState` holder: the GPUs of every holder it does not name (no
deployment's name has parentheses without a slash)."""


@dataclass
class _Summary:
    total: int = 0
    top: list[tuple[int, str]] = field(default_factory=list)
    """The largest holders, as (-GPUs, name), in order."""
    first: list[str] = field(default_factory=list)
    """The first holders by name."""


def zone_key(cluster: str, zone: str) -> str:
    """The ``cluster/zone`` key of :attr:`LedgerState.zone_free` (cluster names are DNS
    labels: no slash). Pure."""
    return f"{cluster}/{zone}"


class _Ledger:
    """Free GPUs per cluster while the fleet is planned in tier priority order, and who
    holds them (to explain to a deployment that got less why); and free GPUs per zone
    whose nodes were probed, so no zone is given more replicas than its nodes hold."""

    def __init__(self, clusters: Mapping[str, ClusterView],
                 state: LedgerState | None = None) -> None:
        self.free = {c: max(0, v.gpus) for c, v in clusters.items()}
        self.capacity = dict(self.free)
        self.largest = {zone_key(c, z): max(0, g.largest)
                        for c, v in clusters.items() for z, g in v.zone_gpus.items()}
        self.zone_size = {zone_key(c, z): max(0, g.total)
                          for c, v in clusters.items() for z, g in v.zone_gpus.items()}
        self.zone_free = dict(self.zone_size)
        self.turn: dict[str, int] = {}
        """Zone GPUs taken by the holder whose turn is open (:meth:`state` leaves its
        takes out, as it leaves out what it holds)."""
        self.holders: dict[str, dict[str, int]] = {c: {} for c in clusters}
        self.summaries: dict[str, _Summary] = {}
        """Per cluster, what the holders whose turn is over hold (see :meth:`state`)."""
        self.reserved: dict[str, int] = {}
        """What the deployments ranked after the one planned now need (see
        :attr:`LedgerState.reserved`)."""
        if state is not None:
            self.reserved = dict(state.reserved)
            self.capacity = dict(state.capacity)
            self.holders = {c: dict(state.held.get(c, {})) for c in self.capacity}
            self.free = {c: max(0, n - sum(self.holders[c].values()))
                         for c, n in self.capacity.items()}
            # replayed as it was found: a zone not in the record limited nothing then
            self.zone_free = {k: max(0, n) for k, n in state.zone_free.items()
                              if k in self.zone_size}

    def close_turn(self, holder: str) -> None:
        """``holder`` has planned: add what it holds to each cluster's summary (see
        :meth:`state`). Effects: memory."""
        self.turn = {}
        for cluster, cell in self.holders.items():
            gpus = cell.get(holder, 0)
            if not gpus:
                continue
            summary = self.summaries.setdefault(cluster, _Summary())
            summary.total += gpus
            summary.top = sorted([*summary.top, (-gpus, holder)])[:KEPT_HOLDERS]
            summary.first = sorted([*summary.first, holder])[:KEPT_HOLDERS]

    def state(self, ahead: Callable[[str], str | None]) -> LedgerState:
        """The ledger as the deployment planning now found it, kept to what its plan
        reads (:meth:`explain` and the ``ranked_after`` list name at most four holders, by
        GPUs and by name): per cluster the :data:`KEPT_HOLDERS` largest holders and the
        first by name, the rest summed as :data:`OTHERS`; why each named holder ranked
        ahead. Bounded, whatever the fleet: with every holder kept, 2,000 GPU deployments
        all deciding in one round (a member lost) held some 2 million entries. Holders
        whose turn is not closed (:meth:`close_turn`), the one planning now, are left out.
        Pure."""
        held: dict[str, dict[str, int]] = {c: {} for c in self.capacity}
        for cluster, summary in self.summaries.items():
            cell = held.setdefault(cluster, {})
            for name in sorted({*(h for _, h in summary.top), *summary.first}):
                cell[name] = self.holders[cluster][name]
            rest = summary.total - sum(cell.values())
            if rest:
                cell[OTHERS] = rest
        names = sorted({h for cell in held.values() for h in cell if h != OTHERS})
        return LedgerState(dict(self.capacity), held,
                           {h: why for h in names if (why := ahead(h)) is not None},
                           dict(self.reserved),
                           {k: n + self.turn.get(k, 0) for k, n in self.zone_free.items()})

    def take(self, cluster: str, zone: str, gpus: int, want: int, holder: str, *,
             spare: bool = False) -> int:
        """Reserve up to ``want`` replicas of ``gpus`` each for ``holder`` in a zone;
        return how many fit in the cluster's GPUs (``spare``: only in what the deployments
        ranked after leave, see :attr:`reserved`) and in the zone's (none if no node of
        the zone has ``gpus``). A cluster without a view (no ServingCluster seen) has no
        known capacity and limits nothing: the plan keeps its replicas as declared until
        it is seen; a zone without probed nodes is limited by its cluster alone."""
        if gpus <= 0 or want <= 0 or cluster not in self.free:
            return max(want, 0)
        free = self.free.get(cluster, 0) - (self.reserved.get(cluster, 0) if spare else 0)
        fit = max(0, min(want, free // gpus))
        key = zone_key(cluster, zone)
        if key in self.zone_free:
            fit = 0 if gpus > self.largest.get(key, 0) else min(fit,
                                                                self.zone_free[key] // gpus)
        if fit:
            self.free[cluster] -= fit * gpus
            held = self.holders.setdefault(cluster, {})
            held[holder] = held.get(holder, 0) + fit * gpus
            if key in self.zone_free:
                self.zone_free[key] -= fit * gpus
                self.turn[key] = self.turn.get(key, 0) + fit * gpus
        return fit

    def zone_note(self, cluster: str, gpus: int) -> str:
        """The zones of a cluster that hold no more replicas of ``gpus`` GPUs, e.g.
        `` (zone east-a: 2 of 16 GPUs free)``, or ``""``."""
        notes = []
        for key in sorted(self.zone_free):
            c, _, zone = key.partition("/")
            if c != cluster:
                continue
            if gpus > self.largest.get(key, 0):
                notes.append(f"zone {zone}: no node has {gpus} GPUs, the largest "
                             f"{self.largest.get(key, 0)}")
            elif self.zone_free[key] < gpus:
                notes.append(f"zone {zone}: {self.zone_free[key]} of "
                             f"{self.zone_size.get(key, 0)} GPUs free")
        return f" ({', '.join(notes)})" if notes else ""

    def explain(self, cluster: str, exclude: str, gpus: int = 0) -> str:
        """Who holds a cluster's GPUs, largest first, e.g. ``east: 32 GPUs, 30 held by
        ai/ide (critical) 18, ai/aiops (critical) 12``."""
        held = {h: g for h, g in self.holders.get(cluster, {}).items() if h != exclude}
        top = sorted(((h, g) for h, g in held.items() if h != OTHERS),
                     key=lambda kv: (-kv[1], kv[0]))
        who = ", ".join(f"{h} {g}" for h, g in top[:4]) + (", ..." if len(top) > 4 else "")
        return (f"{cluster}: {self.capacity.get(cluster, 0)} GPUs, "
                f"{sum(held.values())} held by deployments ranked ahead: "
                f"{who or 'nobody'}, {self.free.get(cluster, 0)} free"
                f"{self.zone_note(cluster, gpus)}")


def _spread(total: int, slots: Mapping[tuple[str, str], int], ledger: _Ledger, gpus: int,
            holder: str, *, spare: bool = False) -> dict[tuple[str, str], int]:
    """Place ``total`` replicas over slots in proportion to their weights, within GPU
    capacity (``spare``: see :meth:`_Ledger.take`); slots that are full pass their share
    on to the others."""
    placed = dict.fromkeys(slots, 0)
    open_slots = dict(slots)
    left = total
    while left > 0 and open_slots:
        keys = {f"{c}\0{z}": w for (c, z), w in open_slots.items()}
        shares = apportion(left, keys)
        progress, closed = 0, False
        for key, share in shares.items():
            cluster, zone = key.split("\0")
            fit = ledger.take(cluster, zone, gpus, share, holder, spare=spare)
            placed[(cluster, zone)] += fit
            progress += fit
            if fit < share:
                open_slots.pop((cluster, zone), None)
                closed = True
        left -= progress
        if progress == 0 and not closed:  # a full slot's share goes to the others next
            break
    return placed


def _pct(value: int) -> str:
    return f"{value}%"


def _stamp(t: datetime | None) -> str | None:
    """A time in UTC to the second, as status keeps it: an id made from it is the same
    before and after the round trip through status."""
    if t is None:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _holder(d: DeploymentInput) -> str:
    return f"{d.namespace}/{d.name} ({d.spec.sla_tier})"


def demand(d: DeploymentInput) -> float | None:
    """Measured tokens per second of a deployment; None without a (finite) reading. Pure."""
    measured = d.load.tokens_per_second if d.load is not None else None
    if measured is None or not math.isfinite(measured):
        return None
    return max(0.0, measured)


def rank_key(d: DeploymentInput) -> tuple[int, int, float, str, str]:
    """The order in which deployments take GPUs, smallest first: tier priority, then
    ``spec.priority``, then measured demand (a fully placed deployment counts
    ``HOLD_MARGIN`` times its demand, so jitter never swaps two deployments), then
    deployments without a reading, by namespace and name. Pure."""
    measured = demand(d)
    score = -1.0 if measured is None else measured * (HOLD_MARGIN if d.unserved == 0 else 1.0)
    return (-d.tier.priority, -d.spec.priority, -score, d.namespace, d.name)


def rank_text(d: DeploymentInput, *, figures: bool) -> str:
    """The rule that ranked a deployment, e.g. ``ranked by tier critical, then priority 0,
    then demand 12000 tok/s``. Without figures (a condition, which must not change with
    load jitter) the demand is only named. Pure."""
    measured = demand(d)
    if measured is None:
        last = "then name order (no demand reading)"
    elif figures:
        last = f"then demand {measured:.0f} tok/s"
    else:
        last = "then measured demand"
    return f"ranked by tier {d.spec.sla_tier}, then priority {d.spec.priority}, {last}"


def _ahead_by(ahead: DeploymentInput, me: DeploymentInput) -> str:
    """Which rule put ``ahead`` before ``me``."""
    a, b = rank_key(ahead), rank_key(me)
    if a[0] != b[0]:
        return "higher tier"
    if a[1] != b[1]:
        return "higher priority"
    if a[2] != b[2]:
        return "more demand" if demand(ahead) is not None else "name order"
    return "name order"


class _Planner:
    """Plans one deployment; a class only to share its inputs between the steps."""

    def __init__(self, d: DeploymentInput, clusters: Mapping[str, ClusterView],
                 ledger: _Ledger, now: datetime,
                 ahead: Callable[[str], str | None] = lambda _: None) -> None:
        self.d = d
        self.spec = d.spec
        self.fault = d.drill
        self.real = clusters
        """The clusters as probed; ``clusters`` is what this deployment sees (a drill's
        target Down)."""
        self.clusters = _with_fault(clusters, d.drill)
        self.ledger = ledger
        self.now = now
        self.ahead = ahead
        """Why a ledger holder ranked ahead of this deployment (None: not a deployment of
        the round)."""
        self.declared = declared(d.spec)
        self.placed = [p.cluster for p in d.spec.placement]
        self.decisions: list[Decision] = []
        self.pending: Decision | None = None
        self.approval = d.approved if d.approved not in d.consumed else None
        """The approved id, unless it was applied once already."""
        self.used_approval: str | None = None
        self.holder = _holder(d)
        self.shortage = ""
        """Why replicas are unserved: who holds the GPUs of the clusters concerned."""
        self.ranked_after = ""
        """Who ranked ahead in the clusters short of GPUs, and by which rule."""
        self.stranded = False
        """No placed cluster can serve: the weights keep the declared shares."""
        self.draining: list[str] = []
        """Drained clusters (:attr:`DeploymentInput.drained`) given no traffic this round."""
        self.surged: dict[str, int] = {}
        """Replicas added per surviving cluster while others are drained (:meth:`_surge`)."""

    def decide(self, kind: str, reason: str, inputs: Mapping[str, Any], *,
               identity: Mapping[str, Any] | None = None) -> Decision:
        """A decision whose id is a hash of ``identity`` (default: all its inputs); give the
        stable part when inputs include measurements, so an approval stays valid."""
        key = inputs if identity is None else identity
        return Decision(decision_id(self.d.namespace, self.d.name, kind, key), kind, reason,
                        dict(inputs))

    def approved(self, decision: Decision) -> bool:
        """Whether an SRE approved this very decision, and not before (a consumed id
        approves nothing)."""
        if self.approval is None or self.approval != decision.id:
            return False
        self.used_approval = decision.id
        return True

    def phase(self, cluster: str) -> Phase | None:
        view = self.clusters.get(cluster)
        return view.phase if view is not None else None

    def seen(self, cluster: str) -> bool:
        """Whether the cluster has been observed: a view with a probe result."""
        return self.phase(cluster) is not None

    def ready(self, cluster: str, role: Role, zone: str) -> int:
        seen = self.d.observed.get((cluster, role, zone))
        return max(0, seen.ready) if seen is not None else 0

    def cells(self) -> list[tuple[str, str]]:
        """The (cluster, zone) cells that hold replicas: zones declared 0 stay empty."""
        return [cz for cz, n in self.declared.items() if n > 0]

    def _step(self, leg: Leg) -> int:
        """The failback step index, clamped to the tier's current steps: a step persisted
        under a longer list continues from the last step below 100."""
        return min(max(leg.step, -1), len(self.d.tier.failback.steps) - 2)

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
                healthy=phase == "Healthy", cells=[cz for cz in self.cells() if cz[0] == cluster],
                inputs={"cluster": cluster, "phase": phase or "Unknown"},
                gated=self.spec.traffic.failover == "Manual" and not self._drilled(cluster))
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
        if self.fault is not None and self.fault.stage == "Abort":
            self._abort(legs)
        return legs

    def _drilled(self, cluster: str) -> bool:
        return self.fault is not None and self.fault.cluster == cluster

    def _abort(self, legs: dict[str, Leg]) -> None:
        """An aborted drill's target takes its full share back at once (no ramp), unless
        it is really Down or its zone has no Ready node."""
        f = self.fault
        assert f is not None
        key = f.cluster if f.zone is None else f"{f.cluster}/{f.zone}"
        leg = legs.get(key)
        real = self.real.get(f.cluster)
        if leg is None or leg.state == "Serving" or real is None or real.phase == "Down":
            return
        if f.zone is not None and not real.zones_ready.get(f.zone, False):
            return
        self.decisions.append(self.decide(
            "FailbackComplete", f"drill {f.drill} aborted: {key} takes its full share back "
            "at once, without the failback ramp", {"drill": f.drill, "from": leg.state,
                                                   "target": key}))
        legs[key] = Leg("Serving", since=self.now)
    def _advance(self, key: str, what: str, *, down: bool, healthy: bool,
                 cells: list[tuple[str, str]], inputs: dict[str, Any], gated: bool) -> Leg:
        leg = self.d.legs.get(key, Leg(since=self.now))
        steps = self.d.tier.failback.steps
        hold = self.d.tier.failback.hold_seconds
        if leg.state == "FailingBack":
            leg = replace(leg, step=self._step(leg))
        # ``since`` binds the id to this incident: the approval of an earlier failover or
        # failback of the same cluster never approves this one.
        inputs = {**inputs, "from": leg.state, "since": _stamp(leg.since)}
        if leg.state == "Serving" and down:
            decision = self.decide("Failover", f"{what} is down: its traffic moves to the "
                                   "serving zones, which take its replicas", inputs)
            if gated and not self.approved(decision):
                self.pending = replace(decision, applied=False)
                return leg
            self.decisions.append(decision)
            return Leg("FailedOver", since=self.now)
        if leg.state == "FailedOver" and healthy:
            decision = self.decide(
                "Failback", f"{what} is healthy again: traffic returns in steps of "
                f"{', '.join(map(_pct, steps))} of its share, {hold}s apart", inputs)
            if gated and not self.approved(decision):
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
        """Whether a zone has a Ready node; a cluster not observed yet counts as up."""
        view = self.clusters.get(cluster)
        if view is None or view.phase is None:
            return True
        return view.zones_ready.get(zone, False)

    def serves(self, legs: Mapping[str, Leg], cluster: str, zone: str) -> bool:
        """Whether a zone takes its full share: its cluster and itself Serving, and up."""
        zone_leg = legs.get(f"{cluster}/{zone}")
        return (legs[cluster].state == "Serving" and self.zone_up(cluster, zone)
                and (zone_leg is None or zone_leg.state == "Serving"))

    def can_serve(self, legs: Mapping[str, Leg], cluster: str, zone: str) -> bool:
        """Whether Ready replicas of a zone can take traffic now: its cluster not failed
        over nor Down, the zone declared and with a Ready node. Ready counts elsewhere are
        stale and never make the deployment Available."""
        return ((cluster, zone) in self.declared and self.declared[(cluster, zone)] > 0
                and legs[cluster].state != "FailedOver" and self.phase(cluster) != "Down"
                and self.zone_up(cluster, zone))

    def plan_replicas(self, legs: Mapping[str, Leg]) -> tuple[dict[Slot, int], int]:
        """Replicas per slot, every one of them taken from the cluster's ledger, in this
        order: each serving zone's own replicas; the replicas kept in zones that do not
        serve (what fits); the replicas of zones that do not serve (or did not fit) on the
        Healthy serving zones; the fallback model's warm replicas; one fallback replica for
        each primary replica still unserved. Zones declared 0 get nothing."""
        spec = self.spec
        me = self.holder
        gpus = spec.model.resources.gpus
        cells = self.cells()
        serving = [cz for cz in cells if self.serves(legs, *cz)]
        own = {cz: self.ledger.take(*cz, gpus, self.declared[cz], me) for cz in serving}
        kept = {cz: self.ledger.take(*cz, gpus, self.declared[cz], me)
                for cz in cells if cz not in own and not self._emptied(cz)}
        missing = sum(self.declared[cz] - own.get(cz, 0) for cz in cells)
        takers = {cz: self.declared[cz] for cz in serving if self.phase(cz[0]) == "Healthy"}
        extra = _spread(missing, takers, self.ledger, gpus, me)
        unserved = missing - sum(extra.values())
        replicas: dict[Slot, int] = {(c, "primary", z): 0 for (c, z) in self.declared}
        for (c, z), n in own.items():
            replicas[(c, "primary", z)] = n + extra.get((c, z), 0)
        for (c, z), n in kept.items():
            replicas[(c, "primary", z)] = n
        if spec.fallback is not None:
            base, fb_gpus = spec.fallback.replicas_per_zone, spec.fallback.model.resources.gpus
            order = serving + [cz for cz in cells if cz not in own]  # serving zones first
            warm = {cz: self.ledger.take(*cz, fb_gpus, base, me) for cz in order
                    if not self._emptied(cz)}
            fb_extra = _spread(unserved, takers, self.ledger, fb_gpus, me)
            for c, z in self.declared:
                replicas[(c, "fallback", z)] = warm.get((c, z), 0) + fb_extra.get((c, z), 0)
        self._surge(serving, takers, replicas)
        if unserved:
            short = sorted({c for (c, z) in cells if (c, z) in own or c in
                            {cc for cc, _ in takers}})
            self.shortage = "; ".join(self.ledger.explain(c, me, gpus) for c in short)
            why = {h: self.ahead(h) for c in short for h in self.ledger.holders.get(c, {})
                   if h != me}
            ahead = sorted(h for h, w in why.items() if w is not None)
            self.ranked_after = ", ".join(f"{h} ({why[h]})" for h in ahead[:4]) + (
                ", ..." if len(ahead) > 4 else "")
        return replicas, unserved

    def _surge(self, serving: list[tuple[str, str]], takers: Mapping[tuple[str, str], int],
               replicas: dict[Slot, int]) -> None:
        """While clusters are drained by a rollback (:attr:`DeploymentInput.drained`), the
        Healthy serving zones of the others carry their share of replicas on top of their
        own, as for a failover, last and only in GPUs that no deployment ranked after needs
        for its declared replicas (a drained cluster still has its own: the surge is no
        reason to move another model to its fallback): the survivors take all the traffic,
        and the drained clusters' replicas stay (they are replaced by the Good revision
        one at a time, ``maxSurge: 1``, a model load each). Gone once every drained
        cluster runs the Good revision."""
        drained = self.d.drained
        survivors = {cz: n for cz, n in takers.items() if cz[0] not in drained}
        share = sum(self.declared[cz] for cz in serving if cz[0] in drained)
        if not share or not survivors:
            return
        gpus = self.spec.model.resources.gpus
        for (c, z), n in _spread(share, survivors, self.ledger, gpus, self.holder,
                                 spare=True).items():
            replicas[(c, "primary", z)] += n
            if n:
                self.surged[c] = self.surged.get(c, 0) + n

    def _emptied(self, cell: tuple[str, str]) -> bool:
        """Whether an Outage drill has scaled this cell to 0 now."""
        f = self.fault
        return (f is not None and f.outage and f.stage in ("Injected", "Out")
                and cell[0] == f.cluster
                and (f.zone is None or cell[1] == f.zone))

    # -- traffic -----------------------------------------------------------------------

    def _published(self, cluster: str) -> float:
        value = self.d.traffic.get(cluster, 0)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return 0.0
        return float(value) if math.isfinite(value) and value > 0 else 0.0

    def _declared_shares(self) -> dict[str, float]:
        """Each placed cluster's declared share, the fallback none (all-zero: even)."""
        parts = {c: float(sum(n for (cc, _), n in self.declared.items() if cc == c))
                 for c in self.placed}
        if not any(parts.values()):
            parts = dict.fromkeys(self.placed, 1.0)
        return {**parts, FALLBACK: 0.0}

    def plan_weights(self, legs: Mapping[str, Leg], replicas: Mapping[Slot, int],
                     unserved: int) -> dict[str, int]:
        """Integer weights per placed cluster and ``fallback``, always summing to 100."""
        total = sum(self.declared.values()) or 1
        steps = self.d.tier.failback.steps
        # A cluster not observed yet keeps the weight last published for it.
        pinned = {c: self._published(c) for c in self.placed
                  if not self.seen(c) and legs[c].state != "FailedOver" and self._published(c)}
        servable = [c for c in self.placed if legs[c].state != "FailedOver"
                    and self.phase(c) != "Down"
                    and any(self.zone_up(c, z) for (cc, z) in self.cells() if cc == c)]
        if not servable and not pinned:
            self.stranded = True  # nothing can serve, not even a fallback: keep the plan
            return apportion(100, self._declared_shares())
        live = [c for c in self.placed if legs[c].state != "FailedOver" and c not in pinned]
        # A cluster or zone failing back takes its step's percentage of its declared share,
        # and that much less goes to the fallback.
        ramp: dict[str, float] = {}
        for c in live:
            ramping: list[tuple[Leg, list[tuple[str, str]]]] = []
            if legs[c].state == "FailingBack":
                ramping.append((legs[c], [cz for cz in self.cells() if cz[0] == c]))
            else:
                ramping += [(legs[f"{c}/{z}"], [(c, z)]) for (cc, z) in self.cells()
                            if cc == c and legs.get(f"{c}/{z}", Leg()).state == "FailingBack"]
            for leg, cells in ramping:
                step = self._step(leg)
                if step >= 0 and any(self.ready(cc, "primary", z) > 0 for cc, z in cells):
                    mine = sum(self.declared[cz] for cz in cells)
                    ramp[c] = ramp.get(c, 0.0) + steps[step] / 100 * mine / total
        carried = sum(ramp.values()) * total
        served = 1.0 - max(0.0, unserved - carried) / total
        if self.spec.fallback is None:
            served = 1.0
        serving = [c for c in live if legs[c].state == "Serving"]
        mass = {c: float(sum(self.ready(c, "primary", z) for (cc, z) in self.declared
                             if cc == c and self.serves(legs, c, z))) for c in serving}
        if any(m > 0 for c, m in mass.items() if c not in self.d.drained):
            self.draining = sorted(c for c, m in mass.items() if c in self.d.drained and m > 0)
        for c in self.draining:
            mass[c] = 0.0
        if not any(mass.values()) and not ramp:
            fallback_ready = any(self.ready(c, "fallback", z) for (c, z) in self.declared
                                 if c in live and self.can_serve(legs, c, z))
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
        elif sum(ramp.values()) > 0:  # only clusters failing back are left: they carry it
            for c, share in ramp.items():
                parts[c] += rest * share / sum(ramp.values())
        parts[FALLBACK] = 1.0 - served if self.spec.fallback is not None else 0.0
        if pinned:  # the others share what the clusters not observed yet leave
            keep = min(100.0, sum(pinned.values())) / 100
            others = sum(parts.values())
            if others <= 0:
                keep = 1.0
            parts = {k: (v * (1 - keep) / others if others > 0 else 0.0)
                     for k, v in parts.items()}
            for c, w in pinned.items():
                parts[c] += keep * w / sum(pinned.values())
        if not any(v > 0 for v in parts.values()):
            self.stranded = True
            return apportion(100, self._declared_shares())
        return apportion(100, parts)

    # -- conditions --------------------------------------------------------------------

    def conditions(self, legs: Mapping[str, Leg], replicas: Mapping[Slot, int],
                   weights: Mapping[str, int], unserved: int) -> list[Condition]:
        failed = sorted(c for c, leg in legs.items() if leg.state == "FailedOver")
        ramping = sorted(c for c, leg in legs.items() if leg.state == "FailingBack")
        unseen = [c for c in self.placed if not self.seen(c)]
        lagging = sorted(
            f"{c}/{z}{'' if r == 'primary' else ' (fallback)'} {self.ready(c, r, z)}/{n}"
            for (c, r, z), n in replicas.items()
            if legs[c].state != "FailedOver" and self.seen(c) and self.zone_up(c, z)
            and self.ready(c, r, z) < n
        ) + [f"{c} (not observed yet)" for c in unseen]
        zones_down = sorted(f"{c}/{z}" for (c, z) in self.cells()
                            if legs[c].state != "FailedOver" and not self.zone_up(c, z))
        serving = sum(w for k, w in weights.items() if k != FALLBACK)
        # Only Ready replicas that take traffic now count: never the stale counts of a
        # Down or failed-over cluster, or of a zone without a Ready node.
        ready_primary = sum(self.ready(c, "primary", z) for (c, z) in self.declared
                            if weights.get(c, 0) > 0 and self.can_serve(legs, c, z))
        ready_fallback = weights.get(FALLBACK, 0) > 0 and any(
            self.ready(c, "fallback", z) for (c, z) in self.declared
            if self.can_serve(legs, c, z))
        out = []
        if ready_primary or ready_fallback:
            out.append(Condition("Available", "True", "Serving",
                                 f"{serving}% of traffic on the primary model"))
        elif self.stranded:
            states = ", ".join(f"{c} {'Down' if self.phase(c) == 'Down' else legs[c].state}"
                               for c in self.placed)
            out.append(Condition(
                "Available", "False", "NoServingCluster",
                f"no placed cluster can serve ({states}); traffic keeps the declared shares "
                "until one returns"))
        else:
            out.append(Condition("Available", "False", "NoReadyReplicas",
                                 "no Ready replica serves this model yet"))
        if unserved:
            total = sum(self.declared.values())
            where = "fallback model" if self.spec.fallback else "remaining replicas (no fallback)"
            after = f"; ranked after {self.ranked_after}" if self.ranked_after else ""
            out.append(Condition(
                "Degraded", "True", "InsufficientCapacity",
                f"{unserved} of {total} replicas cannot be placed in the serving zones' GPU "
                f"capacity ({self.shortage}); {weights.get(FALLBACK, 0)}% of traffic goes to "
                f"the {where}; GPUs are {rank_text(self.d, figures=False)}{after}"))
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
        # Ready: everything the plan can do is done and serves. Through a failover, a zone
        # outage or a capacity shortage that is still Ready once every planned replica is
        # (reason ServingDegraded, with Degraded/FailedOver saying how): the spec is
        # reconciled, what is lost is the clusters', not the rollout's.
        ok = not lagging and (ready_primary > 0 or ready_fallback) and not self.stranded
        degraded = [c.message for c in out if c.type in ("Degraded", "FailedOver")
                    and c.status == "True"]
        if ok:
            out.append(Condition(
                "Ready", "True", "ServingDegraded" if degraded else "Serving",
                "serving degraded: " + "; ".join(degraded) if degraded else
                "all desired replicas Ready at the declared capacity"))
        else:
            out.append(Condition(
                "Ready", "False",
                "NoServingCluster" if self.stranded else "ReplicasNotReady",
                "; ".join(c.message for c in out if (c.type == "Progressing" and c.status ==
                                                     "True") or c.reason == "NoServingCluster")
                or "no Ready replica yet"))
        return out

    def _step_text(self, leg: Leg) -> str:
        steps = self.d.tier.failback.steps
        step = self._step(leg)
        return f"{steps[step]}%" if step >= 0 else "0% (holding)"

    def scale(self) -> tuple[ScaleResult | None, int | None]:
        """Apply the scaling recommendation to the baseline per zone (``self.declared``):
        the total from load, spread over the placed zones in the placement's proportions
        (failover then moves the share of failed zones, as it does for declared numbers).
        Zones declared 0 stay empty and count for no bound."""
        scaling = self.spec.scaling
        if scaling is None or scaling.mode == "Off":
            return None, None
        cells = self.cells()
        current = self.d.scaled if self.d.scaled is not None else sum(self.declared.values())
        result = recommend(scaling, self.d.tier, self.d.load or Load(), current=current,
                           zones=len(cells), history=self.d.scaling_history, now=self.now,
                           forecast_missed_at=self.d.forecast_missed_at)
        total = current
        if result.replicas != current:
            inputs = {**result.inputs, "from": current, "to": result.replicas}
            # The approvals consumed so far tell a later identical suggestion (4 -> 8 again
            # after 8 -> 4) from an approved one; load jitter changes neither.
            decision = self.decide("Scale", f"{result.reason}: {current} -> {result.replicas} "
                                   "replicas", inputs,
                                   identity={"from": current, "to": result.replicas,
                                             "after": sorted(self.d.consumed)})
            if scaling.mode == "Suggest" and not self.approved(decision):
                if self.pending is None:
                    self.pending = replace(decision, applied=False)
            else:
                self.decisions.append(decision)
                total = result.replicas
        shares = apportion(total, {f"{c}\0{z}": float(self.declared[(c, z)]) for c, z in cells})
        low, high = scaling.min_replicas_per_zone, scaling.max_replicas_per_zone
        self.declared = {(c, z): (min(max(shares[f"{c}\0{z}"], low), high)
                                  if f"{c}\0{z}" in shares else 0)
                         for c, z in self.declared}
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
                + (f" and {unserved} unserved replicas" if unserved else "")
                + (f"; {', '.join(self.draining)} drained while rolling back from a revision"
                   " that failed its requests" if self.draining else "")
                + ("; " + ", ".join(f"{c} carries {n} more replicas" for c, n in
                                    sorted(self.surged.items())) + " meanwhile"
                   if self.surged else ""),
                {"from": dict(self.d.traffic), "to": weights,
                 "readyPrimary": {c: sum(self.ready(c, "primary", z) for (cc, z) in self.declared
                                         if cc == c) for c in self.placed},
                 "legs": {c: legs[c].state for c in self.placed}, "unserved": unserved,
                 **({"drained": self.draining} if self.draining else {}),
                 **({"surged": dict(sorted(self.surged.items()))} if self.surged else {})}))
        if unserved != self.d.unserved:
            total = sum(self.declared.values())
            after = f"; ranked after {self.ranked_after}" if self.ranked_after else ""
            self.decisions.append(self.decide(
                "Capacity",
                (f"{unserved} of {total} replicas cannot be placed ({self.shortage}); "
                 f"{weights.get(FALLBACK, 0)}% of traffic goes to the fallback model; "
                 f"GPUs are {rank_text(self.d, figures=True)}{after}"
                 if unserved else f"all {total} replicas placed again"),
                {"from": self.d.unserved, "to": unserved, "tier": self.spec.sla_tier,
                 "priority": self.d.tier.priority, "specPriority": self.spec.priority,
                 "demandTokensPerSecond": demand(self.d), "rankedAfter": self.ranked_after,
                 "shortage": self.shortage}))
        conditions = self.conditions(legs, replicas, weights, unserved)
        if scale is not None:
            conditions.append(Condition(  # a steady message: load jitter must not write
                "MetricsAvailable", "True" if scale.metrics_available else "False",
                "MetricsRead" if scale.metrics_available else "NoMetrics",
                "load is read from Prometheus" if scale.metrics_available else scale.reason))
        return DeploymentPlan(
            replicas=replicas, weights=weights, legs=legs, decisions=self.decisions,
            pending=self.pending, unserved=unserved, conditions=conditions, scale=scale,
            scaled=scaled, consumed=self.used_approval,
        )


def _with_fault(clusters: Mapping[str, ClusterView], fault: DrillFault | None
                ) -> Mapping[str, ClusterView]:
    """The clusters as a deployment under a drill sees them: its target Down (a whole
    cluster) or without Ready nodes (one zone) while the drill is ``Out``."""
    if fault is None or fault.stage != "Out" or fault.cluster not in clusters:
        return clusters
    view = clusters[fault.cluster]
    if fault.zone is None:
        drilled = replace(view, phase="Down")
    else:
        drilled = replace(view, zones_ready={**view.zones_ready, fault.zone: False})
    return {**clusters, fault.cluster: drilled}


def plan_fleet(deployments: Sequence[DeploymentInput], clusters: Mapping[str, ClusterView],
               *, now: datetime) -> dict[tuple[str, str], DeploymentPlan]:
    """Plan every deployment in rank order (:func:`rank_key`: tier, then ``spec.priority``,
    then measured demand): each takes the GPUs it needs (its own zones, the replicas kept
    where it does not serve, then what failed over or scaled up, then its fallback) from
    what those ranked ahead left. Pure."""
    ledger = _Ledger(clusters)
    order = sorted(deployments, key=rank_key)
    peers = {_holder(d): d for d in order}
    plans: dict[tuple[str, str], DeploymentPlan] = {}
    baselines = [baseline_gpus(d.spec) for d in order]
    after: dict[str, int] = {}  # what the deployments not planned yet need
    for own in baselines:
        for c, g in own.items():
            after[c] = after.get(c, 0) + g
    for d, own in zip(order, baselines, strict=True):
        def ahead(holder: str, me: DeploymentInput = d) -> str | None:
            return _ahead_by(peers[holder], me) if holder in peers else None

        for c, g in own.items():  # its own are not reserved from it
            after[c] -= g
        ledger.reserved = dict(after)
        plan = _Planner(d, clusters, ledger, now, ahead).plan()
        if plan.decisions or plan.pending is not None:
            # what it found: the summaries and reservations are untouched by its own takes
            plan = replace(plan, basis=ledger.state(ahead))
        ledger.close_turn(_holder(d))
        plans[(d.namespace, d.name)] = plan
    return plans


def replan(d: DeploymentInput, clusters: Mapping[str, ClusterView], basis: LedgerState,
           *, now: datetime) -> DeploymentPlan:
    """Plan one deployment alone as :func:`plan_fleet` planned it in its round: from its
    input, the cluster views and the ledger it found (``DeploymentPlan.basis``). Pure."""
    ledger = _Ledger(clusters, basis)
    return _Planner(d, clusters, ledger, now,
                    lambda h: basis.ahead.get(h) or None).plan()
