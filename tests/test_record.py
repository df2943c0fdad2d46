"""Audit records: a decision's planner input survives encoding, and replaying it reaches
the same decision (or says how and why not). Pure: no cluster."""

from __future__ import annotations

import gzip
from dataclasses import replace
from datetime import timedelta

import pytest

from test_fleet import IDE, T0, _best_effort, cluster, deployment, steady
from test_rollout import Fleet, good, image
from twinhull.plan.fleet import plan_fleet
from twinhull.plan.record import (
    RecordError,
    Replay,
    decode_replay,
    encode_replay,
    explain,
    record_of,
)
from twinhull.plan.rollout import Health, RevisionInput, plan_revision
from twinhull.plan.scaling import Load, Recommendation

VERSION = "0.2.0"


def fleet_record(d, clusters, decision, plan, now=T0):
    replay = Replay("fleet", now, deployment=d, clusters=clusters, basis=plan.basis)
    return record_of(decision, obj=f"ModelDeployment/{d.namespace}/{d.name}",
                     time=now.isoformat(), by="twinhull/replica-1", version=VERSION,
                     replay=decode_replay(encode_replay(replay)))


def test_a_capacity_decision_behind_a_higher_tier_replays_from_the_gpus_it_was_left():
    clusters = {"east": cluster("east", gpus=20), "west": cluster("west", "Down")}
    batch_in, ide_in = deployment(_best_effort()), deployment(IDE)
    plans = plan_fleet([batch_in, ide_in], clusters, now=T0)
    batch = plans[("ai-platform", "batch")]
    (decision,) = [x for x in batch.decisions if x.kind == "Capacity"]
    assert batch.basis is not None
    assert batch.basis.held["east"] == {"ai-platform/ide-assistant (critical)": 18}
    record = fleet_record(batch_in, clusters, decision, batch)
    result = explain(record, VERSION)
    assert result.reproduced, result.differences
    assert "ide-assistant" in result.replayed.reason  # who held the GPUs, from the record


def test_a_failover_with_load_and_history_round_trips_and_replays():
    d, _ = steady(load=Load(tokens_per_second=4200.0, waiting=3.0, running=20.0,
                            zones={"east/east-a": 2100.0, "west/west-a": 2100.0}),
                  scaling_history=(Recommendation(T0 - timedelta(seconds=30), 4),),
                  forecast_missed_at=T0 - timedelta(minutes=10))
    clusters = {"east": cluster("east"), "west": cluster("west", "Down")}
    now = T0 + timedelta(seconds=5)
    plan = plan_fleet([d], clusters, now=now)[(d.namespace, d.name)]
    failover = next(x for x in plan.decisions if x.kind == "Failover")
    record = fleet_record(d, clusters, failover, plan, now)
    assert record.replay is not None and record.replay.deployment == d
    result = explain(record, VERSION)
    assert result.reproduced and "reproduced" in result.verdict


def test_a_tampered_input_is_not_reproduced_and_the_difference_is_named():
    d, _ = steady()
    clusters = {"east": cluster("east"), "west": cluster("west", "Down")}
    plan = plan_fleet([d], clusters, now=T0)[(d.namespace, d.name)]
    failover = next(x for x in plan.decisions if x.kind == "Failover")
    record = fleet_record(d, clusters, failover, plan)
    assert record.replay is not None
    healed = {"east": cluster("east"), "west": cluster("west")}
    result = explain(replace(record, replay=replace(record.replay, clusters=healed)), VERSION)
    assert not result.reproduced
    assert "does not decide Failover again" in result.verdict


def test_another_planner_version_is_said():
    d, _ = steady()
    clusters = {"east": cluster("east"), "west": cluster("west", "Down")}
    plan = plan_fleet([d], clusters, now=T0)[(d.namespace, d.name)]
    failover = next(x for x in plan.decisions if x.kind == "Failover")
    result = explain(replace(fleet_record(d, clusters, failover, plan), version="0.1.0"),
                     VERSION)
    assert result.reproduced and "recorded by planner 0.1.0, replayed with 0.2.0" in \
        result.verdict


def test_a_rollback_on_the_new_revisions_errors_replays_from_the_revision_input():
    f = good(Fleet(IDE.spec))
    f.apply(image(IDE.spec, "v0.12.0-errors"))
    f.until(lambda p: p.rollout is not None and p.rollout.verifying_since is not None)
    old = next(s.hash for s in f.snapshots.values() if s.outcome == "Good")
    new = next(s.hash for s in f.snapshots.values() if s.outcome == "Pending")
    f.health = Health(0.5, 0.4, {old: (0.0, 0.4), new: (25.0, 0.4)})
    f.now += timedelta(seconds=5)
    i = RevisionInput(
        namespace="ai", name="ide", spec=f.spec, generation=f.generation, tier=f.tier,
        now=f.now, snapshots=list(f.snapshots.values()), current=f.status.get("current"),
        last_good=f.status.get("last_good"), held_back=f.status.get("held_back"),
        rollout=f.status.get("rollout"), held_back_why=f.status.get("why"),
        serving=frozenset({"east", "west"}), settled=dict(f.running), health=f.health)
    (rollback,) = [d for d in plan_revision(i).decisions if d.kind == "Rollback"]
    replay = decode_replay(encode_replay(Replay("revision", f.now, revision=i)))
    assert replay.revision == i
    record = record_of(rollback, obj="ModelDeployment/ai/ide", time=f.now.isoformat(),
                       by="twinhull/replica-1", version=VERSION, replay=replay)
    assert explain(record, VERSION).reproduced


