"""Active-active placement, failover and failback, with the real operator on the lab."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import yaml

from fleet import (
    ROOT,
    apply,
    clusters_healthy,
    condition,
    deployment_manifest,
    deployments,
    get,
    kubectl,
    namespace_manifest,
    route_weights,
    status,
    wait_for,
    write_requests,
)

pytestmark = pytest.mark.e2e

NS = "e2e-failover"
ZONES = {"east": ("east-a", "east-b"), "west": ("west-a", "west-b")}


def weights(lab, name: str) -> dict[str, int]:
    w = route_weights(lab, NS, name)
    return {"east": w.get(f"{name}-east", -1), "west": w.get(f"{name}-west", -1),
            "fallback": w.get(f"{name}-fallback", -1)}


def replicas(lab, cluster: str, name: str) -> dict[str, tuple[int, int]]:
    got = deployments(lab, cluster, NS)
    return {z: got.get(f"{name}-{z}", (-1, -1)) for z in ZONES[cluster]}


def converged(lab, name: str, want: dict[str, int]) -> bool:
    """Every zone Deployment has ``want[cluster]`` replicas, all Ready, and status is
    Ready."""
    for cluster, n in want.items():
        if any(r != (n, n) for r in replicas(lab, cluster, name).values()):
            return False
    return condition(lab, NS, name, "Ready") == "True"


@pytest.fixture(autouse=True)
def healthy_lab(lab) -> None:
    """Start every test from a healthy lab: a cluster revived by the previous test stays
    Recovering until its recovery threshold of good probes."""
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")


@pytest.fixture
def md(lab, operator, healthy_lab) -> Iterator[str]:
    """A critical ModelDeployment in both clusters, one 1-GPU replica per zone, converged;
    deleted afterwards, with its member objects."""
    name = f"ff-{int(time.time() * 1000) % 100000}"
    apply(lab, namespace_manifest(NS), deployment_manifest(name, NS))
    try:  # deleted even when it never converges: a leaked one holds GPUs for later tests
        wait_for(lambda: converged(lab, name, {"east": 1, "west": 1}), timeout=90,
                 what=f"{name} converged")
        wait_for(lambda: weights(lab, name) == {"east": 50, "west": 50, "fallback": 0},
                 timeout=30, what="50/50 weights")
        yield name
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=true",
                "--timeout=60s", check=False)


EXAMPLES = ("ide-assistant", "aiops-platform", "code-review", "hybrid-reasoning",
            "unit-test-agent")


def test_examples_run_in_both_clusters_and_are_removed_on_delete(lab, operator):
    kubectl(lab, "hub", "apply", "--server-side", "-f", str(ROOT / "examples"))
    files = [arg for name in EXAMPLES for arg in ("-f", str(ROOT / "examples" / f"{name}.yaml"))]
    try:
        for name in EXAMPLES:
            md = yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text())
            for p in md["spec"]["placement"]:
                for zone, n in p["zones"].items():
                    wait_for(lambda c=p["cluster"], z=zone, n=n, m=name:
                             deployments(lab, c, "ai-platform").get(f"{m}-{z}") == (n, n),
                             timeout=90, what=f"{name} {zone} {n}/{n} Ready")
            wait_for(lambda m=name: condition(lab, "ai-platform", m, "Ready") == "True",
                     timeout=60, what=f"{name} Ready")
        # kstatus-style readiness: what GitOps tools and `kubectl wait` rely on
        kubectl(lab, "hub", "wait", "--for=condition=Ready", "modeldeployments", "--all",
                "-n", "ai-platform", "--timeout=30s")
        listed = kubectl(lab, "hub", "get", "twinhull", "-n", "ai-platform")
        assert "modeldeployment.serving.twinhull.io/ide-assistant" in listed
        w = route_weights(lab, "ai-platform", "ide-assistant")
        assert w == {"ide-assistant-east": 50, "ide-assistant-west": 50,
                     "ide-assistant-fallback": 0}
        s = status(lab, "ai-platform", "ide-assistant")
        assert s["observedGeneration"] >= 1 and s["traffic"] == {"east": 50, "west": 50,
                                                                 "fallback": 0}
        assert {c["name"]: c["zones"]["east-a" if c["name"] == "east" else "west-a"]
                for c in s["clusters"]} == {"east": {"desired": 1, "ready": 1},
                                            "west": {"desired": 1, "ready": 1}}
        # kopf's only write to it is the finalizer: no diff-base annotation (a patch of
        # every object when first seen and at each spec change)
        meta = (get(lab, "hub", "modeldeployment", "ide-assistant", "ai-platform") or {}
                )["metadata"]
        assert meta.get("finalizers") == ["serving.twinhull.io/cleanup"], meta
        assert not [a for a in meta.get("annotations") or {}
                    if a.startswith("serving.twinhull.io/")], meta.get("annotations")
    finally:
        kubectl(lab, "hub", "delete", *files, "--ignore-not-found", "--wait=true",
                "--timeout=90s", check=False)
    for cluster in ("east", "west"):  # the finalizer waited for it: nothing left
        assert deployments(lab, cluster, "ai-platform") == {}


@contextmanager
def sampled(read: Callable[[], int], interval: float = 0.3) -> Iterator[list[int]]:
    """The distinct successive values of ``read()``, sampled on a thread while the block
    runs (a failed read is skipped); the thread is stopped on the way out."""
    seen: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                value = read()
            except Exception:  # kubectl failed once: the next sample counts
                value = None
            if value is not None and (not seen or seen[-1] != value):
                seen.append(value)
            stop.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=30)


def _fail_over_and_back(lab, name: str, fault: tuple[str, ...], heal: tuple[str, ...]) -> None:
    lab.run(*fault)
    try:
        wait_for(lambda: weights(lab, name)["west"] == 0 or None, timeout=20,
                 what="west weight 0")
        wait_for(lambda: all(r == (2, 2) for r in replicas(lab, "east", name).values()),
                 timeout=30, what="east carrying the whole capacity")
        assert condition(lab, NS, name, "FailedOver") == "True"
        assert weights(lab, name) == {"east": 100, "west": 0, "fallback": 0}
    except BaseException:
        lab.run(*heal)
        raise
    # sampled from the moment the heal begins: a revive returns once the member's
    # controllers run pods again, and failback steps on while it waits
    with sampled(lambda: weights(lab, name)["west"]) as seen:
        lab.run(*heal)
        wait_for(lambda: bool(seen) and seen[-1] == 50, timeout=90, what="west back to 50",
                 interval=0.3)
    assert any(0 < w < 50 for w in seen), f"no intermediate failback step in {seen}"
    # Failback never goes backwards, unless west failed again meanwhile: after an API
    # server outage the nodes' leases can expire once it is back (seen in the lab; most
    # likely KWOK reconnecting with backoff, as kubelets do), the zones lose their Ready
    # nodes and fail over: a real second incident the operator must follow, with a
    # Failover decision to show for it.
    drops = sum(1 for a, b in itertools.pairwise(seen) if b < a)
    again = [d for d in status(lab, NS, name).get("decisions") or []
             if d["kind"] == "Failover" and "west" in d["reason"]][1:]
    assert drops <= len(again), f"failback went backwards without a new failure: {seen}"
    wait_for(lambda: converged(lab, name, {"east": 1, "west": 1}), timeout=60,
             what="east back to its declared replicas")
    assert condition(lab, NS, name, "FailedOver") == "False"


def test_killed_cluster_fails_over_and_back_gradually(lab, md):
    _fail_over_and_back(lab, md, ("kill", "west"), ("revive", "west"))


def test_frozen_cluster_fails_over_and_back_gradually(lab, md):
    _fail_over_and_back(lab, md, ("freeze", "west"), ("revive", "west"))


def test_a_zone_without_ready_nodes_fails_over_and_back_in_steps(lab, md):
    def zone_leg() -> dict:
        return (status(lab, NS, md).get("failover") or {}).get("east/east-a") or {}

    lab.run("zone-down", "east", "east-a")
    try:
        wait_for(lambda: zone_leg().get("state") == "FailedOver", timeout=30,
                 what="east-a failed over")
        s = wait_for(lambda: (st := status(lab, NS, md)) and st["unservedReplicas"] == 0
                     and sum(z["desired"] for c in st["clusters"] for z in c["zones"].values())
                     == 5 and st, timeout=30, what="east-a's replica placed elsewhere")
        reasons = {c["type"]: c["reason"] for c in s["conditions"]}
        assert reasons["Degraded"] == "ZoneUnavailable"
        assert reasons["FailedOver"] == "ClusterDown"
    finally:
        lab.run("zone-up", "east", "east-a")
    steps: list[int] = []

    def back() -> bool:
        leg = zone_leg()
        if leg.get("state") == "FailingBack" and (not steps or steps[-1] != leg["step"]):
            steps.append(leg["step"])
        return leg.get("state") == "Serving"
    wait_for(back, timeout=90, what="east-a serving again", interval=0.3)
    assert [x for x in steps if x >= 0], f"no failback step seen: {steps}"
    assert steps == sorted(steps), steps
    wait_for(lambda: converged(lab, md, {"east": 1, "west": 1}), timeout=60,
             what="back to declared replicas")
    wait_for(lambda: weights(lab, md) == {"east": 50, "west": 50, "fallback": 0},
             timeout=30, what="50/50 again")


def test_a_failover_fills_no_zone_past_what_its_nodes_hold(lab, operator):
    """4-GPU replicas declared east-a 3, east-b 1 (and so in west), on 8-GPU nodes, two a
    zone. West is killed: its 4 replicas go to east by the declared 3:1, which would give
    east-a 6 (24 GPUs on 16) and leave 2 Pending; the zones' probed GPUs cap east-a at 4
    and east-b takes the rest, every replica Ready."""
    name = f"fz-{int(time.time() * 1000) % 100000}"
    lopsided = {c: {f"{c}-a": 3, f"{c}-b": 1} for c in ("east", "west")}
    manifest = deployment_manifest(name, NS, placement=lopsided, gpus=4)
    manifest["spec"]["scaling"] = {"mode": "Off"}
    apply(lab, namespace_manifest(NS), manifest)
    try:
        def ready(cluster: str, want: dict[str, int]) -> bool:
            got = replicas(lab, cluster, name)
            return all(got[z] == (n, n) for z, n in want.items())

        wait_for(lambda: ready("east", {"east-a": 3, "east-b": 1})
                 and ready("west", {"west-a": 3, "west-b": 1}), timeout=90,
                 what=f"{name} converged")
        zones = ((get(lab, "hub", "servingcluster", "east") or {}).get("status") or {})["zones"]
        assert zones["east-a"]["nodeGpus"] == 16 and zones["east-a"]["largestNodeGpus"] == 8
        lab.run("kill", "west")
        try:
            wait_for(lambda: weights(lab, name)["west"] == 0 or None, timeout=30,
                     what="west weight 0")
            wait_for(lambda: ready("east", {"east-a": 4, "east-b": 4}), timeout=60,
                     what="east-a 4 and east-b 4 Ready (16 GPUs each)",
                     explain=lambda: f"east: {replicas(lab, 'east', name)}")
            st = status(lab, NS, name)
            assert st["unservedReplicas"] == 0
        finally:
            lab.run("revive", "west")
        wait_for(lambda: ready("east", {"east-a": 3, "east-b": 1}), timeout=120,
                 what="east back to its declared replicas after the failback")
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=true",
                "--timeout=60s", check=False)


def test_a_freeze_shorter_than_the_threshold_fails_nothing_over(lab, md):
    before = len(status(lab, NS, md).get("decisions") or [])
    lab.run("freeze", "west")
    try:
        end = time.monotonic() + 3.0  # one probe timeout: Suspect at most
        while time.monotonic() < end:
            assert weights(lab, md)["west"] == 50
            time.sleep(0.3)
    finally:
        lab.run("revive", "west")
    time.sleep(6)  # long enough for a wrong failover to have shown
    assert weights(lab, md) == {"east": 50, "west": 50, "fallback": 0}
    kinds = [d["kind"] for d in (status(lab, NS, md).get("decisions") or [])[before:]]
    assert "Failover" not in kinds


def _time_to_ready(lab, name: str) -> float:
    start = time.monotonic()
    apply(lab, deployment_manifest(name, NS, tier="best-effort",
                                   placement={"east": {"east-a": 1}}, fallback=False))
    wait_for(lambda: converged(lab, name, {}) and
             deployments(lab, "east", NS).get(f"{name}-east-a") == (1, 1),
             timeout=60, what=f"{name} Ready")
    return time.monotonic() - start


def test_a_frozen_cluster_does_not_slow_work_on_a_live_one(lab, operator):
    apply(lab, namespace_manifest(NS))
    healthy = _time_to_ready(lab, "east-only-a")
    lab.run("freeze", "west")
    try:
        frozen = _time_to_ready(lab, "east-only-b")
        start = time.monotonic()
        kubectl(lab, "hub", "patch", "modeldeployment", "east-only-b", "-n", NS, "--type=merge",
                "-p", '{"spec":{"placement":[{"cluster":"east","zones":{"east-a":2}}]}}')
        wait_for(lambda: deployments(lab, "east", NS).get("east-only-b-east-a") == (2, 2),
                 timeout=60, what="update applied in east")
        updated = time.monotonic() - start
    finally:
        lab.run("revive", "west")
        for name in ("east-only-a", "east-only-b"):
            kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=false",
                    check=False)
    # one probe period of slack: the same work, the same speed
    assert frozen <= healthy + 2.5, (healthy, frozen)
    assert updated <= healthy + 2.5, (healthy, updated)


def test_a_no_op_resync_writes_nothing(lab, md):
    wait_for(lambda: status(lab, NS, md).get("lastGoodSnapshot")
             and not status(lab, NS, md).get("rollout"), timeout=60,
             what="the first revision verified Good")
    time.sleep(3)  # let the last status write and observation settle
    member_kinds = {"deployments", "services", "poddisruptionbudgets", "namespaces",
                    "priorityclasses"}
    hub_kinds = {"modeldeployments", "httproutes", "events", "modelsnapshots", "configmaps"}
    before = {c: write_requests(lab, c, member_kinds) for c in ("east", "west")}
    before["hub"] = write_requests(lab, "hub", hub_kinds)
    time.sleep(12)  # more than two resync periods (5 s) and several probes
    after = {c: write_requests(lab, c, member_kinds) for c in ("east", "west")}
    after["hub"] = write_requests(lab, "hub", hub_kinds)
    assert after == before


def test_deleting_while_a_member_is_down_cleans_it_when_it_returns(lab, operator):
    name = "ff-delete"
    apply(lab, namespace_manifest(NS), deployment_manifest(name, NS))
    wait_for(lambda: converged(lab, name, {"east": 1, "west": 1}), timeout=60,
             what=f"{name} converged")
    lab.run("kill", "west")
    try:
        wait_for(lambda: condition(lab, NS, name, "FailedOver") == "True", timeout=20,
                 what="failed over")
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=true",
                "--timeout=40s")
        assert replicas(lab, "east", name) == {"east-a": (-1, -1), "east-b": (-1, -1)}
    finally:
        lab.run("revive", "west")
    wait_for(lambda: not any(k.startswith(name) for k in deployments(lab, "west", NS)) or None,
             timeout=40, what="west cleaned after it returned")


def test_manual_failover_waits_for_the_approval_annotation(lab, operator):
    name = "ff-manual"
    apply(lab, namespace_manifest(NS), deployment_manifest(name, NS, failover="Manual"))
    wait_for(lambda: converged(lab, name, {"east": 1, "west": 1}), timeout=60,
             what=f"{name} converged")
    lab.run("kill", "west")
    try:
        pending = wait_for(lambda: status(lab, NS, name).get("pending"), timeout=20,
                           what="a pending Failover decision")
        assert pending["kind"] == "Failover" and pending["applied"] is False
        time.sleep(3)
        assert weights(lab, name)["west"] == 50, "nothing moves before approval"
        kubectl(lab, "hub", "annotate", "modeldeployment", name, "-n", NS,
                f"serving.twinhull.io/approve={pending['id']}")
        wait_for(lambda: weights(lab, name)["west"] == 0 or None, timeout=15,
                 what="west weight 0 after approval")
        decided = [d for d in status(lab, NS, name)["decisions"] if d["id"] == pending["id"]]
        assert decided and decided[0]["kind"] == "Failover"
    finally:
        lab.run("revive", "west")
        kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=false",
                check=False)


def test_an_unknown_tier_is_reported_and_leaves_what_runs_untouched(lab, md):
    kubectl(lab, "hub", "patch", "modeldeployment", md, "-n", NS, "--type=merge",
            "-p", '{"spec":{"slaTier":"platinum"}}')
    wait_for(lambda: next((c for c in status(lab, NS, md).get("conditions") or []
                           if c["type"] == "Ready" and c["reason"] == "UnknownTier"), None),
             timeout=20, what="Ready=False UnknownTier")
    time.sleep(4)  # two member rounds: nothing may be removed
    assert all(r == (1, 1) for r in replicas(lab, "east", md).values())
    assert all(r == (1, 1) for r in replicas(lab, "west", md).values())
    kubectl(lab, "hub", "patch", "modeldeployment", md, "-n", NS, "--type=merge",
            "-p", '{"spec":{"slaTier":"critical"}}')
    wait_for(lambda: condition(lab, NS, md, "Ready") == "True", timeout=30, what="Ready again")
