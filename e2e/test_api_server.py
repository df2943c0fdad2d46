"""The generated CRDs and the tier admission policy in a real API server, judged against
the offline validator: the same manifests, the same verdicts, the same messages."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
INVALID = sorted((ROOT / "tests" / "manifests" / "invalid").glob("*.yaml"))

# Cases only the offline validator can judge: they need the tier policy's list of tiers or
# another object among the inputs (the API server checks each object alone).
OFFLINE_ONLY = {
    "unknown-tier": "the admission policy checks the tiers that exist; it cannot list them",
    "unknown-zone": "needs the ServingCluster given with it",
}


@pytest.fixture(autouse=True)
def namespace(lab) -> None:
    """The examples' namespace: a dry run of a namespaced object needs it to exist."""
    subprocess.run(
        [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")), "apply",
         "--server-side", "-f", str(ROOT / "examples" / "00-namespace.yaml")],
        capture_output=True, text=True, timeout=60, check=True)


def dry_run(lab, path: Path) -> subprocess.CompletedProcess[str]:
    """`kubectl apply --dry-run=server` on the hub: the API server's full verdict (schema,
    CEL, admission) without storing anything."""
    return subprocess.run(
        [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")), "apply",
         "--server-side", "--dry-run=server", "-f", str(path)],
        capture_output=True, text=True, timeout=60)


def expectation(path: Path) -> str:
    match = re.search(r"^# expect: (.+)$", path.read_text(), re.M)
    assert match
    return match.group(1)


def test_examples_are_accepted_by_the_api_server(lab):
    result = dry_run(lab, ROOT / "examples")
    assert result.returncode == 0, result.stderr
    assert "modeldeployment.serving.twinhull.io/ide-assistant serverside-applied" in result.stdout


@pytest.mark.parametrize("case", INVALID, ids=[p.stem for p in INVALID])
def test_the_api_server_agrees_with_the_offline_validator(lab, case):
    result = dry_run(lab, case)
    if case.stem in OFFLINE_ONLY:  # the documented boundary: only `twinhull validate` sees it
        assert result.returncode == 0, (OFFLINE_ONLY[case.stem], result.stderr)
        return
    assert result.returncode != 0, f"the API server accepted {case.name}:\n{result.stdout}"
    message = expectation(case)
    ours = ("must", "needs", "requires", "may appear once", "must differ")
    if any(word in message for word in ours):
        # CEL rule and admission policy messages are ours: the API server says them verbatim
        assert message in result.stderr, result.stderr


def test_the_admission_policy_rejects_a_critical_single_cluster_deployment(lab):
    result = dry_run(lab, ROOT / "tests/manifests/invalid/critical-single-cluster.yaml")
    assert "ValidatingAdmissionPolicy 'twinhull-tier-rules'" in result.stderr
    assert "tier critical needs at least 2 clusters, got 1" in result.stderr


def test_printer_columns_and_short_names_are_served(lab):
    result = subprocess.run(
        [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")),
         "api-resources", "--api-group=serving.twinhull.io", "-o", "wide"],
        capture_output=True, text=True, timeout=60, check=True)
    assert re.search(r"modeldeployments\s+md,mdep\s+serving.twinhull.io/v1alpha1\s+true\s+"
                     r"ModelDeployment", result.stdout), result.stdout
    tiers = subprocess.run(
        [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")), "get",
         "servingtiers"], capture_output=True, text=True, timeout=60, check=True)
    assert re.search(r"critical\s+99\.99\s+2\s+2\s+true\s+1000", tiers.stdout), tiers.stdout