def test_a_damaged_replay_input_is_refused_with_the_reason():
    with pytest.raises(RecordError, match="cannot be read"):
        decode_replay(b"not gzip")
    d, _ = steady()
    clusters = {"east": cluster("east"), "west": cluster("west", "Down")}
    plan = plan_fleet([d], clusters, now=T0)[(d.namespace, d.name)]
    assert plan.basis is not None
    data = encode_replay(Replay("fleet", T0, deployment=d, clusters=clusters,
                                basis=plan.basis))
    assert decode_replay(data).deployment == d
    with pytest.raises(RecordError, match="format"):
        decode_replay(gzip.compress(
            b'{"format": 99, "planner": "fleet", "now": "2026-01-01T00:00:00+00:00"}'))


def test_a_traffic_shift_off_a_drained_cluster_replays():
    d, _ = steady()
    d = replace(d, drained=frozenset({"east"}))
    clusters = {"east": cluster("east"), "west": cluster("west")}
    plan = plan_fleet([d], clusters, now=T0)[(d.namespace, d.name)]
    shift = next(x for x in plan.decisions if x.kind == "ShiftTraffic")
    record = fleet_record(d, clusters, shift, plan)
    assert record.replay is not None and record.replay.deployment == d
    result = explain(record, VERSION)
    assert result.reproduced, result.differences


def test_a_rollbacks_surge_replays_with_the_gpus_kept_for_those_ranked_after():
    """The surge leaves what the deployments ranked after need: the record keeps that
    reservation, or the replayed ShiftTraffic would surge more."""
    from test_fleet import example

    ide, _ = steady()
    review, _ = steady(example("code-review"))
    drained = replace(ide, drained=frozenset({"east"}))
    clusters = {"east": cluster("east"), "west": cluster("west", gpus=18)}
    plan = plan_fleet([drained, review], clusters, now=T0)[(ide.namespace, ide.name)]
    shift = next(x for x in plan.decisions if x.kind == "ShiftTraffic")
    assert shift.inputs["surged"] == {"west": 1}
    assert plan.basis is not None and plan.basis.reserved == {"east": 2, "west": 2}
    result = explain(fleet_record(drained, clusters, shift, plan), VERSION)
    assert result.reproduced, result.differences
    bare = replace(plan, basis=replace(plan.basis, reserved={}))
    assert not explain(fleet_record(drained, clusters, shift, bare), VERSION).reproduced


def test_a_ledger_basis_is_bounded_and_still_replays_every_decision():
    """40 GPU deployments, one cluster lost: every one decides in the same round. Each
    record keeps at most a handful of holders per cluster (the rest summed), and each
    decision, its message naming who holds the GPUs and who ranked ahead, replays."""
    from twinhull.plan.fleet import KEPT_HOLDERS, OTHERS

    base = _best_effort()
    fleet = [deployment(base.model_copy(update={"metadata": base.metadata.model_copy(
        update={"name": f"batch-{i:02}"})})) for i in range(40)]
    clusters = {"east": cluster("east", gpus=120), "west": cluster("west", "Down")}
    plans = plan_fleet(fleet, clusters, now=T0)
    short = 0
    for d in fleet:
        plan = plans[(d.namespace, d.name)]
        assert plan.decisions and plan.basis is not None
        east = plan.basis.held["east"]
        assert len([h for h in east if h != OTHERS]) <= 2 * KEPT_HOLDERS
        assert set(plan.basis.ahead) <= set(east) - {OTHERS}
        for decision in plan.decisions:
            result = explain(fleet_record(d, clusters, decision, plan), VERSION)
            assert result.reproduced, (d.name, decision.kind, result.differences)
            if decision.kind == "Capacity":
                short += 1
                assert "..." in decision.reason, decision.reason
    assert short > 20, "most of the fleet found east short and named who held it"
    last = plans[("ai-platform", "batch-39")].basis
    assert last is not None and last.held["east"][OTHERS] > 0
    assert sum(last.held["east"].values()) == 120, "every GPU held is still counted"


def test_a_decision_limited_by_a_zones_nodes_replays_from_the_zone_gpus_it_found():
    """The record keeps each zone's free GPUs as the deployment found them: without them
    the replay would place west's replicas where the zone had no room."""
    from test_fleet import _lopsided, _zoned

    crit, _ = steady(_lopsided(), [_zoned("east"), _zoned("west")])
    batch_in = deployment(_best_effort())
    clusters = {"east": _zoned("east"), "west": _zoned("west", "Down")}
    batch = plan_fleet([batch_in, crit], clusters, now=T0)[("ai-platform", "batch")]
    (decision,) = [x for x in batch.decisions if x.kind == "Capacity"]
    assert batch.basis is not None and batch.basis.zone_free["east/east-a"] == 0
    assert "zone east-a: 0 of 16 GPUs free" in decision.reason
    result = explain(fleet_record(batch_in, clusters, decision, batch), VERSION)
    assert result.reproduced, result.differences
    bare = replace(batch, basis=replace(batch.basis, zone_free={}))
    assert not explain(fleet_record(batch_in, clusters, decision, bare), VERSION).reproduced
