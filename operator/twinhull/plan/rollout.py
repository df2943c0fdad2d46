"""Revisions of a ModelDeployment: snapshots, the cluster-by-cluster rollout with
verification, automatic and manual rollback. Pure.

A *revision* is what a rollout changes in the pods: the primary and fallback models
(image, args, resources, env, port, runtime) and the renderer version; its content hash
is :func:`revision_of`. Replica counts, placement, scaling, traffic and rollback settings
are not revisions: they apply at once and never roll back.

Every revision that reaches a member is first recorded as a ``ModelSnapshot`` (named
``<deployment>-<hash[:10]>``: the same content reuses the same snapshot). The rules:

* **First revision** (no current snapshot): it goes to every cluster at once (there is
  nothing older to protect), then is verified.
* **New revision**: it starts only when every placed cluster serves (a rollout during a
  failover could take the only serving cluster down). It goes to one cluster at a time
  in placement order; the next cluster starts only once every Deployment of the previous
  one runs the new revision and is Ready. Clusters not reached yet keep the running one.
* **Verification**: once every cluster runs it, the revision is watched for the tier's
  verification window; it is ``Good`` if error rate and p95 latency stay within the
  tier's targets (where the metrics exist). Readings are the revision's own (the pods'
  revision label) where Prometheus has them; metrics lag the pods (discovery, scrape
  hops, the rate window), so while the deployment has series, or served requests within
  the last hour (its series vanish for a scrape or two while old pods go and new ones
  start), but none of the new revision yet, the window waits for them and then counts a
  whole window of the revision's own readings. Only when no series of it appear within
  :data:`UNMEASURED_GRACE_SECONDS` (a revision nobody sends requests to) is it verified
  on readiness alone, and the verdict says so. While Prometheus cannot be read for the
  deployment, no verdict is given: no reading is not a good reading. A breach at any
  time during the rollout, or not being Ready everywhere within
  ``progressDeadlineSeconds``, makes it ``Bad``.
* **Pause**: while a placed cluster does not serve (Down, failed over, not Healthy), a
  rollout (first or new revision) is *paused*: no cluster takes its step, the progress
  deadline stops counting and no verdict is given, because a cluster that cannot run
  anything says nothing about the revision. When every cluster serves again it goes on
  where it stopped, the verification window starts afresh, and the deadline counts only
  the time with every cluster serving. Breaches of the error rate or latency still fail
  it: those are measured on the pods that run.
* **Automatic rollback** (tier ``automaticRollback``): a Bad revision is replaced by the
  last Good snapshot in every cluster at once, the spec's revision is *held back* (not
  retried until the spec changes), ``RolledBack=True`` says why.
* **Manual rollback**: a request (annotation) names a snapshot (default: the last Good
  one before the current); it goes to every cluster at once and the spec is held back
  the same way.

A cluster renders exactly the snapshot it is given (:func:`with_revision`): its primary
and its fallback model, or no fallback if the snapshot had none, so its Deployments reach
the snapshot's hash. The fleet planner plans replicas from :func:`effective_spec`, the
spec as the clusters run it, so a fallback that only the snapshot has gets its replicas.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.api.tier import ServingTierSpec
from twinhull.plan.fleet import Condition, Decision, decision_id
from twinhull.plan.render import revision_of
from twinhull.plan.slo import page_burn

Outcome = Literal["Pending", "Good", "Bad"]
Mode = Literal["Initial", "Rollout", "Rollback"]
Reading = tuple[float | None, float | None]
"""Error percent and p95 latency in seconds (None: no such metric)."""
Burn = tuple[float | None, float | None, float | None]
"""Error percent over the page condition's long and short windows
(:data:`~twinhull.plan.slo.PAGE`: 1 h, 5 m) and the requests ended over the long one."""
UNMEASURED_GRACE_SECONDS = 120.0
"""Seconds after every cluster runs a revision that verification waits, beyond the
window, for the revision's own series while the deployment has series of other revisions
(or served requests within the hour): longer than the default rate window (1m) and a
scrape path's lag, so older revisions' series have left every rate window by then."""
DRAINING = frozenset({"ErrorRateExceeded", "LatencyExceeded", "BurnRateExceeded"})
"""Why a revision can fail on the requests it served: a rollback for one of these drains
the clusters where it was Ready (:attr:`Rollout.drained`). A missed progress deadline
says nothing of the pods that were Ready, and a manual rollback is an SRE's call."""


