"""Scaling from Prometheus load with the real operator, the lab's Prometheus and the
data-plane simulator (e2e/loadsim) replaying a trace."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fleet import (
    apply,
    clusters_healthy,
    condition,
    deployment_manifest,
    kubectl,
    namespace_manifest,
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


def manifest(name: str, mode: str = "Enforce") -> dict:
    md = deployment_manifest(name, NS, gpus=0)
    md["spec"]["scaling"] = {"mode": mode, "metric": "tokens",
                             "targetTokensPerSecondPerReplica": 2500,
                             "minReplicasPerZone": 1, "maxReplicasPerZone": 4}
    return md


@pytest.fixture
def simulator(lab, tmp_path) -> Iterator:
    """Start e2e/loadsim on a trace; stopped at the end of the test."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(points: list[dict], tail: float) -> float:
        trace = tmp_path / f"trace-{len(processes)}.yaml"
        trace.write_text(yaml.safe_dump(points))
        processes.append(subprocess.Popen(
            [sys.executable, str(E2E / "loadsim"), "--trace", str(trace), "--tail", str(tail)],
            env={**lab.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return time.monotonic()
    yield start
    for p in processes:
        p.terminate()
        p.wait(timeout=10)


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
