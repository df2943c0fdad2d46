"""Benchmark: how fast a bad revision is rolled back in both clusters, by both real paths.

With the operator on the lab (as the chart's ServiceAccount) and one critical
ModelDeployment (one replica in each of east-a, east-b, west-a, west-b) running a Good
revision under a steady load from the data-plane simulator, each run changes the image
and measures, from the change, when the rollback is decided (detect) and when every
Deployment in east and west runs the last Good revision again, fully rolled out and
Ready (restored); and the requests the simulator counted failed and dropped meanwhile.
Then the spec is set back to the Good image (the GitOps revert) before the next run.

* ``crashloop``: a tag ending in ``-crashloop`` never becomes Ready; the rollout stalls in
  east and the progress deadline (``--deadline``, default the API's 600 s) makes it Bad.
  The Good pods never left (``maxUnavailable: 0``), so restoring is quick.
* ``errors``: a tag with ``-errors`` becomes Ready (after ``--load-seconds``, as every pod
  here), replaces the Good pods in east, then in west, and fails every request it takes:
  verification catches it on its own error rate and rolls back, which needs new pods of
  the Good revision, loading again.

Run: e2e/lab up && .venv/bin/python e2e/bench/rollback.py [--runs 5] [--paths errors]
Last line, per path P: P_detect_p50_s=… P_detect_p95_s=… P_restored_p50_s=…
P_restored_p95_s=… P_failed_p50=… P_dropped_p50=…; and runs=… load_seconds=… deadline_s=…
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
    SIM_COUNTS,
    VERSION,
    api,
    bench_manifest,
    clusters_healthy,
    lab_env,
    operator,
    quantile,
    simulator,
    wait,
)
from kubernetes import client

NS, NAME = "bench-rollback", "bench-rollback"
BASE = "vllm/vllm-openai"
REVISION = "serving.twinhull.io/revision"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--paths", default="crashloop,errors")
    parser.add_argument("--deadline", type=int, default=600,
                        help="spec.rollback.progressDeadlineSeconds (default 600, the API's)")
    parser.add_argument("--load-seconds", type=int, default=30,
                        help="seconds a model server takes to become Ready (default 30)")
    parser.add_argument("--tokens-per-second", type=float, default=4000.0)
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    load = f"-load{args.load_seconds}" if args.load_seconds > 0 else ""
    good_image = f"{BASE}:v0.11.0{load}"
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

    results: dict[str, dict[str, list[float]]] = {}
    manifest = bench_manifest(NS, NAME, rollback={"progressDeadlineSeconds": args.deadline})
    for doc in manifest:
        if doc["kind"] == "ModelDeployment":
            doc["spec"]["model"]["image"] = good_image
            doc["spec"]["fallback"]["model"]["image"] = good_image
    settle = 180 + 3 * args.load_seconds
    # the lab's Prometheus, read as the e2e operator reads it: verification needs the
    # revision's own error rate (without it a revision is verified on readiness alone)
    reads = ["--prometheus", env["TWINHULL_PROMETHEUS_URL"], "--metrics-interval", "2",
             "--rate-window", "10s"]
    with operator(env, policy=E2E / "tiers-fast.yaml", extra=reads):
        subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                       input=yaml.safe_dump_all(manifest), text=True, check=True,
                       capture_output=True)
        try:
            with simulator(env, f"{NS}/{NAME}", args.tokens_per_second) as counts:
                for path in paths:
                    m = results.setdefault(path, {})
                    for run in range(1, args.runs + 1):
                        wait(lambda: clusters_healthy(hub), 120, "every cluster Healthy")
                        wait(lambda: good_hash() is not None, settle, "a Good revision running")
                        good = good_hash()
                        assert good is not None
                        wait(lambda g=good: runs(g), settle,
                             "the Good revision settled everywhere")
                        seen = rollback_ids()
                        before = counts()
                        start = time.monotonic()
                        bad = f"{BASE}:v0.12.{run}{load}-{path}"
                        set_image(bad)
                        wait(lambda s=seen: rollback_ids() - s, args.deadline + settle,
                             "the Rollback decision")
                        detected = time.monotonic()
                        wait(lambda g=good: runs(g), settle,
                             "the Good revision Ready in both clusters")
                        done = time.monotonic()
                        after = counts()
                        delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
                        failed = sum(v for (n, _, _), v in delta.items() if n == SIM_COUNTS[1])
                        dropped = sum(v for (n, _, _), v in delta.items()
                                      if n == SIM_COUNTS[0])
                        for k, v in (("detect", detected - start), ("restored", done - start),
                                     ("failed", failed), ("dropped", dropped)):
                            m.setdefault(k, []).append(v)
                        print(f"{path} run {run}: detected {detected - start:.1f}s after the "
                              f"change, Good everywhere again at {done - start:.1f}s; "
                              f"{failed:.0f} requests failed, {dropped:.0f} dropped",
                              flush=True)
                        set_image(good_image)  # the GitOps revert
        finally:
            subprocess.run([*kubectl, "delete", "namespace", NS, "--wait=true",
                            "--timeout=60s"], capture_output=True)
    pairs = []
    for path, m in results.items():
        pairs += [f"{path}_detect_p50_s={quantile(m['detect'], .5):.1f}",
                  f"{path}_detect_p95_s={quantile(m['detect'], .95):.1f}",
                  f"{path}_restored_p50_s={quantile(m['restored'], .5):.1f}",
                  f"{path}_restored_p95_s={quantile(m['restored'], .95):.1f}",
                  f"{path}_failed_p50={quantile(m['failed'], .5):.0f}",
                  f"{path}_dropped_p50={quantile(m['dropped'], .5):.0f}"]
    print(" ".join([*pairs, f"runs={args.runs}", f"load_seconds={args.load_seconds}",
                    f"deadline_s={args.deadline}"]))


if __name__ == "__main__":
    main()
