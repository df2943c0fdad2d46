"""Install and upgrade as users do, on an API server of its own that nothing else touched:
`helm install` of the previous chart, objects created, stale CRDs refused by the new
operator, the documented upgrade (CRDs first, then `helm upgrade`), and `helm uninstall`
keeping the CRDs and every object."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, helm

pytestmark = pytest.mark.e2e

PREVIOUS_CHART = "7fef38298c35a61071d8ac02308a73407c5a640d"
"""The commit of chart 0.1.0, the version before this one (CRDs in crds/, one release)."""
NAMESPACE = "twinhull-system"
MD_CRD = "modeldeployments.serving.twinhull.io"


@pytest.fixture
def scratch(lab) -> Iterator[Path]:
    """The admin kubeconfig of a bare API server of its own, stopped afterwards."""
    from labkit.lab import Lab as LabKit
    from labkit.layout import Layout

    with LabKit(Layout.from_env(lab.env)).scratch() as kubeconfig:
        yield kubeconfig


def _previous_chart(into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar",
                              PREVIOUS_CHART, "charts/twinhull"],
                             capture_output=True, check=False, timeout=60)
    if archive.returncode != 0:
        pytest.fail(f"the previous chart ({PREVIOUS_CHART}) is not in this clone's history "
                    f"(a shallow clone?): {archive.stderr.decode()}")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into / "charts/twinhull"


class Cluster:
    def __init__(self, lab, kubeconfig: Path) -> None:
        self.kubectl_bin, self.kubeconfig = str(lab.bin_dir / "kubectl"), kubeconfig

    def kubectl(self, *args: str, input: str | None = None, check: bool = True
                ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
                                input=input, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)}: {result.stderr}")
        return result

    def get(self, *args: str) -> dict:
        return yaml.safe_load(self.kubectl("get", *args, "-o", "yaml").stdout)

    def helm(self, *args: str) -> str:
        return helm(*args, "--kubeconfig", str(self.kubeconfig), "--namespace", NAMESPACE)

    def chart_kubeconfig(self, directory: Path) -> Path:
        """A kubeconfig with a token of the chart's ServiceAccount (TokenRequest)."""
        token = self.kubectl("create", "token", "twinhull", "-n", NAMESPACE).stdout.strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        user = f"system:serviceaccount:{NAMESPACE}:twinhull"
        path = directory / "chart-kubeconfig"
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "s", "cluster": admin["clusters"][0]["cluster"]}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "s", "context": {"cluster": "s", "user": user}}],
            "current-context": "s"}))
        path.chmod(0o600)
        return path


def _twinhull(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "twinhull.cli", *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _without_pre_warm(crd: dict) -> dict:
    """The ModelDeployment CRD as a release before `spec.scaling.preWarm` had it."""
    older = copy.deepcopy(crd)
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        older["metadata"].pop(key, None)
    older.pop("status", None)
    schema = older["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    del schema["properties"]["spec"]["properties"]["scaling"]["properties"]["preWarm"]
    return older


def test_install_the_previous_chart_then_upgrade_as_documented(lab, scratch, tmp_path):
    hub = Cluster(lab, scratch)
    previous = _previous_chart(tmp_path / "previous")
    assert yaml.safe_load((previous / "Chart.yaml").read_text())["version"] == "0.1.0"
    current = yaml.safe_load((ROOT / "charts/twinhull/Chart.yaml").read_text())["version"]
    assert current != "0.1.0", "a changed chart carries a new version"

    hub.kubectl("create", "namespace", NAMESPACE)
    hub.helm("install", "twinhull", str(previous))
    hub.kubectl("apply", "--server-side", "-f", str(ROOT / "examples/00-namespace.yaml"),
                "-f", str(ROOT / "examples/clusters.yaml"),
                "-f", str(ROOT / "examples/ide-assistant.yaml"))
    before = hub.get("modeldeployments", "-A")["items"]
    assert before, "the example ModelDeployment was stored"

    # A release's CRDs older than the code: the new operator names what is missing and the
    # fix, and never stands for the Lease (the running replicas keep acting)
    older = _without_pre_warm(hub.get("crd", MD_CRD))
    hub.kubectl("replace", "-f", "-", input=yaml.safe_dump(older))
    account = hub.chart_kubeconfig(tmp_path)
    check = _twinhull("check", "--kubeconfig", str(account), "--namespace", NAMESPACE)
    assert check.returncode == 1
    assert f"{MD_CRD} v1alpha1 lacks spec.scaling.preWarm" in check.stderr, check.stderr
    assert "kubectl apply --server-side" in check.stderr
    run = _twinhull("run", "--kubeconfig", str(account), "--namespace", NAMESPACE)
    assert run.returncode == 1, run.stderr[-2000:]
    assert "the installed CRDs are older than this operator" in run.stderr
    leases = hub.kubectl("get", "leases", "-n", NAMESPACE, "-o", "name").stdout
    assert "twinhull-leader" not in leases, "a replica refused by its CRDs took the Lease"

    # The documented upgrade: this version's CRDs, then the chart
    hub.kubectl("apply", "--server-side", "--force-conflicts", "-f",
                str(ROOT / "charts/twinhull/crds/"))
    hub.helm("upgrade", "twinhull", str(ROOT / "charts/twinhull"))
    check = _twinhull("check", "--kubeconfig", str(account), "--namespace", NAMESPACE)
    assert "the CRDs are current" in check.stdout, check.stderr
    after = hub.get("modeldeployments", "-A")["items"]
    assert [o["spec"] for o in after] == [o["spec"] for o in before]
    hub.kubectl("apply", "--server-side", "--dry-run=server", "-f",
                str(ROOT / "examples"))  # what the new version accepts is accepted

    # The upgraded release runs as its own account: it takes the Lease and says so
    log = (tmp_path / "operator.log").open("wb")
    replica = subprocess.Popen(
        [sys.executable, "-m", "twinhull.cli", "run", "--kubeconfig", str(account),
         "--namespace", NAMESPACE, "--identity", "upgraded-0"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while (check := _twinhull("check", "--kubeconfig", str(account), "--namespace",
                                  NAMESPACE)).returncode != 0:
            assert replica.poll() is None, (tmp_path / "operator.log").read_text()[-3000:]
            assert time.monotonic() < deadline, check.stderr
            time.sleep(1)
    finally:
        replica.send_signal(signal.SIGTERM)
        try:
            replica.wait(timeout=30)
        except subprocess.TimeoutExpired:
            replica.kill()
            replica.wait()
        log.close()

    # helm uninstall keeps the CRDs and so every object (helm never deletes crds/)
    hub.helm("uninstall", "twinhull")
    assert MD_CRD in hub.kubectl("get", "crd", "-o", "name").stdout
    assert [o["spec"] for o in hub.get("modeldeployments", "-A")["items"]] == \
        [o["spec"] for o in before]
