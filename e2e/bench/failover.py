"""Benchmark: how fast traffic leaves a killed cluster and the survivor carries the load.

With the operator on the lab and one critical ModelDeployment (one replica in each of
east-a, east-b, west-a, west-b), each run kills west's API server and measures the
seconds until the hub's HTTPRoute gives west weight 0 (shift) and until east's zones have
Ready replicas for the whole declared capacity (capacity); then revives west and waits for
the gradual failback to finish before the next run. Default probe settings (2 s interval,
failure threshold 3); the e2e fast-failback tiers only shorten the wait between runs.

Run: e2e/lab up && .venv/bin/python e2e/bench/failover.py [--runs 5]
Last line: shift_median_s=… shift_max_s=… capacity_median_s=… capacity_max_s=…
"""

from __future__ import annotations

import argparse
import time

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

NS, NAME = "bench-failover", "bench-failover"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = lab_env()
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    east = client.AppsV1Api(api(env["TWINHULL_EAST_KUBECONFIG"]))
    routes = client.CustomObjectsApi(hub)

    def weight(backend: str) -> int:
        route = routes.get_namespaced_custom_object("gateway.networking.k8s.io", "v1", NS,
                                                    "httproutes", NAME)
        refs = route["spec"]["rules"][0]["backendRefs"]
        return next(r["weight"] for r in refs if r["name"] == f"{NAME}-{backend}")

    def steady() -> bool:
        md = routes.get_namespaced_custom_object(GROUP, VERSION, NS, "modeldeployments", NAME)
        conditions = {c["type"]: c["status"] for c in (md.get("status") or {}).get(
            "conditions") or []}
        return conditions.get("Ready") == "True" and conditions.get("FailedOver") == "False"

    def east_ready(n: int) -> bool:
        items = east.list_namespaced_deployment(NS, _request_timeout=2).items
        primary = [d for d in items if "-fallback-" not in d.metadata.name]
        return len(primary) == 2 and all(
            d.spec.replicas == n and (d.status.ready_replicas or 0) == n for d in primary)

    with operator(env, policy=E2E / "tiers-fast.yaml"):
        import subprocess

        subprocess.run([f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
                        env["TWINHULL_HUB_KUBECONFIG"], "apply", "--server-side", "-f", "-"],
                       input=yaml.safe_dump_all(bench_manifest(NS, NAME)), text=True, check=True,
                       capture_output=True)
        wait(lambda: weight("west") == 50 and east_ready(1), 120, "initial 50/50")
        shifts, capacities = [], []
        try:
            for run in range(1, args.runs + 1):
                wait(lambda: clusters_healthy(hub) and steady() and weight("west") == 50, 180,
                     "both clusters Healthy, the deployment Ready and not failed over")
                start = time.monotonic()
                lab("kill", "west")
                wait(lambda: weight("west") == 0, 60, "west weight 0")
                shift = time.monotonic() - start  # from the kill command
                wait(lambda: east_ready(2), 60, "east at full capacity")
                capacity = time.monotonic() - start
                lab("revive", "west")
                back = wait(lambda: weight("west") == 50 and east_ready(1), 180,
                            "failback complete")
                shifts.append(shift)
                capacities.append(capacity)
                print(f"run {run}: shift {shift:.2f}s  capacity {capacity:.2f}s  "
                      f"failback {back:.1f}s", flush=True)
        finally:
            subprocess.run([f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
                            env["TWINHULL_HUB_KUBECONFIG"], "delete", "namespace", NS,
                            "--wait=true", "--timeout=60s"], capture_output=True)
    print(f"shift_median_s={median(shifts):.2f} shift_max_s={max(shifts):.2f} "
          f"capacity_median_s={median(capacities):.2f} capacity_max_s={max(capacities):.2f} "
          f"runs={len(shifts)}")


if __name__ == "__main__":
    main()