def snapshot_name(deployment: str, revision: str) -> str:
    """The ModelSnapshot of a revision: ``<deployment>-<hash[:10]>`` (at most 253). Pure."""
    return f"{deployment[:242]}-{revision[:10]}"


def with_revision(spec: ModelDeploymentSpec, revision: ModelDeploymentSpec
                  ) -> ModelDeploymentSpec:
    """``spec`` (placement, replicas, scaling…) running the models of ``revision``, so that
    what it renders has ``revision``'s hash (:func:`revision_of` covers the fallback too):

    * the revision's primary model;
    * the revision's fallback model with the spec's ``replicasPerZone`` when both have a
      fallback (replica counts are not revisions: they apply at once);
    * the revision's whole fallback (model and ``replicasPerZone``) when only it has one,
      e.g. a rollback to a snapshot taken before the fallback was removed from the spec;
    * no fallback when the revision has none, even if the spec has one.

    Pure."""
    if revision.fallback is None:
        fallback = None
    elif spec.fallback is None:
        fallback = revision.fallback
    else:
        fallback = spec.fallback.model_copy(update={"model": revision.fallback.model})
    return spec.model_copy(update={"model": revision.model, "fallback": fallback})


@dataclass(frozen=True)
class Snapshot:
    """A recorded revision (a ModelSnapshot), or one about to be recorded."""

    name: str
    hash: str
    generation: int
    source: ModelDeploymentSpec | str = field(compare=False, repr=False)
    """The revision's spec, or the JSON of one already validated, validated again when
    :attr:`spec` is first read. A deployment keeps up to its history limit of snapshots
    (10 by default) and a round reads the spec of the one or two it renders: a validated
    spec held ~8 KB, its JSON ~1 KB (``tests/bench/round_memory.py --history``)."""
    reason: str = "NewRevision"
    outcome: Outcome = "Pending"
    created: datetime | None = None

    @cached_property
    def spec(self) -> ModelDeploymentSpec:
        """The revision's spec (validated once, on the first read)."""
        if isinstance(self.source, ModelDeploymentSpec):
            return self.source
        return ModelDeploymentSpec.model_validate(json.loads(self.source))


@dataclass(frozen=True)
class Rollout:
    """A revision on its way (kept in ``status.rollout``)."""

    target: str
    """The snapshot being rolled out (or rolled back to)."""
    mode: Mode
    since: datetime
    done: tuple[str, ...] = ()
    """Clusters that run the target and are Ready (Rollout mode: in order)."""
    verifying_since: datetime | None = None
    measured_since: datetime | None = None
    """When Prometheus first had series of the target revision itself while every cluster
    ran it: the verification window counts the revision's own readings from here."""
    failed: str = ""
    """Why the target failed while no rollback was possible. It is not rolled back; should
    it become Ready after all, it goes on and is verified like any other."""
    paused_since: datetime | None = None
    """Since when the rollout is paused because a placed cluster does not serve (None:
    not paused)."""
    paused_seconds: float = 0.0
    """Seconds of the pauses that have ended: the progress deadline does not count them."""
    drained: tuple[str, ...] = ()
    """Rollback mode: clusters where the Bad revision was Ready when it failed on its own
    requests (:data:`DRAINING`): their Ready pods may still be Bad ones (``maxUnavailable:
    0`` keeps them until the Good ones load), so the fleet planner gives them no traffic
    while another cluster has Ready primary capacity. Each leaves once it runs the Good
    revision again."""

    def active_seconds(self, now: datetime) -> float:
        """Seconds since the rollout started, the paused ones left out: what the progress
        deadline counts. Constant while paused. Pure."""
        paused = self.paused_seconds
        if self.paused_since is not None:
            paused += (now - self.paused_since).total_seconds()
        return (now - self.since).total_seconds() - paused


