"""GitOps pipelines see the truth (issue 16): on the lab, with the real operator, the kstatus
verdict (``sigs.k8s.io/cli-utils`` ``status.Compute``, what Flux, kpt and ``cli-utils`` report)
and the Argo CD health (the shipped ``health.lua`` under gopher-lua) of one ModelDeployment
through a good change, a bad change rolled back, the revert of the bad change and a
failover; and ``kubectl wait --for=condition=Ready`` after a change returns only once the new
revision serves.

Every object seen is classified into a row of the table (``tests/test_argocd_health.py``
``TABLE``, the README's) and both verdicts must be that row's. With
``TWINHULL_CAPTURE_FIXTURES=<dir>`` the first object of each row is written to
``<dir>/<row>.yaml`` (metadata trimmed of managedFields, uid, resourceVersion) to refresh
``argocd/resource_customizations/serving.twinhull.io/ModelDeployment/testdata/``.

The helpers are built by ``make tools`` (``make e2e`` builds them and passes their paths
in ``TWINHULL_KSTATUS`` and ``TWINHULL_LUAHEALTH``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from fleet import (
    ROOT,
    apply,
    clusters_healthy,
    deployment_manifest,
    get,
    kubectl,
    namespace_manifest,
    runs,
    wait_for,
    workloads,
)

pytestmark = pytest.mark.e2e

NS = "e2e-gitops"
NAME = "gitops"
KIND = "modeldeployments.serving.twinhull.io"
HEALTH_LUA = (ROOT / "argocd" / "resource_customizations" / "serving.twinhull.io" /
              "ModelDeployment" / "health.lua")
V1 = "vllm/vllm-openai:v0.11.0"
V2 = "vllm/vllm-openai:v0.11.1"
BAD = "vllm/vllm-openai:v0.12.0-crashloop"  # the lab's pods of this image never get Ready
STALLING = ("InvalidSpec", "UnknownTier", "NameCollision", "InvalidAnnotation",
            "PlanningFailed")
ROLLING = ("RollingOut", "Verifying", "RollingBack", "RolloutPaused", "WaitingToRollOut")


def _unit_module() -> Any:
    """tests/test_argocd_health.py: its table and tool lookup serve both test suites."""
    spec = importlib.util.spec_from_file_location(
        "test_argocd_health", ROOT / "tests" / "test_argocd_health.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


UNIT = _unit_module()
TABLE = dict(UNIT.TABLE)


def _tool(env: str, name: str) -> Path:
    return Path(UNIT.tool(env, name))


def _conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c.get("type"): c for c in ((obj.get("status") or {}).get("conditions") or [])
            if isinstance(c, dict)}


def row_of(obj: dict[str, Any]) -> str | None:
    """The table's row an object is in, by the same precedence the Lua check uses; None
    when no row fits (a situation the table does not describe)."""
    meta, st = obj.get("metadata") or {}, obj.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "deleting"
    if "observedGeneration" not in st:
        return "no-status"  # before the operator's first write: not a row of the table
    if st["observedGeneration"] < meta.get("generation", 0):
        return "not-observed"
    c = _conditions(obj)

    def has(t: str, status: str = "True") -> dict[str, Any] | None:
        return c[t] if t in c and c[t].get("status") == status else None

    if (stalled := has("Stalled")) is not None:
        if has("RolledBack") is not None:
            return "rolled-back"
        if stalled.get("reason") == "RolloutFailed":
            return "rollout-failed"
        return "invalid-spec" if stalled.get("reason") in STALLING else None
    if (ready := has("Ready", "False")) is not None and ready.get("reason") == "NoServingCluster":
        return "no-serving-cluster"
    if (reconciling := has("Reconciling")) is not None:
        reason = reconciling.get("reason")
        if reason == "WaitingForApproval":
            return "waiting-for-approval"
        if reason == "ReplicasNotReady":
            return "replicas-not-ready"
        return "rolling-out" if reason in ROLLING else None
    if (ready := has("Ready")) is not None:
        if ready.get("reason") == "ServingDegraded" or has("FailedOver") or has("Degraded"):
            return "failed-over"
        return "serving" if ready.get("reason") == "Serving" else None
    return None


class Look(NamedTuple):
    obj: dict[str, Any]
    row: str | None
    kstatus: dict[str, str]
    argo: dict[str, str]


class Observer:
    """Reads the ModelDeployment, computes both verdicts with the real tools, checks them
    against its row and keeps a timeline (shown when an assertion fails)."""

    def __init__(self, lab: Any, kstatus: Path, luahealth: Path) -> None:
        self.lab, self.kstatus, self.luahealth = lab, kstatus, luahealth
        self.timeline: list[tuple[float, str | None, str, str]] = []
        self.start = time.monotonic()
        capture = os.environ.get("TWINHULL_CAPTURE_FIXTURES")
        self.capture = Path(capture) if capture else None
        self.captured: set[str] = set()
        if self.capture is not None:
            self.capture.mkdir(parents=True, exist_ok=True)

    def look(self) -> Look:
        text = kubectl(self.lab, "hub", "get", KIND, NAME, "-n", NS, "-o", "yaml")
        obj = yaml.safe_load(text)
        ks = subprocess.run([str(self.kstatus)], input=text, capture_output=True, text=True,
                            timeout=30, check=True)
        argo = subprocess.run([str(self.luahealth), "-eval", str(HEALTH_LUA)], input=text,
                              capture_output=True, text=True, timeout=30)
        assert argo.returncode == 0, f"health.lua failed on the live object: {argo.stderr}"
        look = Look(obj, row_of(obj), json.loads(ks.stdout), json.loads(argo.stdout))
        self.timeline.append((round(time.monotonic() - self.start, 1), look.row,
                              look.kstatus["status"], look.argo["status"]))
        self._check(look)
        self._capture(look)
        return look

    def _check(self, look: Look) -> None:
        conditions = {t: (c.get("status"), c.get("reason")) for t, c in
                      _conditions(look.obj).items()}
        if look.row == "no-status":
            return  # kstatus says Current before any status (no observedGeneration to compare)
        assert look.row is not None, f"a situation the table has no row for: {conditions}"
        want = TABLE[look.row]
        assert (look.kstatus["status"], look.argo["status"]) == (want.kstatus, want.argo), (
            f"row {look.row}: kstatus {look.kstatus}, Argo CD {look.argo}; the table says "
            f"{want}; conditions {conditions}")

    def _capture(self, look: Look) -> None:
        if self.capture is None or look.row is None or look.row in self.captured \
                or look.row == "no-status":
            return
        if look.row == "rolling-out" and \
                _conditions(look.obj)["Reconciling"].get("reason") != "RollingOut":
            return  # the fixture of the row is a rollout under way
        obj = dict(look.obj)
        meta = dict(obj.get("metadata") or {})
        for key in ("managedFields", "uid", "resourceVersion"):
            meta.pop(key, None)
        obj["metadata"] = meta
        (self.capture / f"{look.row}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
        self.captured.add(look.row)

    def until(self, done: Any, *, timeout: float, what: str, interval: float = 0.5) -> Look:
        """Look until ``done(look)``; fail with the timeline at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            look = self.look()
            if done(look):
                return look
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; "
                                     f"timeline (s, row, kstatus, Argo CD): {self.timeline}")
            time.sleep(interval)

    def verdicts_since(self, mark: int) -> list[str]:
        """kstatus verdicts seen since timeline index ``mark``, repeats collapsed."""
        out: list[str] = []
        for _, _, ks, _ in self.timeline[mark:]:
            if not out or out[-1] != ks:
                out.append(ks)
        return out


