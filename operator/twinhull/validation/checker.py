"""Check manifests offline: CRD schema, CRD CEL rules, tier rules, and the references
between ModelDeployments and ServingClusters given together. Pure: works on parsed
documents (see :mod:`twinhull.validation.documents` for reading files)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

import pydantic

from twinhull.api import GROUP, KINDS, VERSION, ModelDeploymentSpec
from twinhull.plan.fleet import baseline_gpus
from twinhull.policy.tiers import TierPolicy
from twinhull.validation.cel import FieldPath, crd_rule_errors, tier_rule_errors
from twinhull.validation.documents import Document
from twinhull.validation.schema import schema_errors

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One problem with one object, located to a file line and a field."""

    file: str
    line: int
    kind: str
    name: str
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        prefix = "warning: " if self.severity == "warning" else ""
        where = f"{self.file}:{self.line}: {self.kind}/{self.name}: {self.path}"
        return f"{where}: {prefix}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        """JSON form for ``--output json``. Pure."""
        return asdict(self)


@dataclass(frozen=True)
class Report:
    """Outcome of a validation run."""

    problems: tuple[Problem, ...]
    checked: int
    """twinhull objects checked."""
    passed_through: int
    """Objects of other kinds, passed through unchecked."""

    @property
    def ok(self) -> bool:
        """True when no problem is an error. Pure."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def clean(self) -> bool:
        """True when there is no problem at all, warnings included. Pure."""
        return not self.problems


@dataclass(frozen=True)
class _Item:
    doc: Document
    base: FieldPath  # where the object sits in its document (``items.3`` in a List)
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind"))

    @property
    def name(self) -> str:
        meta = self.obj.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return str(name) if name else "(unnamed)"

    def problem(self, path: FieldPath, message: str, severity: Severity = "error") -> Problem:
        return Problem(
            file=self.doc.file,
            line=self.doc.line_of(self.base + path),
            kind=self.kind,
            name=self.name,
            path=_dotted(path),
            message=message,
            severity=severity,
        )


def _dotted(path: FieldPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(object)"


def _objects(documents: Iterable[Document]) -> Iterator[_Item | Problem]:
    for doc in documents:
        if isinstance(doc.data, dict) and isinstance(doc.data.get("items"), list) and str(
            doc.data.get("kind", "")
        ).endswith("List"):
            for i, obj in enumerate(doc.data["items"]):
                if isinstance(obj, dict):
                    yield _Item(doc, ("items", i), obj)
            continue
        if not isinstance(doc.data, dict):
            yield Problem(doc.file, doc.line, "?", "(unnamed)", "(document)",
                          "a Kubernetes manifest must be a mapping with apiVersion and kind")
            continue
        yield _Item(doc, (), doc.data)


def _is_twinhull(obj: dict[str, Any]) -> bool:
    api_version = obj.get("apiVersion")
    return isinstance(api_version, str) and api_version.split("/")[0] == GROUP


def _defaulted(item: _Item) -> dict[str, Any] | list[Problem]:
    """The object with the CRD defaults applied, or why it cannot be built."""
    try:
        model = KINDS[item.kind].model_validate(item.obj)
    except pydantic.ValidationError as exc:
        return [item.problem(tuple(e["loc"]), e["msg"]) for e in exc.errors()]
    dumped: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return dumped


def _check_one(item: _Item, policy: TierPolicy, tiers: dict[str, dict[str, Any]]
               ) -> tuple[list[Problem], dict[str, Any] | None]:
    api_version = item.obj.get("apiVersion")
    if api_version != f"{GROUP}/{VERSION}":
        return [item.problem(("apiVersion",), f"{api_version!r} is not served; use "
                             f"{GROUP}/{VERSION}")], None
    if item.kind not in KINDS:
        return [item.problem(("kind",), f"unknown kind {item.kind!r} in {GROUP}; use one of "
                             f"{', '.join(sorted(KINDS))}")], None
    problems = [item.problem(p, m) for p, m in schema_errors(item.kind, item.obj)]
    if problems:
        return problems, None
    defaulted = _defaulted(item)
    if isinstance(defaulted, list):
        return defaulted, None
    problems = [item.problem(p, m) for p, m in crd_rule_errors(item.kind, defaulted)]
    if item.kind == "ModelDeployment":
        tier_name = defaulted["spec"]["slaTier"]
        tier = tiers.get(tier_name)
        if tier is None:
            problems.append(item.problem(
                ("spec", "slaTier"),
                f"tier {tier_name!r} is not defined by the tier policy ({policy.source}); use "
                f"one of {', '.join(policy.names())} or add the tier to the policy",
            ))
        else:
            problems += [item.problem(p, m) for p, m in tier_rule_errors(defaulted, tier)]
    return problems, defaulted


def _check_references(deployments: list[tuple[_Item, dict[str, Any]]],
                      clusters: dict[str, tuple[_Item, dict[str, Any]]]) -> Iterator[Problem]:
    """Placements against the ServingClusters among the inputs: known clusters and zones,
    and GPUs declared within each cluster's capacity."""
    if not clusters:
        return
    gpus: dict[str, int] = {}
    for _, md in deployments:
        for cluster_name, used in baseline_gpus(ModelDeploymentSpec.model_validate(
                md["spec"])).items():
            gpus[cluster_name] = gpus.get(cluster_name, 0) + used
    for name, (item, sc) in sorted(clusters.items()):
        capacity = sc["spec"]["capacity"]["gpus"]
        if gpus.get(name, 0) > capacity:
            yield item.problem(
                ("spec", "capacity", "gpus"),
                f"the ModelDeployments given declare {gpus[name]} GPUs here (primary and warm "
                f"fallback replicas) but capacity is {capacity}; raise it or lower replicas",
                severity="warning",
            )
    for item, md in deployments:
        for i, placement in enumerate(md["spec"]["placement"]):
            entry = clusters.get(placement["cluster"])
            if entry is None:
                yield item.problem(
                    ("spec", "placement", i, "cluster"),
                    f"no ServingCluster {placement['cluster']!r} among the inputs (known: "
                    f"{', '.join(sorted(clusters))}); check the name or add its manifest",
                    severity="warning",
                )
                continue
            known = entry[1]["spec"]["zones"]
            for zone in placement["zones"]:
                if zone not in known:
                    yield item.problem(
                        ("spec", "placement", i, "zones", zone),
                        f"cluster {placement['cluster']!r} has no zone {zone!r}; use one of "
                        f"{', '.join(known)}",
                    )


def check_documents(documents: Iterable[Document], policy: TierPolicy) -> Report:
    """Check every twinhull object among ``documents``; pass other kinds through. Pure."""
    problems: list[Problem] = []
    checked = passed = 0
    deployments: list[tuple[_Item, dict[str, Any]]] = []
    clusters: dict[str, tuple[_Item, dict[str, Any]]] = {}
    tiers = {t["metadata"]["name"]: t for t in policy.objects()}
    for entry in _objects(documents):
        if isinstance(entry, Problem):
            problems.append(entry)
            continue
        if not _is_twinhull(entry.obj):
            passed += 1
            continue
        checked += 1
        found, defaulted = _check_one(entry, policy, tiers)
        problems += found
        if defaulted is not None and not found:
            if entry.kind == "ModelDeployment":
                deployments.append((entry, defaulted))
            elif entry.kind == "ServingCluster":
                clusters[entry.name] = (entry, defaulted)
    problems += _check_references(deployments, clusters)
    return Report(problems=tuple(problems), checked=checked, passed_through=passed)
