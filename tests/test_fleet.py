"""The fleet planner: placement, failover, failback, capacity, weights, conditions.
Pure: simulated time, no cluster."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from twinhull.api import ModelDeployment
from twinhull.plan.fleet import (
    ClusterView,
    DeploymentInput,
    Leg,
    Replicas,
    plan_fleet,
)
from twinhull.policy import load_file

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TIERS = load_file()


def example(name: str) -> ModelDeployment:
    return ModelDeployment.model_validate(
        next(yaml.safe_load_all((ROOT / "examples" / f"{name}.yaml").read_text())))


def cluster(name: str, phase: str = "Healthy", gpus: int = 32, down_zones=()) -> ClusterView:
    zones = {f"{name}-a": True, f"{name}-b": True}
    for z in down_zones:
        zones[z] = False
    return ClusterView(name=name, phase=phase, zones_ready=zones, gpus=gpus)  # type: ignore[arg-type]


def all_ready(replicas) -> dict:
    return {slot: Replicas(n, n) for slot, n in replicas.items()}


def deployment(md: ModelDeployment, **kw) -> DeploymentInput:
    return DeploymentInput(namespace="ai-platform", name=md.metadata.name or "x", spec=md.spec,
                           tier=TIERS.resolve(md.spec.sla_tier), **kw)


def plan_one(d: DeploymentInput, clusters, now=T0):
    views = {c.name: c for c in clusters}
    return plan_fleet([d], views, now=now)[(d.namespace, d.name)]


def cond(plan, kind):
    return next(c for c in plan.conditions if c.type == kind)


IDE = example("ide-assistant")
HEALTHY = [cluster("east"), cluster("west")]


def steady(md=IDE, clusters=HEALTHY, **kw):
    first = plan_one(deployment(md, **kw), clusters)
    return deployment(md, observed=all_ready(first.replicas), traffic=first.weights,
                      legs=first.legs, **kw), first


def test_healthy_clusters_run_the_declared_replicas_with_equal_weights():
    d, _ = steady()
    plan = plan_one(d, HEALTHY)
    assert plan.replicas[("east", "primary", "east-a")] == 1
    assert plan.replicas[("west", "fallback", "west-b")] == 1
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}
    assert cond(plan, "Ready").status == "True"
    assert cond(plan, "FailedOver").status == "False"
    assert plan.decisions == [] and plan.pending is None


def test_a_down_cluster_fails_over_at_once_and_survivors_carry_its_replicas():
    d, _ = steady()
    plan = plan_one(d, [cluster("east"), cluster("west", "Down")])
    assert plan.legs["west"].state == "FailedOver"
    assert plan.weights == {"east": 100, "west": 0, "fallback": 0}
    assert plan.replicas[("east", "primary", "east-a")] == 2
    assert plan.replicas[("east", "primary", "east-b")] == 2
    assert plan.replicas[("west", "primary", "west-a")] == 1, "nothing in west is removed"
    assert [x.kind for x in plan.decisions] == ["Failover", "ShiftTraffic"]
    assert plan.decisions[0].inputs["phase"] == "Down"
    assert cond(plan, "FailedOver").reason == "ClusterDown"
    assert cond(plan, "Degraded").status == "False"


def test_a_suspect_cluster_keeps_its_traffic():
    d, _ = steady()
    plan = plan_one(d, [cluster("east"), cluster("west", "Suspect")])
    assert plan.legs["west"].state == "Serving"
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}
    assert plan.decisions == []


def test_survivors_short_of_gpus_degrade_to_the_fallback_for_the_rest():
    d, _ = steady()
    # east has room for the baseline (2x4 + 2x1 GPUs) plus one more primary replica
    plan = plan_one(d, [cluster("east", gpus=14), cluster("west", "Down")])
    east = sum(plan.replicas[("east", "primary", z)] for z in ("east-a", "east-b"))
    assert east == 3
    assert plan.unserved == 1
    assert plan.weights["fallback"] == 25 and plan.weights["east"] == 75
    assert cond(plan, "Degraded").reason == "InsufficientCapacity"
    assert cond(plan, "Ready").status == "False"
    fallback = plan.replicas[("east", "fallback", "east-a")] + plan.replicas[
        ("east", "fallback", "east-b")]
    assert fallback == 2, "no GPU left for more fallback replicas either"


def test_cold_fallback_starts_on_failover_when_capacity_is_short():
    md = example("code-review")  # fallback replicasPerZone: 0, 2 GPUs a replica
    d, first = steady(md)
    assert first.replicas[("east", "fallback", "east-a")] == 0
    plan = plan_one(d, [cluster("east", gpus=3), cluster("west", "Down")])
    assert plan.unserved == 1
    assert plan.replicas[("east", "fallback", "east-a")] == 1
    assert plan.weights == {"east": 50, "west": 0, "fallback": 50}


def test_manual_failover_waits_for_the_approved_decision():
    md = example("hybrid-reasoning")  # traffic.failover: Manual
    d, _ = steady(md)
    down = [cluster("east"), cluster("west", "Down")]
    plan = plan_one(d, down)
    assert plan.pending is not None and plan.pending.kind == "Failover"
    assert not plan.pending.applied
    assert plan.legs["west"].state == "Serving"
    assert cond(plan, "Progressing").reason == "WaitingForApproval"
    again = plan_one(d, down, now=T0 + timedelta(seconds=30))
    assert again.pending is not None and again.pending.id == plan.pending.id, "stable id"
    approved = plan_one(replace(d, approved=plan.pending.id), down)
    assert approved.legs["west"].state == "FailedOver"
    assert approved.weights["west"] == 0


def test_failback_ramps_through_the_tier_steps_and_survivors_shrink_only_after():
    d, _ = steady()
    tier = d.tier
    hold = tier.failback.hold_seconds
    failed = plan_one(d, [cluster("east"), cluster("west", "Down")])
    state = replace(d, legs=failed.legs, traffic=failed.weights,
                    observed=all_ready(failed.replicas))
    now = T0 + timedelta(seconds=60)
    plan = plan_one(state, HEALTHY, now=now)
    assert plan.legs["west"].state == "FailingBack" and plan.weights["west"] == 0
    seen = [plan.weights["west"]]
    east_replicas = [plan.replicas[("east", "primary", "east-a")]]
    for _ in range(6):
        now += timedelta(seconds=hold)
        state = replace(state, legs=plan.legs, traffic=plan.weights,
                        observed=all_ready(plan.replicas))
        plan = plan_one(state, HEALTHY, now=now)
        seen.append(plan.weights["west"])
        east_replicas.append(plan.replicas[("east", "primary", "east-a")])
    # 5%, 25%, 50% of its 50% share; at 100% the weights follow Ready capacity, which
    # still counts east's extra replicas until they are removed one round later
    assert seen == [0, 2, 12, 25, 33, 50, 50]
    assert east_replicas == [2, 2, 2, 2, 1, 1, 1]
    assert plan.legs["west"].state == "Serving"
    kinds = [x.kind for x in plan.decisions]
    assert kinds == []


def test_a_step_is_held_until_the_returning_replicas_are_ready():
    d, _ = steady()
    failing = replace(d, legs={"east": Leg(), "west": Leg("FailingBack", since=T0, step=-1,
                                                             step_since=T0)})
    observed = {k: (v if k[0] == "east" else Replicas(v.desired, 0))
                for k, v in d.observed.items()}
    plan = plan_one(replace(failing, observed=observed), HEALTHY, now=T0 + timedelta(hours=1))
    assert plan.legs["west"].step == -1


def test_failing_again_mid_ramp_drops_the_weight_to_zero_at_once():
    d, _ = steady()
    ramping = replace(d, legs={"east": Leg(), "west": Leg("FailingBack", since=T0, step=2,
                                                             step_since=T0)})
    plan = plan_one(ramping, [cluster("east"), cluster("west", "Down")])
    assert plan.legs["west"].state == "FailedOver"
    assert plan.weights["west"] == 0


def test_a_zone_without_ready_nodes_fails_over_and_back_like_a_cluster():
    d, _ = steady()
    zone_down = [cluster("east", down_zones=["east-a"]), cluster("west")]
    plan = plan_one(d, zone_down)
    assert plan.legs["east/east-a"].state == "FailedOver"
    assert plan.replicas[("east", "primary", "east-a")] == 1, "its Deployment stays"
    moved = sum(plan.replicas[(c, "primary", z)] for c, z in
                [("east", "east-b"), ("west", "west-a"), ("west", "west-b")])
    assert moved == 4
    assert cond(plan, "Degraded").reason == "ZoneUnavailable"
    assert cond(plan, "FailedOver").status == "True"
    assert plan.decisions[0].kind == "Failover" and plan.decisions[0].inputs["zone"] == \
        "east/east-a"
    # east-a's pods are unready; east-b took its replica, so east keeps half the traffic
    assert plan.replicas[("east", "primary", "east-b")] == 2
    observed = {k: (Replicas(v, 0) if k[2] == "east-a" else Replicas(v, v))
                for k, v in plan.replicas.items()}
    state = replace(d, legs=plan.legs, traffic=plan.weights, observed=observed)
    plan = plan_one(state, zone_down)
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}
    hold = d.tier.failback.hold_seconds
    now, seen = T0, []
    for _ in range(6):
        now += timedelta(seconds=hold)
        state = replace(state, legs=plan.legs, traffic=plan.weights,
                        observed=all_ready(plan.replicas))
        plan = plan_one(state, HEALTHY, now=now)
        seen.append(plan.legs["east/east-a"].state)
    assert seen[0] == "FailingBack" and seen[-1] == "Serving"
    assert plan.replicas[("east", "primary", "east-b")] == 1
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}


def test_critical_deployments_get_spare_gpus_before_best_effort_ones():
    low = ModelDeployment.model_validate({
        "metadata": {"name": "batch", "namespace": "ai-platform"},
        "spec": {"slaTier": "best-effort",
                 "model": {"name": "m", "image": "i", "resources": {"gpus": 4}},
                 "placement": [{"cluster": "east", "zones": {"east-a": 1, "east-b": 1}},
                               {"cluster": "west", "zones": {"west-a": 1, "west-b": 1}}]},
    })
    clusters = {"east": cluster("east", gpus=28), "west": cluster("west", "Down")}
    inputs = [deployment(low), deployment(IDE)]
    plans = plan_fleet(inputs, clusters, now=T0)
    # baseline in east: 8 (ide) + 2 (ide fallback) + 8 (batch) = 18; 10 GPUs spare
    assert plans[("ai-platform", "ide-assistant")].unserved == 0
    assert plans[("ai-platform", "batch")].unserved == 2


def _best_effort(fallback: bool = True) -> ModelDeployment:
    spec: dict = {"slaTier": "best-effort",
                  "model": {"name": "m", "image": "i", "resources": {"gpus": 4}},
                  "placement": [{"cluster": "east", "zones": {"east-a": 1, "east-b": 1}},
                                {"cluster": "west", "zones": {"west-a": 1, "west-b": 1}}]}
    if fallback:
        spec["fallback"] = {"model": {"name": "small", "image": "i", "resources": {"gpus": 1}},
                            "replicasPerZone": 0}
    return ModelDeployment.model_validate(
        {"metadata": {"name": "batch", "namespace": "ai-platform"}, "spec": spec})


def test_a_critical_failover_takes_a_best_effort_deployments_own_gpus():
    clusters = {"east": cluster("east", gpus=20), "west": cluster("west", "Down")}
    plans = plan_fleet([deployment(_best_effort()), deployment(IDE)], clusters, now=T0)
    ide, batch = plans[("ai-platform", "ide-assistant")], plans[("ai-platform", "batch")]
    # ide takes 4x4 primary (its own 2 and west's 2) + 2 warm fallback = 18 of 20 GPUs
    assert ide.unserved == 0 and cond(ide, "Degraded").status == "False"
    assert sum(n for (c, r, _), n in ide.replicas.items() if c == "east" and r == "primary") == 4
    # batch cannot keep even its own east replicas: all 4 go to its 1-GPU fallback model
    assert batch.unserved == 4
    assert sum(n for (c, r, _), n in batch.replicas.items()
               if c == "east" and r == "primary") == 0
    assert sum(n for (c, r, _), n in batch.replicas.items()
               if c == "east" and r == "fallback") == 2, "the 2 GPUs left"
    assert batch.weights == {"east": 0, "west": 0, "fallback": 100}
    degraded = cond(batch, "Degraded")
    assert degraded.reason == "InsufficientCapacity"
    assert "ai-platform/ide-assistant (critical) 18" in degraded.message
    (decision,) = [x for x in batch.decisions if x.kind == "Capacity"]
    assert decision.inputs["to"] == 4 and "ide-assistant" in decision.reason
    # reported once: the same shortage next round decides nothing new
    again = plan_fleet([replace(deployment(_best_effort()), unserved=4, legs=batch.legs,
                                traffic=batch.weights), deployment(IDE)], clusters, now=T0)
    assert not [x for x in again[("ai-platform", "batch")].decisions if x.kind == "Capacity"]


def test_scaling_up_past_capacity_spills_to_the_fallback_and_back():
    from twinhull.plan.scaling import Load

    md = _scaled("Enforce")
    d, _ = steady(md)
    small = [cluster("east", gpus=14), cluster("west", gpus=14)]  # 3 primaries + 2 warm fb
    plan = plan_one(replace(d, load=Load(tokens_per_second=16_000)), small)
    assert plan.scaled == 8 and plan.unserved == 2
    assert [x.kind for x in plan.decisions].count("Capacity") == 1
    calm = plan_one(replace(d, load=Load(tokens_per_second=16_000), scaled=8, unserved=2),
                    [cluster("east"), cluster("west")])
    assert calm.unserved == 0
    assert [x.reason for x in calm.decisions if x.kind == "Capacity"] == [
        "all 8 replicas placed again"]


def test_same_inputs_same_plan():
    d, _ = steady()
    views = {"east": cluster("east"), "west": cluster("west", "Down")}
    assert plan_fleet([d], views, now=T0) == plan_fleet([d], views, now=T0)


def test_no_probe_yet_is_no_evidence_of_failure():
    d, _ = steady()
    unknown = ClusterView(name="west", phase=None, zones_ready={}, gpus=32)
    plan = plan_one(d, [cluster("east"), unknown])
    assert plan.legs["west"].state == "Serving"
    assert plan.decisions[0].kind == "ShiftTraffic" and plan.weights["east"] == 100


def test_a_new_deployment_routes_by_plan_until_something_is_ready():
    plan = plan_one(deployment(IDE), HEALTHY)
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}
    assert cond(plan, "Available").status == "False"


def test_the_fallback_serves_when_no_primary_replica_is_ready():
    d = deployment(IDE)
    first = plan_one(d, HEALTHY)
    observed = {k: Replicas(n, n if k[1] == "fallback" else 0) for k, n in first.replicas.items()}
    plan = plan_one(replace(d, observed=observed), HEALTHY)
    assert plan.weights == {"east": 0, "west": 0, "fallback": 100}
    assert cond(plan, "Available").status == "True"


def test_a_cluster_failing_back_takes_over_the_fallback_share_first():
    d, _ = steady()
    legs = {"east": Leg(), "west": Leg("FailingBack", since=T0, step=2, step_since=T0)}
    short = [cluster("east", gpus=10), cluster("west")]  # east holds only its baseline
    plan = plan_one(replace(d, legs=legs), short)
    assert plan.unserved == 2
    # west at 50% of its 2-of-4 share carries 1 replica's worth: fallback keeps 25%
    assert plan.weights == {"east": 50, "west": 25, "fallback": 25}


def _scaled(mode: str):
    return example("ide-assistant").model_copy(update={"spec": IDE.spec.model_copy(update={
        "scaling": IDE.spec.scaling.model_copy(update={"mode": mode})})})


def test_enforced_scaling_raises_every_zone_and_says_why():
    from twinhull.plan.scaling import Load

    md = _scaled("Enforce")  # 2,500 tokens/s a replica, 1..3 a zone, 4 zones
    d, _ = steady(md)
    plan = plan_one(replace(d, load=Load(tokens_per_second=16_000)), HEALTHY)  # 7.7 -> 8
    assert plan.scaled == 8
    assert {n for (c, r, z), n in plan.replicas.items() if r == "primary"} == {2}
    (scale,) = [x for x in plan.decisions if x.kind == "Scale"]
    assert scale.inputs["from"] == 4 and scale.inputs["to"] == 8
    assert cond(plan, "MetricsAvailable").status == "True"


def test_without_metrics_scaling_holds_and_reports_it():
    d, _ = steady(_scaled("Enforce"))
    plan = plan_one(replace(d, scaled=8, load=None), HEALTHY)
    assert plan.scaled == 8 and not [x for x in plan.decisions if x.kind == "Scale"]
    assert cond(plan, "MetricsAvailable").status == "False"


def test_suggested_scaling_waits_for_approval_then_applies_exactly_it():
    from twinhull.plan.scaling import Load

    d, _ = steady(_scaled("Suggest"))
    busy = replace(d, load=Load(tokens_per_second=16_000))
    plan = plan_one(busy, HEALTHY)
    assert plan.pending is not None and plan.pending.kind == "Scale"
    assert plan.scaled == 4 and plan.replicas[("east", "primary", "east-a")] == 1
    approved = plan_one(replace(busy, approved=plan.pending.id), HEALTHY)
    assert approved.scaled == 8 and approved.replicas[("east", "primary", "east-a")] == 2


def test_scaling_off_keeps_the_placement_exactly():
    d, _ = steady(_scaled("Off"))
    plan = plan_one(d, HEALTHY)
    assert plan.scale is None and plan.scaled is None
    assert all(c.type != "MetricsAvailable" for c in plan.conditions)


def test_during_failover_the_survivors_carry_the_scaled_total():
    d, _ = steady(_scaled("Enforce"))
    plan = plan_one(replace(d, scaled=8), [cluster("east", gpus=64), cluster("west", "Down")])
    east = sum(n for (c, r, z), n in plan.replicas.items() if c == "east" and r == "primary")
    assert east == 8


def test_a_suggestion_keeps_its_id_while_the_load_jitters():
    from twinhull.plan.scaling import Load

    d, _ = steady(_scaled("Suggest"))
    first = plan_one(replace(d, load=Load(tokens_per_second=16_000)), HEALTHY)
    second = plan_one(replace(d, load=Load(tokens_per_second=16_321.5)), HEALTHY)
    assert first.pending is not None and second.pending is not None
    assert first.pending.id == second.pending.id
