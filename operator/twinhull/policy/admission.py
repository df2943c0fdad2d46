"""Tier rules as CEL, for the API server's ValidatingAdmissionPolicy and the offline
validator. Pure: no I/O.

Each rule is evaluated with ``object`` = the ModelDeployment and ``params`` = one
``ServingTier``. The binding selects every ServingTier as a parameter, so each rule first
checks that the parameter is the object's tier (``params.metadata.name ==
object.spec.slaTier``) and holds trivially for the others. ``twinhull validate`` evaluates
these very expressions against the tiers of the policy file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twinhull.api.base import API_VERSION, GROUP, VERSION

POLICY_NAME = "twinhull-tier-rules"

_FOR_TIER = "params.metadata.name != object.spec.slaTier || "


@dataclass(frozen=True)
class TierRule:
    """One tier rule: a CEL condition, a CEL message and the field it is about."""

    name: str
    expression: str
    message_expression: str
    field: str


TIER_RULES: tuple[TierRule, ...] = (
    TierRule(
        name="min-clusters",
        expression=_FOR_TIER + "size(object.spec.placement) >= params.spec.minClusters",
        message_expression=(
            "'spec.placement: tier ' + params.metadata.name + ' needs at least '"
            " + string(params.spec.minClusters) + ' clusters, got '"
            " + string(size(object.spec.placement))"
            " + '; add a placement entry for another cluster or choose a lower slaTier'"
        ),
        field="spec.placement",
    ),
    TierRule(
        name="min-zones-per-cluster",
        expression=_FOR_TIER
        + "object.spec.placement.all(p,"
        " size(p.zones.filter(z, p.zones[z] > 0)) >= params.spec.minZonesPerCluster)",
        message_expression=(
            "'spec.placement: tier ' + params.metadata.name + ' needs replicas in at least '"
            " + string(params.spec.minZonesPerCluster) + ' zones of every cluster; spread each"
            " placement entry over more zones or choose a lower slaTier'"
        ),
        field="spec.placement",
    ),
    TierRule(
        name="fallback-required",
        expression=_FOR_TIER + "!params.spec.fallbackRequired || has(object.spec.fallback)",
        message_expression=(
            "'spec.fallback: tier ' + params.metadata.name + ' requires a fallback model;"
            " add spec.fallback (a smaller model) or choose a tier without that requirement'"
        ),
        field="spec.fallback",
    ),
)


def admission_manifests() -> list[dict[str, Any]]:
    """The ValidatingAdmissionPolicy and its binding that enforce :data:`TIER_RULES` in
    the API server. Pure."""
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "twinhull"}},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": API_VERSION, "kind": "ServingTier"},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": [VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["modeldeployments"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": r.expression,
                    "messageExpression": r.message_expression,
                    "reason": "Invalid",
                }
                for r in TIER_RULES
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "twinhull"}},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "paramRef": {"selector": {}, "parameterNotFoundAction": "Deny"},
        },
    }
    return [policy, binding]
