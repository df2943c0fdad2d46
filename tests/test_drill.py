"""Failover drills' pure parts: scope, refusals, severity, preflight, and a whole drill
round by round with the real planner (simulated time: replicas become Ready a few rounds
after they are planned, as pods that load a model do). No cluster."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from test_fleet import HEALTHY, T0, cluster, steady
from twinhull.api.drill import FailoverDrillSpec
from twinhull.plan.drill import (
    Fleet,
    Observed,
    advance,
    in_scope,
    preflight,
    refusals,
    severity,
)
from twinhull.plan.fleet import DrillFault, Replicas, plan_fleet

KEY = "ai-platform/ide-assistant"


def drill(**kw) -> FailoverDrillSpec:
    return FailoverDrillSpec.model_validate({"target": {"cluster": "west"}, "mode": "Drain",
                                             "durationSeconds": 60, **kw})


def observed(d, plan, ready=None) -> Observed:
    seen = ready if ready is not None else d.observed
    per: dict[str, int] = {}
    for (c, role, _), r in seen.items():
        if role == "primary":
            per[c] = per.get(c, 0) + r.ready
    capacity = all(seen.get(s, Replicas(0, 0)).ready >= n for s, n in plan.replicas.items()
                   if s[0] != "west" and s[1] == "primary")
    return Observed(key=KEY, tier=d.spec.sla_tier, tier_availability=99.99, rto_target=60,
                    plan=plan, declared={"east": 2, "west": 2}, ready=per,
                    capacity_ok=capacity, serving_ready=sum(per.values()),
                    error_percent=0.5, latency_p95=0.8, latency_target=3.0)


def test_scope_is_the_namespace_the_labels_and_the_target():
    table = {("ai", "a"): ({"impact": "high"}, ["east", "west"], {"west": ["west-a"]}),
             ("ai", "b"): ({"impact": "low"}, ["east", "west"], {"west": ["west-a"]}),
             ("ai", "c"): ({"impact": "high"}, ["east"], {"east": ["east-a"]}),
             ("other", "d"): ({"impact": "high"}, ["west"], {"west": ["west-a"]})}
    spec = drill(selector={"matchLabels": {"impact": "high"}})
    assert in_scope(spec, "ai", table) == ["ai/a"]
    zoned = drill(target={"cluster": "west", "zone": "west-b"})
    assert in_scope(zoned, "ai", table) == []


def test_refused_while_a_peer_is_down_frozen_busy_or_really_failed_over():
    spec = drill()
    ok = Fleet(phases={"east": "Healthy", "west": "Healthy"})
    placed = {KEY: ["east", "west"]}
    assert refusals(spec, "ai/me", [KEY], ok, placed, {KEY: {"west": "Serving"}}) == []
    down = Fleet(phases={"east": "Healthy", "west": "Down"})
    assert any("west is Down" in r for r in refusals(spec, "ai/me", [KEY], down, placed, {}))
    frozen = replace(ok, frozen={"east": "incident INC-7"})
    assert any("INC-7" in r for r in refusals(spec, "ai/me", [KEY], frozen, placed, {}))
    busy = replace(ok, busy={"west": "ai/other"})
    assert any("ai/other" in r for r in refusals(spec, "ai/me", [KEY], busy, placed, {}))
    assert refusals(spec, "ai/other", [KEY], busy, placed, {}) == []  # itself
    moved = refusals(spec, "ai/me", [KEY], ok, placed, {KEY: {"east": "FailingBack"}})
    assert any("really failed over (east)" in r for r in moved)
    assert any("no ModelDeployment" in r for r in refusals(spec, "ai/me", [], ok, {}, {}))
    assert any("does not exist" in r for r in refusals(
        drill(target={"cluster": "north"}), "ai/me", [KEY], ok, placed, {}))


@pytest.mark.parametrize(("availability", "declared", "want"), [
    (99.99, {"west": 2}, "P0"),             # critical, all of it on the target
    (99.99, {"east": 2, "west": 2}, "P1"),  # critical, half
    (99.9, {"west": 2}, "P1"),              # a standard one loses all
    (99.9, {"east": 3, "west": 1}, "P2"),   # some users
    (99.5, {"east": 1, "west": 1}, "P3"),   # only a low tier
])
def test_severity_without_failover(availability, declared, want):
    d, first = steady()
    o = replace(observed(d, first), tier_availability=availability, declared=declared)
    assert severity([o], "west") == want


def test_preflight_says_nogo_when_the_survivor_lacks_gpus_and_go_when_it_has_them():
    d, _ = steady()
    fault = DrillFault("ai/x", "west")
    for gpus, verdict in ((32, "Go"), (8, "NoGo")):
        views = {"east": cluster("east", gpus=gpus), "west": cluster("west")}
        plan = plan_fleet([replace(d, drill=fault)], views, now=T0)[("ai-platform",
                                                                       "ide-assistant")]
        got, reasons, results = preflight(drill(), [observed(d, plan)], {})
        assert got == verdict, reasons
        assert results[0]["expectedWeights"]["west"] == 0
        if verdict == "NoGo":
            assert "would run" in reasons[0] and "short" in reasons[0]
            assert results[0]["degraded"] is True


def test_a_drilled_cluster_is_down_for_the_deployments_in_scope_only():
    d, _ = steady()
    views = {c.name: c for c in HEALTHY}
    other = replace(d, name="other")
    plans = plan_fleet([replace(d, drill=DrillFault("ai/x", "west")), other], views, now=T0)
    assert plans[("ai-platform", "ide-assistant")].weights["west"] == 0
    assert plans[("ai-platform", "other")].weights["west"] == 50


def test_an_outage_scales_the_target_to_zero_and_manual_failover_needs_no_approval():
    d, _ = steady()
    manual = replace(d, spec=d.spec.model_copy(update={
        "traffic": d.spec.traffic.model_copy(update={"failover": "Manual"})}))
    views = {c.name: c for c in HEALTHY}
    plan = plan_fleet([replace(manual, drill=DrillFault("ai/x", "west", outage=True))], views,
                      now=T0)[("ai-platform", "ide-assistant")]
    assert plan.pending is None and plan.legs["west"].state == "FailedOver"
    assert all(n == 0 for (c, _, _), n in plan.replicas.items() if c == "west")
    assert sum(n for (c, r, _), n in plan.replicas.items() if c == "east" and r == "primary") \
        == 4


class Lab:
    """The planner and the drill's phase machine, round by round (5 s apart): replicas
    planned become Ready ``delay`` rounds later; the target's real phase is Healthy."""

    def __init__(self, spec: FailoverDrillSpec, delay: int = 2) -> None:
        self.spec, self.delay, self.t = spec, delay, T0
        self.d, _ = steady()
        self.views = {c.name: c for c in HEALTHY}
        self.pending: list[tuple[int, dict]] = []
        self.round = 0
        self.status: dict = {"phase": "Detecting", "faultTime": "2026-11-25T10:00:00Z",
                             "deployments": [KEY], "timeline": [], "results": []}

    def stage(self) -> str | None:
        return {"Detecting": "Out", "Investigating": "Out", "Mitigating": "Out",
                "Monitoring": "Restoring"}.get(self.status["phase"],
                                               "Abort" if not self.status.get("completionTime")
                                               else None)

    def tick(self, abort: str | None = None, phases=None) -> dict:
        stage = self.stage()
        fault = DrillFault("ai/x", "west", None, stage) if stage else None  # type: ignore[arg-type]
        d = replace(self.d, drill=fault)
        plan = plan_fleet([d], self.views, now=self.t)[("ai-platform", "ide-assistant")]
        self.pending.append((self.round + self.delay, dict(plan.replicas)))
        ready = dict(self.d.observed)
        for _due, replicas in [p for p in self.pending if p[0] <= self.round]:
            ready = {s: Replicas(n, n) for s, n in replicas.items()}
        self.pending = [p for p in self.pending if p[0] > self.round]
        self.d = replace(self.d, legs=plan.legs, traffic=plan.weights, observed=ready)
        self.status = advance(self.spec, self.status, [observed(d, plan, ready)],
                              phases or {"east": "Healthy", "west": "Healthy"},
                              {KEY: ["east", "west"]}, self.t, abort=abort)
        self.t += timedelta(seconds=5)
        self.round += 1
        return self.status


