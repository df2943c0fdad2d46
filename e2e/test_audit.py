"""The durable audit record on the lab: every decision the operator takes on a
ModelDeployment lands in the hub (a ConfigMap per deployment in the operator's
namespace, written as the chart's ServiceAccount), `twinhull audit` lists it with who
decided and why, `twinhull explain` replays a fleet decision and a revision decision on
the pure planner and reaches the same ones, and the record outlives the deployment."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleet import (
    apply,
    clusters_healthy,
    deployment_manifest,
    kubectl,
    namespace_manifest,
    status,
    wait_for,
)

pytestmark = pytest.mark.e2e

NS = "e2e-audit"
OPERATOR_NS = "twinhull-system"


@pytest.fixture(autouse=True)
def healthy_lab(lab) -> None:
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")


def twinhull(lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinhull.cli", *args, "--kubeconfig",
                           str(lab.kubeconfig("hub")), "--namespace", OPERATOR_NS],
                          capture_output=True, text=True, timeout=60)


def audit(lab, name: str) -> list[dict]:
    run = twinhull(lab, "audit", f"{NS}/{name}", "--since", "1h", "-o", "json")
    if run.returncode == 3:
        return []
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_decisions_are_recorded_listed_and_replayed_to_the_same_decision(lab, operator):
    name = "au-ide"
    apply(lab, namespace_manifest(NS), deployment_manifest(name, NS))
    try:
        wait_for(lambda: status(lab, NS, name).get("lastGoodSnapshot"), timeout=120,
                 what="the first revision verified")

        def kinds() -> set[str]:
            return {r["kind"] for r in audit(lab, name)}

        wait_for(lambda: "RolloutComplete" in kinds(), timeout=30,
                 what="the verification recorded")
        # a fleet decision for certain (whether the first weights shifted depends on which
        # cluster's pods were Ready first): twice the replicas in east take twice the share
        kubectl(lab, "hub", "patch", "modeldeployment", name, "-n", NS, "--type=merge", "-p",
                json.dumps({"spec": {"placement": [
                    {"cluster": "east", "zones": {"east-a": 2, "east-b": 2}},
                    {"cluster": "west", "zones": {"west-a": 1, "west-b": 1}}]}}))
        wait_for(lambda: "ShiftTraffic" in kinds(), timeout=60, what="the shift recorded")
        records = audit(lab, name)
        for r in records:
            assert r["object"] == f"ModelDeployment/{NS}/{name}", r
            assert r["by"].startswith("replica-") and "twinhull" in r["by"], r
            assert r["reason"] and r["id"] and r["time"], r
        fleet = [r for r in records if r["kind"] in ("ShiftTraffic", "Scale", "Failover",
                                                      "Capacity", "FailbackStep")]
        revision = [r for r in records if r["kind"] == "RolloutComplete"]
        assert fleet, f"a fleet planner decision (weights follow Ready pods): {records}"
        for r in (fleet[0], revision[0]):
            run = twinhull(lab, "explain", r["id"], "--deployment", f"{NS}/{name}")
            assert run.returncode == 0, run.stdout + run.stderr
            assert "reproduced" in run.stdout, run.stdout
        # found without naming the deployment, too
        run = twinhull(lab, "explain", revision[0]["id"])
        assert run.returncode == 0 and "reproduced" in run.stdout, run.stdout + run.stderr
        unknown = twinhull(lab, "explain", "000000000000")
        assert unknown.returncode == 3 and "no decision 000000000000" in unknown.stderr
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=true",
                "--timeout=60s", check=False)
    # the record outlives the deployment (and its Events): an audit trail
    assert {r["id"] for r in audit(lab, name)} >= {r["id"] for r in records}
    text = twinhull(lab, "audit", f"{NS}/{name}", "--since", "1h")
    assert text.returncode == 0 and "RolloutComplete" in text.stdout, text.stdout
