"""Benchmark: 200 ModelDeployments across east and west.

Creates the ModelDeployments (one replica in an east zone and one in a west zone each,
best-effort, no GPUs, so capacity plays no part) with the operator stopped, then starts
it and measures: seconds until every one is Ready (member Deployments created and their
pods Ready, weights published, status written), the operator's resident memory then, and
the write requests the API servers receive during 20 s of no-op resyncs (twinhull's
resources only: members' Deployments, Services, PDBs, Namespaces, PriorityClasses; the
hub's ModelDeployments, ModelSnapshots, HTTPRoutes and Events) once every first revision
is verified Good.

Run: e2e/lab up && .venv/bin/python e2e/bench/scale.py [--objects 200]
Last line: objects=200 converge_s=… rss_mb=… noop_writes=…
"""

from __future__ import annotations

import argparse
import subprocess
import time

import yaml
from harness import (
    GROUP,
    VERSION,
    api,
    clusters_healthy,
    lab_env,
    operator,
    rss_mb,
    wait,
    write_requests,
)
from kubernetes import client

NS = "bench-scale"
MEMBER_KINDS = {"deployments", "services", "poddisruptionbudgets", "namespaces",
                "priorityclasses"}
HUB_KINDS = {"modeldeployments", "modelsnapshots", "httproutes", "events"}


def manifests(count: int) -> list[dict]:
    docs: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}]
    for i in range(count):
        docs.append({
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": f"app-{i:03}", "namespace": NS},
            "spec": {"slaTier": "best-effort",
                     "model": {"name": f"model-{i:03}", "image": "vllm/vllm-openai:v0.11.0",
                               "resources": {"gpus": 0}},
                     "placement": [{"cluster": "east", "zones": {f"east-{'ab'[i % 2]}": 1}},
                                   {"cluster": "west", "zones": {f"west-{'ab'[i % 2]}": 1}}]},
        })
    return docs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--noop-seconds", type=float, default=20.0)
    args = parser.parse_args()
    env = lab_env()
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]
    wait(lambda: clusters_healthy(hub), 120, "both clusters Healthy")
    subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                   input=yaml.safe_dump_all(manifests(args.objects)), text=True, check=True,
                   capture_output=True)
    objects = client.CustomObjectsApi(hub)

    def ready() -> int:
        items = objects.list_namespaced_custom_object(GROUP, VERSION, NS,
                                                      "modeldeployments")["items"]
        return sum(any(c["type"] == "Ready" and c["status"] == "True"
                       for c in (i.get("status") or {}).get("conditions") or [])
                   for i in items)

    def verified() -> int:
        items = objects.list_namespaced_custom_object(GROUP, VERSION, NS,
                                                      "modeldeployments")["items"]
        return sum(bool(s.get("lastGoodSnapshot")) and not s.get("rollout")
                   for s in ((i.get("status") or {}) for i in items))

    try:
        with operator(env) as process:
            start = time.monotonic()
            wait(lambda: ready() == args.objects, 600, "every ModelDeployment Ready",
                 interval=0.5)
            converge = time.monotonic() - start
            rss = rss_mb(process.pid)
            print(f"converged {args.objects} in {converge:.1f}s; operator RSS {rss:.0f} MiB",
                  flush=True)
            # steady state: every first revision verified Good (the tier's window), then the
            # last status writes and observations settle
            wait(lambda: verified() == args.objects, 600, "every revision verified Good",
                 interval=1.0)
            time.sleep(5)
            clusters = ("hub", "east", "west")
            kinds = {"hub": HUB_KINDS, "east": MEMBER_KINDS, "west": MEMBER_KINDS}
            before = {c: write_requests(env, c, kinds[c]) for c in clusters}
            time.sleep(args.noop_seconds)
            after = {c: write_requests(env, c, kinds[c]) for c in clusters}
            noop = {c: after[c] - before[c] for c in clusters}
            print(f"writes during {args.noop_seconds:g}s of no-op resyncs: {noop}", flush=True)
            subprocess.run([*kubectl, "delete", "namespace", NS, "--wait=true",
                            "--timeout=300s"], capture_output=True)
    finally:
        subprocess.run([*kubectl, "delete", "namespace", NS, "--wait=false",
                        "--ignore-not-found"], capture_output=True)
    print(f"objects={args.objects} converge_s={converge:.1f} rss_mb={rss:.0f} "
          f"noop_writes={sum(noop.values())}")


if __name__ == "__main__":
    main()