def test_a_drain_drill_walks_every_phase_verifies_each_failback_step_and_passes():
    lab = Lab(drill())
    for _ in range(200):
        s = lab.tick()
        if s["phase"] == "Resolved":
            break
    assert s["verdict"] == "Passed", s["reasons"]
    r = s["results"][0]
    assert r["shiftSeconds"] == 0.0  # failed over in the round the fault was seen
    assert 0 < r["capacitySeconds"] <= 60 and r["rtoSeconds"] == r["capacitySeconds"]
    assert [x.split()[0] for x in r["failbackSteps"]] == ["5%", "25%", "50%", "100%"]
    assert r["failbackSeconds"] > 0 and r["samples"]
    events = [e["event"] for e in s["timeline"]]
    assert events == ["Investigating", "Mitigating", "Monitoring", "Resolved"]


def test_slow_replicas_fail_the_rto_and_the_verdict_says_by_how_much():
    lab = Lab(drill(durationSeconds=120), delay=16)  # 80 s to Ready: over the 60 s RTO
    for _ in range(300):
        s = lab.tick()
        if s["phase"] == "Resolved":
            break
    assert s["verdict"] == "Failed"
    assert any("over its tier's RTO of 60s" in r for r in s["reasons"]), s["reasons"]


def test_an_abort_returns_traffic_at_once_and_completes_when_the_target_serves():
    lab = Lab(drill())
    for _ in range(4):
        lab.tick()
    assert lab.status["phase"] == "Mitigating"
    s = lab.tick(abort="aborted by annotation: SRE call")
    assert s["phase"] == "Aborted" and s["verdict"] == "Aborted"
    assert s["reasons"][0].startswith("aborted by annotation")
    s = lab.tick()  # the planner puts west back at once: no ramp
    assert lab.d.legs["west"].state == "Serving" and lab.d.traffic["west"] > 0
    assert s["completionTime"]