@pytest.fixture(autouse=True)
def healthy_lab(lab) -> None:
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")


@pytest.fixture
def observer(lab, operator) -> Iterator[Observer]:
    obs = Observer(lab, _tool("TWINHULL_KSTATUS", "kstatus"),
                   _tool("TWINHULL_LUAHEALTH", "luahealth"))
    md = deployment_manifest(NAME, NS)
    md["spec"]["rollback"] = {"historyLimit": 10, "progressDeadlineSeconds": 30}
    apply(lab, namespace_manifest(NS), md)
    try:
        yield obs
    finally:
        kubectl(lab, "hub", "delete", KIND, NAME, "-n", NS, "--wait=false", check=False)
        if obs.capture is not None:  # the deleting row, while the finalizer holds it
            try:
                obs.look()
            except AssertionError:
                if get(lab, "hub", KIND, NAME, NS) is not None:
                    raise  # not "already gone": a real mismatch
        kubectl(lab, "hub", "wait", "--for=delete", f"{KIND}/{NAME}", "-n", NS,
                "--timeout=60s", check=False)
        print("timeline (s, row, kstatus, Argo CD):", obs.timeline)


def set_image(lab, image: str) -> None:
    kubectl(lab, "hub", "patch", KIND, NAME, "-n", NS, "--type=merge", "-p",
            json.dumps({"spec": {"model": {"image": image}}}))


