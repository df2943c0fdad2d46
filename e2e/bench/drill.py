"""Benchmark: does a Drain drill measure the failover a real outage gets?

With the operator on the lab and one critical ModelDeployment (one replica in each of
east-a, east-b, west-a, west-b), alternates, in the same go, a Drain drill of west (its
``shiftSeconds``, measured by the operator from the fault's injection to west's weight 0)
and a real outage (west's API server killed; seconds from the kill command to the hub's
HTTPRoute giving west weight 0, as e2e/bench/failover.py measures). Both wait for the
failback to finish before the next run. The drill's detection is modelled on an API
server that refuses connections (e2e/lab kill); a frozen one would take longer in reality.

Run: e2e/lab up && .venv/bin/python e2e/bench/drill.py [--runs 5]
Last line: drill_shift_median_s=… kill_shift_median_s=… ratio=… drill_rto_median_s=…
runs=…
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import time
from typing import Any, cast

import yaml
from harness import (
    E2E,
    GROUP,
    VERSION,
    api,
    bench_manifest,
    clusters_healthy,
    lab,
    lab_env,
    median,
    operator,
    wait,
)
from kubernetes import client

NS, NAME = "bench-drill", "bench-drill"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=20, help="drill duration, seconds")
    args = parser.parse_args()
    env = lab_env()
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    objects = client.CustomObjectsApi(hub)
    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]

    def weight(backend: str) -> int:
        route = cast(dict[str, Any], objects.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NS, "httproutes", NAME))
        refs = route["spec"]["rules"][0]["backendRefs"]
        return int(next(r["weight"] for r in refs if r["name"] == f"{NAME}-{backend}"))

    def drill(name: str) -> dict[str, Any]:
        return dict(cast(dict[str, Any], objects.get_namespaced_custom_object(
            GROUP, VERSION, NS, "failoverdrills", name)).get("status") or {})

    def resolved(name: str) -> bool:
        return drill(name).get("phase") == "Resolved"

    def apply(docs: list[dict[str, Any]]) -> None:
        subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                       input=yaml.safe_dump_all(docs), text=True, check=True,
                       capture_output=True)

    def settled() -> bool:
        return clusters_healthy(hub) and weight("west") == 50

    drills, kills, rtos = [], [], []
    with operator(env, policy=E2E / "tiers-fast.yaml"):
        apply(bench_manifest(NS, NAME))
        try:
            for run in range(1, args.runs + 1):
                wait(settled, 180, "both clusters Healthy and 50/50")
                name = f"drain-{run}"
                apply([{"apiVersion": f"{GROUP}/{VERSION}", "kind": "FailoverDrill",
                        "metadata": {"name": name, "namespace": NS},
                        "spec": {"target": {"cluster": "west"}, "mode": "Drain",
                                 "durationSeconds": args.duration}}])
                wait(functools.partial(resolved, name), 300, "drill end")
                result = drill(name)["results"][0]
                drills.append(float(result["shiftSeconds"]))
                rtos.append(float(result["rtoSeconds"]))
                wait(settled, 180, "both clusters Healthy and 50/50")
                start = time.monotonic()
                lab("kill", "west")
                wait(lambda: weight("west") == 0, 60, "west weight 0")
                kills.append(time.monotonic() - start)
                lab("revive", "west")
                print(f"run {run}: drill shift {drills[-1]:.1f}s (verdict "
                      f"{drill(name).get('verdict')}, RTO {rtos[-1]:.1f}s)  kill shift "
                      f"{kills[-1]:.2f}s", flush=True)
        finally:
            subprocess.run([*kubectl, "delete", "failoverdrills,modeldeployments", "--all",
                            "-n", NS, "--wait=true", "--timeout=90s"], capture_output=True)
            subprocess.run([*kubectl, "delete", "namespace", NS, "--wait=true",
                            "--timeout=60s"], capture_output=True)
    d, k = median(drills), median(kills)
    print(f"drill_shift_median_s={d:.2f} kill_shift_median_s={k:.2f} ratio={d / k:.2f} "
          f"drill_rto_median_s={median(rtos):.2f} runs={len(drills)}")


if __name__ == "__main__":
    main()
