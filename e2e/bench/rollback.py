"""Benchmark: how fast a bad revision is rolled back in both clusters, by both real paths.

With the operator on the lab (as the chart's ServiceAccount) and one critical
ModelDeployment (one replica in each of east-a, east-b, west-a, west-b) running a Good
revision under a steady load from the data-plane simulator, each run changes the image
and measures, from the change, when the rollback is decided (detect) and when every
Deployment in east and west runs the last Good revision again, fully rolled out and
Ready (restored); and the requests the simulator counted failed and dropped meanwhile.
Then the spec is set back to the Good image (the GitOps revert) before the next run.
With ``--parallel K`` there are K such ModelDeployments, each under the same load, and a
run changes all K at once (one sample each, timed from its own change): the 600 s
deadline path then gives K samples in ten minutes; they share the operator's rounds.

* ``crashloop``: a tag ending in ``-crashloop`` never becomes Ready; the rollout stalls in
  east and the progress deadline (``--deadline``, default the API's 600 s) makes it Bad.
  The Good pods never left (``maxUnavailable: 0``), so restoring is quick.
* ``errors``: a tag with ``-errors`` becomes Ready (after ``--load-seconds``, as every pod
  here), replaces the Good pods in east, then in west, and fails every request it takes:
  verification catches it on its own error rate and rolls back, which needs new pods of
  the Good revision, loading again.

Run: e2e/lab up && .venv/bin/python e2e/bench/rollback.py [--runs 5] [--paths errors]
[--parallel 4]
Last line, per path P: P_detect_p50_s=… P_detect_p95_s=… P_restored_p50_s=…
P_restored_p95_s=… P_failed_p50=… P_dropped_p50=… P_samples=…; and runs=… parallel=…
load_seconds=… deadline_s=…
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any, cast

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
    parser.add_argument("--parallel", type=int, default=1,
                        help="ModelDeployments changed at once in each run (default 1)")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    load = f"-load{args.load_seconds}" if args.load_seconds > 0 else ""
    good_image = f"{BASE}:v0.11.0{load}"
    names = [NAME] if args.parallel <= 1 else [f"{NAME}-{i}" for i in
                                               range(1, args.parallel + 1)]
    env = lab_env()
    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    objects = client.CustomObjectsApi(hub)
    members = {c: client.AppsV1Api(api(env[f"TWINHULL_{c.upper()}_KUBECONFIG"]))
               for c in ("east", "west")}

    def status(name: str) -> dict[str, Any]:
        md = cast(dict[str, Any], objects.get_namespaced_custom_object(
            GROUP, VERSION, NS, "modeldeployments", name))
        return dict(md.get("status") or {})

    def good_hash(name: str) -> str | None:
        s = status(name)
        if not s.get("currentSnapshot") or s.get("currentSnapshot") != s.get(
                "lastGoodSnapshot") or s.get("rollout"):
            return None
        snap = cast(dict[str, Any], objects.get_namespaced_custom_object(
            GROUP, VERSION, NS, "modelsnapshots", s["currentSnapshot"]))
        return str(snap["spec"]["hash"])

    def has_good(name: str) -> bool:
        return good_hash(name) is not None

    def runs(name: str, revision: str) -> bool:
        for api_ in members.values():
            items = api_.list_namespaced_deployment(
                NS, label_selector=f"serving.twinhull.io/deployment={name}",
                _request_timeout=2).items
            if not items:
                return False
            for d in items:
                meta, st, want = d.metadata, d.status, d.spec.replicas or 0
                assert meta is not None  # the API server's objects have one
                if (meta.annotations or {}).get(REVISION) != revision:
                    return False
                assert st is not None and meta.generation is not None  # the API server sets both
                if not ((st.observed_generation or 0) >= meta.generation
                        and (st.updated_replicas or 0) == want
                        and (st.replicas or 0) == want and (st.ready_replicas or 0) >= want):
                    return False
        return True

    def set_image(name: str, image: str) -> None:
        subprocess.run([*kubectl, "patch", "modeldeployment", name, "-n", NS, "--type=merge",
                        "-p", json.dumps({"spec": {"model": {"image": image}}})],
                       check=True, capture_output=True)

    def rollback_ids(name: str) -> set[str]:
        return {d["id"] for d in status(name).get("decisions") or []
                if d["kind"] == "Rollback"}

    def one_run(path: str, run: int, counts: Callable[..., dict[tuple[str, str, str], float]]
                ) -> dict[str, dict[str, float]]:
        """Change every deployment to the bad revision at once; each one's seconds from
        its change to the Rollback decision and to its Good revision Ready everywhere
        again, and the requests failed and dropped meanwhile."""
        wait(lambda: clusters_healthy(hub), 120, "every cluster Healthy")
        good: dict[str, str] = {}
        for name in names:
            wait(functools.partial(has_good, name), settle,
                 f"a Good revision of {name} running")
            good[name] = str(good_hash(name))
            wait(functools.partial(runs, name, good[name]), settle,
                 f"{name}'s Good revision settled everywhere")
        seen = {n: rollback_ids(n) for n in names}
        before = {n: counts(f"{NS}/{n}") for n in names}
        start: dict[str, float] = {}
        for name in names:
            start[name] = time.monotonic()
            set_image(name, f"{BASE}:v0.12.{run}{load}-{path}")
        detected: dict[str, float] = {}
        done: dict[str, float] = {}

        def finished() -> bool:
            for n in names:
                if n not in detected and rollback_ids(n) - seen[n]:
                    detected[n] = time.monotonic()
                if n in detected and n not in done and runs(n, good[n]):
                    done[n] = time.monotonic()
            return len(done) == len(names)

        wait(finished, args.deadline + 2 * settle,
             "every Rollback decided and the Good revisions Ready again", interval=0.2)
        out: dict[str, dict[str, float]] = {}
        for name in names:
            after = counts(f"{NS}/{name}")
            delta = {k: after.get(k, 0.0) - before[name].get(k, 0.0) for k in after}
            out[name] = {
                "detect": detected[name] - start[name], "restored": done[name] - start[name],
                "failed": sum(v for (n, _, _), v in delta.items() if n == SIM_COUNTS[1]),
                "dropped": sum(v for (n, _, _), v in delta.items() if n == SIM_COUNTS[0])}
        return out

    results: dict[str, dict[str, list[float]]] = {}
    manifest: list[dict[str, Any]] = []
    for name in names:
        for doc in bench_manifest(NS, name,
                                  rollback={"progressDeadlineSeconds": args.deadline}):
            if doc["kind"] == "ModelDeployment":
                doc["spec"]["model"]["image"] = good_image
                doc["spec"]["fallback"]["model"]["image"] = good_image
            if doc not in manifest:
                manifest.append(doc)
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
            with simulator(env, [f"{NS}/{n}" for n in names],
                           args.tokens_per_second) as counts:
                for path in paths:
                    m = results.setdefault(path, {})
                    for run in range(1, args.runs + 1):
                        for name, sample in one_run(path, run, counts).items():
                            for k, v in sample.items():
                                m.setdefault(k, []).append(v)
                            print(f"{path} run {run} {name}: detected {sample['detect']:.1f}s "
                                  f"after the change, Good everywhere again at "
                                  f"{sample['restored']:.1f}s; {sample['failed']:.0f} "
                                  f"requests failed, {sample['dropped']:.0f} dropped",
                                  flush=True)
                        for name in names:
                            set_image(name, good_image)  # the GitOps revert
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
                  f"{path}_dropped_p50={quantile(m['dropped'], .5):.0f}",
                  f"{path}_samples={len(m['detect'])}"]
    print(" ".join([*pairs, f"runs={args.runs}", f"parallel={len(names)}",
                    f"load_seconds={args.load_seconds}", f"deadline_s={args.deadline}"]))


if __name__ == "__main__":
    main()
