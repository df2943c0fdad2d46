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
    # a restart moves no traffic: west keeps its published share until it is seen
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}
    assert plan.decisions == []
    assert plan.replicas[("west", "primary", "west-a")] == 1, "nothing moves to east"
    assert plan.replicas[("east", "primary", "east-a")] == 1


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


# -- issue 10 ------------------------------------------------------------------------------

def _gpus_used(plans, specs) -> dict[str, int]:
    """GPUs every plan runs per cluster: primaries and fallbacks, Down clusters included."""
    used: dict[str, int] = {}
    for key, plan in plans.items():
        spec = specs[key]
        for (c, role, _), n in plan.replicas.items():
            per = spec.model.resources.gpus if role == "primary" else \
                spec.fallback.model.resources.gpus
            used[c] = used.get(c, 0) + n * per
    return used


def _with_steps(d: DeploymentInput, steps: list[int]) -> DeploymentInput:
    failback = d.tier.failback.model_copy(update={"steps": steps})
    return replace(d, tier=d.tier.model_copy(update={"failback": failback}))


def test_a_failback_step_past_a_shortened_tier_policy_continues_from_its_last_step():
    d, _ = steady()
    # west was at step 2 (50%) of [5, 25, 50, 100]; the policy now says [50, 100]
    legs = {"east": Leg(), "west": Leg("FailingBack", since=T0, step=2, step_since=T0)}
    state = _with_steps(replace(d, legs=legs), [50, 100])
    plan = plan_one(state, HEALTHY, now=T0 + timedelta(seconds=1))
    assert plan.legs["west"].state == "FailingBack" and plan.legs["west"].step == 0
    assert plan.weights["west"] == 25, "the last step below 100: 50% of its 50% share"
    assert "west failing back at 50%" in cond(plan, "FailedOver").message
    done = plan_one(replace(state, legs=plan.legs),
                    HEALTHY, now=T0 + timedelta(seconds=1 + state.tier.failback.hold_seconds))
    assert done.legs["west"].state == "Serving"
    assert [x.kind for x in done.decisions] == ["FailbackComplete"]


def test_a_zone_leg_past_a_shortened_policy_is_clamped_too():
    d, _ = steady()
    legs = {**d.legs, "east/east-a": Leg("FailingBack", since=T0, step=3, step_since=T0)}
    state = _with_steps(replace(d, legs=legs), [100])
    plan = plan_one(state, HEALTHY, now=T0 + timedelta(hours=1))
    assert plan.legs["east/east-a"].state == "Serving", "a single step of 100 completes"
    assert sum(plan.weights.values()) == 100


def test_one_ledger_counts_the_replicas_kept_in_a_down_cluster():
    batch = _best_effort()
    clusters = {"east": cluster("east", gpus=40), "west": cluster("west", "Down", gpus=12)}
    inputs = [deployment(batch), deployment(IDE)]
    plans = plan_fleet(inputs, clusters, now=T0)
    specs = {(d.namespace, d.name): d.spec for d in inputs}
    used = _gpus_used(plans, specs)
    # west holds ide's 2x4 primaries + 2 warm fallbacks (10 GPUs): batch's 2x4 do not fit
    assert used["west"] <= 12 and used["east"] <= 40
    ide = plans[("ai-platform", "ide-assistant")]
    assert ide.replicas[("west", "primary", "west-a")] == 1, "kept as declared: it fits"
    assert ide.replicas[("west", "fallback", "west-a")] == 1
    batch_west = sum(n for (c, r, _), n in plans[("ai-platform", "batch")].replicas.items()
                     if c == "west")
    assert batch_west == 0, "lowered to what fits, rather than overcommitting west"


def test_a_failing_back_zone_and_the_zone_carrying_it_share_one_ledger():
    d, _ = steady(_scaled("Off"))
    legs = {**d.legs, "east/east-a": Leg("FailingBack", since=T0, step=0, step_since=T0)}
    # east: 10 GPUs. east-b serves 1x4, east-a keeps its 1x4 for the failback, the warm
    # fallbacks take 2: east-a's share is carried by west, not squeezed into east-b
    views = {"east": cluster("east", gpus=10), "west": cluster("west", gpus=32)}
    plans = plan_fleet([replace(d, legs=legs)], views, now=T0)
    used = _gpus_used(plans, {(d.namespace, d.name): d.spec})
    assert used["east"] <= 10
    plan = plans[(d.namespace, d.name)]
    assert plan.replicas[("east", "primary", "east-a")] == 1, "the failback's replicas first"
    assert plan.replicas[("east", "primary", "east-b")] == 1
    assert plan.unserved == 0