@dataclass(frozen=True)
class Health:
    """What Prometheus says of the deployment now (None: no such metric)."""

    error_percent: float | None = None
    latency_p95_seconds: float | None = None
    revisions: Mapping[str, Reading] = field(default_factory=dict)
    """The same per revision hash, for the revisions whose pods have series in the window
    (empty where not read)."""
    burn: Mapping[str, Burn] = field(default_factory=dict)
    """Per revision hash, the inputs of the page-level burn-rate condition (empty where
    not read: e.g. with a failure metric that has no revision label)."""
    recent: float | None = None
    """Requests of the deployment, any revision, that ended over the page condition's long
    window (:data:`~twinhull.plan.slo.PAGE`, an hour); None: no series. A deployment that
    served in it has series that can lag a new revision's pods by a scrape or two: until
    the revision shows its own, readiness alone does not verify it before the grace."""
    unread: str = ""
    """Why Prometheus could not be read for the deployment (down, its runtime's queries
    failed, not read yet); empty: it was, or there is no Prometheus. Verification holds
    while it is set: no reading is not a good reading."""

    def measured(self) -> bool:
        """Whether Prometheus has any series of the deployment now. Pure."""
        return bool(self.revisions) or self.error_percent is not None \
            or self.latency_p95_seconds is not None

    def served(self) -> bool:
        """Whether the deployment has series now or served requests within the last hour
        (its series can be missing for a scrape while old pods go and new ones start).
        Pure."""
        return self.measured() or bool(self.recent)

    def of(self, revision: str) -> Health:
        """The revision's own readings where it has series, else the deployment's. Pure."""
        burn = {revision: self.burn[revision]} if revision in self.burn else {}
        if revision in self.revisions:
            errors, latency = self.revisions[revision]
            return Health(errors, latency, {revision: (errors, latency)}, burn,
                          self.recent, self.unread)
        return Health(self.error_percent, self.latency_p95_seconds, burn=burn,
                      recent=self.recent, unread=self.unread)


@dataclass(frozen=True)
class RollbackRequest:
    """A manual rollback asked for through the annotation."""

    id: str
    to: str | None
    """Snapshot name; None: the last Good one before the current."""
    by: str = ""
    at: str = ""


@dataclass(frozen=True)
class RevisionInput:
    """Everything the revision planner needs about one ModelDeployment."""

    namespace: str
    name: str
    spec: ModelDeploymentSpec
    generation: int
    tier: ServingTierSpec
    now: datetime
    snapshots: Sequence[Snapshot] = ()
    current: str | None = None
    last_good: str | None = None
    held_back: str | None = None
    """A revision hash rolled back and not to be retried while the spec asks for it."""
    held_back_why: tuple[str, str] | None = None
    """Why it was rolled back: (reason, message), as the rollback decided it."""
    rollout: Rollout | None = None
    serving: frozenset[str] = frozenset()
    """Placed clusters that serve their full share now (failover legs Serving)."""
    states: Mapping[str, str] = field(default_factory=dict)
    """Per placed cluster that does not serve: what it is (``Down``, ``FailedOver``…), for
    messages only (missing: "does not serve")."""
    settled: Mapping[str, str | None] = field(default_factory=dict)
    """Per placed cluster: the revision every Deployment there runs, Ready and fully
    rolled out; None while mixed, not Ready or unobserved."""
    health: Health = field(default_factory=Health)
    request: RollbackRequest | None = None
    """A manual rollback request not handled yet."""


@dataclass(frozen=True)
class RevisionPlan:
    """Which snapshot to render in each cluster, and the new revision state."""

    render: dict[str, Snapshot]
    record: Snapshot | None
    """A snapshot to create before anything is published (None: all recorded)."""
    outcomes: dict[str, tuple[Outcome, str, str]]
    """Snapshot name to a new (outcome, reason, message)."""
    current: str
    last_good: str | None
    held_back: str | None
    held_back_why: tuple[str, str] | None
    rollout: Rollout | None
    decisions: list[Decision]
    conditions: list[Condition]
    handled: RollbackRequest | None = None
    """The request this plan handled, with ``to`` resolved (None if none)."""
    request_error: str = ""
    again: frozenset[str] = frozenset()
    """Names in ``outcomes`` that are no new verdict but one the status already states,
    written again (:meth:`_Revisions.recorded_again`)."""


