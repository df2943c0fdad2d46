"""Shared building blocks of the twinhull API: model bases, metadata, conditions.

Pure: no I/O. Every twinhull resource is a pydantic model whose JSON form uses the
camelCase field names of the Kubernetes API; the CRDs in ``crds/`` are generated
from these models (see :mod:`twinhull.api.crd`).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "serving.twinhull.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

#: A DNS-1123 label: cluster, zone, tier and object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

Name = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
"""A DNS-1123 label (cluster, zone, tier, model routing key)."""

Quantity = Annotated[
    int | str,
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]
"""A Kubernetes resource quantity such as ``8``, ``500m`` or ``64Gi``."""


class _Wire(BaseModel):
    """camelCase on the wire, unknown fields rejected, immutable once parsed, each field's
    docstring its description in the CRD."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )


class Spec(_Wire):
    """Base of every user-written value."""


class Status(_Wire):
    """Base of status values, written by the operator."""


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(Status):
    """A standard Kubernetes condition (``metav1.Condition``), readable by kstatus,
    ``kubectl wait --for=condition=Ready`` and GitOps health checks."""

    type: Annotated[str, Field(max_length=316)]
    """CamelCase condition type, e.g. ``Ready``."""
    status: ConditionStatus
    """``True``, ``False`` or ``Unknown``."""
    reason: Annotated[str, Field(max_length=1024)] = "Unknown"
    """CamelCase one-word reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """Human-readable detail, including what to do about it."""
    last_transition_time: str | None = None
    """RFC 3339 time of the last change of ``status``."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The ``metadata.generation`` this condition was computed from."""


Conditions = Annotated[
    list[Condition],
    Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]
"""Standard conditions, merged by type."""


class ObjectMeta(BaseModel):
    """The part of ``metadata`` twinhull reads; other metadata fields pass through."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None


class Resource(BaseModel):
    """A whole Kubernetes object of one twinhull kind (apiVersion, kind, metadata, spec,
    status). Subclasses set :attr:`crd` and narrow ``spec`` and ``status``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    crd: ClassVar[CrdInfo]

    api_version: Annotated[str, Field(alias="apiVersion")] = API_VERSION
    kind: str
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)


class CrdInfo(BaseModel):
    """How a resource appears in the API: names, scope, columns, short names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    plural: str
    singular: str
    scope: Literal["Namespaced", "Cluster"]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("twinhull",)
    printer_columns: tuple[dict[str, Any], ...] = ()
    spec_validations: tuple[dict[str, str], ...] = ()
    """CEL rules on ``spec`` as a whole (cross-field), with their messages."""
    has_status: bool = True

    @property
    def name(self) -> str:
        """The CRD's ``metadata.name``."""
        return f"{self.plural}.{GROUP}"


def rule(expression: str, message: str, *, field_path: str | None = None) -> dict[str, str]:
    """One CEL ``x-kubernetes-validations`` entry. Pure."""
    entry = {"rule": expression, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules for a model or field. Pure."""
    return {"x-kubernetes-validations": list(rules)}


def column(name: str, json_path: str, *, type_: str = "string", priority: int = 0,
           description: str = "") -> dict[str, Any]:
    """One ``additionalPrinterColumns`` entry. Pure."""
    entry: dict[str, Any] = {"name": name, "type": type_, "jsonPath": json_path}
    if priority:
        entry["priority"] = priority
    if description:
        entry["description"] = description
    return entry


AGE = column("Age", ".metadata.creationTimestamp", type_="date")
READY = column("Ready", '.status.conditions[?(@.type=="Ready")].status')