def test_a_failover_approval_never_approves_a_later_incident():
    md = example("hybrid-reasoning")  # traffic.failover: Manual
    d, _ = steady(md)
    down = [cluster("east"), cluster("west", "Down")]
    first = plan_one(d, down)
    assert first.pending is not None
    approved = plan_one(replace(d, approved=first.pending.id), down)
    assert approved.legs["west"].state == "FailedOver" and approved.consumed == first.pending.id
    # ... west fails back completely; the annotation is still there; a month later:
    later = T0 + timedelta(days=30)
    back = replace(d, legs={**approved.legs, "west": Leg(since=later - timedelta(hours=1))},
                   approved=first.pending.id, consumed=frozenset({first.pending.id}))
    again = plan_one(back, down, now=later)
    assert again.legs["west"].state == "Serving", "the old approval approves nothing"
    assert again.pending is not None and again.pending.id != first.pending.id
    assert again.consumed is None
    # an id applied once approves nothing even if it were issued again
    replay = plan_one(replace(d, approved=first.pending.id,
                              consumed=frozenset({first.pending.id})), down)
    assert replay.legs["west"].state == "Serving" and replay.pending is not None


def test_a_failback_approval_is_bound_to_the_failover_it_ends():
    md = example("hybrid-reasoning")
    d, _ = steady(md)
    failed = replace(d, legs={**d.legs, "west": Leg("FailedOver", since=T0)})
    plan = plan_one(failed, HEALTHY, now=T0 + timedelta(minutes=5))
    assert plan.pending is not None and plan.pending.kind == "Failback"
    other = replace(failed, legs={**d.legs, "west": Leg("FailedOver", since=T0 + timedelta(
        days=1))})
    later = plan_one(replace(other, approved=plan.pending.id), HEALTHY,
                     now=T0 + timedelta(days=1, minutes=5))
    assert later.legs["west"].state == "FailedOver", "another incident, another id"


def test_a_scale_approval_applies_once_and_a_later_identical_suggestion_needs_its_own():
    from twinhull.plan.scaling import Load

    d, _ = steady(_scaled("Suggest"))
    busy = replace(d, load=Load(tokens_per_second=16_000))
    first = plan_one(busy, HEALTHY)
    assert first.pending is not None
    applied = plan_one(replace(busy, approved=first.pending.id), HEALTHY)
    assert applied.scaled == 8 and applied.consumed == first.pending.id
    # later the count is back at 4 (another approved decision), the annotation still holds
    # the first id, and the same 4 -> 8 suggestion comes again
    later = replace(busy, approved=first.pending.id,
                    consumed=frozenset({first.pending.id, "0123456789ab"}))
    again = plan_one(later, HEALTHY)
    assert again.scaled == 4 and again.pending is not None
    assert again.pending.id != first.pending.id, "a new suggestion, a new id"
    assert again.consumed is None


def test_all_clusters_down_without_a_fallback_keeps_the_declared_shares_and_says_so():
    md = _best_effort(fallback=False)
    d = deployment(md, observed={(c, "primary", z): Replicas(1, 1) for c, z in
                                 [("east", "east-a"), ("east", "east-b"), ("west", "west-a"),
                                  ("west", "west-b")]},
                   traffic={"east": 50, "west": 50, "fallback": 0})
    down = [cluster("east", "Down"), cluster("west", "Down")]
    plan = plan_one(d, down)
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}
    available = cond(plan, "Available")
    assert available.status == "False" and available.reason == "NoServingCluster"
    assert "keeps the declared shares" in available.message


def test_all_clusters_down_with_a_fallback_is_not_available_from_stale_counts():
    d, _ = steady()  # every primary and fallback replica was Ready before the outage
    plan = plan_one(d, [cluster("east", "Down"), cluster("west", "Down")])
    assert sum(plan.weights.values()) == 100
    assert cond(plan, "Available").status == "False"
    assert cond(plan, "Ready").status == "False"