class _Revisions:
    def __init__(self, i: RevisionInput) -> None:
        self.i = i
        self.by_name = {s.name: s for s in i.snapshots}
        self.by_hash = {s.hash: s for s in i.snapshots}
        self.clusters = [p.cluster for p in i.spec.placement]
        self.decisions: list[Decision] = []
        self.conditions: list[Condition] = []
        self.outcomes: dict[str, tuple[Outcome, str, str]] = {}
        self.again: set[str] = set()
        want = revision_of(i.spec)
        known = self.by_hash.get(want)
        if known is not None and known.source is not i.spec:
            # the spec's own revision: its models are the spec's (the hash covers them all,
            # and a snapshot's models are all the planner reads of its spec), so a snapshot
            # kept as JSON is not validated again to render what runs
            known = replace(known, source=i.spec)
            self.by_name[known.name] = self.by_hash[want] = known
        self.desired = known or Snapshot(snapshot_name(i.name, want), want, i.generation,
                                         i.spec)
        self.record = None if known else self.desired
        if known is None:
            self.by_name[self.desired.name] = self.desired
        self.current = self.by_name.get(i.current or "")
        self.last_good = self.by_name.get(i.last_good or "")
        self.held_back = i.held_back
        self.rollout = i.rollout if i.rollout and i.rollout.target in self.by_name else None
        self.handled: RollbackRequest | None = None
        self.request_error = ""
        self.waiting: list[str] = []
        self.rollback_reason: tuple[str, str] | None = i.held_back_why

    def decide(self, kind: str, reason: str, inputs: Mapping[str, Any]) -> None:
        self.decisions.append(Decision(decision_id(self.i.namespace, self.i.name, kind, inputs),
                                       kind, reason, dict(inputs)))

    def outcome(self, snap: Snapshot, outcome: Outcome, reason: str, message: str) -> None:
        self.outcomes[snap.name] = (outcome, reason, message)
        snap = replace(snap, outcome=outcome)
        self.by_name[snap.name] = snap
        if self.current and self.current.name == snap.name:
            self.current = snap

    def good_before(self, exclude: str) -> Snapshot | None:
        """The rollback target: the last Good snapshot that is not ``exclude``."""
        if self.last_good and self.last_good.hash != exclude:
            return self.last_good
        goods = [s for s in self.by_name.values() if s.outcome == "Good" and s.hash != exclude]
        goods.sort(key=lambda s: (s.created or self.i.now, s.generation))
        return goods[-1] if goods else None

    # -- steps ------------------------------------------------------------------------

    def manual(self) -> None:
        request = self.i.request
        if request is None:
            return
        running = self.current.hash if self.current else ""
        target = (self.by_name.get(request.to) if request.to else self.good_before(running))
        if target is None or (target.name == self.desired.name and self.record is not None):
            self.request_error = (f"no snapshot {request.to!r} of {self.i.name}; "
                                  "`twinhull history` lists them" if request.to else
                                  "no Good snapshot to roll back to")
            self.handled = request
            return
        self.handled = replace(request, to=target.name)
        self.start_rollback(target, "ManualRollback",
                            f"rollback to {target.name} requested by {request.by or 'someone'}"
                            f" at {request.at or 'an unknown time'}",
                            {"request": request.id, "by": request.by})

    def start_rollback(self, target: Snapshot, reason: str, why: str,
                       inputs: Mapping[str, Any]) -> None:
        bad = self.rollout.target if self.rollout else (self.current.name if self.current
                                                       else "")
        if self.desired.hash != target.hash:
            self.held_back = self.desired.hash
        drained: tuple[str, ...] = ()
        if reason in DRAINING and self.rollout is not None:
            failed = self.by_name[self.rollout.target].hash
            drained = tuple(c for c in self.clusters if c in self.rollout.done
                            or self.i.settled.get(c) == failed)
            if len(drained) == len(self.clusters):
                drained = ()  # no other cluster to take the traffic
        self.decide("Rollback", f"{why}: every cluster returns to {target.name}" + (
            f"; {', '.join(drained)} {'gets' if len(drained) == 1 else 'get'} no traffic "
            "until it runs it again, while another cluster has Ready capacity"
            if drained else ""),
                    {"from": bad, "to": target.name, "reason": reason, **inputs,
                     **({"drained": list(drained)} if drained else {})})
        self.rollback_reason = (reason, f"{why}; from {bad or 'nothing'} to {target.name}")
        self.current = target
        self.rollout = Rollout(target=target.name, mode="Rollback", since=self.i.now,
                               drained=drained)

    def start(self) -> None:
        """Begin a rollout of the spec's revision when one is due."""
        i, want, r = self.i, self.desired, self.rollout
        if want.hash == self.held_back:
            return  # rolled back: not retried until the spec changes
        self.held_back = None
        if r is not None:
            if r.target == want.name:
                return
            if r.mode == "Rollback":
                self.waiting = ["the rollback in progress"]
                return
            self.rollout = None  # the spec changed mid-rollout: the new revision replaces it
        if self.current is None:
            self.current = want
            self.rollout = Rollout(want.name, "Initial", i.now)
            return
        if want.name == self.current.name:
            # e.g. a rollout replaced before verified; not the last Good one, whose outcome
            # write failed while the status landed (:meth:`recorded_again` writes it)
            if self.current.outcome == "Pending" and self.current.name != (
                    self.last_good.name if self.last_good else None):
                self.rollout = Rollout(want.name, "Initial", i.now)
            return
        if set(self.clusters) - i.serving:
            self.waiting = sorted(set(self.clusters) - i.serving)
            return
        self.rollout = Rollout(want.name, "Rollout", i.now)
        self.decide("Rollout", f"new revision {want.name} (generation {i.generation}) rolls "
                    f"out one cluster at a time: {', '.join(self.clusters)}",
                    {"from": self.current.name, "to": want.name, "generation": i.generation})

    def advance(self) -> None:
        """Move the rollout on: next cluster, verification, outcome or rollback."""
        r = self.rollout
        if r is None:
            return
        i = self.i
        target = self.by_name[r.target]
        if r.mode != "Rollback":
            r = self.pause(r, target)
        paused = r.paused_since is not None
        done = list(r.done)
        if r.mode == "Rollout" and not paused:
            for c in self.clusters:
                if c in done:
                    continue
                if i.settled.get(c) != target.hash:
                    break
                done.append(c)
                if len(done) < len(self.clusters):
                    self.decide("RolloutStep", f"{c} runs {target.name} and is Ready: the next"
                                " cluster follows", {"cluster": c, "to": target.name})
        elif r.mode != "Rollout":
            done = [c for c in self.clusters if i.settled.get(c) == target.hash]
        r = replace(r, done=tuple(done), drained=tuple(c for c in r.drained if c not in done))
        complete = len(done) == len(self.clusters)
        if paused:  # the window starts afresh once every cluster serves again
            r = replace(r, verifying_since=None, measured_since=None)
        elif complete and r.verifying_since is None:
            r = replace(r, verifying_since=i.now)
        if complete and not paused and r.measured_since is None \
                and target.hash in i.health.revisions:
            r = replace(r, measured_since=i.now)
        self.rollout = r
        if r.mode == "Rollback":
            if complete:
                self.decide("RollbackComplete", f"every cluster runs {target.name} again and "
                            "is Ready", {"to": target.name})
                self.rollout = None
            return
        if r.failed and not complete:
            return  # failed with nothing to roll back to: it may still become Ready
        breach = self.breach(target) if any(i.settled.get(c) == target.hash or c in done
                                            for c in self.clusters) else None
        deadline = self.i.spec.rollback.progress_deadline_seconds
        late = not paused and not complete and r.active_seconds(i.now) > deadline
        if breach is None and late and not r.failed:
            missing = [c for c in self.clusters if c not in done]
            breach = ("ProgressDeadlineExceeded",
                      f"not Ready in {', '.join(missing)} within {deadline}s"
                      + (f" of every cluster serving (paused {r.paused_seconds:.0f}s while "
                         "a cluster did not serve)" if r.paused_seconds else ""))
        if breach is not None:
            if not r.failed:
                self.fail(target, *breach)
            return
        if paused:
            return  # no verdict while a cluster cannot run the revision
        window = self.i.tier.verification.window_seconds
        verdict = self.verified(r, target, window) if complete else None
        if verdict is not None:
            self.outcome(target, "Good", "Verified", verdict)
            self.decide("RolloutComplete", f"{target.name} is Good: {verdict}",
                        {"to": target.name, "health": self.health_inputs(target)})
            self.current = self.by_name[target.name]
            self.last_good = self.current
            self.rollout = None

    def verified(self, r: Rollout, target: Snapshot, window: int) -> str | None:
        """Why the target is Good now, or None while its window runs: a whole window of
        the revision's own readings, or of readiness where the deployment has no series
        and served nothing within the hour, or where none of the revision's appear within
        the grace. None too while Prometheus cannot be read for it. Pure."""
        now, health = self.i.now, self.i.health
        if r.verifying_since is None or (now - r.verifying_since).total_seconds() < window:
            return None
        if health.unread:
            return None
        own = self.health_text(target)
        if r.measured_since is not None:
            if (now - r.measured_since).total_seconds() < window:
                return None
            return (f"Ready in every cluster and its own requests within the tier's targets "
                    f"for {window}s{own}")
        if not health.served():
            return f"Ready in every cluster for {window}s{own}"
        if (now - r.verifying_since).total_seconds() < window + UNMEASURED_GRACE_SECONDS:
            return None
        return (f"Ready in every cluster for {window}s; no series of revision "
                f"{target.hash[:10]} in Prometheus within {UNMEASURED_GRACE_SECONDS:.0f}s "
                "more (no requests reached it?): verified on readiness alone")

    def not_serving(self) -> list[str]:
        return [c for c in self.clusters if c not in self.i.serving]

    def absent(self, clusters: Sequence[str]) -> str:
        """E.g. "cluster west is Down", from the input's states."""
        return ", ".join(f"cluster {c} is {self.i.states[c]}" if self.i.states.get(c) else
                         f"cluster {c} does not serve" for c in clusters)

    def pause(self, r: Rollout, target: Snapshot) -> Rollout:
        """Pause the rollout while a placed cluster does not serve, resume it when every
        one does, and account for the paused time."""
        now, missing = self.i.now, self.not_serving()
        if missing and r.paused_since is None:
            self.decide("RolloutPaused", f"{target.name} pauses: {self.absent(missing)}; "
                        "no cluster takes a step and the progress deadline stops until "
                        "every placed cluster serves again",
                        {"to": target.name, "notServing": missing,
                         "since": now.isoformat()})
            return replace(r, paused_since=now)
        if not missing and r.paused_since is not None:
            paused = (now - r.paused_since).total_seconds()
            self.decide("RolloutResumed", f"{target.name} goes on: every placed cluster "
                        f"serves again after {paused:.0f}s; the progress deadline counts "
                        "again", {"to": target.name, "pausedSeconds": round(paused, 3),
                                  "since": r.paused_since.isoformat()})
            return replace(r, paused_since=None, paused_seconds=r.paused_seconds + paused)
        return r

    def breach(self, target: Snapshot) -> tuple[str, str] | None:
        v, h = self.i.tier.verification, self.i.health.of(target.hash)
        max_errors, max_latency = float(v.max_error_rate_percent), float(
            v.max_latency_p95_seconds)
        if h.error_percent is not None and h.error_percent > max_errors:
            return ("ErrorRateExceeded",
                    f"error rate {h.error_percent:.2f}% above the tier's {max_errors:g}%")
        if h.latency_p95_seconds is not None and h.latency_p95_seconds > max_latency:
            return ("LatencyExceeded", f"p95 latency {h.latency_p95_seconds:.2f}s above the "
                    f"tier's {max_latency:g}s")
        if target.hash in h.burn:
            why = page_burn(self.i.tier.availability_target, *h.burn[target.hash])
            if why is not None:
                return ("BurnRateExceeded", why)
        return None

    def health_text(self, target: Snapshot) -> str:
        h = self.i.health.of(target.hash)
        parts = []
        if h.error_percent is not None:
            parts.append(f"error rate {h.error_percent:.2f}%")
        if h.latency_p95_seconds is not None:
            parts.append(f"p95 latency {h.latency_p95_seconds:.2f}s")
        if not parts:
            return " (no error or latency metrics)"
        whose = "its own" if target.hash in h.revisions else "the deployment's"
        return f" ({whose}: {', '.join(parts)})"

    def health_inputs(self, target: Snapshot) -> dict[str, Any]:
        """The readings a verdict on ``target`` used, for the decision's inputs. Pure."""
        h = self.i.health.of(target.hash)
        out: dict[str, Any] = {"errorPercent": h.error_percent,
                               "latencyP95Seconds": h.latency_p95_seconds,
                               "revision": target.hash if target.hash in h.revisions else None,
                               "requestsLastHour": h.recent}
        if target.hash in h.burn:
            long, short, ended = h.burn[target.hash]
            out["burn"] = {"errorPercentLong": long, "errorPercentShort": short,
                           "requestsLong": ended}
        return out

    def fail(self, target: Snapshot, reason: str, message: str) -> None:
        self.outcome(target, "Bad", reason, message)
        back = self.good_before(target.hash)
        if not self.i.tier.automatic_rollback or back is None:
            why = ("the tier does not roll back automatically" if back is not None
                   else "there is no Good snapshot to return to")
            assert self.rollout is not None
            self.rollout = replace(self.rollout, failed=f"{reason}: {message}; {why}")
            self.decide("RolloutFailed", f"{target.name} is Bad ({message}); {why}",
                        {"to": target.name, "reason": reason})
            return
        self.start_rollback(back, reason, f"{target.name} is Bad: {message}",
                            {"health": self.health_inputs(target)})

    def recorded_again(self) -> None:
        """The outcomes the status read this round already states but whose snapshot does
        not show: the status landed while the outcome's write failed (each is written just
        before it, and a failed one does not hold the status). Written again, so that
        `twinhull history`, retention and a later rollback to "the last Good" agree with
        the status. Never a new verdict, and only over no verdict (``Pending``): the last
        Good snapshot is Good, and a revision held back by an automatic rollback is Bad
        for the reason recorded with it (a manual rollback's hold says nothing of the
        revision)."""
        good = self.by_name.get(self.i.last_good or "")
        if good is not None and good.outcome == "Pending" and good.name not in self.outcomes:
            self.outcomes[good.name] = ("Good", "Verified", "recorded again: the status "
                                        "names it the last Good snapshot")
            self.again.add(good.name)
        why = self.i.held_back_why
        bad = self.by_hash.get(self.i.held_back or "")
        if bad is not None and why is not None and why[0] != "ManualRollback" \
                and bad.outcome == "Pending" and bad.name not in self.outcomes:
            self.outcomes[bad.name] = ("Bad", why[0], f"recorded again: {why[1]}")
            self.again.add(bad.name)

    # -- output -----------------------------------------------------------------------

    def renders(self) -> dict[str, Snapshot]:
        """The snapshot each cluster runs: in a rollout, the clusters done and the one being
        updated run the target, the others the current one."""
        assert self.current is not None
        r = self.rollout
        if r is None:
            return dict.fromkeys(self.clusters, self.current)
        target = self.by_name[r.target]
        if r.mode != "Rollout":
            return dict.fromkeys(self.clusters, target)
        updating = next((c for c in self.clusters if c not in r.done), None)
        return {c: target if c in r.done or c == updating else self.current
                for c in self.clusters}

    def plan(self) -> RevisionPlan:
        self.manual()
        if self.handled is None or self.request_error:
            self.start()
        self.advance()
        self.recorded_again()
        assert self.current is not None
        self.conditions = self.status_conditions()
        return RevisionPlan(
            render=self.renders(), record=self.record, outcomes=self.outcomes,
            current=self.current.name,
            last_good=self.last_good.name if self.last_good else None,
            held_back=self.held_back,
            held_back_why=self.rollback_reason if self.held_back else None,
            rollout=self.rollout, decisions=self.decisions,
            conditions=self.conditions, handled=self.handled,
            request_error=self.request_error, again=frozenset(self.again))

    def status_conditions(self) -> list[Condition]:
        out: list[Condition] = []
        r = self.rollout
        if r is not None and r.failed:
            out.append(Condition("Progressing", "False", "RolloutFailed",
                                 f"{r.target}: {r.failed}"))
        elif r is not None and r.paused_since is not None:
            deadline = self.i.spec.rollback.progress_deadline_seconds
            out.append(Condition(
                "Progressing", "True", "RolloutPaused",
                f"{r.target} paused: {self.absent(self.not_serving())}; it goes on when "
                "every placed cluster serves again (verification then starts afresh); "
                f"the progress deadline is paused too: "
                f"{max(0, int(r.active_seconds(self.i.now)))}s of {deadline}s used"))
        elif r is not None and r.mode == "Rollback":
            out.append(Condition("Progressing", "True", "RollingBack",
                                 f"returning every cluster to {r.target}; Ready in "
                                 f"{', '.join(r.done) or 'none yet'}"))
        elif r is not None and r.verifying_since is not None:
            target = self.by_name[r.target]
            health = self.i.health
            wait = (f", once Prometheus can be read ({health.unread})" if health.unread else
                    "" if r.measured_since is not None or not health.served() else
                    f", once Prometheus has series of revision {target.hash[:10]} itself "
                    "(metrics lag the pods)")
            out.append(Condition("Progressing", "True", "Verifying",
                                 f"{r.target} runs everywhere; verifying for "
                                 f"{self.i.tier.verification.window_seconds}s{wait}"
                                 + self.health_text(target)))
        elif r is not None:
            at = next((c for c in self.clusters if c not in r.done), "")
            out.append(Condition("Progressing", "True", "RollingOut",
                                 f"{r.target} rolling out: done {', '.join(r.done) or 'none'};"
                                 f" now {at}" if r.mode == "Rollout" else
                                 f"{r.target} starting in every cluster"))
        elif self.waiting:
            out.append(Condition("Progressing", "True", "WaitingToRollOut",
                                 f"{self.desired.name} waits for {', '.join(self.waiting)}: a "
                                 "rollout starts only when every placed cluster serves"))
        if self.held_back is not None and self.held_back == self.desired.hash:
            reason, why = self.rollback_reason or ("HeldBack", "")
            assert self.current is not None
            out.append(Condition(
                "RolledBack", "True", reason,
                (why + "; " if why else "") +
                f"spec (generation {self.i.generation}, {self.desired.name}) is held back: "
                f"{self.current.name} runs; change the spec (e.g. revert it in Git) to roll "
                "out again"))
        else:
            out.append(Condition("RolledBack", "False", "RunningSpec",
                                 "the running revision is the spec's"
                                 if r is None or r.target == self.desired.name else
                                 "a revision is on its way"))
        return out


