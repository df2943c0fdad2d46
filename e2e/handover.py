"""Leader handover trials on the lab, shared by e2e/test_leader.py (a few trials in CI)
and e2e/bench/handover.py (many, with figures): SIGKILL the leading replica at a random
moment of a rollout, a failover or a failback, and check that the operator ends where an
undisturbed run ends, with nothing done twice or left behind and never two writers.

Writers are counted from the hub's audit log (every write made as a ServiceAccount, with
the credential id of its token; each replica has its own token)."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from fleet import (
    apply,
    clusters_healthy,
    condition,
    deployment_manifest,
    kubectl,
    namespace_manifest,
    route_weights,
    runs,
    status,
    wait_for,
)

NS = "e2e-leader"
SA = "system:serviceaccount:twinhull-system:twinhull"
IMAGE = "vllm/vllm-openai:v0.11"


@dataclass
class Trial:
    kind: str
    killed_after: float
    """Seconds from the start of the operation to the SIGKILL."""
    handover: float
    """Seconds from the SIGKILL to another replica holding the Lease."""
    acting: float | None
    """Seconds from the SIGKILL to the new leader's first write (audit log)."""
    converged: float
    """Seconds from the start of the operation to the undisturbed end state."""

    def line(self) -> str:
        acting = "-" if self.acting is None else f"{self.acting:.1f}"
        return (f"{self.kind}: killed {self.killed_after:.1f}s in, handover "
                f"{self.handover:.1f}s, first write {acting}s, converged "
                f"{self.converged:.1f}s")


@dataclass
class Trials:
    lab: Any
    operator: Any
    name: str
    rng: random.Random
    done: list[Trial] = field(default_factory=list)
    image_version: int = 0

    def setup(self) -> None:
        md = deployment_manifest(self.name, NS)
        md["spec"]["model"]["image"] = f"{IMAGE}.0"
        md["spec"]["rollback"] = {"historyLimit": 50, "progressDeadlineSeconds": 60}
        apply(self.lab, namespace_manifest(NS), md)
        wait_for(lambda: self.good(None), timeout=120, what=f"{self.name} verified Good")

    def good(self, other_than: str | None) -> str | None:
        s = status(self.lab, NS, self.name)
        current = s.get("currentSnapshot")
        return current if current and current != other_than \
            and current == s.get("lastGoodSnapshot") and not s.get("rollout") else None

    def kill_leader_after(self, delay: float, start: float) -> tuple[float, float]:
        """Wait ``delay`` seconds after ``start``, SIGKILL the leader, wait for another
        replica to hold the Lease; (handover seconds, the kill's wall-clock time)."""
        time.sleep(max(0.0, start + delay - time.monotonic()))
        leader = self.operator.leader()
        killed_at, killed_wall = time.monotonic(), time.time()
        self.operator.kill(leader)
        while True:
            holder = self.operator.holder()
            if holder and holder != leader.identity:
                return time.monotonic() - killed_at, killed_wall
            if time.monotonic() - killed_at > 60:
                raise AssertionError(f"no new leader 60 s after killing {leader.identity}")
            time.sleep(0.05)

    def rollout(self) -> None:
        """A new image; the leader is killed 0-8 s in."""
        before = self.good(None)
        self.image_version += 1
        start = time.monotonic()
        kubectl(self.lab, "hub", "patch", "modeldeployment", self.name, "-n", NS,
                "--type=merge", "-p",
                json.dumps({"spec": {"model": {"image": f"{IMAGE}.{self.image_version}"}}}))
        delay = self.rng.uniform(0, 8)
        handover, killed = self.kill_leader_after(delay, start)
        snap = wait_for(lambda: self.good(before), timeout=180, what="the new revision Good")
        revision = json.loads(kubectl(self.lab, "hub", "get", "modelsnapshot", snap, "-n", NS,
                                      "-o", "json"))["spec"]["hash"]
        wait_for(lambda: runs(self.lab, NS, self.name, revision), timeout=60,
                 what="the new revision everywhere")
        self.done.append(Trial("rollout", delay, handover, first_write_after(self.lab, killed),
                               time.monotonic() - start))

    def failover_and_back(self) -> None:
        """West killed and revived; the leader is killed once during the failover (0-15 s
        in) and once during the failback (0-10 s after the revive)."""
        start = time.monotonic()
        self.lab.run("kill", "west")
        try:
            delay = self.rng.uniform(0, 15)
            handover, killed = self.kill_leader_after(delay, start)
            wait_for(lambda: condition(self.lab, NS, self.name, "FailedOver") == "True",
                     timeout=90, what="failed over")
            self.done.append(Trial("failover", delay, handover,
                                   first_write_after(self.lab, killed),
                                   time.monotonic() - start))
        finally:
            self.lab.run("revive", "west")
        start = time.monotonic()
        delay = self.rng.uniform(0, 10)
        handover, killed = self.kill_leader_after(delay, start)
        wait_for(lambda: clusters_healthy(self.lab), timeout=90, what="west Healthy")
        wait_for(lambda: route_weights(self.lab, NS, self.name) == {
            f"{self.name}-east": 50, f"{self.name}-west": 50, f"{self.name}-fallback": 0},
            timeout=120, what="failed back to 50/50")
        wait_for(lambda: condition(self.lab, NS, self.name, "FailedOver") == "False",
                 timeout=60, what="FailedOver False")
        self.done.append(Trial("failback", delay, handover, first_write_after(self.lab, killed),
                               time.monotonic() - start))

    def check_invariants(self) -> None:
        """Nothing twice, nothing lost, nothing left behind."""
        snaps = json.loads(kubectl(self.lab, "hub", "get", "modelsnapshots", "-n", NS, "-o",
                                   "json"))["items"]
        hashes = [s["spec"]["hash"] for s in snaps
                  if s["metadata"]["labels"].get("serving.twinhull.io/deployment") == self.name]
        assert len(hashes) == len(set(hashes)), f"a revision recorded twice: {hashes}"
        assert len(hashes) == self.image_version + 1, \
            f"{self.image_version + 1} revisions, {len(hashes)} snapshots"
        decisions = status(self.lab, NS, self.name).get("decisions") or []
        # The same decision (kind and inputs: one id) may rightly come again after its
        # state went back (e.g. Capacity 0 -> 2 unplaced, then "all placed again", then
        # 0 -> 2 again). Applied twice is the same id twice in a row within its kind: the
        # same transition recorded again although nothing changed back in between.
        last: dict[str, dict[str, Any]] = {}
        for d in decisions:
            before = last.get(d["kind"])
            assert before is None or before["id"] != d["id"], (
                f"decision {d['id']} ({d['kind']}: {d['reason']}) recorded at "
                f"{before['time']} and again at {d['time']} with nothing in between")
            last[d["kind"]] = d
        for cluster in ("east", "west"):
            owners = kubectl(self.lab, cluster, "get", "deployments,services,pdb", "-A", "-l",
                             "app.kubernetes.io/managed-by=twinhull", "-o",
                             "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata."
                             "labels.serving\\.twinhull\\.io/deployment}{'\\n'}{end}")
            live = set(kubectl(self.lab, "hub", "get", "modeldeployments", "-A", "-o",
                               "jsonpath={range .items[*]}{.metadata.namespace}/{.metadata."
                               "name}{'\\n'}{end}").split())
            orphans = set(owners.split()) - live
            assert not orphans, f"{cluster}: objects of no ModelDeployment: {orphans}"


