"""Load, check and resolve the SLA tier policy. Pure apart from :func:`load_file`."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from twinhull.api.base import API_VERSION
from twinhull.api.tier import ServingTier, ServingTierSpec
from twinhull.errors import PolicyError, UnknownTierError

DEFAULT_POLICY = "tiers.yaml"
"""Name of the packaged default policy (``twinhull/data/tiers.yaml``)."""


def tier_json_schema() -> dict[str, Any]:
    """The JSON Schema one document of a tier policy file must satisfy. Pure.

    Generated from the ``ServingTier`` model, so the file, the CRD and the operator
    cannot disagree on a field.
    """
    schema = ServingTier.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://twinhull.io/schemas/servingtier.json"
    schema["title"] = "twinhull ServingTier (one document of policies/tiers.yaml)"
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}},
    }
    schema["required"] = sorted({"apiVersion", "kind", "metadata", "spec"})
    schema["properties"]["apiVersion"] = {"const": "serving.twinhull.io/v1alpha1"}
    schema["properties"]["kind"] = {"const": "ServingTier"}
    return schema


@dataclass(frozen=True)
class TierPolicy:
    """The tiers by name. A value: build it with :func:`parse_policy`."""

    tiers: dict[str, ServingTierSpec]
    source: str
    """Where the policy came from (file path or ``<packaged>``)."""

    def names(self) -> list[str]:
        """Tier names, highest priority first. Pure."""
        return sorted(self.tiers, key=lambda n: (-self.tiers[n].priority, n))

    def resolve(self, name: str) -> ServingTierSpec:
        """The tier called ``name``; :class:`UnknownTierError` names the known ones. Pure."""
        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(name, self.names()) from None

    def objects(self) -> list[dict[str, Any]]:
        """The tiers as ``ServingTier`` objects, as synced to the hub. Pure."""
        return [
            {
                "apiVersion": API_VERSION,
                "kind": "ServingTier",
                "metadata": {"name": n, "labels": {"app.kubernetes.io/part-of": "twinhull"}},
                "spec": self.tiers[n].model_dump(by_alias=True, exclude_none=True, mode="json"),
            }
            for n in self.names()
        ]


def _path_of(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(document)"


def parse_policy(documents: list[Any], *, source: str) -> TierPolicy:
    """Check policy documents against the schema and build the policy. Pure.

    Raises :class:`PolicyError` naming the document, the field and the fix; nothing is
    returned half-built.
    """
    validator = jsonschema.Draft202012Validator(tier_json_schema())
    tiers: dict[str, ServingTierSpec] = {}
    problems: list[str] = []
    docs = [d for d in documents if d is not None]
    if not docs:
        raise PolicyError(f"{source}: no ServingTier documents; define at least one tier")
    for index, doc in enumerate(docs, start=1):
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            problems += [f"{source}: document {index}: {_path_of(e)}: {e.message}" for e in errors]
            continue
        name = doc["metadata"]["name"]
        spec = ServingTier.model_validate(doc).spec
        if name in tiers:
            problems.append(f"{source}: document {index}: metadata.name: tier {name!r} is "
                            "defined twice; keep one definition")
        if spec.failback.steps != sorted(spec.failback.steps) or spec.failback.steps[-1] != 100:
            problems.append(f"{source}: document {index}: spec.failback.steps: must increase "
                            "and end at 100, e.g. [5, 25, 50, 100]")
        tiers[name] = spec
    if problems:
        raise PolicyError("invalid tier policy:\n" + "\n".join(problems))
    return TierPolicy(tiers=tiers, source=source)


def load_file(path: Path | None = None) -> TierPolicy:
    """Read a tier policy file (the packaged default when ``path`` is None). Effects: reads
    the file. Raises :class:`PolicyError` for an unreadable or invalid file."""
    if path is None:
        text = resources.files("twinhull.data").joinpath(DEFAULT_POLICY).read_text()
        source = "<packaged default tiers>"
    else:
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{source}: cannot read the tier policy: {exc.strerror}") from exc
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise PolicyError(f"{source}: not valid YAML: {exc}") from exc
    flat: list[Any] = []
    for doc in documents:
        if isinstance(doc, dict) and doc.get("kind") in ("List", "ServingTierList"):
            flat += doc.get("items") or []
        else:
            flat.append(doc)
    return parse_policy(flat, source=source)