def test_a_down_zone_does_not_make_its_stale_ready_replicas_available():
    d, _ = steady(_best_effort(fallback=False))
    one_zone = ModelDeployment.model_validate({
        "metadata": {"name": "solo", "namespace": "ai-platform"},
        "spec": {"slaTier": "best-effort", "model": {"name": "m", "image": "i"},
                 "placement": [{"cluster": "east", "zones": {"east-a": 1}}]}})
    d = deployment(one_zone, observed={("east", "primary", "east-a"): Replicas(1, 1)},
                   traffic={"east": 100, "fallback": 0})
    plan = plan_one(d, [cluster("east", down_zones=["east-a"])])
    assert plan.weights == {"east": 100, "fallback": 0}
    assert cond(plan, "Available").status == "False"


def _with_zero_zone(scaling: bool = False) -> ModelDeployment:
    spec = IDE.spec.model_dump(by_alias=True, exclude_none=True)
    spec["placement"] = [{"cluster": "east", "zones": {"east-a": 2, "east-b": 0}},
                         {"cluster": "west", "zones": {"west-a": 2, "west-b": 2}}]
    if scaling:
        spec["scaling"] = {"mode": "Enforce", "minReplicasPerZone": 1,
                           "maxReplicasPerZone": 8}
    else:
        spec.pop("scaling", None)
    return ModelDeployment.model_validate(
        {"metadata": {"name": "zero", "namespace": "ai-platform"}, "spec": spec})


def test_a_zone_declared_zero_stays_empty_through_failover():
    d, _ = steady(_with_zero_zone())
    plan = plan_one(d, [cluster("east"), cluster("west", "Down")])
    assert plan.replicas[("east", "primary", "east-b")] == 0
    assert plan.replicas[("east", "fallback", "east-b")] == 0
    assert plan.replicas[("east", "primary", "east-a")] == 6, "east-a carries west's 4"


def test_the_baseline_counts_no_warm_fallback_in_a_zone_declared_zero():
    from twinhull.plan.fleet import baseline_gpus

    spec = _with_zero_zone().spec
    assert baseline_gpus(spec) == {"east": 2 * 4 + 1, "west": 4 * 4 + 2}
    _, first = steady(_with_zero_zone())
    planned = {c: sum(n * (4 if r == "primary" else 1) for (cc, r, _), n in
                      first.replicas.items() if cc == c) for c in ("east", "west")}
    assert planned == baseline_gpus(spec), "what the validator counts is what runs"


def test_a_zone_declared_zero_gets_no_scaled_replicas_and_no_minimum():
    from twinhull.plan.scaling import Load

    d, _ = steady(_with_zero_zone(scaling=True))
    plan = plan_one(replace(d, load=Load(tokens_per_second=1.0)), HEALTHY)
    assert plan.replicas[("east", "primary", "east-b")] == 0, "no minimum for a 0 zone"
    busy = plan_one(replace(d, load=Load(tokens_per_second=20_000)), HEALTHY)
    assert busy.replicas[("east", "primary", "east-b")] == 0
    assert busy.scale is not None and busy.scale.inputs["bounds"] == [3, 24], "3 zones"


def test_a_cluster_without_a_view_keeps_its_published_share():
    d, _ = steady()
    plan = plan_fleet([d], {"east": cluster("east")}, now=T0)[(d.namespace, d.name)]
    assert plan.weights == {"east": 50, "west": 50, "fallback": 0}
    assert plan.legs["west"].state == "Serving" and plan.decisions == []


def test_only_the_unobserved_cluster_keeps_its_weight_the_others_follow_capacity():
    d, _ = steady()
    unknown = ClusterView(name="west", phase=None, zones_ready={}, gpus=32)
    # east lost its Ready nodes in east-a: east keeps what it has, west stays at 50
    plan = plan_one(d, [cluster("east", down_zones=["east-a"]), unknown])
    assert plan.weights["west"] == 50 and sum(plan.weights.values()) == 100


def _critical(name: str, priority: int = 0) -> ModelDeployment:
    spec = IDE.spec.model_dump(by_alias=True, exclude_none=True)
    spec.pop("scaling", None)
    spec["priority"] = priority
    return ModelDeployment.model_validate(
        {"metadata": {"name": name, "namespace": "ai-platform"}, "spec": spec})