class ReadyWait:
    """``kubectl wait --for=condition=Ready`` as a pipeline runs it, in the background; the
    moment it returns, the revisions the members run are read (what it was waiting for)."""

    def __init__(self, lab: Any, timeout: int) -> None:
        self.lab = lab
        self.proc = subprocess.Popen(
            [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")), "wait",
             "--for=condition=Ready", f"--timeout={timeout}s", f"{KIND}/{NAME}", "-n", NS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.revisions: set[str] | None = None
        self.stderr = ""
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        _, self.stderr = self.proc.communicate()
        self.revisions = member_revisions(self.lab)

    def returned(self) -> bool:
        return self.proc.poll() is not None

    def result(self, timeout: float) -> tuple[int, set[str]]:
        """Exit status and the members' revisions when it returned."""
        self._thread.join(timeout)
        assert self.revisions is not None, "kubectl wait did not return"
        return self.proc.returncode, self.revisions

    def stop(self) -> None:
        if not self.returned():
            self.proc.kill()
        self._thread.join(30)


def revision_hash(lab, look: Look) -> str:
    """The content hash of the status' current snapshot: what the members must run."""
    snap = get(lab, "hub", "modelsnapshots", look.obj["status"]["currentSnapshot"], NS) or {}
    return str(snap["spec"]["hash"])


def member_revisions(lab) -> set[str]:
    return {r for c in ("east", "west") for r, _, _ in (workloads(lab, c, NS, NAME) or {})
            .values()}


def current(look: Look) -> bool:
    return look.kstatus["status"] == "Current"


def test_kstatus_and_argo_health_follow_a_good_change_a_bad_one_its_revert_and_a_failover(
        lab, observer):
    obs = observer
    # (before the operator's first status write kstatus says Current too: it has no
    # observedGeneration to compare; so wait for the row, not the verdict)
    first = obs.until(lambda look: look.row == "serving", timeout=180,
                      what="the new ModelDeployment serving")
    assert current(first) and first.argo["status"] == "Healthy", first
    v1_hash = revision_hash(lab, first)
    assert runs(lab, NS, NAME, v1_hash)

    # A good change: InProgress until the new revision serves, then Current; and a
    # pipeline's `kubectl wait --for=condition=Ready` returns only then.
    mark = len(obs.timeline)
    set_image(lab, V2)
    waiting = ReadyWait(lab, timeout=240)
    try:
        done = obs.until(current, timeout=240, what="the good change Current")
        v2_hash = revision_hash(lab, done)
        assert v2_hash != v1_hash, "Current before the new revision is the current one"
        assert runs(lab, NS, NAME, v2_hash), "Current before the new revision serves"
        code, revisions = waiting.result(timeout=240)
    finally:
        waiting.stop()
    assert code == 0, f"kubectl wait: {waiting.stderr}"
    assert revisions == {v2_hash}, (
        f"kubectl wait returned while the members ran {revisions}, not {v2_hash}")
    assert obs.verdicts_since(mark) == ["InProgress", "Current"], obs.timeline[mark:]
    assert "rolling-out" in {row for _, row, _, _ in obs.timeline[mark:]}, obs.timeline[mark:]

    # A bad change: InProgress while it rolls out, Failed once rolled back (never Current
    # in between); kubectl wait does not return meanwhile.
    mark = len(obs.timeline)
    set_image(lab, BAD)
    waiting = ReadyWait(lab, timeout=300)
    try:
        failed = obs.until(lambda look: look.kstatus["status"] == "Failed", timeout=180,
                           what="the bad change Failed after the rollback")
        assert failed.row == "rolled-back", failed.row
        assert failed.argo["status"] == "Degraded"
        stalled = _conditions(failed.obj)["Stalled"]
        assert stalled["reason"] == "ProgressDeadlineExceeded", stalled
        assert "held back" in stalled["message"], stalled
        assert failed.kstatus["message"] == stalled["message"]
        assert failed.argo["message"] == stalled["message"]
        assert obs.verdicts_since(mark) == ["InProgress", "Failed"], obs.timeline[mark:]
        wait_for(lambda: runs(lab, NS, NAME, v2_hash), timeout=90,
                 what="the good revision back everywhere")
        still = obs.look()
        assert still.kstatus["status"] == "Failed", "held back stays Failed until the spec changes"
        assert not waiting.returned(), (
            f"kubectl wait returned ({waiting.proc.returncode}) for a change that was rolled "
            "back")
    finally:
        waiting.stop()

    # Reverting the bad change in Git: Current again, running the good revision.
    mark = len(obs.timeline)
    set_image(lab, V2)
    waiting = ReadyWait(lab, timeout=180)
    try:
        back = obs.until(current, timeout=180, what="the revert Current")
        assert back.row == "serving" and back.argo["status"] == "Healthy"
        assert _conditions(back.obj)["RolledBack"]["status"] == "False"
        assert revision_hash(lab, back) == v2_hash
        code, revisions = waiting.result(timeout=180)
    finally:
        waiting.stop()
    assert code == 0, f"kubectl wait: {waiting.stderr}"
    assert revisions == {v2_hash}, revisions
    assert obs.verdicts_since(mark) in (["Current"], ["InProgress", "Current"]), \
        obs.timeline[mark:]

    # A failover: still Current for kstatus (the spec is reconciled), Degraded for Argo CD
    # with the failover named.
    lab.run("kill", "west")
    try:
        over = obs.until(lambda look: look.row == "failed-over" and
                         _conditions(look.obj).get("FailedOver", {}).get("status") == "True",
                         timeout=90, what="west failed over")
        assert over.kstatus["status"] == "Current", over.kstatus
        assert over.argo["status"] == "Degraded", over.argo
        assert "west" in over.argo["message"] and "failed over" in over.argo["message"], \
            over.argo
    finally:
        lab.run("revive", "west")
    wait_for(lambda: clusters_healthy(lab), timeout=90, what="west Healthy again")
    obs.until(lambda look: look.row == "serving", timeout=180, what="failed back: serving")
