"""Benchmark: thousands of ModelDeployments across every lab member, and a member lost.

Creates the ModelDeployments (one replica in a zone of every member, best-effort, no
GPUs, so capacity plays no part) with the operator stopped, then starts it (as the chart's
ServiceAccount, as installed) and measures:

* ``converge_s``: operator start until every one is Ready (member Deployments created and
  their pods Ready, weights published, status written); ``verified_s`` until every first
  revision is verified Good;
* ``rss_mb``: the operator's resident memory at convergence; ``rss_peak_mb`` the highest
  sampled (every second) until the end; ``rss_peak_loss_mb`` the highest from the member
  loss to its revive and ``rss_peak_return_mb`` from then until ``--return-seconds``
  after the member is Healthy again (its failback's rounds);
* ``first_pass_s``: until kopf has put its finalizer on every one (one patch each, at its
  own pace), as the listings that wait for convergence first see it;
* steady state, from 10 s after every revision is verified and kopf's first pass has
  ended, over ``--steady-seconds``: the requests the operator's identities make to each
  API server per second (the API servers' audit logs, every request by a ServiceAccount
  of twinhull-system: reads, watches when they end, writes), and ``steady_writes``, its
  writes other than its leader Lease's renewals (the goal: 0 when nothing changes);
  ``late_rps`` and ``late_writes`` the same over a window as long, ``--late-seconds``
  after the first ends (the first can still hold writes that waited out their queue
  during convergence and are retried);
* a member lost (the last member's API server SIGKILLed): ``loss_detect_s`` until its
  ServingCluster is Down, ``loss_weight0_s`` until every deployment's HTTPRoute gives it
  weight 0, and the request rate and writes per second over ``--steady-seconds`` after
  the fault (``loss_rps``, ``loss_writes_per_s``); then the member revived.

It needs a lab whose API servers log every ServiceAccount request, best a separate one so
the default lab's tests keep theirs (three members, its own ports and run directory), and
ten nodes a zone (two hold 440 pods a member, fewer than 2,000 deployments need)::

    export TWINHULL_LAB_MEMBERS=3 TWINHULL_LAB_NODES_PER_ZONE=10 TWINHULL_LAB_AUDIT=requests \\
           TWINHULL_LAB_PORT_BASE=17600 \\
           TWINHULL_LAB_RUN=$HOME/.cache/twinhull/lab/run-scale
    e2e/lab up && .venv/bin/python e2e/bench/scale.py [--objects 2000]; e2e/lab down

Every minute while it waits for convergence it prints how many are Ready and how many
member Deployments are made and Ready. Last line: ``objects=… members=… converge_s=…
verified_s=… first_pass_s=… rss_mb=… rss_peak_mb=… rss_peak_loss_mb=…
rss_peak_return_mb=… steady_rps=… steady_writes=… lease_writes=… late_rps=… late_writes=…
loss_detect_s=… loss_weight0_s=… loss_rps=… loss_writes_per_s=…``;
when not every one is Ready within ``--timeout``: ``objects=… members=… converged=0
ready_at_timeout=… timeout_s=… rss_mb=… rss_peak_mb=…`` (exit 1).

``--floor`` runs no operator: it applies the member objects twinhull would render for the
same deployments straight to every member (16 requests at a time per member) and times
until every Deployment is Ready, the lab's own share of ``converge_s``. Last line:
``objects=… members=… floor_apply_s=… floor_ready_s=…``.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import yaml
from harness import (
    E2E,
    GROUP,
    VERSION,
    api,
    clusters_healthy,
    lab,
    lab_env,
    operator,
    ready_replicas,
    rss_mb,
    wait,
)
from kubernetes import client

FINALIZER = "serving.twinhull.io/cleanup"
NS = "bench-scale"
OPERATOR_USERS = "system:serviceaccount:twinhull-system:"
"""The operator's identities: the chart's ServiceAccount on the hub, the one each member
grants it."""
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def manifests(count: int, members: list[tuple[str, list[str]]]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": NS}}]
    for i in range(count):
        docs.append({
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
            "metadata": {"name": f"app-{i:04}", "namespace": NS},
            "spec": {"slaTier": "best-effort",
                     "model": {"name": f"model-{i:04}", "image": "vllm/vllm-openai:v0.11.0",
                               "resources": {"gpus": 0}},
                     "placement": [{"cluster": name, "zones": {zones[i % len(zones)]: 1}}
                                   for name, zones in members]},
        })
    return docs


def operator_requests(path: Path, since: datetime, until: datetime
                      ) -> Iterator[tuple[datetime, str, str]]:
    """The operator's requests one API server received in [since, until), from its audit
    log (the rotated file first): (when, verb, resource with its subresource)."""
    for name in (path.with_name(path.name + ".1"), path):
        if not name.exists():
            continue
        with name.open() as lines:
            for line in lines:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line cut by rotation
                user = (event.get("user") or {}).get("username", "")
                if not user.startswith(OPERATOR_USERS):
                    continue
                at = datetime.fromisoformat(event["requestReceivedTimestamp"])
                if not since <= at < until:
                    continue
                ref = event.get("objectRef") or {}
                sub = f"/{ref['subresource']}" if ref.get("subresource") else ""
                yield at, event.get("verb", ""), f"{ref.get('resource', '')}{sub}"


def audit_counts(logs: dict[str, Path], since: datetime, until: datetime
                 ) -> dict[str, Counter[str]]:
    """Per cluster, the operator's requests received in [since, until), by kind: ``read``
    (get, list), ``watch``, ``write`` and ``lease`` (its leader Lease's writes); and each
    write by verb and resource (``write:patch modeldeployments/status``)."""
    found: dict[str, Counter[str]] = {}
    for cluster, path in logs.items():
        counts: Counter[str] = Counter()
        for _, verb, resource in operator_requests(path, since, until):
            if verb in WRITES:
                kind = "lease" if resource == "leases" else "write"
                counts[kind] += 1
                counts[f"{kind}:{verb} {resource}"] += 1
            elif verb == "watch":
                counts["watch"] += 1
            else:
                counts["read"] += 1
        found[cluster] = counts
    return found


def write_timeline(path: Path, since: datetime, until: datetime, step: float = 5.0
                   ) -> list[str]:
    """The operator's writes to one API server in [since, until), per ``step`` seconds
    and resource: where the time between a fault and its last route write went."""
    buckets: dict[int, Counter[str]] = {}
    for at, verb, resource in operator_requests(path, since, until):
        if verb in WRITES and resource != "leases":
            buckets.setdefault(int((at - since).total_seconds() // step), Counter())[
                resource] += 1
    return [f"{i * step:5.0f}-{(i + 1) * step:<4.0f}s " + ", ".join(
        f"{what} {n}" for what, n in buckets[i].most_common())
        for i in sorted(buckets)]


def window(logs: dict[str, Path], seconds: float, label: str) -> dict[str, Counter[str]]:
    """The operator's requests over the next ``seconds``, printed per cluster."""
    since = datetime.now(UTC)
    time.sleep(seconds)
    until = datetime.now(UTC)
    time.sleep(3)  # the audit log is written in batches (1 s)
    counts = audit_counts(logs, since, until)
    for cluster, c in counts.items():
        print(f"  {label} {cluster}: {sum(c.values()) / seconds:.2f} requests/s "
              f"(read {c['read']}, watch {c['watch']}, write {c['write']}, lease "
              f"{c['lease']} in {seconds:g}s)", flush=True)
        writes = sorted(((n, k[6:]) for k, n in c.items() if k.startswith("write:")),
                        reverse=True)
        if writes:
            print("    writes: " + ", ".join(f"{what} {n}" for n, what in writes[:6]),
                  flush=True)
    return counts


def ready_deployments(member: client.ApiClient) -> tuple[int, int]:
    """(Deployments, Deployments with every replica Ready) in the benchmark's namespace."""
    items = client.AppsV1Api(member).list_namespaced_deployment(
        NS, _request_timeout=60).items
    return len(items), sum(ready_replicas(d) >= (d.spec.replicas or 0) for d in items)


def progress(start: float, ready: Callable[[], int], members: dict[str, client.ApiClient],
             total: int, every: float = 60.0) -> Callable[[], bool]:
    """A check that every deployment is Ready, printing how far it got every ``every``
    seconds (ModelDeployments Ready, member Deployments and Ready ones)."""
    last = [start]

    def check() -> bool:
        count = ready()
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            seen = []
            for name, member in members.items():
                try:
                    made, up = ready_deployments(member)
                    seen.append(f"{name} {up}/{made}")
                except Exception:  # a member that does not answer: say so, keep waiting
                    seen.append(f"{name} ?")
            print(f"  {time.monotonic() - start:.0f}s: {count}/{total} Ready; Deployments "
                  f"Ready/made: {', '.join(seen)}", flush=True)
        return count == total
    return check


def floor(members: list[tuple[str, list[str]]], apis: dict[str, client.ApiClient], count: int,
          timeout: float) -> None:
    """The lab's own time for what twinhull asks of the members: the objects it renders
    for ``count`` deployments (twinhull.plan.render, as the operator would), applied
    server-side straight to every member at once, 16 requests at a time per member, then
    until every Deployment is Ready. Prints ``floor_apply_s`` and ``floor_ready_s``."""
    import asyncio

    from twinhull.api.deployment import ModelDeploymentSpec
    from twinhull.clusters.kube import Kube, configuration
    from twinhull.clusters.member import key_of
    from twinhull.plan.fleet import Slot
    from twinhull.plan.render import member_objects, priority_class
    from twinhull.policy import load_file

    env = lab_env()
    tiers = load_file()
    docs = manifests(count, members)[1:]
    per_member: dict[str, dict[Any, dict[str, Any]]] = {m: {} for m, _ in members}
    for doc in docs:  # by key, as the member writer keeps them (one namespace, one class)
        spec = ModelDeploymentSpec.model_validate(doc["spec"])
        tier = tiers.resolve(spec.sla_tier)
        pc = priority_class(spec.sla_tier, tier)  # the fleet adds its tier's class too
        replicas: dict[Slot, int] = {(p.cluster, "primary", z): n for p in spec.placement
                                     for z, n in p.zones.items()}
        for p in spec.placement:
            objects = member_objects(doc["metadata"]["name"], NS, p.cluster, spec, tier,
                                     replicas) + ([pc] if pc is not None else [])
            per_member[p.cluster].update((key_of(o), o) for o in objects)
    kubes = {m: Kube(m, configuration(yaml.safe_load(Path(
        env[f"TWINHULL_{m.upper()}_KUBECONFIG"]).read_text())), timeout=30.0, threads=16)
        for m in per_member}

    async def apply_all() -> None:
        gates = {m: asyncio.Semaphore(16) for m in per_member}

        async def one(kube: Kube, obj: dict[str, Any]) -> None:
            error = ""
            for _ in range(5):
                try:
                    async with gates[kube.name]:
                        await kube.apply(obj)
                    return
                except Exception as exc:  # a busy member: try again
                    error = str(exc)
                    await asyncio.sleep(1.0)
            raise RuntimeError(f"could not apply {obj['kind']} {obj['metadata']['name']}: "
                               f"{error}")

        async def member(name: str) -> None:
            objects = list(per_member[name].values())
            first = [o for o in objects if o["kind"] in ("Namespace", "PriorityClass")]
            for o in first:
                await one(kubes[name], o)
            await asyncio.gather(*(one(kubes[name], o) for o in objects if o not in first))
        await asyncio.gather(*(member(m) for m in per_member))

    began = time.monotonic()
    asyncio.run(apply_all())
    applied = time.monotonic() - began
    print(f"floor: applied {sum(map(len, per_member.values()))} objects to "
          f"{len(per_member)} members in {applied:.1f}s", flush=True)
    last = [began]

    def all_ready() -> bool:
        counts = {m: ready_deployments(a) for m, a in apis.items()}
        if time.monotonic() - last[0] >= 30:
            last[0] = time.monotonic()
            print(f"  {time.monotonic() - began:.0f}s: " + ", ".join(
                f"{m} {up}/{made}" for m, (made, up) in counts.items()), flush=True)
        return all(made == count and up == count for made, up in counts.values())

    try:
        wait(all_ready, timeout, "every member Deployment Ready", interval=5.0)
        print(f"objects={count} members={len(per_member)} floor_apply_s={applied:.1f} "
              f"floor_ready_s={time.monotonic() - began:.1f}", flush=True)
    except TimeoutError:
        print(f"objects={count} members={len(per_member)} floor_apply_s={applied:.1f} "
              f"floor_ready_s=none timeout_s={timeout:.0f}", flush=True)
        sys.exit(1)
    finally:
        for kube in kubes.values():
            kube.close()
        for m in per_member:
            subprocess.run([f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
                            env[f"TWINHULL_{m.upper()}_KUBECONFIG"], "delete", "namespace",
                            NS, "--wait=false", "--ignore-not-found"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument("--late-seconds", type=float, default=120.0,
                        help="seconds between the steady window and the later one")
    parser.add_argument("--return-seconds", type=float, default=120.0,
                        help="seconds the operator's RSS is still sampled after the lost "
                        "member is Healthy again")
    parser.add_argument("--heap", type=Path, default=None,
                        help="run the operator with tracemalloc (e2e/bench/heapdump.py) and "
                        "append where its memory is to this file at convergence, before "
                        "the member loss and at the end (slower: time figures are not "
                        "comparable)"),
    parser.add_argument("--operator-args", default="",
                        help="more `twinhull run` arguments, e.g. '--lease-seconds 15'")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds to wait for convergence and verification each")
    parser.add_argument("--floor", action="store_true",
                        help="no operator: apply the member objects twinhull would write "
                             "straight to every member (16 at a time per member) and time "
                             "until every Deployment is Ready: what the lab itself needs")
    args = parser.parse_args()
    env = lab_env()
    members = [(c, [f"{c}-a", f"{c}-b"])
               for c in ("east", "west", "south")[:int(env.get("TWINHULL_LAB_MEMBERS", "2"))]]
    names = [m for m, _ in members]
    logs = {"hub": Path(env["TWINHULL_HUB_AUDIT_LOG"])}
    logs |= {m: Path(env.get(f"TWINHULL_{m.upper()}_AUDIT_LOG", "")) for m in names}
    if not all(str(p) for p in logs.values()):
        sys.exit("the members log no requests: start a lab with TWINHULL_LAB_AUDIT=requests "
                 "(see this file's docstring)")
    member_apis = {m: api(env[f"TWINHULL_{m.upper()}_KUBECONFIG"]) for m in names}
    if args.floor:
        floor(members, member_apis, args.objects, args.timeout)
        return
    hub = api(env["TWINHULL_HUB_KUBECONFIG"])
    kubectl = [f"{env['TWINHULL_LAB_BIN']}/kubectl", "--kubeconfig",
               env["TWINHULL_HUB_KUBECONFIG"]]
    left = subprocess.run([*kubectl, "get", "namespace", NS, "--ignore-not-found", "-o", "name"],
                          capture_output=True, text=True, check=True).stdout.strip()
    if left:  # an earlier run's ModelDeployments wait for their finalizer with no operator
        sys.exit(f"namespace {NS} is left from an earlier run (its ModelDeployments keep "
                 "twinhull's finalizer and members keep their objects): start from a fresh "
                 "lab, `e2e/lab down --purge && e2e/lab up`")
    began = time.monotonic()
    subprocess.run([*kubectl, "apply", "--server-side", "-f", "-"],
                   input=yaml.safe_dump_all(manifests(args.objects, members)), text=True,
                   check=True, capture_output=True)
    print(f"applied {args.objects} ModelDeployments over {', '.join(names)} in "
          f"{time.monotonic() - began:.0f}s", flush=True)
    objects = client.CustomObjectsApi(hub)

    finalized_at: list[float] = []
    """When a listing first found kopf's finalizer on every one (monotonic)."""

    def deployments() -> list[dict[str, Any]]:
        """The ModelDeployments; notes when kopf's finalizer is first on all of them."""
        items = cast(dict[str, Any], objects.list_namespaced_custom_object(
            GROUP, VERSION, NS, "modeldeployments", _request_timeout=60))["items"]
        if not finalized_at and finalized(items) == args.objects:
            finalized_at.append(time.monotonic())
        return cast(list[dict[str, Any]], items)

    def statuses() -> list[dict[str, Any]]:
        return [dict(i.get("status") or {}) for i in deployments()]

    def ready() -> int:
        return sum(any(c["type"] == "Ready" and c["status"] == "True"
                       for c in s.get("conditions") or []) for s in statuses())

    def verified() -> int:
        return sum(bool(s.get("lastGoodSnapshot")) and not s.get("rollout")
                   for s in statuses())

    def finalized(items: list[dict[str, Any]]) -> int:
        """ModelDeployments kopf has put its finalizer on (one patch each: its first pass
        over them, which runs at its own pace next to the fleet's)."""
        return sum(FINALIZER in (i["metadata"].get("finalizers") or []) for i in items)

    def first_pass_over() -> int:
        deployments()  # notes it
        return len(finalized_at)

    def routes_without(member: str) -> int:
        """HTTPRoutes that give ``member`` weight 0 (or no backend)."""
        items = cast(dict[str, Any], objects.list_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", NS, "httproutes", _request_timeout=60))["items"]
        return sum(all(r.get("weight", 1) == 0 for rule in i["spec"].get("rules") or []
                       for r in rule.get("backendRefs") or [] if r["name"].endswith(f"-{member}"))
                   for i in items)

    def phase(member: str) -> str | None:
        sc = cast(dict[str, Any], objects.get_cluster_custom_object(
            GROUP, VERSION, "servingclusters", member))
        return (sc.get("status") or {}).get("phase")

    def heap_dump(process: subprocess.Popen[bytes]) -> None:
        if args.heap is not None:
            process.send_signal(signal.SIGUSR1)
            time.sleep(5)  # a snapshot of a large heap takes seconds

    lost = names[-1]
    every = max(2.0, args.objects / 400)  # listing thousands of objects loads the hub too
    stage = ["until the loss"]
    peaks: dict[str, float] = {}
    stop = threading.Event()
    try:
        with operator(env, extra=args.operator_args.split(), heap=args.heap) as process:
            start = time.monotonic()

            def sample() -> None:
                while not stop.wait(1.0):
                    try:
                        rss_now = rss_mb(process.pid)
                        peaks[stage[0]] = max(peaks.get(stage[0], 0.0), rss_now)
                    except OSError:
                        return

            threading.Thread(target=sample, daemon=True).start()

            def running(count: Callable[[], int]) -> Callable[[], int]:
                def check() -> int:
                    if process.poll() is not None:  # nothing restarts it here
                        sys.exit(f"the operator exited ({process.returncode}); see its log")
                    return count()
                return check

            ready, verified = running(ready), running(verified)
            first_pass_over = running(first_pass_over)
            try:
                wait(progress(start, ready, member_apis, args.objects), args.timeout,
                     "every ModelDeployment Ready", interval=every)
            except TimeoutError:
                rss = rss_mb(process.pid)
                print(f"objects={args.objects} members={len(names)} converged=0 "
                      f"ready_at_timeout={ready()} timeout_s={args.timeout:.0f} "
                      f"rss_mb={rss:.0f} rss_peak_mb={max(peaks.values(), default=0):.0f}",
                      flush=True)
                sys.exit(1)
            converge = time.monotonic() - start
            rss = rss_mb(process.pid)
            print(f"converged {args.objects} in {converge:.1f}s; operator RSS {rss:.0f} MiB",
                  flush=True)
            heap_dump(process)
            if not clusters_healthy(hub, tuple(names)):
                sys.exit(f"not every member of {names} is Healthy; see the ServingClusters")
            wait(lambda: verified() == args.objects, args.timeout,
                 "every revision verified Good", interval=every)
            verified_s = time.monotonic() - start
            print(f"every first revision verified Good at {verified_s:.1f}s", flush=True)
            # steady state begins once kopf has finished its first pass (its finalizer on
            # every object); it has ended long before when kopf's workers idle 0.5 s (at
            # 2,000, 144 s after the start), minutes after convergence at kopf's 5 s
            wait(first_pass_over, args.timeout,
                 "kopf's finalizer on every ModelDeployment", interval=every)
            first_pass = finalized_at[0] - start
            print(f"kopf's first pass (finalizers) ended by {first_pass:.1f}s (seen in the "
                  f"listings every {every:g}s)", flush=True)
            time.sleep(10)  # the last status writes and observations settle
            steady = window(logs, args.steady_seconds, "steady")
            time.sleep(args.late_seconds)
            late = window(logs, args.steady_seconds, "later steady")
            heap_dump(process)
            stage[0] = "loss"
            t0, killed = time.monotonic(), datetime.now(UTC)
            lab("kill", lost)
            try:
                wait(lambda: phase(lost) == "Down", 120, f"{lost} Down", interval=0.5)
                loss_detect = time.monotonic() - t0
                wait(lambda: routes_without(lost) == args.objects, args.timeout,
                     f"every HTTPRoute without {lost}", interval=every)
                loss_weight0 = time.monotonic() - t0
                print(f"{lost} lost: Down at {loss_detect:.1f}s, weight 0 in every route at "
                      f"{loss_weight0:.1f}s; the operator's hub writes from the kill:",
                      flush=True)
                time.sleep(3)  # the audit log is written in batches (1 s)
                for line in write_timeline(logs["hub"], killed, datetime.now(UTC)):
                    print(f"    {line}", flush=True)
                loss = window(logs, args.steady_seconds, f"{lost} down")
            finally:  # the figures are taken; a revive that fails is said, not raised
                revived = subprocess.run([str(E2E / "lab"), "revive", lost],
                                         capture_output=True, text=True)
                if revived.returncode:
                    print(f"{lost} not revived: {revived.stderr.strip()[-300:]}", flush=True)
            stage[0] = "return"
            t1 = time.monotonic()
            try:
                wait(lambda: phase(lost) == "Healthy", 300, f"{lost} Healthy again",
                     interval=1)
                print(f"{lost} Healthy again {time.monotonic() - t1:.1f}s after its revive; "
                      f"sampling RSS {args.return_seconds:g}s more", flush=True)
            except TimeoutError:
                print(f"{lost} not Healthy 300s after its revive", flush=True)
            time.sleep(args.return_seconds)
            heap_dump(process)
            stop.set()
            print("operator RSS peaks (MiB): " + ", ".join(
                f"{k} {v:.0f}" for k, v in peaks.items()), flush=True)
    finally:
        stop.set()
        # the lab is this benchmark's own (see the docstring): deleting 2,000 deployments'
        # member objects is not what is measured, so the namespace goes without waiting
        subprocess.run([*kubectl, "delete", "namespace", NS, "--wait=false",
                        "--ignore-not-found"], capture_output=True)

    def total(counts: dict[str, Counter[str]], *kinds: str) -> int:
        return sum(c[k] for c in counts.values() for k in kinds)

    kinds = ("read", "watch", "write", "lease")
    print(f"objects={args.objects} members={len(names)} converge_s={converge:.1f} "
          f"verified_s={verified_s:.1f} first_pass_s={first_pass:.1f} rss_mb={rss:.0f} "
          f"rss_peak_mb={max(peaks.values(), default=0):.0f} "
          f"rss_peak_loss_mb={peaks.get('loss', 0):.0f} "
          f"rss_peak_return_mb={peaks.get('return', 0):.0f} "
          f"steady_rps={total(steady, *kinds) / args.steady_seconds:.2f} "
          f"steady_writes={total(steady, 'write')} lease_writes={total(steady, 'lease')} "
          f"late_rps={total(late, *kinds) / args.steady_seconds:.2f} "
          f"late_writes={total(late, 'write')} "
          f"loss_detect_s={loss_detect:.1f} loss_weight0_s={loss_weight0:.1f} "
          f"loss_rps={total(loss, *kinds) / args.steady_seconds:.2f} "
          f"loss_writes_per_s={total(loss, 'write') / args.steady_seconds:.2f}")


if __name__ == "__main__":
    main()
