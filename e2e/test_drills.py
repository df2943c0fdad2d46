"""Failover drills with the real operator on the lab: a preflight that changes nothing, a
Drain drill that fails west over and back through every step and passes, an abort, the
freeze switch, refusal while west is really Down, a schedule, and an Outage drill that
waits for its approval."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet import (
    GROUP,
    VERSION,
    apply,
    clusters_healthy,
    condition,
    deployment_manifest,
    deployments,
    get,
    kubectl,
    namespace_manifest,
    route_weights,
    status,
    wait_for,
    write_requests,
)

pytestmark = pytest.mark.e2e

NS = "e2e-drills"
MEMBER_WRITES = {"deployments", "services", "poddisruptionbudgets", "priorityclasses",
                 "namespaces"}
FREEZE = "serving.twinhull.io/freeze-drills"


def drill_manifest(name: str, mode: str = "Drain", duration: int = 20, **spec) -> dict:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FailoverDrill",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"target": {"cluster": "west"}, "mode": mode,
                     "durationSeconds": duration, **spec}}


def drill_status(lab, name: str) -> dict:
    return (get(lab, "hub", "failoverdrills.serving.twinhull.io", name, NS) or {}).get(
        "status") or {}


def ended(lab, name: str) -> dict | None:
    s = drill_status(lab, name)
    done = s.get("phase") in ("Preflight", "Resolved", "Refused") or (
        s.get("phase") == "Aborted" and s.get("completionTime"))
    return s if done else None


def weights(lab, name: str) -> dict[str, int]:
    w = route_weights(lab, NS, name)
    return {"east": w.get(f"{name}-east", -1), "west": w.get(f"{name}-west", -1),
            "fallback": w.get(f"{name}-fallback", -1)}


def converged(lab, name: str, per_zone: int = 1) -> bool:
    for cluster, zones in (("east", ("east-a", "east-b")), ("west", ("west-a", "west-b"))):
        got = deployments(lab, cluster, NS)
        if any(got.get(f"{name}-{z}") != (per_zone, per_zone) for z in zones):
            return False
    return condition(lab, NS, name, "Ready") == "True" and \
        weights(lab, name) == {"east": 50, "west": 50, "fallback": 0}


@pytest.fixture(autouse=True)
def healthy_lab(lab) -> None:
    wait_for(lambda: clusters_healthy(lab), timeout=90, what="every cluster Healthy")


def _converged(lab, gpus: int, per_zone: int = 1) -> Iterator[str]:
    name = f"dr-{int(time.time() * 1000) % 100000}"
    zones = {"east": {"east-a": per_zone, "east-b": per_zone},
             "west": {"west-a": per_zone, "west-b": per_zone}}
    apply(lab, namespace_manifest(NS), deployment_manifest(name, NS, gpus=gpus,
                                                           placement=zones))
    try:
        wait_for(lambda: converged(lab, name, per_zone), timeout=90,
                 what=f"{name} converged")
        yield name
    finally:
        kubectl(lab, "hub", "delete", "failoverdrills", "--all", "-n", NS, "--wait=false",
                check=False)
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=true",
                "--timeout=60s", check=False)


@pytest.fixture
def md(lab, operator, healthy_lab) -> Iterator[str]:
    """A critical ModelDeployment in both clusters, one 1-GPU replica per zone, converged;
    deleted afterwards with every drill."""
    yield from _converged(lab, 1)


@pytest.fixture
def big(lab, operator, healthy_lab) -> Iterator[str]:
    """Two 8-GPU replicas per zone (a lab node has 8 GPUs): east's 32 GPUs hold its own
    four, and cannot carry west's four as well."""
    yield from _converged(lab, 8, per_zone=2)


def test_a_dry_run_says_go_with_the_expected_weights_and_changes_nothing(lab, md):
    before = {c: write_requests(lab, c, MEMBER_WRITES) for c in ("east", "west")}
    apply(lab, drill_manifest("dry-go", mode="DryRun"))
    s = wait_for(lambda: ended(lab, "dry-go"), timeout=30, what="the preflight")
    assert s["phase"] == "Preflight" and s["verdict"] == "Go", s
    r = s["results"][0]
    assert r["deployment"] == f"{NS}/{md}" and r["expectedWeights"]["west"] == 0
    assert r["expectedWeights"]["east"] == 100 and r["degraded"] is False
    assert s["severity"] == "P1"  # critical, half of its traffic on west
    time.sleep(3)
    assert {c: write_requests(lab, c, MEMBER_WRITES) for c in ("east", "west")} == before
    assert weights(lab, md) == {"east": 50, "west": 50, "fallback": 0}