def _two_critical(load_a, load_b, *, unserved_a=0, unserved_b=0, priority_b=0):
    from twinhull.plan.scaling import Load

    a = replace(deployment(_critical("aiops-platform")), unserved=unserved_a,
                load=None if load_a is None else Load(tokens_per_second=load_a))
    b = replace(deployment(_critical("ide-assistant", priority_b)), unserved=unserved_b,
                load=None if load_b is None else Load(tokens_per_second=load_b))
    # east has room for one deployment's 4 primaries and both warm fallbacks (2+2)
    clusters = {"east": cluster("east", gpus=28), "west": cluster("west", "Down")}
    plans = plan_fleet([a, b], clusters, now=T0)
    return plans[("ai-platform", "aiops-platform")], plans[("ai-platform", "ide-assistant")]


def test_within_a_tier_the_deployment_with_more_demand_keeps_its_primary():
    aiops, ide = _two_critical(3_000, 12_000)
    assert ide.unserved == 0 and ide.weights["east"] == 100
    assert aiops.unserved > 0 and aiops.weights["fallback"] > 0
    degraded = cond(aiops, "Degraded").message
    assert "ranked by tier critical, then priority 0, then measured demand" in degraded
    assert "ranked after ai-platform/ide-assistant (critical) (more demand)" in degraded
    (capacity,) = [x for x in aiops.decisions if x.kind == "Capacity"]
    assert "ranked by tier critical, then priority 0, then demand 3000 tok/s" in \
        capacity.reason
    assert capacity.inputs["demandTokensPerSecond"] == 3_000


def test_spec_priority_is_compared_before_demand():
    aiops, ide = _two_critical(12_000, 3_000, priority_b=10)
    assert ide.unserved == 0 and aiops.unserved > 0
    assert "(higher priority)" in cond(aiops, "Degraded").message


def test_without_demand_readings_names_decide():
    aiops, ide = _two_critical(None, None)
    assert aiops.unserved == 0 and ide.unserved > 0
    assert "then name order (no demand reading)" in cond(ide, "Degraded").message


def test_a_placed_deployment_keeps_its_gpus_while_the_others_demand_jitters_past_it():
    # ide holds the GPUs (nothing unserved); aiops (degraded) measures 10% more: no swap
    aiops, ide = _two_critical(13_200, 12_000, unserved_a=4)
    assert ide.unserved == 0 and aiops.unserved > 0
    # a quarter more takes them
    aiops, ide = _two_critical(15_100, 12_000, unserved_a=4)
    assert aiops.unserved == 0 and ide.unserved > 0


def test_a_failover_whose_planned_replicas_are_ready_is_ready_but_degraded():
    d, _ = steady()
    down = [cluster("east"), cluster("west", "Down")]
    first = plan_one(d, down)
    settled = replace(d, observed=all_ready(first.replicas), legs=first.legs,
                      traffic=first.weights)
    plan = plan_one(settled, down, now=T0 + timedelta(seconds=5))
    ready = cond(plan, "Ready")
    assert (ready.status, ready.reason) == ("True", "ServingDegraded")
    assert "west failed over" in ready.message
    assert cond(plan, "FailedOver").status == "True"
    healthy = plan_one(d, HEALTHY)
    assert (cond(healthy, "Ready").status, cond(healthy, "Ready").reason) == ("True", "Serving")


