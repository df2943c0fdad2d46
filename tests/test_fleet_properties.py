"""Properties of the fleet planner over random fleets, tier policies, outages, failover
state, scaling and load: no cluster is planned past its GPUs, weights always sum to 100,
Available never rests on replicas that cannot serve, zones declared 0 stay empty, and no
input raises. Pure: hypothesis drives plan_fleet, no cluster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.plan.fleet import (
    FALLBACK,
    ClusterView,
    DeploymentInput,
    Leg,
    Replicas,
    plan_fleet,
)
from twinhull.plan.scaling import Load, Recommendation
from twinhull.policy import load_file

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TIERS = load_file()
CLUSTERS = ("east", "west", "north")
ZONES = ("a", "b", "c")
PHASES = (None, "Healthy", "Suspect", "Down", "Recovering")
STATES = ("Serving", "FailedOver", "FailingBack")


@st.composite
def views(draw: st.DrawFn) -> dict[str, ClusterView]:
    """Some of the clusters (a missing one was never seen), each with a phase, zones up or
    not, and any capacity."""
    out = {}
    for name in CLUSTERS:
        if draw(st.integers(0, 5)) == 0:
            continue
        zones = {f"{name}-{z}": draw(st.booleans()) for z in ZONES if draw(st.booleans())}
        out[name] = ClusterView(name=name, phase=draw(st.sampled_from(PHASES)),
                                zones_ready=zones, gpus=draw(st.integers(0, 64)))
    return out


@st.composite
def specs(draw: st.DrawFn) -> ModelDeploymentSpec:
    clusters = draw(st.lists(st.sampled_from(CLUSTERS), min_size=1, max_size=3, unique=True))
    placement = [{"cluster": c, "zones": {
        f"{c}-{z}": draw(st.integers(0, 3))
        for z in draw(st.lists(st.sampled_from(ZONES), min_size=1, max_size=3, unique=True))}}
        for c in clusters]
    spec: dict[str, Any] = {
        "slaTier": draw(st.sampled_from(("critical", "standard", "best-effort"))),
        "priority": draw(st.sampled_from((0, 0, 5, 1000))),
        "model": {"name": "primary", "image": "i",
                  "resources": {"gpus": draw(st.integers(0, 8))}},
        "placement": placement,
        "traffic": {"failover": draw(st.sampled_from(("Automatic", "Manual")))},
    }
    if draw(st.booleans()):
        spec["fallback"] = {"model": {"name": "small", "image": "i",
                                      "resources": {"gpus": draw(st.integers(0, 4))}},
                            "replicasPerZone": draw(st.integers(0, 2))}
    if draw(st.booleans()):
        low = draw(st.integers(0, 2))
        spec["scaling"] = {"mode": draw(st.sampled_from(("Enforce", "Suggest", "Off"))),
                           "minReplicasPerZone": low,
                           "maxReplicasPerZone": draw(st.integers(low, 6))}
    return ModelDeploymentSpec.model_validate(spec)


@st.composite
def deployments(draw: st.DrawFn, index: int) -> DeploymentInput:
    spec = draw(specs())
    tier = TIERS.resolve(spec.sla_tier)
    # a tier policy changed at any time: any distinct steps ending at 100
    steps = [*sorted(draw(st.sets(st.integers(1, 99), max_size=5))), 100]
    tier = tier.model_copy(update={"failback": tier.failback.model_copy(
        update={"steps": steps, "hold_seconds": draw(st.integers(0, 120))})})
    cells = [(p.cluster, z) for p in spec.placement for z in p.zones]
    keys = [p.cluster for p in spec.placement] + [f"{c}/{z}" for c, z in cells]
    legs = {k: Leg(draw(st.sampled_from(STATES)),
                   since=T0 - timedelta(seconds=draw(st.integers(0, 3600))),
                   step=draw(st.integers(-1, 7)),
                   step_since=T0 - timedelta(seconds=draw(st.integers(0, 3600))))
            for k in keys if draw(st.booleans())}
    observed = {}
    for c, z in cells:
        for role in ("primary", "fallback"):
            if draw(st.booleans()):
                ready = draw(st.integers(0, 4))
                observed[(c, role, z)] = Replicas(ready + draw(st.integers(0, 2)), ready)
    traffic = ({k: draw(st.integers(0, 100)) for k in [*(p.cluster for p in spec.placement),
                                                        FALLBACK]}
               if draw(st.booleans()) else {})
    tokens = draw(st.one_of(st.none(), st.floats(0, 50_000, allow_nan=False)))
    history = tuple(Recommendation(T0 - timedelta(seconds=s), draw(st.integers(0, 12)))
                    for s in sorted(draw(st.lists(st.integers(1, 2000), max_size=3)),
                                    reverse=True))
    return DeploymentInput(
        namespace="ns", name=f"d{index}", spec=spec, tier=tier, legs=legs, observed=observed,
        traffic=traffic, load=Load(tokens_per_second=tokens),
        scaled=draw(st.one_of(st.none(), st.integers(0, 20))), scaling_history=history,
        unserved=draw(st.integers(0, 6)), approved=draw(st.sampled_from((None, "x"))),
    )


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[DeploymentInput], dict[str, ClusterView]]:
    count = draw(st.integers(1, 4))
    return [draw(deployments(i)) for i in range(count)], draw(views())


def _gpus(d: DeploymentInput, role: str) -> int:
    if role == "primary":
        return d.spec.model.resources.gpus
    assert d.spec.fallback is not None, "fallback replicas only with a fallback"
    return d.spec.fallback.model.resources.gpus


def _serving(clusters, legs, counts, c: str, z: str) -> bool:
    """Whether a cell's Ready replicas may serve: the oracle, independent of the planner."""
    view = clusters.get(c)
    if view is None or view.phase is None:
        return True  # not observed yet: no evidence either way
    return (view.phase != "Down" and view.zones_ready.get(z, False)
            and counts[(c, z)] > 0 and legs[c].state != "FailedOver")


