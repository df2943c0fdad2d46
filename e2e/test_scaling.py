"""Scaling from Prometheus load with the real operator, the lab's Prometheus and the
data-plane simulator (e2e/loadsim) replaying a trace."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from conftest import PREWARM_LEAD, PREWARM_PERIOD
from fleet import (
    apply,
    clusters_healthy,
    condition,
    deployment_manifest,
    deployments,
    explain_deployment,
    kubectl,
    namespace_manifest,
    route_weights,
    status,
    wait_for,
)

pytestmark = pytest.mark.e2e

NS = "e2e-scaling"
E2E = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def healthy_lab(lab) -> None:
    """Start from a healthy lab (a revived cluster is Recovering for a while)."""
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")


def manifest(name: str, mode: str = "Enforce", *, pre_warm: bool = False, gpus: int = 0,
             max_per_zone: int = 4) -> dict:
    md = deployment_manifest(name, NS, gpus=gpus)
    md["spec"]["scaling"] = {"mode": mode, "metric": "tokens",
                             "targetTokensPerSecondPerReplica": 2500, "preWarm": pre_warm,
                             "minReplicasPerZone": 1, "maxReplicasPerZone": max_per_zone}
    return md


def total(lab, name: str) -> int | None:
    return (status(lab, NS, name).get("scaling") or {}).get("replicas")


def test_a_step_up_scales_at_once_and_a_step_down_waits_for_the_window(lab, operator,
                                                                       simulator):
    name = "sc-step"
    apply(lab, namespace_manifest(NS), manifest(name))
    try:
        began = simulator([{"at": 0, "deployment": f"{NS}/{name}", "tokensPerSecond": 4000},
                   {"at": 30, "deployment": f"{NS}/{name}", "tokensPerSecond": 15000},
                   {"at": 100, "deployment": f"{NS}/{name}", "tokensPerSecond": 4000}],
                  tail=90)
        wait_for(lambda: condition(lab, NS, name, "MetricsAvailable") == "True", timeout=60,
                 what="metrics read")
        assert total(lab, name) == 4   # 4,000 x 1.2 / 2,500 = 1.9: the floor of 1 per zone
        # how fast is a benchmark's business; here: it does scale up, and not past 8
        wait_for(lambda: (total(lab, name) or 0) >= 7, timeout=90, what="scale-up after the step")
        peak = total(lab, name)
        assert peak is not None and peak <= 8, "15,000 x 1.2 / 2,500 = 7.2: no overshoot"
        wait_for(lambda: total(lab, name) == 4, timeout=150, what="scale-down after the step")
        s = status(lab, NS, name)
        # demand fell at 100 s; the 20 s window keeps the count until ~120 s
        assert time.monotonic() - began >= 115, "scale-down waited for the window"
        kinds = [d["kind"] for d in s["decisions"]]
        assert kinds.count("Scale") >= 2
        # `kubectl describe` alone says why: the change and the demand it was made from
        scaled = [e["message"] for e in _events(lab, name, "Scale")]
        assert any(m.startswith("replicas 4 -> ") and "demand tokens/s" in m
                   for m in scaled), scaled
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=false",
                check=False)


def test_without_prometheus_nothing_scales_down(lab, operator, simulator):
    name = "sc-blind"
    apply(lab, namespace_manifest(NS), manifest(name))
    try:
        simulator([{"at": 0, "deployment": f"{NS}/{name}", "tokensPerSecond": 15000}], tail=120)
        wait_for(lambda: (total(lab, name) or 0) >= 7, timeout=60, what="scaled up")
        high = total(lab, name)
        lab.run("prometheus-stop")
        try:
            wait_for(lambda: condition(lab, NS, name, "MetricsAvailable") == "False",
                     timeout=30, what="MetricsAvailable=False")
            time.sleep(25)  # longer than the 20 s stabilization window
            assert total(lab, name) == high
        finally:
            lab.run("prometheus-start")
        wait_for(lambda: condition(lab, NS, name, "MetricsAvailable") == "True", timeout=60,
                 what="metrics back")
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=false",
                check=False)


def test_suggest_mode_changes_nothing_until_approved(lab, operator, simulator):
    name = "sc-suggest"
    apply(lab, namespace_manifest(NS), manifest(name, mode="Suggest"))
    try:
        simulator([{"at": 0, "deployment": f"{NS}/{name}", "tokensPerSecond": 15000}], tail=120)
        seen: list[str] = []

        def settled() -> dict | None:
            """The suggestion once it stopped changing (the rate window has filled)."""
            p = status(lab, NS, name).get("pending")
            if not p or p["kind"] != "Scale":
                return None
            seen.append(p["id"])
            return p if len(seen) >= 8 and len(set(seen[-8:])) == 1 else None
        pending = wait_for(settled, timeout=90, what="a settled Scale suggestion")
        assert total(lab, name) == 4
        kubectl(lab, "hub", "annotate", "modeldeployment", name, "-n", NS, "--overwrite",
                f"serving.twinhull.io/approve={pending['id']}")
        wait_for(lambda: total(lab, name) == pending["inputs"]["to"], timeout=30,
                 what="exactly the approved count")
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=false",
                check=False)


def test_pre_warm_raises_replicas_before_a_recurring_peak(lab, operator, simulator):
    """The lab's "day" is PREWARM_PERIOD seconds: a peak at 30 s recurs at 30 s + a day.
    Replicas rise a lead time before the second peak, while load is still low, and the
    decision says it is pre-warm. The first peak waits 30 s so that the new pods are Ready,
    discovered by the member's Prometheus and federated (two scrape hops) before it."""
    name = "sc-prewarm"
    apply(lab, namespace_manifest(NS), manifest(name, pre_warm=True))
    first = 30
    second = first + PREWARM_PERIOD
    try:
        began = simulator([
            {"at": 0, "deployment": f"{NS}/{name}", "tokensPerSecond": 2000},
            {"at": first, "deployment": f"{NS}/{name}", "tokensPerSecond": 15000},
            {"at": first + 30, "deployment": f"{NS}/{name}", "tokensPerSecond": 2000},
            {"at": second, "deployment": f"{NS}/{name}", "tokensPerSecond": 15000},
        ], 20, "--replica-tokens", "5000")  # served in full: measured = offered
        wait_for(lambda: condition(lab, NS, name, "MetricsAvailable") == "True",
                 timeout=first + 10, what="metrics read")
        assert time.monotonic() - began < first, "metrics came after the first peak began"
        wait_for(lambda: (total(lab, name) or 0) >= 7, timeout=first + 45, what="the first peak")
        wait_for(lambda: total(lab, name) == 4, timeout=90, what="scale-down after it")
        low_since = time.monotonic() - began
        assert low_since < second - PREWARM_LEAD, "the lab was too slow to see pre-warm"
        wait_for(lambda: (total(lab, name) or 0) >= 7, timeout=second + 10 - low_since,
                 what="pre-warm before the second peak")
        raised_at = time.monotonic() - began
        assert raised_at < second, f"raised at {raised_at:.0f}s: before the peak at {second}s"
        s = status(lab, NS, name)
        last = [d for d in s["decisions"] if d["kind"] == "Scale"][-1]
        assert last["reason"].startswith("pre-warm"), last
        # the forecast saw the last "day"'s peak (a 30 s peak read through a 10 s rate and
        # the subquery's steps: not all of its 15,000), the load now is still low
        now_tps = float(last["inputs"]["tokensPerSecond"])
        assert now_tps < 5000, "load now is still low"
        assert float(last["inputs"]["forecastTokensPerSecond"]) > 2 * now_tps, last
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=false",
                check=False)


