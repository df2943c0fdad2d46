"""The planner: pure, deterministic functions from (spec, tier, observed health, observed
workloads, metrics, time) to desired state and decisions with reasons.

No I/O: this package may import neither kopf, kubernetes nor any network library; the
import-linter contracts in ``pyproject.toml`` enforce it.
"""