def test_a_real_failure_of_another_cluster_aborts_the_drill():
    lab = Lab(drill())
    lab.tick()
    s = lab.tick(phases={"east": "Down", "west": "Healthy"})
    assert s["phase"] == "Aborted"
    assert "cluster east really failed during the drill" in s["reasons"]


def test_a_critical_deployment_beyond_the_error_guardrail_aborts():
    lab = Lab(drill(guardrails={"maxErrorPercent": "0.1"}))
    s = lab.tick()
    s = lab.tick()
    assert s["phase"] == "Aborted"
    assert "above the guardrail 0.1%" in s["reasons"][0]


def test_a_schedule_that_is_not_cron_is_refused_naming_the_fix():
    with pytest.raises(ValueError, match=r"not a cron schedule.*five fields"):
        drill(schedule="61 * * * *")
    assert drill(schedule="0 3 1 */3 *").schedule == "0 3 1 */3 *"


def test_a_critical_deployment_without_a_passed_drill_for_90_days_is_overdue():
    from twinhull.plan.drill import drill_freshness

    old = T0 - timedelta(days=120)
    c = drill_freshness(99.99, old, None, None, T0)
    assert c is not None and c.status == "True" and "no failover drill in its 120 days" in \
        c.message
    c = drill_freshness(99.99, old, T0 - timedelta(days=10), "ai/q3", T0)
    assert c is not None and c.status == "False" and c.message == "passed ai/q3"
    c = drill_freshness(99.99, old, T0 - timedelta(days=91), "ai/q2", T0)
    assert c is not None and c.status == "True" and "ai/q2, was 91 days ago" in c.message
    assert drill_freshness(99.9, old, None, None, T0) is None  # only critical tiers