def _events(lab, name: str, reason: str) -> list[dict]:
    out = kubectl(lab, "hub", "get", "events", "-n", NS, "-o", "yaml",
                  "--field-selector", f"involvedObject.name={name},reason={reason}")
    return (yaml.safe_load(out) or {}).get("items") or []


def test_killing_west_at_peak_keeps_critical_whole_and_moves_best_effort_to_fallback(
        lab, operator, simulator):
    """GPUs are arbitrated by tier: at peak the critical app runs 7 replicas of 4 GPUs;
    when west dies east (32 GPUs) carries all 7 (28 GPUs), and the best-effort app (6 GPUs
    a replica) cannot keep even its east replica: it moves to its 1-GPU fallback model.

    The 7 are placed, not scaled to (``scaling.mode: Off``): the arithmetic needs exactly 7
    (6 leave room for the best-effort replica, 8 none for its fallback), and from 6 the
    tolerance band asks for a reading within 2 % of the offered load, while the lab's 10 s
    rate of a steady load swings by 7 % either way (a prompt's tokens count at once, as
    vLLM counts them). Scaling to a demand is the step test's. The best-effort replica
    starts first, on a node of its own: a node has 8 GPUs, and twinhull's ledger counts a
    cluster's GPUs, not which node has them free."""
    crit, low = "sc-crit", "sc-low"
    others = lambda: [  # noqa: E731
        f'{i["metadata"]["namespace"]}/{i["metadata"]["name"]}' for i in yaml.safe_load(
            kubectl(lab, "hub", "get", "modeldeployments", "-A", "-o", "yaml"))["items"]]
    try:
        wait_for(lambda: not others(), timeout=90, what="no other ModelDeployment")
    except AssertionError:
        pytest.fail(f"other ModelDeployments would hold GPUs: {others()}")
    be = deployment_manifest(low, NS, tier="best-effort", gpus=6,
                             placement={"east": {"east-b": 1}, "west": {"west-b": 1}})
    be["spec"]["fallback"]["model"]["resources"]["gpus"] = 1
    critical = manifest(crit, "Off", gpus=4)
    critical["spec"]["placement"] = [
        {"cluster": "east", "zones": {"east-a": 2, "east-b": 2}},
        {"cluster": "west", "zones": {"west-a": 2, "west-b": 1}}]
    apply(lab, namespace_manifest(NS), be)
    try:
        wait_for(lambda: condition(lab, NS, low, "Ready") == "True", timeout=90,
                 what="the best-effort app Ready", explain=lambda: explain_deployment(lab, NS, low))
        apply(lab, critical)
        # the peak's traffic (its own requests verify the revision; the data plane splits
        # it by the route's weights before and after the kill)
        simulator([{"at": 0, "deployment": f"{NS}/{crit}", "tokensPerSecond": 14000}],
                  400, "--replica-tokens", "5000")
        wait_for(lambda: condition(lab, NS, crit, "Ready") == "True"
                 and condition(lab, NS, low, "Ready") == "True", timeout=90,
                 what="both apps Ready at peak",
                 explain=lambda: "\n".join(explain_deployment(lab, NS, n) for n in (crit, low)))
        east = deployments(lab, "east", NS)
        assert [east[f"{crit}-east-a"], east[f"{crit}-east-b"]] == [(2, 2), (2, 2)], east
        lab.run("kill", "west")
        try:
            wait_for(lambda: route_weights(lab, NS, crit).get(f"{crit}-east") == 100,
                     timeout=60, what="critical traffic all on east")

            def critical_whole() -> bool:
                east = deployments(lab, "east", NS)
                primary = [v for k, v in east.items() if k in (f"{crit}-east-a", f"{crit}-east-b")]
                return sum(r for _, r in primary) == 7 and sum(d for d, _ in primary) == 7
            wait_for(critical_whole, timeout=90, what="7 critical replicas Ready in east",
                     explain=lambda: f"east (desired, Ready): {deployments(lab, 'east', NS)}")
            s = status(lab, NS, crit)
            assert s["unservedReplicas"] == 0
            assert condition(lab, NS, crit, "Degraded") == "False"

            wait_for(lambda: route_weights(lab, NS, low).get(f"{low}-fallback") == 100,
                     timeout=60, what="best-effort traffic on its fallback")
            east = deployments(lab, "east", NS)
            assert east[f"{low}-east-b"][0] == 0, "its GPUs went to the critical app"
            wait_for(lambda: deployments(lab, "east", NS)[f"{low}-fallback-east-b"] == (2, 2),
                     timeout=60, what="2 fallback replicas Ready")
            s = status(lab, NS, low)
            degraded = next(c for c in s["conditions"] if c["type"] == "Degraded")
            assert degraded["reason"] == "InsufficientCapacity"
            assert f"{NS}/{crit} (critical) 28" in degraded["message"], degraded["message"]
            assert [d for d in s["decisions"] if d["kind"] == "Capacity"]
            (event, *_) = _events(lab, low, "Capacity")
            assert event["type"] == "Warning" and crit in event["message"]
        finally:
            lab.run("revive", "west")
        assert not _events(lab, crit, "Scale"), "scaling is Off: the placement's 7 stay"
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", crit, low, "-n", NS, "--wait=false",
                check=False)