def plan_revision(i: RevisionInput) -> RevisionPlan:
    """Plan the revision state of one ModelDeployment. Pure."""
    return _Revisions(i).plan()


def effective_spec(spec: ModelDeploymentSpec, plan: RevisionPlan) -> ModelDeploymentSpec:
    """The spec the fleet planner plans replicas, GPUs and weights from: ``spec`` running
    the snapshot the clusters render (:func:`with_revision`), so that a rollback to a
    snapshot with a fallback the spec dropped plans that fallback's replicas, and one to a
    snapshot without a fallback plans none.

    In a cluster-by-cluster rollout two snapshots run at once; the rollout's target is
    chosen unless only the other one has a fallback. Planning a fallback some clusters do
    not run is harmless (:func:`~twinhull.plan.render.member_objects` renders a role only
    if the cluster's revision has it); not planning one that runs would leave it without
    replicas. Pure."""
    running = list(plan.render.values())
    if not running:
        return spec
    target = next((s for s in running if plan.rollout and s.name == plan.rollout.target),
                  running[0])
    chosen = target if target.spec.fallback is not None else next(
        (s for s in running if s.spec.fallback is not None), target)
    return with_revision(spec, chosen.spec)


def prune(snapshots: Sequence[Snapshot], limit: int, keep: set[str]) -> list[str]:
    """Snapshots to delete: all but the newest ``limit`` and those in ``keep`` (current,
    last Good, rollout target). Pure."""
    newest = sorted(snapshots, key=lambda s: (s.created is not None, s.created, s.generation),
                    reverse=True)
    kept = {s.name for s in newest[:limit]} | keep
    return sorted(s.name for s in snapshots if s.name not in kept)