def writes(lab: Any, since: float) -> list[tuple[float, str, str]]:
    """(time, credential id, what) of every write the operator's account made on the hub
    since ``since`` (epoch seconds), from the audit log, Lease writes left out (they are
    the election itself)."""
    path = Path(lab.env["TWINHULL_HUB_AUDIT_LOG"])
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        user = event.get("user") or {}
        ref = event.get("objectRef") or {}
        if user.get("username") != SA or ref.get("resource") == "leases":
            continue
        at = datetime.fromisoformat(event["requestReceivedTimestamp"]).timestamp()
        if at < since or event.get("stage") != "ResponseComplete":
            continue
        credential = ((user.get("extra") or {}).get(
            "authentication.kubernetes.io/credential-id") or ["?"])[0]
        out.append((at, credential, f"{event['verb']} {ref.get('resource')}"
                    f"/{ref.get('name', '')}"))
    return sorted(out)


def first_write_after(lab: Any, at: float) -> float | None:
    """Seconds from ``at`` (epoch) to the first write after it (None: none yet)."""
    time.sleep(2)  # the audit log is written in batches of at most 1 s
    later = [t for t, _, _ in writes(lab, at)]
    return (later[0] - at) if later else None


def never_two_writers(lab: Any, since: float, credentials: Callable[[], dict[str, str]]
                      ) -> dict[str, tuple[float, float, int]]:
    """Check that the replicas' write periods never overlap: each credential writes in one
    period, and the next leader's first write comes after the previous leader's last.
    Returns credential to (first, last, count)."""
    periods: dict[str, tuple[float, float, int]] = {}
    for at, credential, _ in writes(lab, since):
        first, _, n = periods.get(credential, (at, at, 0))
        periods[credential] = (first, at, n + 1)
    ordered = sorted(periods.items(), key=lambda kv: kv[1][0])
    names = credentials()
    for (a, (_, last_a, _)), (b, (first_b, _, _)) in itertools.pairwise(ordered):
        assert last_a <= first_b, (
            f"two writers: {names.get(a, a)} wrote until {last_a:.2f}, after "
            f"{names.get(b, b)} began at {first_b:.2f}")
    return periods
