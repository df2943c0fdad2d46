"""CRD generation: structural schemas, subresources, columns, CEL rules, staleness."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import yaml

from twinhull.api import RESOURCES, ModelDeployment
from twinhull.api.crd import crd_manifest
from twinhull.generate import generated_files, stale


def _nodes(schema: dict[str, Any]):
    yield schema
    for child in (schema.get("properties") or {}).values():
        yield from _nodes(child)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            yield from _nodes(schema[key])


def test_schemas_are_structural():
    for resource in RESOURCES:
        schema = crd_manifest(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for node in _nodes(schema):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node
            assert (
                "type" in node
                or node.get("x-kubernetes-int-or-string")
                or node.get("x-kubernetes-preserve-unknown-fields")
            ), node
            assert not ("properties" in node and "additionalProperties" in node), node
            assert node.get("additionalProperties") is not False


def test_model_deployment_crd_has_status_columns_names_and_rules():
    crd = crd_manifest(ModelDeployment)
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Tier"] == ".spec.slaTier"
    assert columns["Ready"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Traffic"] == ".status.trafficSplit"
    assert "Age" in columns
    assert crd["spec"]["names"]["shortNames"] == ["md", "mdep"]
    assert crd["spec"]["names"]["categories"] == ["twinhull"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = [r["rule"] for r in spec["x-kubernetes-validations"]]
    assert any("exists_one(q, q.cluster == p.cluster)" in r for r in rules)
    scaling_rules = [r["rule"] for r in spec["properties"]["scaling"]["x-kubernetes-validations"]]
    assert "self.minReplicasPerZone <= self.maxReplicasPerZone" in scaling_rules
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"][
        "conditions"
    ]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert set(conditions["items"]["required"]) == {"type", "status"}


def test_quantities_are_int_or_string():
    spec = crd_manifest(ModelDeployment)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    cpu = spec["properties"]["spec"]["properties"]["model"]["properties"]["resources"][
        "properties"
    ]["cpu"]
    assert cpu == {"x-kubernetes-int-or-string": True, "description": "CPU request, e.g. `8`."}


def test_generated_files_are_committed_and_current(root):
    assert stale(root) == []
    for rel, content in generated_files().items():
        if rel.endswith(".yaml"):
            assert list(yaml.safe_load_all(content))


def test_crds_check_command_fails_on_a_stale_tree(root, tmp_path):
    cmd = [sys.executable, "-m", "twinhull.cli", "crds", "--check", "--root"]
    assert subprocess.run([*cmd, str(root)], capture_output=True).returncode == 0
    result = subprocess.run([*cmd, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "stale: crds/serving.twinhull.io_modeldeployments.yaml" in result.stderr
    subprocess.run([sys.executable, "-m", "twinhull.cli", "crds", "--root", str(tmp_path)],
                   check=True, capture_output=True)
    assert subprocess.run([*cmd, str(tmp_path)], capture_output=True).returncode == 0
    (tmp_path / "crds" / "serving.twinhull.io_servingtiers.yaml").write_text("# edited\n")
    assert subprocess.run([*cmd, str(tmp_path)], capture_output=True).returncode == 1
