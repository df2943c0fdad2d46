"""The tier policy: defaults, schema enforcement, resolution."""

from __future__ import annotations

import json

import pytest

from twinhull.errors import PolicyError, UnknownTierError
from twinhull.policy import load_file, tier_json_schema


def test_default_tiers_match_the_design(policy):
    assert policy.names() == ["critical", "standard", "best-effort"]
    expect = {
        "critical": ("99.99", 2, 2, True),
        "standard": ("99.9", 2, 1, True),
        "best-effort": ("99.5", 1, 1, False),
    }
    for name, (target, clusters, zones, fallback) in expect.items():
        tier = policy.resolve(name)
        assert (tier.availability_target, tier.min_clusters, tier.min_zones_per_cluster,
                tier.fallback_required) == (target, clusters, zones, fallback)
        assert tier.headroom_percent == 20
        assert tier.failback.steps == [5, 25, 50, 100]
        assert tier.failback.hold_seconds > 0
        assert tier.priority_class_name
    assert policy.resolve("critical").automatic_rollback is True


def test_policies_file_is_the_packaged_default(root):
    assert load_file(root / "policies" / "tiers.yaml").tiers == load_file().tiers


def test_unknown_tier_names_the_known_ones(policy):
    with pytest.raises(UnknownTierError, match="use one of critical, standard, best-effort"):
        policy.resolve("platinum")


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        ("minClusters: 0", "document 1: spec.minClusters: 0 is less than the minimum of 1"),
        ("headroomPercent: 120", "spec.headroomPercent: 120 is greater than the maximum of 100"),
        ("minClusterz: 2", "Additional properties are not allowed ('minClusterz' was unexpected)"),
        ("failback: {steps: [50, 25, 100]}", "spec.failback.steps: must increase and end at 100"),
        ("availabilityTarget: high", "spec.availabilityTarget: 'high' does not match"),
    ],
)
def test_invalid_policy_names_the_field(tmp_path, patch, expect):
    path = tmp_path / "tiers.yaml"
    path.write_text(
        "apiVersion: serving.twinhull.io/v1alpha1\nkind: ServingTier\n"
        "metadata: {name: gold}\nspec:\n  availabilityTarget: '99.95'\n  priority: 1\n"
        f"  {patch}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_file(path)
    assert expect in str(info.value)
    assert str(path) in str(info.value)


def test_duplicate_and_empty_policies_are_rejected(tmp_path):
    doc = ("apiVersion: serving.twinhull.io/v1alpha1\nkind: ServingTier\n"
           "metadata: {name: gold}\nspec: {availabilityTarget: '99.9', priority: 1}\n")
    path = tmp_path / "tiers.yaml"
    path.write_text(doc + "---\n" + doc)
    with pytest.raises(PolicyError, match="tier 'gold' is defined twice"):
        load_file(path)
    path.write_text("# nothing\n")
    with pytest.raises(PolicyError, match="no ServingTier documents"):
        load_file(path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_file(tmp_path / "missing.yaml")


def test_users_can_add_tiers(tmp_path):
    path = tmp_path / "tiers.yaml"
    path.write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- apiVersion: serving.twinhull.io/v1alpha1\n  kind: ServingTier\n"
        "  metadata: {name: gold}\n  spec: {availabilityTarget: '99.95', priority: 900,"
        " minClusters: 2}\n"
    )
    policy = load_file(path)
    assert policy.resolve("gold").min_clusters == 2
    assert policy.resolve("gold").rollback_history_limit == 10


def test_committed_schema_is_the_generated_one(root):
    committed = json.loads((root / "policies" / "tiers.schema.json").read_text())
    assert committed == tier_json_schema()


def test_the_operator_refuses_to_start_on_an_invalid_policy(tmp_path, capsys):
    from twinhull.cli import main

    path = tmp_path / "tiers.yaml"
    path.write_text("apiVersion: serving.twinhull.io/v1alpha1\nkind: ServingTier\n"
                    "metadata: {name: gold}\nspec: {availabilityTarget: '99.9', priority: -1}\n")
    # no cluster is reachable at this kubeconfig: the policy must be refused before any call
    code = main(["run", "--policy", str(path), "--kubeconfig", str(tmp_path / "none")])
    assert code == 2
    err = capsys.readouterr().err
    assert "spec.priority: -1 is less than the minimum of 0" in err
