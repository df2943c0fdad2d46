"""The Helm chart renders, lints, and every object it renders is accepted by a real API
server (server-side dry run on the lab's hub). The operator image itself cannot run in the
lab: its pods are KWOK pods that run no container."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
HELM = Path(os.environ.get("TWINHULL_HELM",
                           Path.home() / ".cache/twinhull/tools/helm-v3.22.0/helm"))


def helm(*args: str) -> str:
    if not HELM.is_file():
        pytest.fail(f"helm not found at {HELM}: run `make tools`")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


def test_chart_lints_and_the_api_server_accepts_every_object(lab, tmp_path):
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
