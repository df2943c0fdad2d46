"""Whether the CRDs installed in a cluster can hold what this version of the code writes.

Helm installs a chart's ``crds/`` folder once and never upgrades it, so after ``helm
upgrade`` a newer operator can run against older CRDs. The API server then prunes every
field the old schema does not declare: a new spec field is dropped on write without an
error, a new status field is never stored. The operator refuses to start in that case
(:func:`missing_fields`), naming the fields and the fix. A CRD that declares *more* than
the code (a newer CRD under an older operator, as after rolling the operator back) is
fine: the old code never writes the new fields. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

UPGRADE_HINT = ("apply this version's CRDs before upgrading: kubectl apply --server-side "
                "--force-conflicts -f charts/twinhull/crds/ (README, Upgrading)")


def _paths(node: Mapping[str, Any], prefix: str) -> Iterator[str]:
    """Every property path a structural schema declares, ``spec.scaling.preWarm``; list
    items as ``[]``; maps (``additionalProperties``) as ``{}``."""
    if node.get("x-kubernetes-preserve-unknown-fields"):
        yield f"{prefix}*"
        return
    for name, child in (node.get("properties") or {}).items():
        path = f"{prefix}{name}"
        yield path
        yield from _paths(child, f"{path}.")
    items = node.get("items")
    if isinstance(items, Mapping):
        yield from _paths(items, f"{prefix}[].")
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        yield from _paths(extra, f"{prefix}{{}}.")


def _covered(path: str, declared: set[str]) -> bool:
    """Whether ``declared`` stores ``path``: declared itself, or under a parent that keeps
    unknown fields."""
    parts = path.split(".")
    return path in declared or any(
        ".".join(parts[:i]) + ".*" in declared for i in range(1, len(parts)))


def _versions(crd: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {v["name"]: v for v in (crd.get("spec") or {}).get("versions") or []
            if isinstance(v, Mapping) and "name" in v}


def _schema(version: Mapping[str, Any]) -> Mapping[str, Any]:
    found: Mapping[str, Any] = (version.get("schema") or {}).get("openAPIV3Schema") or {}
    return found


def missing_fields(expected: Mapping[str, Any], installed: Mapping[str, Any] | None
                   ) -> list[str]:
    """What ``installed`` (a CRD read from the API server, or None when absent) lacks of
    ``expected`` (this code's CRD): the CRD itself, a served version, or fields of a
    version's schema, as readable problems; empty when the installed CRD is current or
    newer. Pure."""
    name = (expected.get("metadata") or {}).get("name", "?")
    if installed is None:
        return [f"{name} is not installed"]
    have = _versions(installed)
    problems = []
    for version_name, version in _versions(expected).items():
        got = have.get(version_name)
        if got is None or not got.get("served", False):
            problems.append(f"{name} does not serve {version_name}")
            continue
        if "status" in (version.get("subresources") or {}) and \
                "status" not in (got.get("subresources") or {}):
            problems.append(f"{name} {version_name} has no status subresource")
        declared = set(_paths(_schema(got), ""))
        lacking = [p for p in _paths(_schema(version), "") if not _covered(p, declared)]
        # name a missing object once, not each of its fields
        tops = [p for p in lacking if not any(p.startswith(f"{q}.") for q in lacking)]
        if tops:
            problems.append(f"{name} {version_name} lacks {', '.join(tops)}")
    return problems


def crd_problems(installed: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the CRDs installed (by name) lack of this code's CRDs, for every kind. Pure."""
    from twinhull.api import RESOURCES
    from twinhull.api.crd import crd_manifest

    problems = []
    for resource in RESOURCES:
        expected = crd_manifest(resource)
        problems += missing_fields(expected, installed.get(expected["metadata"]["name"]))
    return problems


def crd_verdict(installed: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The error to stop on when the installed CRDs are older than this code, naming what
    they lack and the fix; None when they are current (or newer). Pure."""
    problems = crd_problems(installed)
    if not problems:
        return None
    return (f"the installed CRDs are older than this operator: {'; '.join(problems)}. "
            f"The API server would drop these fields without an error. Fix: {UPGRADE_HINT}")
