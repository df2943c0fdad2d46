"""Revisions: snapshots, cluster-by-cluster rollout, verification, automatic and manual
rollback. Pure: simulated time, no cluster."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from twinhull.api import ModelDeployment
from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.plan.render import member_objects, revision_of
from twinhull.plan.rollout import (
    Health,
    RevisionInput,
    RevisionPlan,
    RollbackRequest,
    Snapshot,
    plan_revision,
    prune,
    with_revision,
)
from twinhull.policy import load_file

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TIERS = load_file()
IDE = ModelDeployment.model_validate(
    next(yaml.safe_load_all((ROOT / "examples" / "ide-assistant.yaml").read_text())))
BOTH = frozenset({"east", "west"})


def image(spec: ModelDeploymentSpec, tag: str) -> ModelDeploymentSpec:
    return spec.model_copy(update={"model": spec.model.model_copy(
        update={"image": f"vllm/vllm-openai:{tag}"})})


class Fleet:
    """Runs the planner round after round, persisting what the operator persists (status
    and snapshots) and letting each cluster settle on what it was given."""

    def __init__(self, spec: ModelDeploymentSpec, tier: str = "critical") -> None:
        self.spec = spec
        self.tier = TIERS.resolve(tier)
        self.now = T0
        self.snapshots: dict[str, Snapshot] = {}
        self.status: dict = {}
        self.running: dict[str, str | None] = {"east": None, "west": None}
        self.healthy = {"east": True, "west": True}
        self.health = Health()
        self.request: RollbackRequest | None = None
        self.generation = 1
        self.seen: list[dict[str, str]] = []

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
        rendered = {c: s.hash for c, s in plan.render.items()}
        self.seen.append(rendered)
        for c, h in rendered.items():  # what a cluster is given settles by the next round
            if self.healthy[c] and not self.crashing(c, h):
                self.running[c] = h
            elif self.crashing(c, h):
                self.running[c] = None
        return plan

    def crashing(self, cluster: str, revision: str) -> bool:
        snap = next((s for s in self.snapshots.values() if s.hash == revision), None)
        return snap is not None and snap.spec.model.image.endswith("-crashloop")

    def until(self, check, rounds: int = 200, seconds: float = 5) -> RevisionPlan:
        for _ in range(rounds):
            plan = self.round(seconds)
            if check(plan):
                return plan
        raise AssertionError("never happened")


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
    f.healthy["west"] = False  # west's pods are slow: not Ready within the deadline
    plan = f.until(lambda p: any(d.kind == "RolloutFailed" for d in p.decisions), seconds=10)
    assert cond(plan, "Progressing").reason == "RolloutFailed"
    f.healthy["west"] = True
    plan = f.until(lambda p: p.last_good is not None)
    assert f.snapshots[plan.last_good].outcome == "Good" and plan.rollout is None