def test_clusters_drained_by_a_rollback_get_no_traffic_while_another_has_ready_capacity():
    """A revision rolled back for failing its own requests keeps its Ready pods until the
    Good ones load again (maxUnavailable 0): the clusters where it was Ready get weight 0
    while another cluster can serve, and their weight comes back once it is lifted."""
    d, first = steady()
    plan = plan_one(replace(d, drained=frozenset({"east"})), HEALTHY)
    assert plan.weights == {"east": 0, "west": 100, "fallback": 0}
    shift = next(x for x in plan.decisions if x.kind == "ShiftTraffic")
    assert "east drained while rolling back" in shift.reason
    assert shift.inputs["drained"] == ["east"]
    # west takes east's share of replicas on top of its own, east keeps its own (they are
    # replaced by the Good revision one model load at a time)
    surged = {("west", "primary", "west-a"): 2, ("west", "primary", "west-b"): 2}
    assert plan.replicas == {**first.replicas, **surged}
    assert shift.inputs["surged"] == {"west": 2}
    assert "west carries 2 more replicas meanwhile" in shift.reason
    assert plan.unserved == 0
    # west has no Ready primary: east's (maybe Bad) pods are better than nothing
    cold = {s: (Replicas(n, 0) if s[0] == "west" and s[1] == "primary" else Replicas(n, n))
            for s, n in first.replicas.items()}
    plan = plan_one(replace(d, drained=frozenset({"east"}), observed=cold), HEALTHY)
    assert plan.weights["east"] == 100
    assert not [x for x in plan.decisions if "drained" in x.inputs]
    assert plan_one(d, HEALTHY).weights == {"east": 50, "west": 50, "fallback": 0}
    assert plan_one(d, HEALTHY).replicas == first.replicas, "lifted: the surge goes"


def test_the_survivors_surge_takes_only_the_gpus_left_and_leaves_nothing_unserved():
    d, first = steady()
    drained = replace(d, drained=frozenset({"east"}))
    # west's own primary (2 x 4 GPUs) and fallback (2 x 1) use 10 of 14: one more fits
    plan = plan_one(drained, [cluster("east"), cluster("west", gpus=14)])
    assert sum(n for (c, r, _), n in plan.replicas.items() if c == "west" and r == "primary") == 3
    assert plan.unserved == 0 and not [x for x in plan.decisions if x.kind == "Capacity"]
    plan = plan_one(drained, [cluster("east"), cluster("west", gpus=13)])
    assert plan.replicas == first.replicas
    assert "surged" not in next(x for x in plan.decisions if x.kind == "ShiftTraffic").inputs
    # a Degraded survivor takes no surge (as for a failover's moved share)
    plan = plan_one(drained, [cluster("east"), cluster("west", "Degraded")])
    assert plan.replicas == first.replicas
    # every placed cluster drained: nobody to carry more
    plan = plan_one(replace(d, drained=frozenset({"east", "west"})), HEALTHY)
    assert plan.replicas == first.replicas


def test_a_rollbacks_surge_never_moves_a_model_ranked_after_to_its_fallback():
    """The surge is a convenience (the drained cluster still has its replicas): it takes
    only GPUs that no deployment ranked after needs for its declared replicas."""
    ide, _ = steady()
    review, _ = steady(example("code-review"))
    drained = replace(ide, drained=frozenset({"east"}))

    def plans(west_gpus: int):
        views = {c.name: c for c in [cluster("east"), cluster("west", gpus=west_gpus)]}
        out = plan_fleet([drained, review], views, now=T0)
        return out[(ide.namespace, ide.name)], out[(review.namespace, review.name)]

    def west_primary(plan) -> int:
        return sum(n for (c, r, _), n in plan.replicas.items() if c == "west" and r == "primary")

    # west: ide's own 10 GPUs, code-review's 2; 2 spare: no 4-GPU replica fits
    ide_plan, review_plan = plans(14)
    assert west_primary(ide_plan) == 2 and review_plan.unserved == 0
    assert ide_plan.weights["east"] == 0, "drained all the same"
    ide_plan, review_plan = plans(16)  # 4 spare: one more
    assert west_primary(ide_plan) == 3 and review_plan.unserved == 0


def _zoned(name: str, phase: str = "Healthy", gpus: int = 64, node: int = 8,
           nodes: int = 2) -> ClusterView:
    """A cluster whose two zones have ``nodes`` nodes of ``node`` GPUs each, as probed."""
    from twinhull.plan.fleet import ZoneGpus

    return replace(cluster(name, phase, gpus), zone_gpus={
        f"{name}-{z}": ZoneGpus(total=node * nodes, largest=node) for z in "ab"})


def _lopsided(gpus: int = 4) -> ModelDeployment:
    """4-GPU replicas, east-a 3 and east-b 1 (as west), a 1-GPU cold fallback."""
    return ModelDeployment.model_validate({
        "metadata": {"name": "lopsided", "namespace": "ai-platform"},
        "spec": {"slaTier": "critical", "scaling": {"mode": "Off"},
                 "model": {"name": "m", "image": "i", "resources": {"gpus": gpus}},
                 "fallback": {"model": {"name": "s", "image": "i", "resources": {"gpus": 1}},
                              "replicasPerZone": 0},
                 "placement": [{"cluster": c, "zones": {f"{c}-a": 3, f"{c}-b": 1}}
                               for c in ("east", "west")]}})


