"""Revisions in the lab: snapshots, cluster-by-cluster rollout, automatic rollback on a
revision that never becomes Ready, manual rollback, history, retention, and restore of a
member's deleted objects. (The rollback on an error-rate breach is in test_runtimes.py, once
per serving runtime.)"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import yaml

from fleet import (
    apply,
    clusters_healthy,
    condition,
    deployment_manifest,
    get,
    kubectl,
    namespace_manifest,
    runs,
    status,
    wait_for,
    workloads,
)

pytestmark = pytest.mark.e2e

NS = "e2e-rollback"
V1 = "vllm/vllm-openai:v0.11.0"


@pytest.fixture(autouse=True)
def healthy_lab(lab) -> None:
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")


def manifest(name: str, *, history: int = 10, deadline: int = 30) -> dict:
    md = deployment_manifest(name, NS)
    md["spec"]["rollback"] = {"historyLimit": history, "progressDeadlineSeconds": deadline}
    return md


def set_image(lab, name: str, image: str) -> None:
    kubectl(lab, "hub", "patch", "modeldeployment", name, "-n", NS, "--type=merge", "-p",
            f'{{"spec": {{"model": {{"image": "{image}"}}}}}}')


def snapshot(lab, name: str) -> dict:
    return get(lab, "hub", "modelsnapshots", name, NS) or {}


def good(lab, name: str, timeout: float = 120, *, other_than: str | None = None) -> str:
    """Wait for the current revision (another than ``other_than``: the spec just changed)
    to be verified Good; return its snapshot."""
    def verified() -> str | None:
        s = status(lab, NS, name)
        current = s.get("currentSnapshot")
        return current if current and current != other_than \
            and current == s.get("lastGoodSnapshot") and not s.get("rollout") else None
    return wait_for(verified, timeout=timeout, what=f"{name}'s revision verified Good")


def history(lab, name: str) -> list[dict]:
    import json

    out = subprocess.run(
        [sys.executable, "-m", "twinhull.cli", "history", f"{NS}/{name}", "-o", "json",
         "--kubeconfig", str(lab.kubeconfig("hub"))], capture_output=True, text=True,
        check=True, timeout=60)
    return list(json.loads(out.stdout))


@pytest.fixture
def md(lab, operator) -> Iterator[str]:
    created: list[str] = []

    def make(name: str, **kw) -> str:
        apply(lab, namespace_manifest(NS), manifest(name, **kw))
        created.append(name)
        return name
    try:
        yield make  # type: ignore[misc]
    finally:
        for name in created:
            kubectl(lab, "hub", "delete", "modeldeployment", name, "-n", NS, "--wait=true",
                    "--timeout=60s", check=False)


def primary_replicas(lab, cluster: str, name: str) -> int | None:
    """The primary model's replicas a member's Deployments ask for (None: no answer)."""
    out = kubectl(lab, cluster, "get", "deployments", "-n", NS, "-o", "yaml", "-l",
                  f"serving.twinhull.io/deployment={name}", "--request-timeout=5s", check=False)
    items = (yaml.safe_load(out) or {}).get("items") if out.strip() else None
    if items is None:
        return None
    return sum(d["spec"].get("replicas") or 0 for d in items
               if "-fallback-" not in d["metadata"]["name"])


class Watch:
    """Records every (east images, west images) seen, twice a second, in a thread."""

    def __init__(self, lab, name: str) -> None:
        self.lab, self.name = lab, name
        self.seen: list[tuple[set[str], set[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            east = workloads(self.lab, "east", NS, self.name) or {}
            west = workloads(self.lab, "west", NS, self.name) or {}
            self.seen.append(({i for _, i, _ in east.values()}, {i for _, i, _ in west.values()}))
            time.sleep(0.5)

    def stop(self) -> list[tuple[set[str], set[str]]]:
        self._stop.set()
        self._thread.join(timeout=30)
        return self.seen


def test_a_revision_never_ready_rolls_back_in_both_clusters_and_is_not_retried(lab, md):
    name = md("rb-crash", history=1)
    v1 = good(lab, name)
    v1_hash = snapshot(lab, v1)["spec"]["hash"]
    bad_image = "vllm/vllm-openai:v0.12.0-crashloop"
    watch = Watch(lab, name)
    try:
        set_image(lab, name, bad_image)
        wait_for(lambda: condition(lab, NS, name, "RolledBack") == "True", timeout=90,
                 what="RolledBack=True")
        s = status(lab, NS, name)
        rolled = next(c for c in s["conditions"] if c["type"] == "RolledBack")
        assert rolled["reason"] == "ProgressDeadlineExceeded", rolled
        assert v1 in rolled["message"] and "held back" in rolled["message"]
        wait_for(lambda: runs(lab, NS, name, v1_hash), timeout=60,
                 what="v1 settled in both clusters")
        time.sleep(12)  # rounds after the rollback: the bad spec is not tried again
        assert runs(lab, NS, name, v1_hash)
    finally:
        seen = watch.stop()
    both = [(e, w) for e, w in seen if bad_image in e and bad_image in w]
    assert not both, "east and west never both run the bad revision"
    assert any(bad_image in e for e, _ in seen), "the bad revision did reach the first cluster"
    s = status(lab, NS, name)
    assert s["currentSnapshot"] == v1 and s["heldBack"] != v1_hash
    rows = {r["name"]: r for r in history(lab, name)}
    (bad,) = [r for r in rows.values() if r["image"] == bad_image]
    assert bad["outcome"] == "Bad" and "held-back" in bad["marks"]
    # historyLimit 1 keeps the newest (the bad one) and, always, the last Good one
    assert rows[v1]["outcome"] == "Good" and "last-good" in rows[v1]["marks"]
    # an events.k8s.io/v1 Event, read through core/v1 (the same objects)
    events = yaml.safe_load(kubectl(lab, "hub", "get", "events", "-n", NS, "--field-selector",
                                    f"involvedObject.name={name}", "-o", "yaml"))["items"]
    (rollback,) = [e for e in events if e.get("action") == "Rollback"]
    assert rollback["reason"] == "ProgressDeadlineExceeded", rollback
    assert rollback["reportingComponent"] == "serving.twinhull.io/operator", rollback
    assert rollback["reportingInstance"].startswith("replica-"), rollback


def test_manual_rollback_to_a_named_snapshot_and_retention(lab, md):
    name = md("rb-manual", history=2)
    v1 = good(lab, name)
    set_image(lab, name, "vllm/vllm-openai:v0.11.1")
    v2 = good(lab, name, other_than=v1)
    done = subprocess.run(
        [sys.executable, "-m", "twinhull.cli", "rollback", f"{NS}/{name}", "--to", v1,
         "--by", "e2e", "--timeout", "90", "--kubeconfig", str(lab.kubeconfig("hub"))],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"rolled back to {v1}" in done.stdout
    assert runs(lab, NS, name, snapshot(lab, v1)["spec"]["hash"])
    s = status(lab, NS, name)
    assert s["currentSnapshot"] == v1 and s["rollbackRequest"]["by"] == "e2e"
    rolled = next(c for c in s["conditions"] if c["type"] == "RolledBack")
    assert rolled["status"] == "True" and rolled["reason"] == "ManualRollback"
    rows = {r["name"]: r for r in history(lab, name)}
    assert "current" in rows[v1]["marks"] and "held-back" in rows[v2]["marks"]
    # a new spec rolls out again; with historyLimit 2 the oldest snapshot goes
    set_image(lab, name, "vllm/vllm-openai:v0.11.2")
    v3 = good(lab, name, other_than=v1)
    wait_for(lambda: len(history(lab, name)) == 2, timeout=30, what="retention at 2")
    assert [r["name"] for r in history(lab, name)] == [v2, v3]
    assert condition(lab, NS, name, "RolledBack") == "False"


def test_a_members_deleted_objects_are_restored_from_the_current_snapshot(lab, md):
    name = md("rb-restore")
    v1 = good(lab, name)
    v1_hash = snapshot(lab, v1)["spec"]["hash"]
    lab.run("kill", "west")
    try:
        wait_for(lambda: condition(lab, NS, name, "FailedOver") == "True", timeout=60,
                 what="west failed over")
    finally:
        lab.run("revive", "west")
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="west Healthy again")
    kubectl(lab, "west", "delete", "deployments,services,poddisruptionbudgets", "-n", NS,
            "-l", f"serving.twinhull.io/deployment={name}", "--wait=false")
    start = time.monotonic()
    wait_for(lambda: runs(lab, NS, name, v1_hash), timeout=60,
             what="west's objects restored from the snapshot")
    restored = time.monotonic() - start
    assert restored < 30, f"restored after {restored:.0f}s"
    assert status(lab, NS, name)["currentSnapshot"] == v1


def test_a_revision_burning_the_budget_at_page_rate_rolls_back_under_the_fixed_limit(
        lab, md, simulator):
    """A critical revision whose pods fail 0.6 % of requests stays under the tier's fixed
    1 % error limit, but burns the 99.99 % target's budget at 60x: the page condition of
    the generated alerts (14.4x over 1 h and 5 m, at least 20 requests), read on the new
    revision's own requests, rolls it back. 200 requests a second, so that each pod fails
    one within the 10 s verification window (one in 167: 0.6 % needs requests to show)."""
    name = md("rb-burn")
    simulator([{"at": 0, "deployment": f"{NS}/{name}", "tokensPerSecond": 6000}], 400,
              "--tokens-per-request", "30")
    v1 = good(lab, name)
    set_image(lab, name, "vllm/vllm-openai:v0.12.0-errors0.6")
    wait_for(lambda: condition(lab, NS, name, "RolledBack") == "True", timeout=150,
             what="RolledBack=True")
    rolled = next(c for c in status(lab, NS, name)["conditions"] if c["type"] == "RolledBack")
    assert rolled["reason"] == "BurnRateExceeded", rolled
    assert "burning at" in rolled["message"] and v1 in rolled["message"], rolled
    bad = next(r for r in history(lab, name) if r["image"].endswith("-errors0.6"))
    assert bad["outcome"] == "Bad", bad


def test_a_revision_failing_its_requests_in_east_is_drained_while_it_rolls_back(
        lab, md, simulator):
    """A revision whose model servers load for 20 s and then fail every request becomes
    Ready in east and is caught on its own error rate while west's step still loads. Its
    Ready pods stay until the Good ones are Ready again (maxUnavailable 0), so east gets
    no traffic meanwhile: west, still serving the Good revision, takes it all, and the
    weights return once east runs the Good revision again."""
    # two 20 s model loads one after the other outlast the other tests' 30 s deadline:
    # the error rate must catch it, not the deadline (which drains nothing)
    name = md("rb-drain", deadline=180)
    simulator([{"at": 0, "deployment": f"{NS}/{name}", "tokensPerSecond": 4000}], 400)
    v1 = good(lab, name)
    set_image(lab, name, "vllm/vllm-openai:v0.12.0-load20-errors")
    wait_for(lambda: condition(lab, NS, name, "RolledBack") == "True", timeout=150,
             what="RolledBack=True")
    decisions = status(lab, NS, name)["decisions"]
    rollback = next(d for d in decisions if d["kind"] == "Rollback")
    assert rollback["inputs"]["reason"] in ("ErrorRateExceeded", "BurnRateExceeded"), rollback
    assert rollback["inputs"].get("drained") == ["east"], rollback
    shifts = [d for d in decisions if d["kind"] == "ShiftTraffic"
              and d["inputs"].get("drained") == ["east"]]
    assert shifts and shifts[0]["inputs"]["to"]["east"] == 0, decisions
    assert shifts[0]["inputs"]["to"]["west"] == 100, shifts[0]
    # west carries east's two replicas on top of its own two while east rolls back
    assert shifts[0]["inputs"].get("surged") == {"west": 2}, shifts[0]
    good(lab, name, timeout=120)
    wait_for(lambda: status(lab, NS, name)["traffic"].get("east", 0) > 0, timeout=60,
             what="east's weight back once it runs the Good revision")
    wait_for(lambda: primary_replicas(lab, "west", name) == 2, timeout=60,
             what="west's surge gone once east runs the Good revision")
    assert status(lab, NS, name)["currentSnapshot"] == v1


def test_an_outcome_refused_while_the_status_lands_is_written_once_allowed(
        lab, md, chart_identity, tmp_path):
    """The chart's ClusterRole loses modelsnapshots/status mid-rollout: the rollout still
    completes (the status names the new snapshot Good) while its outcome write is refused;
    once the permission is back, the outcome the status states is written within the
    retry minute."""
    import json

    from conftest import install_chart_rbac

    name = md("rb-outcome")
    v1 = good(lab, name)
    role = json.loads(kubectl(lab, "hub", "get", "clusterrole", "twinhull", "-o", "json"))
    for rule in role["rules"]:
        rule["resources"] = [r for r in rule.get("resources", []) if r != "modelsnapshots/status"]
    role["metadata"] = {"name": "twinhull"}
    try:
        kubectl(lab, "hub", "replace", "-f", "-", input_=json.dumps(role))
        set_image(lab, name, "vllm/vllm-openai:v0.12.0")
        v2 = good(lab, name, timeout=150, other_than=v1)
        outcome = (snapshot(lab, v2).get("status") or {}).get("outcome")
        assert outcome != "Good", f"the outcome was written without the permission: {outcome}"
    finally:
        install_chart_rbac(lab, tmp_path)
    wait_for(lambda: (snapshot(lab, v2).get("status") or {}).get("outcome") == "Good",
             timeout=120, what=f"{v2}'s outcome written again once allowed")
    assert "recorded again" in snapshot(lab, v2)["status"]["message"]
