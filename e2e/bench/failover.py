"""Benchmark: how fast traffic leaves a killed cluster and the survivor carries the load.

With the operator on the lab and one critical ModelDeployment (one replica in each of
east-a, east-b, west-a, west-b), each run kills west's API server and measures the
seconds until the hub's HTTPRoute gives west weight 0 (shift) and until east's zones have
Ready replicas for the whole declared capacity (capacity); then revives west and waits for
the gradual failback to finish before the next run. Default probe settings (2 s interval,
failure threshold 3); the e2e fast-failback tiers only shorten the wait between runs.

With ``--hostile`` the hostile corpus of e2e/hostile.py (malformed annotations, broken
custom queries, colliding names, ServingClusters with malformed or command-running
kubeconfig Secrets) is applied next to it first: the figure must not move.

Run: e2e/lab up && .venv/bin/python e2e/bench/failover.py [--runs 5] [--hostile]
Last line: shift_median_s=… shift_max_s=… capacity_median_s=… capacity_max_s=… runs=…
hostile=…
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from typing import Any

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
    parser.add_argument("--hostile", action="store_true",
                        help="apply the hostile corpus of e2e/hostile.py next to it first")
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

    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]

    def apply(docs: list[dict[str, Any]]) -> None:
        subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                       input=yaml.safe_dump_all(docs), text=True, check=True,
                       capture_output=True)

    hostile_objects: list[dict[str, Any]] = []
    if args.hostile:
        sys.path.insert(0, str(E2E))
        import hostile

        hostile_objects = [*hostile.objects(), hostile.colliding()]
    with operator(env, policy=E2E / "tiers-fast.yaml"):
        if hostile_objects:
            apply(hostile_objects[:-1])
            time.sleep(1.5)  # the colliding one is the newer
            apply(hostile_objects[-1:])
        apply(bench_manifest(NS, NAME))
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
            namespaces = [NS] + [o["metadata"]["name"] for o in hostile_objects
                                 if o["kind"] == "Namespace"]
            for ns in namespaces:
                subprocess.run([*kubectl, "delete", "modeldeployments", "--all", "-n", ns,
                                "--wait=true", "--timeout=90s"], capture_output=True)
                subprocess.run([*kubectl, "delete", "namespace", ns, "--wait=true",
                                "--timeout=60s"], capture_output=True)
            for o in hostile_objects:
                if o["kind"] in ("ServingCluster", "Secret"):
                    meta = o["metadata"]
                    where = ["-n", meta["namespace"]] if o["kind"] == "Secret" else []
                    subprocess.run([*kubectl, "delete", o["kind"].lower(), meta["name"], *where,
                                    "--ignore-not-found"], capture_output=True)
    hostile_count = sum(o["kind"] in ("ModelDeployment", "ServingCluster")
                        for o in hostile_objects)
    print(f"shift_median_s={median(shifts):.2f} shift_max_s={max(shifts):.2f} "
          f"capacity_median_s={median(capacities):.2f} capacity_max_s={max(capacities):.2f} "
          f"runs={len(shifts)} hostile={hostile_count}")


if __name__ == "__main__":
    main()
