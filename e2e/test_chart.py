"""The Helm chart renders, lints, and every object it renders is accepted by a real API
server (server-side dry run on the lab's hub). The operator image itself cannot run in the
lab: its pods are KWOK pods that run no container."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from conftest import CHART_ACCOUNT, ROOT, helm

pytestmark = pytest.mark.e2e


def test_chart_lints_and_the_api_server_accepts_every_object(lab, chart_identity, tmp_path):
    """With the chart's ServiceAccount in place (``chart_identity``), as after an install:
    the `helm test` Pod names it, and admission refuses a Pod whose account is missing."""
    helm("lint", "--strict", str(ROOT / "charts/twinhull"))
    rendered = helm("template", "twinhull", str(ROOT / "charts/twinhull"),
                    "--namespace", "twinhull-system",
                    "--set-file", f"tiers={ROOT / 'e2e/tiers-fast.yaml'}")
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds.count("ServingTier") == 3 and "ValidatingAdmissionPolicy" in kinds
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    assert "holdSeconds: 3" in config["data"]["tiers.yaml"], "the tiers value is used"
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "run" and "--namespace=twinhull-system" in args
    path = tmp_path / "chart.yaml"
    path.write_text(rendered)
    result = subprocess.run(
        [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")), "apply",
         "--server-side", "--dry-run=server", "--force-conflicts", "-f", str(path)],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "deployment.apps/twinhull serverside-applied (server dry run)" in result.stdout


def granted(lab, namespace: str | None = None) -> dict[str, set[str]]:
    """Resource to verbs the chart's ServiceAccount may use (cluster-wide, or in
    ``namespace`` on top), from `kubectl auth can-i --list` as that account, without what
    the API server grants every authenticated user."""
    ns, account = CHART_ACCOUNT
    where = ["-n", namespace] if namespace else []
    out = subprocess.run(
        [str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")), "auth",
         "can-i", "--list", f"--as=system:serviceaccount:{ns}:{account}", *where],
        capture_output=True, text=True, check=True, timeout=30).stdout
    rules: dict[str, set[str]] = {}
    for line in out.splitlines()[1:]:
        columns = re.split(r"\s{2,}", line.strip())  # resource, URLs, names, verbs
        if len(columns) != 4 or not columns[0]:  # non-resource URLs: every user has them
            continue
        resource, _, names, verbs = columns
        if resource.startswith("selfsubject"):  # every authenticated user may ask
            continue
        key = resource if names == "[]" else f"{resource}{names}"
        rules.setdefault(key, set()).update(verbs.strip("[]").split())
    return rules


def test_the_charts_account_may_do_exactly_what_the_operator_needs(lab, operator):
    """Least privilege both ways: a verb the operator needs and the chart lacks fails the
    suite (it runs as this account), and so does a verb the chart grants that is not in
    the checked-in list of what the operator does (e2e/operator-permissions.yaml)."""
    expected = yaml.safe_load((ROOT / "e2e/operator-permissions.yaml").read_text())
    cluster = {r: set(v) for r, v in expected["cluster"].items()}
    own = {r: set(v) for r, v in expected["operatorNamespace"].items()}
    assert granted(lab) == cluster
    in_namespace = granted(lab, CHART_ACCOUNT[0])
    for resource, verbs in own.items():
        assert in_namespace.get(resource, set()) - cluster.get(resource, set()) == verbs
    extra = {r: v for r, v in in_namespace.items() if r not in cluster and r not in own}
    assert not extra, f"granted in the operator's namespace but not needed: {extra}"


@pytest.mark.parametrize(("value", "says"), [
    ("replica=3", "additional properties 'replica' not allowed"),
    ("gateway=inference", "/gateway"),
    ("leaderElection.leaseSeconds=1", "/leaderElection/leaseSeconds"),
])
def test_the_chart_refuses_values_it_does_not_know(value, says):
    """values.schema.json: a typo or a bad value fails `helm install`, it is not ignored."""
    with pytest.raises(subprocess.CalledProcessError) as failed:
        helm("template", "twinhull", str(ROOT / "charts/twinhull"), "--set", value)
    assert says in failed.value.stderr


def test_helm_tests_check_passes_as_the_charts_account_while_a_replica_leads(lab, operator):
    """What `helm test` runs (templates/tests/operator-leads.yaml), as the chart's own
    ServiceAccount: exit 0 naming the leader."""
    import sys

    leader = operator.leader()
    run = subprocess.run(
        [sys.executable, "-m", "twinhull.cli", "check", "--kubeconfig",
         str(operator.identity.kubeconfig())],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"{leader.identity} leads" in run.stdout
