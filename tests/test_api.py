"""The API models: wire names, defaults, strictness, immutability."""

from __future__ import annotations

import pydantic
import pytest
import yaml

from twinhull.api import KINDS, ModelDeployment, ServingCluster


def _load(root, name):
    return next(yaml.safe_load_all((root / "examples" / name).read_text()))


def test_model_deployment_round_trips_with_camel_case_names(root):
    raw = _load(root, "ide-assistant.yaml")
    md = ModelDeployment.model_validate(raw)
    assert md.spec.sla_tier == "critical"
    assert md.spec.placement[1].zones == {"west-a": 1, "west-b": 1}
    dumped = md.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert dumped["spec"]["slaTier"] == "critical"
    assert dumped["spec"]["fallback"]["replicasPerZone"] == 1
    assert dumped["spec"]["rollback"]["progressDeadlineSeconds"] == 600


def test_defaults_follow_the_design_contract(root):
    md = ModelDeployment.model_validate(_load(root, "unit-test-agent.yaml"))
    assert md.spec.traffic.failover == "Automatic"
    assert md.spec.model.port == 8000
    assert md.spec.scaling is not None and md.spec.scaling.mode == "Off"
    cluster = ServingCluster.model_validate(_load(root, "clusters.yaml"))
    assert cluster.spec.health.failure_threshold == 3
    assert cluster.spec.kubeconfig_secret_ref.key == "kubeconfig"


def test_unknown_field_is_an_error_naming_its_path(root):
    raw = _load(root, "ide-assistant.yaml")
    raw["spec"]["model"]["imagee"] = "typo"
    with pytest.raises(pydantic.ValidationError) as info:
        ModelDeployment.model_validate(raw)
    locs = [e["loc"] for e in info.value.errors()]
    assert ("spec", "model", "imagee") in locs


def test_values_are_frozen(root):
    md = ModelDeployment.model_validate(_load(root, "ide-assistant.yaml"))
    with pytest.raises(pydantic.ValidationError):
        md.spec.model.image = "other"  # type: ignore[misc]


def test_every_kind_is_registered_with_its_crd_names():
    assert set(KINDS) == {
        "ServingCluster", "ModelDeployment", "ModelSnapshot", "FailoverDrill", "ServingTier",
    }
    for kind, model in KINDS.items():
        assert model.crd.kind == kind
        assert model.crd.name.endswith(".serving.twinhull.io")
