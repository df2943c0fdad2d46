"""Benchmark: failover as faults really happen, detection and action apart, with requests.

With the operator on the lab (as the chart's ServiceAccount) and one critical
ModelDeployment (one replica in each of east-a, east-b, west-a, west-b, a cold fallback),
under a steady load from the data-plane simulator, each run injects one fault into west,
then undoes it and waits for the gradual failback before the next run:

* ``kill``: west's API server SIGKILLed (connections refused at once), and its Prometheus;
  the pods keep serving (a control-plane outage);
* ``freeze``: west's API server SIGSTOPped (connections accepted, calls hang);
* ``partition``: the network between twinhull and west's API server black-holed by the
  lab's toxiproxy (connections accepted by the proxy, then nothing);
* ``member``: the whole member lost: API server, Prometheus and model servers (requests
  sent to west are dropped until the weights move);
* ``zone``: west-a's nodes NotReady and its pods unready (the rest of west serves).

Measured per run, from the fault command (for ``zone`` that includes the node lifecycle
controller's grace before the nodes turn NotReady, 20 s in the lab):

* ``detect``: until west's ServingCluster is Down (for ``zone``: until the deployment
  reports west-a failed over);
* ``weight0``: until the hub's HTTPRoute gives west weight 0 (``zone``: west's weight
  drops) — the action, reported both from the fault and from detection;
* ``capacity``: until east runs and has Ready the whole declared capacity (``zone``: until
  the zones left have the 4 declared replicas Ready, west-a's moved one included); with
  ``--load-seconds N`` the model servers take N s to become Ready after they start (a
  KWOK stage reading the image tag ``-load<N>``), so this is measured, not assumed;
* ``dropped`` / ``failed`` / ``fallback``: requests the simulator dropped, failed, and
  served by the fallback model from the fault to full capacity (its own counts).

With ``--hostile`` the hostile corpus of e2e/hostile.py (malformed annotations, broken
custom queries, colliding names, ServingClusters with malformed or command-running
kubeconfig Secrets) is applied next to it first: the figures must not move.

``--blips K`` also partitions west for K runs of ``--blip-seconds`` (shorter than the
probes' threshold) and counts failovers: there must be none.

``--probes default`` (2 s x 3, timeout 2 s) or ``conservative`` (10 s x 3, timeout 5 s)
or ``both``. p50 and p95 over the runs of each fault.

Run: e2e/lab up && .venv/bin/python e2e/bench/failover.py [--runs 20] [--faults kill,freeze]
Last line: key=value pairs, per probes setting and fault: ``<probes>_<fault>_detect_p50_s``,
``_detect_p95_s``, ``_weight0_p50_s``, ``_weight0_p95_s``, ``_act_p95_s`` (detection to
weight 0), ``_capacity_p50_s``, ``_dropped_p50``, ``_dropped_p95``, ``_dropped_runs`` (runs
that dropped any), ``_failed_p50``, ``_fallback_p50``; and
``runs``, ``load_seconds``, ``blip_failovers``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
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
    lab,
    lab_env,
    name_of,
    operator,
    quantile,
    ready_replicas,
    simulator,
    wait,
)
from kubernetes import client

NS, NAME = "bench-failover", "bench-failover"
FAULTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "kill": (("kill", "west"), ("revive", "west")),
    "freeze": (("freeze", "west"), ("revive", "west")),
    "partition": (("partition", "west"), ("heal", "west")),
    "member": (("member-down", "west"), ("member-up", "west")),
    "zone": (("zone-down", "west", "west-a"), ("zone-up", "west", "west-a")),
}
BLIP_SETTLE = 45.0
"""Seconds the fleet must hold steady at 50/50 before a blip (see :class:`Settled`)."""


class Settled:
    """A condition that has held for ``seconds`` without a break, polled."""

    def __init__(self, condition: Callable[[], bool], seconds: float) -> None:
        self.condition, self.seconds = condition, seconds
        self.since: float | None = None

    def __call__(self) -> bool:
        if not self.condition():
            self.since = None
            return False
        now = time.monotonic()
        self.since = now if self.since is None else self.since
        return now - self.since >= self.seconds


PROBES = {"default": {"probeIntervalSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 3},
          "conservative": {"probeIntervalSeconds": 10, "timeoutSeconds": 5,
                           "failureThreshold": 3}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per fault (default 20)")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--probes", choices=("default", "conservative", "both"),
                        default="default")
    parser.add_argument("--load-seconds", type=int, default=30,
                        help="seconds a model server takes to become Ready (default 30)")
    parser.add_argument("--tokens-per-second", type=float, default=4000.0,
                        help="the simulator's steady load (default 4000: 20 requests/s)")
    parser.add_argument("--blips", type=int, default=3)
    parser.add_argument("--hostile", action="store_true",
                        help="apply the hostile corpus of e2e/hostile.py next to it first")
    parser.add_argument("--blip-seconds", type=float, default=3.0)
    args = parser.parse_args()
    faults = [f for f in args.faults.split(",") if f]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        sys.exit(f"unknown fault(s) {unknown}; choose from {', '.join(FAULTS)}")
    env = lab_env()
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    east = client.AppsV1Api(api(env["TWINHULL_EAST_KUBECONFIG"]))
    west = client.AppsV1Api(api(env["TWINHULL_WEST_KUBECONFIG"]))
    objects = client.CustomObjectsApi(hub)
    image = "vllm/vllm-openai:v0.11.0" + (f"-load{args.load_seconds}"
                                           if args.load_seconds > 0 else "")
    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]

    def weight(backend: str) -> int:
        route = cast(dict[str, Any], objects.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NS, "httproutes", NAME))
        refs = route["spec"]["rules"][0]["backendRefs"]
        return int(next(r["weight"] for r in refs if r["name"] == f"{NAME}-{backend}"))

    def md_status() -> dict[str, Any]:
        md = cast(dict[str, Any], objects.get_namespaced_custom_object(
            GROUP, VERSION, NS, "modeldeployments", NAME))
        return dict(md.get("status") or {})

    def steady() -> bool:
        conditions = {c["type"]: c["status"] for c in md_status().get("conditions") or []}
        return conditions.get("Ready") == "True" and conditions.get("FailedOver") == "False"

    def west_phase() -> str | None:
        sc = cast(dict[str, Any], objects.get_cluster_custom_object(
            GROUP, VERSION, "servingclusters", "west"))
        return (sc.get("status") or {}).get("phase")

    def zone_failed_over() -> bool:
        legs = md_status().get("failover") or {}
        return any(k == "west/west-a" and isinstance(v, dict)
                   and v.get("state", "Serving") != "Serving" for k, v in legs.items())

    def east_ready(n: int) -> bool:
        items = east.list_namespaced_deployment(NS, _request_timeout=2).items
        primary = [d for d in items if "-fallback-" not in name_of(d)]
        return len(primary) == 2 and all(
            d.spec.replicas == n and ready_replicas(d) == n for d in primary)

    def ready_outside(zone: str) -> int:
        """Ready primary replicas in every zone but ``zone`` (east's and west's)."""
        return sum(ready_replicas(d)
                   for member in (east, west)
                   for d in member.list_namespaced_deployment(NS, _request_timeout=2).items
                   if "-fallback-" not in name_of(d)
                   and name_of(d) != f"{NAME}-{zone}")

    def set_probes(setting: str) -> None:
        subprocess.run([*kubectl, "patch", "servingcluster", "west", "--type=merge", "-p",
                        yaml.safe_dump({"spec": {"health": PROBES[setting]}})],
                       check=True, capture_output=True)

    def apply(docs: list[dict[str, Any]]) -> None:
        subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                       input=yaml.safe_dump_all(docs), text=True, check=True,
                       capture_output=True)

    results: dict[str, dict[str, list[float]]] = {}
    blip_failovers = 0
    settings = ["default", "conservative"] if args.probes == "both" else [args.probes]
    manifest = bench_manifest(NS, NAME)
    for doc in manifest:
        if doc["kind"] == "ModelDeployment":
            doc["spec"]["model"]["image"] = image
            doc["spec"]["fallback"]["model"]["image"] = image
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
        apply(manifest)
        with simulator(env, f"{NS}/{NAME}", args.tokens_per_second) as counts:
            wait(lambda: weight("west") == 50 and east_ready(1), 120 + 2 * args.load_seconds,
                 "initial 50/50")
            undoing: tuple[str, ...] = ()
            try:
                for setting in settings:
                    set_probes(setting)
                    for fault in faults:
                        inject, undo = FAULTS[fault]
                        m = results.setdefault(f"{setting}_{fault}", {})
                        for run in range(1, args.runs + 1):
                            wait(lambda: clusters_healthy(hub) and steady()
                                 and weight("west") == 50 and east_ready(1),
                                 300 + 2 * args.load_seconds,
                                 "both clusters Healthy, the deployment Ready, 50/50")
                            before = counts()
                            undoing = undo  # undone in `finally` if stopped meanwhile
                            t0 = time.monotonic()  # zone-down returns once the nodes are
                            lab(*inject)           # NotReady: its clock starts before
                            def since(start: float = t0) -> float:
                                return time.monotonic() - start  # from the fault
                            if fault == "zone":
                                wait(zone_failed_over, 120, "west-a failed over")
                                detect = since()
                                wait(lambda: weight("west") < 50, 120, "west's weight lowered")
                                weight0 = since()
                                wait(lambda: ready_outside("west-a") >= 4,
                                     120 + 2 * args.load_seconds,
                                     "the 4 declared replicas Ready outside west-a")
                                capacity = since()
                            else:
                                wait(lambda: west_phase() == "Down", 120, "west Down")
                                detect = since()
                                wait(lambda: weight("west") == 0, 120, "west weight 0")
                                weight0 = since()
                                wait(lambda: east_ready(2), 120 + 2 * args.load_seconds,
                                     "east at full capacity")
                                capacity = since()
                            after = counts()
                            lab(*undo)
                            undoing = ()
                            delta = {k: after.get(k, 0.0) - before.get(k, 0.0)
                                     for k in set(after) | set(before)}
                            dropped = sum(v for (n, _, _), v in delta.items()
                                          if n == SIM_COUNTS[0])
                            failed = sum(v for (n, _, _), v in delta.items()
                                         if n == SIM_COUNTS[1])
                            fallback = sum(v for (n, _, role), v in delta.items()
                                           if n == SIM_COUNTS[2] and role == "fallback")
                            row = {"detect": detect, "weight0": weight0,
                                   "act": weight0 - detect, "capacity": capacity,
                                   "dropped": dropped, "failed": failed,
                                   "fallback": fallback}
                            for k, v in row.items():
                                m.setdefault(k, []).append(v)
                            lost = ", ".join(  # which cluster's requests were dropped
                                f"{c} {v:.0f}" for (n, c, _), v in sorted(delta.items())
                                if n == SIM_COUNTS[0] and v)
                            print(f"{setting} {fault} run {run}: detect {detect:.2f}s  "
                                  f"weight0 {weight0:.2f}s  capacity {capacity:.2f}s  "
                                  f"dropped {dropped:.0f}{f' ({lost})' if lost else ''} "
                                  f"failed {failed:.0f} fallback {fallback:.0f}", flush=True)
                for _ in range(args.blips):
                    set_probes("default")
                    # settled for BLIP_SETTLE s: after a fault's undo the member's node
                    # lifecycle controller may still mark its pods unready (their nodes'
                    # heartbeats stopped with the API server), which moves weights by
                    # readiness, not by the blip
                    calm = Settled(lambda: clusters_healthy(hub) and steady()
                                   and weight("west") == 50, BLIP_SETTLE)
                    wait(calm, 300 + BLIP_SETTLE, f"steady {BLIP_SETTLE:g}s before a blip")
                    undoing = ("heal", "west")
                    lab("partition", "west")
                    end = time.monotonic() + args.blip_seconds
                    moved, phases = False, set()
                    while time.monotonic() < end:
                        moved = moved or weight("west") != 50
                        phases.add(west_phase())
                        time.sleep(0.1)
                    lab("heal", "west")
                    undoing = ()
                    end = time.monotonic() + 10
                    while time.monotonic() < end:
                        moved = moved or weight("west") != 50
                        phases.add(west_phase())
                        time.sleep(0.2)
                    blip_failovers += moved
                    seen = ", ".join(sorted(p for p in phases if p))
                    print(f"blip {args.blip_seconds:g}s: {'FAILED OVER' if moved else 'held'}"
                          f" (west seen {seen})", flush=True)
            finally:
                if undoing:
                    subprocess.run([str(E2E / "lab"), *undoing], capture_output=True)
                set_probes("default")
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
                        subprocess.run([*kubectl, "delete", o["kind"].lower(), meta["name"],
                                        *where, "--ignore-not-found"], capture_output=True)
    pairs = []
    print(f"{'probes/fault':<24}{'detect p50/p95':>18}{'weight0 p50/p95':>18}"
          f"{'act p95':>9}{'capacity p50':>14}{'dropped p50':>13}{'fallback p50':>14}")
    for key, m in results.items():
        print(f"{key:<24}{quantile(m['detect'], .5):>8.2f}/{quantile(m['detect'], .95):<9.2f}"
              f"{quantile(m['weight0'], .5):>8.2f}/{quantile(m['weight0'], .95):<9.2f}"
              f"{quantile(m['act'], .95):>9.2f}{quantile(m['capacity'], .5):>14.2f}"
              f"{quantile(m['dropped'], .5):>13.0f}{quantile(m['fallback'], .5):>14.0f}")
        pairs += [f"{key}_detect_p50_s={quantile(m['detect'], .5):.2f}",
                  f"{key}_detect_p95_s={quantile(m['detect'], .95):.2f}",
                  f"{key}_weight0_p50_s={quantile(m['weight0'], .5):.2f}",
                  f"{key}_weight0_p95_s={quantile(m['weight0'], .95):.2f}",
                  f"{key}_act_p95_s={quantile(m['act'], .95):.2f}",
                  f"{key}_capacity_p50_s={quantile(m['capacity'], .5):.2f}",
                  f"{key}_dropped_p50={quantile(m['dropped'], .5):.0f}",
                  f"{key}_dropped_p95={quantile(m['dropped'], .95):.0f}",
                  f"{key}_dropped_runs={sum(d > 0 for d in m['dropped'])}",
                  f"{key}_failed_p50={quantile(m['failed'], .5):.0f}",
                  f"{key}_fallback_p50={quantile(m['fallback'], .5):.0f}"]
    hostile_count = sum(o["kind"] in ("ModelDeployment", "ServingCluster")
                        for o in hostile_objects)
    print(" ".join([*pairs, f"runs={args.runs}", f"load_seconds={args.load_seconds}",
                    f"blip_failovers={blip_failovers}", f"hostile={hostile_count}"]))


if __name__ == "__main__":
    main()