def test_a_dry_run_says_nogo_when_east_lacks_the_gpus(lab, big):
    apply(lab, drill_manifest("dry-nogo", mode="DryRun"))
    s = wait_for(lambda: ended(lab, "dry-nogo"), timeout=30, what="the preflight")
    assert s["verdict"] == "NoGo", s
    assert f"{NS}/{big} (critical) would run 4 replicas short" in s["reasons"][0]
    assert s["results"][0]["degraded"] is True


def test_a_drain_drill_fails_west_over_and_back_through_every_step_and_passes(
        lab, md, simulator, tmp_path):
    simulator([{"at": 0, "deployment": f"{NS}/{md}", "tokensPerSecond": 3000}], 200)
    time.sleep(5)  # requests flow before the fault
    apply(lab, drill_manifest("drain"))
    wait_for(lambda: weights(lab, md)["west"] == 0, timeout=20, what="traffic off west")
    assert drill_status(lab, "drain")["phase"] in ("Investigating", "Mitigating")
    seen: set[int] = set()

    def done() -> dict | None:
        seen.add(weights(lab, md)["west"])
        return ended(lab, "drain")
    s = wait_for(done, timeout=120, what="the drill's end", interval=0.3)
    seen.add(weights(lab, md)["west"])  # read after the status that says it is back
    assert s["phase"] == "Resolved" and s["verdict"] == "Passed", s
    r = s["results"][0]
    assert [x.split()[0] for x in r["failbackSteps"]] == ["5%", "25%", "50%", "100%"], r
    assert r["shiftSeconds"] is not None and r["shiftSeconds"] <= 10
    assert r["rtoSeconds"] <= r["rtoTargetSeconds"] == 60
    assert [e["event"] for e in s["timeline"]] == [
        "Detecting", "Investigating", "Mitigating", "Monitoring", "Resolved"]
    assert {0, 50} <= seen and seen - {0, 50}, f"a ramp between 0 and 50: {sorted(seen)}"
    assert weights(lab, md) == {"east": 50, "west": 50, "fallback": 0}
    assert status(lab, NS, md).get("lastPassedDrill") == f"{NS}/drain"
    # the requests of the drill, from the runtime's counters in Prometheus
    counted = wait_for(lambda: "requestsServed" in (drill_status(lab, "drain").get(
        "results") or [{}])[0] and drill_status(lab, "drain")["results"][0], timeout=30,
        what="the drill's requests counted")
    assert counted["requestsServed"] > 0 and counted["requestsFailed"] == 0, counted
    assert counted["fallbackRequests"] == 0  # east carried west's share: no fallback
    # the report an SRE files
    run = subprocess.run(
        [sys.executable, "-m", "twinhull.cli", "drill", "report", f"{NS}/drain", "--out",
         str(tmp_path), "--junit", str(tmp_path / "junit.xml"), "--kubeconfig",
         str(lab.kubeconfig("hub"))], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    report = (tmp_path / "drain.md").read_text()
    assert "Passed" in report and md in report
    assert (tmp_path / "drain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'failures="0"' in (tmp_path / "junit.xml").read_text()
    # every step, and the failover and failback it caused, in the deployment's audit record
    run = subprocess.run(
        [sys.executable, "-m", "twinhull.cli", "audit", f"{NS}/{md}", "-o", "json",
         "--kubeconfig", str(lab.kubeconfig("hub")), "--namespace", "twinhull-system"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    records = json.loads(run.stdout)
    steps = [r["inputs"]["to"] for r in records if r["kind"] == "DrillStep"
             and r["inputs"]["drill"] == f"{NS}/drain"]
    assert {"Detecting", "Mitigating", "Resolved"} <= set(steps), steps
    assert any(r["kind"] == "Failover" for r in records), [r["kind"] for r in records]


def test_an_abort_returns_traffic_at_once(lab, md):
    apply(lab, drill_manifest("abort", duration=300))
    wait_for(lambda: drill_status(lab, "abort").get("phase") == "Mitigating", timeout=30,
             what="Mitigating")
    kubectl(lab, "hub", "annotate", "failoverdrill", "abort", "-n", NS,
            "serving.twinhull.io/abort=SRE: pager went off")
    seen: list[int] = []

    def back() -> bool:
        seen.append(weights(lab, md)["west"])
        return seen[-1] == 50
    wait_for(back, timeout=30, what="west's full share back", interval=0.2)
    # no failback ramp (5 %, 25 %, 50 % of west's 50): west's Ready replicas take traffic at
    # once, in proportion to Ready capacity (east still runs the replicas it carried for
    # west until it scales back: 2 of 6 Ready primaries are west's, so 33)
    first = next(w for w in seen if w > 0)
    assert first >= 30, f"no ramp on abort: {seen}"
    s = wait_for(lambda: ended(lab, "abort"), timeout=20, what="abort completed")
    assert s["verdict"] == "Aborted" and "SRE: pager went off" in s["reasons"][0]
    assert status(lab, NS, md).get("lastPassedDrill") is None


def test_the_freeze_switch_stops_a_running_drill_and_refuses_new_ones(lab, md):
    apply(lab, drill_manifest("frozen", duration=300))
    wait_for(lambda: drill_status(lab, "frozen").get("phase") == "Mitigating", timeout=30,
             what="Mitigating")
    try:
        kubectl(lab, "hub", "annotate", "servingcluster", "east",
                f"{FREEZE}=INC-42 real incident in east")
        s = wait_for(lambda: ended(lab, "frozen"), timeout=30, what="the drill stopped")
        assert s["verdict"] == "Aborted" and "INC-42" in s["reasons"][0]
        wait_for(lambda: weights(lab, md)["west"] == 50, timeout=15, what="west back")
        apply(lab, drill_manifest("refused-frozen"))
        s = wait_for(lambda: ended(lab, "refused-frozen"), timeout=30, what="refusal")
        assert s["verdict"] == "Refused" and "frozen by ServingCluster east" in s["reasons"][0]
    finally:
        kubectl(lab, "hub", "annotate", "servingcluster", "east", f"{FREEZE}-", check=False)


def test_a_drill_is_refused_while_west_is_really_down(lab, md):
    lab.run("kill", "west")
    try:
        wait_for(lambda: weights(lab, md)["west"] == 0, timeout=60, what="west failed over")
        apply(lab, drill_manifest("refused-down"))
        s = wait_for(lambda: ended(lab, "refused-down"), timeout=30, what="refusal")
        assert s["verdict"] == "Refused"
        assert any("cluster west is Down" in r for r in s["reasons"]), s["reasons"]
    finally:
        lab.run("revive", "west")


def test_a_schedule_starts_runs_it_owns(lab, md):
    apply(lab, drill_manifest("every-minute", mode="DryRun", schedule="* * * * *",
                              historyLimit=1))

    def runs() -> list[dict]:
        items = yaml.safe_load(kubectl(lab, "hub", "get", "failoverdrills", "-n", NS, "-l",
                                       "serving.twinhull.io/drill-schedule=every-minute",
                                       "-o", "yaml"))["items"]
        return [i for i in items if (i.get("status") or {}).get("verdict")]
    done = wait_for(runs, timeout=130, what="a scheduled run with a verdict", interval=2)
    run = done[0]
    assert run["status"]["verdict"] == "Go"
    assert run["metadata"]["ownerReferences"][0]["name"] == "every-minute"
    assert "schedule" not in run["spec"]
    s = drill_status(lab, "every-minute")
    assert s["phase"] == "Scheduled" and s["nextScheduleTime"] > s["lastScheduleTime"]


def test_an_outage_drill_waits_for_approval_then_scales_west_to_zero_and_back(lab, md):
    apply(lab, drill_manifest("outage", mode="Outage", duration=15))
    s = wait_for(lambda: drill_status(lab, "outage").get("pendingApproval"), timeout=30,
                 what="an approval request")
    time.sleep(3)
    assert drill_status(lab, "outage")["phase"] == "WaitingForApproval"
    assert weights(lab, md)["west"] == 50, "nothing moves before the approval"
    kubectl(lab, "hub", "annotate", "failoverdrill", "outage", "-n", NS,
            f"serving.twinhull.io/approve={s}")
    wait_for(lambda: all(deployments(lab, "west", NS).get(f"{md}-{z}", (1, 1))[0] == 0
                         for z in ("west-a", "west-b")), timeout=30, what="west scaled to 0")
    s = wait_for(lambda: ended(lab, "outage"), timeout=150, what="the drill's end")
    assert s["verdict"] == "Passed", s
    assert converged(lab, md)


def test_the_cli_follows_a_drill_and_exits_with_its_verdict(lab, md, tmp_path):
    path = tmp_path / "drill.yaml"
    path.write_text(yaml.safe_dump(drill_manifest("followed", mode="DryRun")))
    run = subprocess.run(
        [sys.executable, "-m", "twinhull.cli", "drill", "run", "-f", str(path), "--follow",
         "--timeout", "60", "--kubeconfig", str(lab.kubeconfig("hub"))],
        capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verdict: Go" in run.stdout and "Preflight" in run.stdout
    assert Path(path).exists()
