"""Benchmark: how fast a bad revision is rolled back in both clusters.

With the operator on the lab and one critical ModelDeployment (one replica in each of
east-a, east-b, west-a, west-b) running a Good revision, each run changes the image to a
new tag ending in ``-crashloop`` (never Ready in the lab). The rollout puts it in east
first; at the progress deadline (30 s) the operator marks it Bad and rolls back. Measured
from the moment the Rollback decision appears in the ModelDeployment's status (the bad
revision detected) to every Deployment of the deployment in east and west running the
last Good revision again, fully rolled out and Ready. Then the spec is set back to the
Good image (the GitOps revert) before the next run.

Run: e2e/lab up && .venv/bin/python e2e/bench/rollback.py [--runs 5]
Last line: rollback_median_s=… rollback_max_s=… detect_median_s=… runs=…
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
    lab_env,
    median,
    operator,
    wait,
)
from kubernetes import client

NS, NAME = "bench-rollback", "bench-rollback"
GOOD = "vllm/vllm-openai:v0.11.0"
REVISION = "serving.twinhull.io/revision"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = lab_env()
    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    objects = client.CustomObjectsApi(hub)
    members = {c: client.AppsV1Api(api(env[f"TWINHULL_{c.upper()}_KUBECONFIG"]))
               for c in ("east", "west")}

    def status() -> dict[str, Any]:
        md = objects.get_namespaced_custom_object(GROUP, VERSION, NS, "modeldeployments", NAME)
        return dict(md.get("status") or {})

    def good_hash() -> str | None:
        s = status()
        if not s.get("currentSnapshot") or s.get("currentSnapshot") != s.get(
                "lastGoodSnapshot") or s.get("rollout"):
            return None
        snap = objects.get_namespaced_custom_object(GROUP, VERSION, NS, "modelsnapshots",
                                                    s["currentSnapshot"])
        return str(snap["spec"]["hash"])

    def runs(revision: str) -> bool:
        for api_ in members.values():
            items = api_.list_namespaced_deployment(
                NS, label_selector=f"serving.twinhull.io/deployment={NAME}",
                _request_timeout=2).items
            if not items:
                return False
            for d in items:
                st, want = d.status, d.spec.replicas or 0
                if (d.metadata.annotations or {}).get(REVISION) != revision or not (
                        (st.observed_generation or 0) >= d.metadata.generation
                        and (st.updated_replicas or 0) == want
                        and (st.replicas or 0) == want and (st.ready_replicas or 0) >= want):
                    return False
        return True

    def set_image(image: str) -> None:
        subprocess.run([*kubectl, "patch", "modeldeployment", NAME, "-n", NS, "--type=merge",
                        "-p", json.dumps({"spec": {"model": {"image": image}}})],
                       check=True, capture_output=True)

    def rollback_ids() -> set[str]:
        return {d["id"] for d in status().get("decisions") or [] if d["kind"] == "Rollback"}

    rollbacks, detections = [], []
    with operator(env, policy=E2E / "tiers-fast.yaml"):
        subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                       input=yaml.safe_dump_all(bench_manifest(
                           NS, NAME, rollback={"progressDeadlineSeconds": 30})),
                       text=True, check=True, capture_output=True)
        try:
            for run in range(1, args.runs + 1):
                wait(lambda: clusters_healthy(hub), 120, "every cluster Healthy")
                wait(lambda: good_hash() is not None, 180, "a Good revision running")
                good = good_hash()
                assert good is not None
                wait(lambda g=good: runs(g), 120, "the Good revision settled everywhere")
                seen = rollback_ids()
                start = time.monotonic()
                set_image(f"vllm/vllm-openai:v0.12.{run}-crashloop")
                wait(lambda s=seen: rollback_ids() - s, 120, "the Rollback decision")
                detected = time.monotonic()
                wait(lambda g=good: runs(g), 120, "the Good revision Ready in both clusters")
                done = time.monotonic()
                rollbacks.append(done - detected)
                detections.append(detected - start)
                print(f"run {run}: detected {detected - start:.1f}s after the change "
                      f"(progress deadline 30 s); rolled back in {done - detected:.2f}s",
                      flush=True)
                set_image(GOOD)  # the GitOps revert: the spec matches what runs again
        finally:
            subprocess.run([*kubectl, "delete", "namespace", NS, "--wait=true",
                            "--timeout=60s"], capture_output=True)
    print(f"rollback_median_s={median(rollbacks):.2f} rollback_max_s={max(rollbacks):.2f} "
          f"detect_median_s={median(detections):.1f} runs={len(rollbacks)}")


if __name__ == "__main__":
    main()
