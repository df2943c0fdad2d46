"""Whether installed CRDs can hold what this code writes (twinhull.api.compat)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from twinhull.api import RESOURCES
from twinhull.api.compat import crd_verdict, missing_fields
from twinhull.api.crd import crd_manifest

CURRENT = {crd_manifest(r)["metadata"]["name"]: crd_manifest(r) for r in RESOURCES}
MD = "modeldeployments.serving.twinhull.io"


def _schema(crds: dict[str, Any], name: str = MD) -> dict[str, Any]:
    schema: dict[str, Any] = crds[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_the_current_crds_pass():
    assert crd_verdict(CURRENT) is None


def test_a_crd_missing_a_new_field_names_the_field_and_the_fix():
    old = copy.deepcopy(CURRENT)
    del _schema(old)["properties"]["spec"]["properties"]["scaling"]["properties"]["preWarm"]
    verdict = crd_verdict(old)
    assert verdict is not None
    assert f"{MD} v1alpha1 lacks spec.scaling.preWarm" in verdict
    assert "kubectl apply --server-side" in verdict


def test_a_missing_object_is_named_once_not_each_of_its_fields():
    old = copy.deepcopy(CURRENT)
    del _schema(old)["properties"]["status"]
    problems = missing_fields(CURRENT[MD], old[MD])
    assert problems == [f"{MD} v1alpha1 lacks status"]


def test_a_missing_crd_a_version_not_served_and_a_missing_status_subresource():
    old = copy.deepcopy(CURRENT)
    assert missing_fields(CURRENT[MD], None) == [f"{MD} is not installed"]
    old[MD]["spec"]["versions"][0]["served"] = False
    assert missing_fields(CURRENT[MD], old[MD]) == [f"{MD} does not serve v1alpha1"]
    old = copy.deepcopy(CURRENT)
    del old[MD]["spec"]["versions"][0]["subresources"]
    assert missing_fields(CURRENT[MD], old[MD]) == [f"{MD} v1alpha1 has no status subresource"]


def test_a_newer_crd_with_more_fields_is_fine_as_after_rolling_the_operator_back():
    newer = copy.deepcopy(CURRENT)
    _schema(newer)["properties"]["spec"]["properties"]["future"] = {"type": "string"}
    assert crd_verdict(newer) is None


@pytest.mark.parametrize("keep", ["spec", "spec.scaling"])
def test_a_parent_that_keeps_unknown_fields_covers_its_children(keep):
    old = copy.deepcopy(CURRENT)
    node = _schema(old)
    for part in keep.split("."):
        node = node["properties"][part]
    node.pop("properties")
    node["x-kubernetes-preserve-unknown-fields"] = True
    assert missing_fields(CURRENT[MD], old[MD]) == []