def test_a_failover_gives_no_zone_more_replicas_than_its_nodes_hold():
    """West's 4 replicas go to east by the declared 3:1, but east-a's two 8-GPU nodes
    hold 4 replicas of 4 GPUs: the rest goes to east-b, not to a Pending pod."""
    d, _ = steady(_lopsided(), [_zoned("east"), _zoned("west")])
    plan = plan_one(d, [_zoned("east"), _zoned("west", "Down")])
    assert plan.replicas[("east", "primary", "east-a")] == 4, "16 GPUs: 4 replicas"
    assert plan.replicas[("east", "primary", "east-b")] == 4
    assert plan.unserved == 0
    unzoned = plan_one(d, [cluster("east", gpus=64), cluster("west", "Down")])
    assert unzoned.replicas[("east", "primary", "east-a")] == 6, \
        "without a probe of the zones the cluster's GPUs are the only limit"


def test_a_zone_full_of_replicas_sends_the_rest_to_the_fallback_and_names_the_zone():
    d, _ = steady(_lopsided(), [_zoned("east"), _zoned("west")])
    # east-b has one 8-GPU node: 2 replicas; east-a 4; 2 of west's 4 are unserved
    east = replace(_zoned("east"), zone_gpus={**_zoned("east").zone_gpus,
                                              "east-b": _zoned("east", nodes=1)
                                              .zone_gpus["east-b"]})
    plan = plan_one(d, [east, _zoned("west", "Down")])
    assert plan.replicas[("east", "primary", "east-a")] == 4
    assert plan.replicas[("east", "primary", "east-b")] == 2
    assert plan.unserved == 2
    assert plan.replicas[("east", "fallback", "east-b")] == 0, "east-b has no GPU left"
    assert plan.replicas[("east", "fallback", "east-a")] == 0
    (capacity,) = [x for x in plan.decisions if x.kind == "Capacity"]
    assert "zone east-a: 0 of 16 GPUs free" in capacity.reason
    assert "zone east-b: 0 of 8 GPUs free" in capacity.reason


def test_a_replica_larger_than_every_node_of_a_zone_is_not_planned_there():
    d = deployment(_lopsided(gpus=12))
    plan = plan_one(d, [_zoned("east", node=8), _zoned("west", node=16)])
    assert all(plan.replicas[("east", "primary", z)] == 0 for z in ("east-a", "east-b"))
    assert plan.replicas[("west", "primary", "west-a")] == 2, "32 GPUs in two 16-GPU nodes"
    assert plan.replicas[("west", "primary", "west-b")] == 2, "what west-a and east cannot"
    assert plan.unserved == 4, "8 declared, 4 fit"
    (capacity,) = [x for x in plan.decisions if x.kind == "Capacity"]
    assert "zone east-a: no node has 12 GPUs, the largest 8" in capacity.reason


def test_zones_share_one_ledger_across_deployments_in_rank_order():
    """A critical deployment's failover fills east-a; the best-effort one ranked after it
    finds the zone full and moves to its fallback there, though east has GPUs left."""
    crit_d, _ = steady(_lopsided(), [_zoned("east"), _zoned("west")])
    batch = deployment(_best_effort())
    views = {"east": _zoned("east"), "west": _zoned("west", "Down")}
    plans = plan_fleet([batch, crit_d], views, now=T0)
    crit, low = plans[("ai-platform", "lopsided")], plans[("ai-platform", "batch")]
    assert crit.replicas[("east", "primary", "east-a")] == 4
    assert low.replicas[("east", "primary", "east-a")] == 0, "east-a's 16 GPUs are taken"
    assert crit.unserved == 0 and low.unserved >= 1
    for zone in ("east-a", "east-b"):
        used = sum(n * (4 if role == "primary" else 1)
                   for p in (crit, low) for (c, role, z), n in p.replicas.items()
                   if z == zone)
        assert used <= 16, f"{zone}: {used} GPUs planned in 16"
