"""Revisions: snapshots, cluster-by-cluster rollout, verification, automatic and manual
rollback. Pure: simulated time, no cluster."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from twinhull.api import ModelDeployment
from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.plan.fleet import ClusterView, DeploymentInput, plan_fleet
from twinhull.plan.render import REVISION, ROLE, member_objects, revision_of
from twinhull.plan.rollout import (
    UNMEASURED_GRACE_SECONDS,
    Health,
    RevisionInput,
    RevisionPlan,
    RollbackRequest,
    Snapshot,
    effective_spec,
    plan_revision,
    prune,
    snapshot_name,
    with_revision,
)
from twinhull.policy import load_file

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TIERS = load_file()
IDE = ModelDeployment.model_validate(
    next(yaml.safe_load_all((ROOT / "examples" / "ide-assistant.yaml").read_text())))
BOTH = frozenset({"east", "west"})
VIEWS = {c: ClusterView(c, "Healthy", {f"{c}-a": True, f"{c}-b": True}, 64)
         for c in ("east", "west")}


def image(spec: ModelDeploymentSpec, tag: str) -> ModelDeploymentSpec:
    return spec.model_copy(update={"model": spec.model.model_copy(
        update={"image": f"vllm/vllm-openai:{tag}"})})


class Fleet:
    """Runs the planner round after round, persisting what the operator persists (status
    and snapshots) and letting each cluster settle on what it was given."""

    def __init__(self, spec: ModelDeploymentSpec, tier: str = "critical",
                 rendered: bool = False) -> None:
        self.spec = spec
        self.tier = TIERS.resolve(tier)
        self.now = T0
        self.snapshots: dict[str, Snapshot] = {}
        self.status: dict = {}
        self.running: dict[str, str | None] = {"east": None, "west": None}
        self.healthy = {"east": True, "west": True}
        """False: the cluster does not serve (Down): not in ``serving``, nothing settles."""
        self.slow: set[str] = set()
        """Clusters that serve but whose pods never become Ready (e.g. a slow model load)."""
        self.health = Health()
        self.request: RollbackRequest | None = None
        self.generation = 1
        self.seen: list[dict[str, str]] = []
        self.rendered = rendered
        """True: a cluster settles on the revision annotation of the Deployments rendered
        as the operator renders them (replicas planned by the fleet planner from
        :func:`effective_spec`, objects from :func:`with_revision`), not on the hash of
        the snapshot it was given."""
        self.objects: dict[str, list[dict]] = {}

    def apply(self, spec: ModelDeploymentSpec) -> None:
        self.spec = spec
        self.generation += 1

    def round(self, seconds: float = 5) -> RevisionPlan:
        self.now += timedelta(seconds=seconds)
        plan = plan_revision(RevisionInput(
            namespace="ai", name="ide", spec=self.spec, generation=self.generation,
            tier=self.tier, now=self.now, snapshots=list(self.snapshots.values()),
            current=self.status.get("current"), last_good=self.status.get("last_good"),
            held_back=self.status.get("held_back"), rollout=self.status.get("rollout"),
            held_back_why=self.status.get("why"),
            serving=frozenset(c for c, ok in self.healthy.items() if ok),
            states={c: "Down" for c, ok in self.healthy.items() if not ok},
            settled=dict(self.running), health=self.health, request=self.request))
        if plan.record is not None:
            self.snapshots[plan.record.name] = replace(plan.record, created=self.now)
        for name, (outcome, _, _) in plan.outcomes.items():
            self.snapshots[name] = replace(self.snapshots[name], outcome=outcome)
        self.status = {"current": plan.current, "last_good": plan.last_good,
                       "held_back": plan.held_back, "rollout": plan.rollout,
                       "why": plan.held_back_why}
        if plan.handled is not None:
            self.request = None
        rendered = ({c: s.hash for c, s in plan.render.items()} if not self.rendered else
                    self.render(plan))
        self.seen.append(rendered)
        for c, h in rendered.items():  # what a cluster is given settles by the next round
            if c in self.slow or self.crashing(c, h):
                self.running[c] = None
            elif self.healthy[c]:
                self.running[c] = h
        return plan

    def render(self, plan: RevisionPlan) -> dict[str, str]:
        """What the operator publishes to each cluster, and the one revision its
        Deployments are annotated with (none if they disagree)."""
        planned = effective_spec(self.spec, plan)
        replicas = plan_fleet([DeploymentInput("ai", "ide", planned, self.tier)], VIEWS,
                              now=self.now)[("ai", "ide")].replicas
        self.objects = {c: member_objects("ide", "ai", c, with_revision(self.spec, s.spec),
                                          self.tier, replicas)
                        for c, s in plan.render.items()}
        out = {}
        for c, objects in self.objects.items():
            revisions = {o["metadata"]["annotations"][REVISION] for o in deployments(objects)}
            out[c] = revisions.pop() if len(revisions) == 1 else "mixed"
        return out

    def crashing(self, cluster: str, revision: str) -> bool:
        if revision == revision_of(self.spec):  # (not the snapshot's: it may be JSON)
            return self.spec.model.image.endswith("-crashloop")
        snap = next((s for s in self.snapshots.values() if s.hash == revision), None)
        return snap is not None and snap.spec.model.image.endswith("-crashloop")

    def until(self, check, rounds: int = 200, seconds: float = 5) -> RevisionPlan:
        for _ in range(rounds):
            plan = self.round(seconds)
            if check(plan):
                return plan
        raise AssertionError("never happened")


def deployments(objects: list[dict], role: str | None = None) -> list[dict]:
    return [o for o in objects if o["kind"] == "Deployment"
            and (role is None or o["metadata"]["labels"][ROLE] == role)]


def cond(plan: RevisionPlan, kind: str):
    return next(c for c in plan.conditions if c.type == kind)


def good(fleet: Fleet) -> Fleet:
    fleet.until(lambda p: p.last_good is not None)
    return fleet


def test_the_first_revision_is_recorded_everywhere_at_once_then_verified_good():
    f = Fleet(IDE.spec)
    first = f.round()
    assert first.record is not None and first.record.hash == revision_of(IDE.spec)
    assert first.rollout is not None and first.rollout.mode == "Initial"
    assert set(first.render) == {"east", "west"}
    plan = f.until(lambda p: p.rollout is None)
    assert plan.last_good == plan.current == first.record.name
    assert f.snapshots[first.record.name].outcome == "Good"
    assert [d.kind for d in plan.decisions] == ["RolloutComplete"]
    # verified only after the critical tier's window
    assert (f.now - T0).total_seconds() >= TIERS.resolve("critical").verification.window_seconds


def test_a_new_revision_goes_one_cluster_at_a_time():
    f = good(Fleet(IDE.spec))
    v1 = revision_of(IDE.spec)
    f.apply(image(IDE.spec, "v0.12.0"))
    v2 = revision_of(f.spec)
    plan = f.round()
    assert plan.record is not None and plan.rollout is not None
    assert plan.rollout.mode == "Rollout"
    assert {c: s.hash for c, s in plan.render.items()} == {"east": v2, "west": v1}
    assert cond(plan, "Progressing").reason == "RollingOut"
    plan = f.round()  # east settled on v2: west follows
    assert {c: s.hash for c, s in plan.render.items()} == {"east": v2, "west": v2}
    assert "RolloutStep" in [d.kind for d in plan.decisions]
    plan = f.until(lambda p: p.rollout is None)
    assert plan.current == plan.last_good and f.snapshots[plan.current].hash == v2


def test_a_revision_never_ready_is_rolled_back_everywhere_and_not_retried():
    f = good(Fleet(IDE.spec))
    v1 = revision_of(IDE.spec)
    f.apply(image(IDE.spec, "v0.12.0-crashloop"))
    bad = revision_of(f.spec)
    start = len(f.seen)
    plan = f.until(lambda p: any(d.kind == "Rollback" for d in p.decisions))
    deadline = IDE.spec.rollback.progress_deadline_seconds
    assert (f.now - T0).total_seconds() > deadline
    assert {s.hash for s in plan.render.values()} == {v1}
    assert plan.held_back == bad
    rolled = cond(plan, "RolledBack")
    assert rolled.status == "True" and rolled.reason == "ProgressDeadlineExceeded"
    assert "held back" in rolled.message
    assert f.snapshots[next(n for n, s in f.snapshots.items() if s.hash == bad)].outcome == "Bad"
    # east and west never both ran the bad revision
    assert all(not (s["east"] == bad and s["west"] == bad) for s in f.seen[start:])
    later = f.until(lambda p: p.rollout is None)
    assert "RollbackComplete" in [d.kind for d in later.decisions]
    for _ in range(50):  # the same spec is not retried
        plan = f.round()
        assert {s.hash for s in plan.render.values()} == {v1}
    assert cond(plan, "RolledBack").status == "True"
    assert cond(plan, "RolledBack").reason == "ProgressDeadlineExceeded", "kept, rounds later"
    # a new spec is rolled out again, and clears the hold
    f.apply(image(IDE.spec, "v0.12.1"))
    plan = f.round()
    assert plan.held_back is None and plan.rollout is not None
    assert cond(plan, "RolledBack").status == "False"


def test_an_error_rate_breach_during_verification_rolls_back():
    f = good(Fleet(IDE.spec))
    f.apply(image(IDE.spec, "v0.12.0-errors"))
    f.until(lambda p: p.rollout is not None and p.rollout.verifying_since is not None)
    f.health = Health(error_percent=50.0)
    plan = f.round()
    assert [d.kind for d in plan.decisions] == ["Rollback"]
    assert cond(plan, "RolledBack").reason == "ErrorRateExceeded"
    assert "error rate 50.00% above the tier's 1%" in cond(plan, "RolledBack").message


def test_errors_before_any_cluster_runs_the_new_revision_do_not_count():
    f = good(Fleet(IDE.spec))
    f.health = Health(error_percent=30.0)  # the old revision's errors, not the new one's
    f.running = {"east": None, "west": f.running["west"]}  # east not settled yet
    f.apply(image(IDE.spec, "v0.12.0"))
    assert not any(d.kind == "Rollback" for d in f.round(0).decisions)


def _verifying(f: Fleet, tag: str) -> tuple[str, str]:
    """Roll ``tag`` out over a Good first revision until every cluster runs it; the old
    and new revision hashes."""
    old = revision_of(f.spec)
    f.apply(image(f.spec, tag))
    f.until(lambda p: p.rollout is not None and p.rollout.verifying_since is not None)
    return old, revision_of(f.spec)


def test_verification_waits_for_the_new_revisions_own_series_then_counts_a_whole_window():
    f = good(Fleet(IDE.spec))
    window = f.tier.verification.window_seconds
    old, new = _verifying(f, "v0.12.0")
    # metrics lag the pods: only the old revision's series (clean) are in the rate window
    f.health = Health(0.0, 0.4, {old: (0.0, 0.4)})
    plan = f.round(window + 5)
    assert plan.rollout is not None, "not Good on the old revision's readings"
    assert "once Prometheus has series of revision" in cond(plan, "Progressing").message
    f.health = Health(0.0, 0.5, {old: (0.0, 0.4), new: (0.0, 0.6)})
    plan = f.round(5)
    assert plan.rollout is not None and plan.rollout.measured_since == f.now
    plan = f.round(window - 5)
    assert plan.rollout is not None, "a whole window of its own readings first"
    plan = f.round(5)
    assert plan.rollout is None and plan.current == snapshot_name("ide", new)
    verdict = next(d for d in plan.decisions if d.kind == "RolloutComplete")
    assert "its own requests within the tier's targets" in verdict.reason
    assert verdict.inputs["health"] == {"errorPercent": 0.0, "latencyP95Seconds": 0.6,
                                        "revision": new, "requestsLastHour": None}


def test_the_new_revisions_own_errors_roll_it_back_while_the_deployments_look_fine():
    f = good(Fleet(IDE.spec))
    old, new = _verifying(f, "v0.12.0-errors")
    # the old revision's clean requests still dominate the deployment's rate window
    f.health = Health(0.8, 0.4, {old: (0.0, 0.4), new: (40.0, 0.4)})
    plan = f.round()
    assert [d.kind for d in plan.decisions] == ["Rollback"]
    assert "error rate 40.00%" in cond(plan, "RolledBack").message
    assert plan.decisions[0].inputs["health"]["revision"] == new
    assert plan.rollout is not None and plan.rollout.drained == (), "no cluster to drain to"


def test_a_rollback_for_failed_requests_drains_the_clusters_where_the_bad_revision_was_ready():
    f = good(Fleet(IDE.spec))
    f.slow = {"west"}  # east took the bad revision; west's step is not Ready yet
    f.apply(image(IDE.spec, "v0.12.0-errors"))
    bad = revision_of(f.spec)
    f.until(lambda p: p.rollout is not None and "east" in p.rollout.done)
    f.health = Health(50.0, 0.4, {bad: (50.0, 0.4)})
    f.slow = {"east", "west"}  # the Good pods load again
    plan = f.round()
    assert [d.kind for d in plan.decisions] == ["Rollback"]
    assert plan.rollout is not None and plan.rollout.drained == ("east",)
    assert plan.decisions[0].inputs["drained"] == ["east"]
    assert "; east gets no traffic until it runs it again" in plan.decisions[0].reason
    f.slow = {"west"}
    plan = f.round()
    assert plan.rollout is not None and plan.rollout.drained == ("east",), "still loading"
    plan = f.round()  # east runs the Good revision again; west does not yet
    assert plan.rollout is not None and plan.rollout.drained == ()
    f.slow = set()
    f.until(lambda p: p.rollout is None)


def test_a_missed_progress_deadline_drains_nothing():
    f = good(Fleet(IDE.spec))
    f.slow = {"west"}
    f.apply(image(IDE.spec, "v0.12.0"))
    plan = f.until(lambda p: any(d.kind == "Rollback" for d in p.decisions))
    assert cond(plan, "RolledBack").reason == "ProgressDeadlineExceeded"
    assert plan.rollout is not None and plan.rollout.drained == ()


def test_a_revision_burning_the_error_budget_at_page_rate_rolls_back_below_the_fixed_limit():
    f = good(Fleet(IDE.spec))  # critical: 99.99 %, a budget of 0.01 %; fixed limit 1 %
    old, new = _verifying(f, "v0.12.0-errors1")
    # 0.5 % of its requests fail: under the 1 % limit, but 50x the budget (page: 14.4x)
    f.health = Health(0.3, 0.4, {old: (0.0, 0.4), new: (0.5, 0.4)},
                      {new: (0.5, 0.5, 400.0)})
    plan = f.round()
    assert [d.kind for d in plan.decisions] == ["Rollback"]
    rolled = cond(plan, "RolledBack")
    assert rolled.reason == "BurnRateExceeded", rolled
    assert "burning at 50.0x over 1h and 50.0x over 5m" in rolled.message
    assert plan.decisions[0].inputs["health"]["burn"]["requestsLong"] == 400.0


def test_a_page_rate_burn_on_too_few_requests_or_one_window_only_does_not_roll_back():
    for burn in ((0.5, 0.5, 10.0), (0.5, 0.1, 400.0), (0.1, 0.5, 400.0)):
        f = good(Fleet(IDE.spec))
        old, new = _verifying(f, "v0.12.0")
        f.health = Health(0.0, 0.4, {old: (0.0, 0.4), new: (0.5, 0.4)}, {new: burn})
        assert not [d for d in f.round().decisions if d.kind == "Rollback"], burn


def test_a_deployment_without_any_series_is_verified_on_readiness_alone():
    f = good(Fleet(IDE.spec))
    window = f.tier.verification.window_seconds
    _verifying(f, "v0.12.0")
    started = f.now
    plan = f.until(lambda p: p.rollout is None)
    assert window <= (f.now - started).total_seconds() < window + 10
    assert "no error or latency metrics" in verdict_of(plan)


def test_a_deployment_that_served_within_the_hour_waits_for_its_new_revisions_series():
    """Between the old pods' series leaving the rate window and the new pods' first
    scrapes, a deployment that serves has no series at all for a round or two: that gap
    is not a deployment without metrics, and readiness alone must not verify a revision
    that then shows 50 % errors (an e2e run verified such a revision Good 12 s in)."""
    f = good(Fleet(IDE.spec))
    window = f.tier.verification.window_seconds
    _, new = _verifying(f, "v0.12.0")
    f.health = Health(recent=4000.0)  # no series now; served within the hour
    plan = f.round(window + 5)
    assert plan.rollout is not None, "not verified on readiness in the gap"
    assert "once Prometheus has series of revision" in cond(plan, "Progressing").message
    f.health = Health(50.0, 0.4, {new: (50.0, 0.4)}, recent=4000.0)
    plan = f.round(5)
    assert [d.kind for d in plan.decisions] == ["Rollback"]
    assert cond(plan, "RolledBack").reason == "ErrorRateExceeded"


def test_no_verdict_while_prometheus_cannot_be_read_for_the_deployment():
    f = good(Fleet(IDE.spec))
    window = f.tier.verification.window_seconds
    _, new = _verifying(f, "v0.12.0")
    f.health = Health(unread="Prometheus cannot be read: connection refused")
    for _ in range(int((window + UNMEASURED_GRACE_SECONDS) // 5) + 10):
        plan = f.round(5)
        assert plan.rollout is not None and not plan.decisions, "no reading is not good"
    assert "once Prometheus can be read (Prometheus cannot be read: connection refused)" \
        in cond(plan, "Progressing").message
    f.health = Health()  # read again: a deployment that never had series
    plan = f.round(5)
    assert plan.rollout is None and plan.current == snapshot_name("ide", new)
    assert "no error or latency metrics" in verdict_of(plan)


def verdict_of(plan: RevisionPlan) -> str:
    return next(d for d in plan.decisions if d.kind == "RolloutComplete").reason


def test_a_revision_without_series_of_its_own_is_verified_on_readiness_after_the_grace():
    f = good(Fleet(IDE.spec))
    window = f.tier.verification.window_seconds
    old, _ = _verifying(f, "v0.12.0")
    started = f.now
    f.health = Health(0.0, 0.4, {old: (0.0, 0.4)})  # nobody sends it requests
    plan = f.until(lambda p: p.rollout is None)
    waited = (f.now - started).total_seconds()
    assert window + UNMEASURED_GRACE_SECONDS <= waited < window + UNMEASURED_GRACE_SECONDS + 10
    assert "verified on readiness alone" in verdict_of(plan)


def test_a_rollout_waits_while_a_cluster_does_not_serve():
    f = good(Fleet(IDE.spec))
    f.healthy["west"] = False
    f.apply(image(IDE.spec, "v0.12.0"))
    plan = f.round()
    assert plan.rollout is None
    assert cond(plan, "Progressing").reason == "WaitingToRollOut"
    assert {s.hash for s in plan.render.values()} == {revision_of(IDE.spec)}
    f.healthy["west"] = True
    assert f.round().rollout is not None


def test_manual_rollback_to_a_named_snapshot_holds_the_spec_back():
    f = good(Fleet(IDE.spec))
    first = f.status["current"]
    f.apply(image(IDE.spec, "v0.12.0"))
    f.until(lambda p: p.rollout is None and p.current != first)
    f.request = RollbackRequest(id="r1", to=first, by="sre@example", at="now")
    plan = f.round()
    assert plan.handled is not None and plan.handled.to == first
    assert {s.name for s in plan.render.values()} == {first}
    assert cond(plan, "RolledBack").reason == "ManualRollback"
    assert "sre@example" in cond(plan, "RolledBack").message
    plan = f.until(lambda p: p.rollout is None)
    assert plan.current == first and plan.held_back == revision_of(f.spec)
    f.request = RollbackRequest(id="r2", to="no-such-snapshot")
    plan = f.round()
    assert plan.request_error.startswith("no snapshot 'no-such-snapshot'")
    assert plan.current == first


def test_a_tier_without_automatic_rollback_stops_the_rollout_and_says_so():
    md = IDE.spec.model_copy(update={"sla_tier": "best-effort"})
    f = good(Fleet(md, tier="best-effort"))
    f.apply(image(md, "v0.12.0-crashloop"))
    plan = f.until(lambda p: any(d.kind == "RolloutFailed" for d in p.decisions))
    assert cond(plan, "Progressing").reason == "RolloutFailed"
    assert "does not roll back automatically" in cond(plan, "Progressing").message
    again = f.round()
    assert again.decisions == [] and again.rollout is not None


def test_rendering_a_snapshot_changes_models_only():
    v1 = image(IDE.spec, "v1")
    v2 = image(IDE.spec, "v2").model_copy(update={"placement": IDE.spec.placement[:1]})
    mixed = with_revision(v2, v1)
    assert mixed.model.image.endswith(":v1") and len(mixed.placement) == 1
    objects = member_objects("ide", "ai", "east", mixed, TIERS.resolve("critical"),
                             {("east", "primary", "east-a"): 2})
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    assert deployment["metadata"]["annotations"]["serving.twinhull.io/revision"] == \
        revision_of(v1)
    assert revision_of(v1) != revision_of(v2)
    assert revision_of(v1) == revision_of(v1.model_copy(update={"scaling": None})), \
        "scaling is not a revision"


def test_retention_keeps_the_newest_and_the_protected():
    snaps = [Snapshot(f"s{i}", f"{i:016x}", i, IDE.spec, created=T0 + timedelta(minutes=i))
             for i in range(8)]
    assert prune(snaps, 3, {"s0"}) == ["s1", "s2", "s3", "s4"]
    assert prune(snaps, 10, set()) == []


def test_a_revision_replaced_before_it_was_verified_is_verified_when_it_returns():
    f = Fleet(IDE.spec)
    f.round()
    f.apply(image(IDE.spec, "v0.12.0-crashloop"))  # before the first was verified
    f.until(lambda p: any(d.kind == "RolloutFailed" for d in p.decisions))
    f.apply(IDE.spec)
    plan = f.until(lambda p: p.last_good is not None)
    assert f.snapshots[plan.last_good].hash == revision_of(IDE.spec)


def test_a_first_revision_slower_than_the_deadline_is_good_once_ready():
    f = Fleet(IDE.spec)
    f.slow.add("west")  # west serves but its pods are slow: not Ready within the deadline
    plan = f.until(lambda p: any(d.kind == "RolloutFailed" for d in p.decisions), seconds=10)
    assert cond(plan, "Progressing").reason == "RolloutFailed"
    f.slow.clear()
    plan = f.until(lambda p: p.last_good is not None)
    assert f.snapshots[plan.last_good].outcome == "Good" and plan.rollout is None


# -- rollback reaches exactly the snapshot's objects, fallback or not (issue 10, #9a) -----

def without_fallback(spec: ModelDeploymentSpec) -> ModelDeploymentSpec:
    return spec.model_copy(update={"fallback": None})


def fallback_replicas(spec: ModelDeploymentSpec, per_zone: int) -> ModelDeploymentSpec:
    assert spec.fallback is not None
    return spec.model_copy(update={"fallback": spec.fallback.model_copy(
        update={"replicas_per_zone": per_zone})})


BEST_EFFORT = IDE.spec.model_copy(update={"sla_tier": "best-effort"})
"""A tier that does not require a fallback, so specs with and without one are valid."""


@pytest.mark.parametrize("direction", ["snapshot has the fallback", "spec has the fallback"])
def test_a_spec_running_a_snapshot_renders_the_snapshots_hash(direction):
    with_fb = fallback_replicas(image(BEST_EFFORT, "v1"), 2)
    without = without_fallback(image(BEST_EFFORT, "v2"))
    spec, snap = (without, with_fb) if direction == "snapshot has the fallback" else (
        with_fb, without)
    running = with_revision(spec, snap)
    assert revision_of(running) == revision_of(snap)
    replicas = plan_fleet([DeploymentInput("ai", "ide", running, TIERS.resolve("best-effort"))],
                          VIEWS, now=T0)[("ai", "ide")].replicas
    objects = member_objects("ide", "ai", "east", running, TIERS.resolve("best-effort"),
                             replicas)
    assert {o["metadata"]["annotations"][REVISION] for o in deployments(objects)} == \
        {revision_of(snap)}
    fallbacks = deployments(objects, "fallback")
    if snap.fallback is not None:  # the snapshot's fallback runs, with its replicasPerZone
        assert [o["spec"]["replicas"] for o in fallbacks] == [2, 2]
        assert {o["spec"]["template"]["metadata"]["labels"]["serving.twinhull.io/model"]
                for o in fallbacks} == {snap.fallback.model.name}
    else:
        assert fallbacks == []
        assert not any(o["kind"] == "Service" and o["metadata"]["labels"][ROLE] == "fallback"
                       for o in objects)


def test_with_both_fallbacks_the_spec_keeps_its_replicas_and_takes_the_snapshots_model():
    old = fallback_replicas(image(IDE.spec, "v1"), 2)
    new = fallback_replicas(image(IDE.spec, "v2"), 0)
    assert old.fallback is not None and new.fallback is not None
    new = new.model_copy(update={"fallback": new.fallback.model_copy(update={
        "model": new.fallback.model.model_copy(update={"image": "vllm/vllm-openai:fb2"})})})
    running = with_revision(new, old)
    assert running.fallback is not None
    assert running.fallback.replicas_per_zone == 0, "replica counts are not revisions"
    assert running.fallback.model == old.fallback.model
    assert revision_of(running) == revision_of(old)


def test_a_rollback_to_a_snapshot_with_a_fallback_the_spec_dropped_runs_that_fallback():
    first_spec = fallback_replicas(BEST_EFFORT, 2)
    f = good(Fleet(first_spec, tier="best-effort", rendered=True))
    first = f.status["current"]
    f.apply(without_fallback(image(first_spec, "v0.12.0")))
    plan = f.round()
    assert plan.rollout is not None and plan.rollout.mode == "Rollout"
    # mid-rollout: east runs the new revision (no fallback), west the old one (its fallback)
    assert deployments(f.objects["east"], "fallback") == []
    assert [o["spec"]["replicas"] for o in deployments(f.objects["west"], "fallback")] == [2, 2]
    f.until(lambda p: p.rollout is None and p.last_good != first)
    assert all(deployments(objects, "fallback") == [] for objects in f.objects.values())
    f.request = RollbackRequest(id="r1", to=first, by="sre@example")
    plan = f.until(lambda p: p.rollout is None)  # stuck forever before: never the hash
    assert plan.current == first and "RollbackComplete" in [d.kind for d in plan.decisions]
    for objects in f.objects.values():
        assert {o["metadata"]["annotations"][REVISION] for o in deployments(objects)} == \
            {f.snapshots[first].hash}
        assert [o["spec"]["replicas"] for o in deployments(objects, "fallback")] == [2, 2]


def test_a_rollback_to_a_snapshot_without_a_fallback_runs_none():
    first_spec = without_fallback(BEST_EFFORT)
    f = good(Fleet(first_spec, tier="best-effort", rendered=True))
    first = f.status["current"]
    f.apply(image(BEST_EFFORT, "v0.12.0"))  # adds a fallback
    f.until(lambda p: p.rollout is None and p.last_good != first)
    assert all(len(deployments(objects, "fallback")) == 2 for objects in f.objects.values())
    f.request = RollbackRequest(id="r1", to=first, by="sre@example")
    plan = f.until(lambda p: p.rollout is None)
    assert plan.current == first and plan.held_back == revision_of(f.spec)
    for objects in f.objects.values():
        assert deployments(objects, "fallback") == []
        assert {o["metadata"]["annotations"][REVISION] for o in deployments(objects)} == \
            {f.snapshots[first].hash}


def test_an_automatic_rollback_to_a_snapshot_without_a_fallback_completes():
    f = good(Fleet(without_fallback(IDE.spec), rendered=True))
    first = f.status["current"]
    f.apply(image(IDE.spec, "v0.12.0-crashloop"))  # adds a fallback, and never gets Ready
    f.until(lambda p: any(d.kind == "Rollback" for d in p.decisions))
    plan = f.until(lambda p: p.rollout is None)
    assert plan.current == first
    assert all(deployments(objects, "fallback") == [] for objects in f.objects.values())


# -- a cluster that does not serve pauses a rollout (issue 10, #9b) -------------------

def test_a_cluster_down_past_the_deadline_pauses_the_rollout_which_completes_after():
    f = good(Fleet(IDE.spec))
    v1 = revision_of(IDE.spec)
    f.apply(image(IDE.spec, "v0.12.0"))
    v2 = revision_of(f.spec)
    assert f.round().rollout is not None  # east takes the new revision first
    f.healthy["west"], f.running["west"] = False, None
    plan = f.round()
    assert [d.kind for d in plan.decisions] == ["RolloutPaused"]
    paused = cond(plan, "Progressing")
    assert paused.reason == "RolloutPaused" and "cluster west is Down" in paused.message
    assert "progress deadline is paused" in paused.message
    deadline = IDE.spec.rollback.progress_deadline_seconds
    down_since = f.now
    while (f.now - down_since).total_seconds() <= 2 * deadline:
        plan = f.round(10)
        assert plan.decisions == [] and cond(plan, "Progressing") == paused, "nothing moves"
        assert plan.render["west"].hash == v1, "no step while a cluster does not serve"
    assert all(s.outcome != "Bad" for s in f.snapshots.values())
    f.healthy["west"] = True
    plan = f.round()
    assert [d.kind for d in plan.decisions][:1] == ["RolloutResumed"]
    plan = f.until(lambda p: p.rollout is None)
    assert f.snapshots[plan.last_good].hash == v2 and plan.current == plan.last_good
    assert f.snapshots[plan.last_good].outcome == "Good"
    assert cond(plan, "RolledBack").status == "False"


def test_a_pause_during_verification_restarts_the_window():
    f = good(Fleet(IDE.spec))
    before = f.status["last_good"]
    f.apply(image(IDE.spec, "v0.12.0"))
    f.until(lambda p: p.rollout is not None and p.rollout.verifying_since is not None)
    window = TIERS.resolve("critical").verification.window_seconds
    f.healthy["east"] = False
    for _ in range(int(2 * window / 10)):
        plan = f.round(10)
        assert plan.last_good == before, "no verdict while a cluster does not serve"
    f.healthy["east"] = True
    back = f.now
    plan = f.until(lambda p: p.last_good != before)
    assert (f.now - back).total_seconds() >= window
    assert f.snapshots[plan.last_good].outcome == "Good"


def test_a_bad_revision_still_fails_at_the_deadline_counted_without_the_pause():
    f = good(Fleet(IDE.spec))
    v1 = revision_of(IDE.spec)
    f.apply(image(IDE.spec, "v0.12.0-crashloop"))
    started = f.round()
    assert started.rollout is not None
    since = started.rollout.since
    f.healthy["west"] = False
    for _ in range(30):  # 300 s without west
        assert not any(d.kind == "Rollback" for d in f.round(10).decisions)
    f.healthy["west"] = True
    plan = f.until(lambda p: any(d.kind == "Rollback" for d in p.decisions))
    deadline = IDE.spec.rollback.progress_deadline_seconds
    assert (f.now - since).total_seconds() > deadline + 290
    rolled = cond(plan, "RolledBack")
    assert rolled.reason == "ProgressDeadlineExceeded" and "paused 29" in rolled.message
    assert {s.hash for s in plan.render.values()} == {v1}
    assert "Bad" in {s.outcome for s in f.snapshots.values()}


def test_a_first_revision_during_an_outage_is_paused_not_failed():
    f = Fleet(IDE.spec)
    f.healthy["west"] = False
    deadline = IDE.spec.rollback.progress_deadline_seconds
    for _ in range(int(2 * deadline / 10)):
        plan = f.round(10)
        assert not any(d.kind == "RolloutFailed" for d in plan.decisions)
    assert cond(plan, "Progressing").reason == "RolloutPaused"
    f.healthy["west"] = True
    plan = f.until(lambda p: p.last_good is not None)
    assert f.snapshots[plan.last_good].outcome == "Good"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans(), st.integers(1, 60)), max_size=8))
def test_outages_never_make_a_good_revision_bad(outages):
    """Outages of any length, of either or both clusters, at any point of a rollout (rounds
    every 10 s, as the operator resyncs: a pause is seen at the next round)."""
    f = good(Fleet(IDE.spec))
    f.apply(image(IDE.spec, "v0.12.0"))
    v2 = revision_of(f.spec)
    for east, west, rounds in outages:
        f.healthy = {"east": east, "west": west}
        for _ in range(rounds):
            for c, up in f.healthy.items():
                if not up:
                    f.running[c] = None  # a Down cluster reports nothing settled
            plan = f.round(10)
            assert not {d.kind for d in plan.decisions} & {"Rollback", "RolloutFailed"}
    f.healthy = {"east": True, "west": True}
    plan = f.until(lambda p: p.rollout is None and p.current == p.last_good)
    assert f.snapshots[plan.current].hash == v2
    assert all(s.outcome != "Bad" for s in f.snapshots.values())


def test_an_outcome_whose_write_failed_while_the_status_landed_is_written_again():
    """Each snapshot outcome is written just before its deployment's status; a failed one
    does not hold the status (an outcome write that always fails would freeze it), so the
    status can name a snapshot Good or hold a revision back while the snapshot shows
    nothing. The next round writes the outcome the status states, and only that."""
    f = Fleet(IDE.spec)
    plan = f.until(lambda p: p.rollout is None)
    first = plan.current
    f.snapshots[first] = replace(f.snapshots[first], outcome="Pending")  # the write failed
    again = f.round()
    assert again.outcomes[first][0] == "Good" and not again.decisions
    assert again.rollout is None, "no second verification of what the status says is Good"
    assert f.round().outcomes == {}, "written once: nothing when the snapshot shows it"
    # an automatic rollback's Bad outcome, with the reason recorded with the hold
    f.apply(image(IDE.spec, "v0.12.0-crashloop"))
    f.until(lambda p: any(d.kind == "Rollback" for d in p.decisions))
    bad = next(n for n, s in f.snapshots.items() if s.hash == f.status["held_back"])
    f.snapshots[bad] = replace(f.snapshots[bad], outcome="Pending")
    again = f.round()
    assert again.outcomes[bad][:2] == ("Bad", "ProgressDeadlineExceeded")
    assert f.round().outcomes == {}


def test_a_manual_rollbacks_hold_marks_no_revision_bad():
    """A revision rolled back by hand before it was verified stays without a verdict: a
    manual rollback's hold says nothing of it."""
    f = good(Fleet(IDE.spec))
    first = f.status["current"]
    f.apply(image(IDE.spec, "v0.12.0"))
    second = f.round().rollout.target  # rolling out, not verified yet
    f.request = RollbackRequest(id="r1", to=first, by="sre@example", at="now")
    plan = f.until(lambda p: p.rollout is None and p.current == first)
    assert plan.held_back == revision_of(f.spec) and plan.last_good == first
    for _ in range(3):
        assert second not in f.round().outcomes
    assert f.snapshots[second].outcome == "Pending"


def test_the_spec_of_the_revision_that_runs_is_not_validated_again_from_its_json():
    # the operator keeps recorded snapshots as JSON (handlers.revisions.snapshot_of); the
    # one of the spec's own revision is rendered from the spec, which has the same models
    f = Fleet(IDE.spec, rendered=True)
    f.until(lambda p: p.last_good is not None)
    f.snapshots = {n: replace(s, source=s.spec.model_dump_json(by_alias=True))
                   for n, s in f.snapshots.items()}
    kept = dict(f.snapshots)
    plan = f.round()
    assert plan.render and all(s.source is f.spec for s in plan.render.values())
    assert all("spec" not in vars(s) for s in kept.values())
    # a new revision rolls out while the old one, read from its JSON, runs elsewhere
    f.apply(image(IDE.spec, "v2"))
    plan = f.until(lambda p: p.rollout is not None)
    assert {s.hash for s in plan.render.values()} == {revision_of(IDE.spec),
                                                     revision_of(f.spec)}
    plan = f.until(lambda p: p.last_good is not None
                   and f.snapshots[p.last_good].hash == revision_of(f.spec))
    assert set(f.running.values()) == {revision_of(f.spec)}
