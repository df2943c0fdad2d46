"""The SLA tier policy: load and check it, resolve a tier, and its admission rules."""

from twinhull.policy.admission import TIER_RULES, TierRule, admission_manifests
from twinhull.policy.tiers import TierPolicy, load_file, parse_policy, tier_json_schema

__all__ = [
    "TIER_RULES",
    "TierPolicy",
    "TierRule",
    "admission_manifests",
    "load_file",
    "parse_policy",
    "tier_json_schema",
]