FLEET = settings(max_examples=300, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FLEET
@given(fleets())
def test_no_cluster_is_planned_past_its_gpus(fleet):
    inputs, clusters = fleet
    plans = plan_fleet(inputs, clusters, now=T0)
    used = dict.fromkeys(clusters, 0)
    for d in inputs:
        for (c, role, _), n in plans[(d.namespace, d.name)].replicas.items():
            assert n >= 0
            if c in used:
                used[c] += n * _gpus(d, role)
    for name, view in clusters.items():
        assert used[name] <= view.gpus, (name, used[name], view.gpus)


@FLEET
@given(fleets())
def test_weights_always_sum_to_100_and_available_needs_a_serving_replica(fleet):
    inputs, clusters = fleet
    plans = plan_fleet(inputs, clusters, now=T0)
    for d in inputs:
        plan = plans[(d.namespace, d.name)]
        assert sum(plan.weights.values()) == 100, plan.weights
        assert all(w >= 0 for w in plan.weights.values())
        assert set(plan.weights) == {*(p.cluster for p in d.spec.placement), FALLBACK}
        counts = {(p.cluster, z): n for p in d.spec.placement for z, n in p.zones.items()}
        if not any(r.ready > 0 and _serving(clusters, plan.legs, counts, c, z)
                   for (c, _, z), r in d.observed.items()):
            available = next(x for x in plan.conditions if x.type == "Available")
            assert available.status == "False", (available, d.observed)


@FLEET
@given(fleets())
def test_zones_declared_zero_stay_empty(fleet):
    inputs, clusters = fleet
    plans = plan_fleet(inputs, clusters, now=T0)
    for d in inputs:
        plan = plans[(d.namespace, d.name)]
        for p in d.spec.placement:
            for z, n in p.zones.items():
                if n == 0:
                    assert plan.replicas[(p.cluster, "primary", z)] == 0
                    assert plan.replicas.get((p.cluster, "fallback", z), 0) == 0


@FLEET
@given(fleets())
def test_same_inputs_same_plans_in_any_order(fleet):
    inputs, clusters = fleet
    assert plan_fleet(inputs, clusters, now=T0) == plan_fleet(inputs[::-1], clusters, now=T0)
