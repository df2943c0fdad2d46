"""Generate CustomResourceDefinitions from the API models. Pure: no I/O.

pydantic's JSON Schema is turned into a Kubernetes *structural* openAPIV3Schema: every
``$ref`` inlined, ``Optional`` unwrapped, ``int | str`` quantities marked
``x-kubernetes-int-or-string``, JSON-Schema-2020 bounds translated to OpenAPI 3.0, titles
dropped and ``x-kubernetes-*`` extensions (CEL rules, list types) kept where the models
put them.
"""

from __future__ import annotations

from typing import Any

from twinhull.api.base import GROUP, VERSION, Resource

_DROP = {"title", "additionalProperties", "$defs", "discriminator"}


def _prose(text: str) -> str:
    """A docstring as one line for ``kubectl explain``: no reST double backquotes."""
    return " ".join(text.replace("``", "`").split())


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Replace a ``$ref`` node by its definition, keeping the node's own keywords."""
    while "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        rest = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **rest}
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Translate one pydantic JSON Schema node into a structural schema node."""
    node = _resolve(node, defs)
    extras = {k: v for k, v in node.items() if k.startswith("x-kubernetes-")}
    if "anyOf" in node:
        branches = [_resolve(b, defs) for b in node["anyOf"]]
        non_null = [b for b in branches if b.get("type") != "null"]
        types = sorted(b.get("type", "") for b in non_null)
        if types == ["integer", "string"]:
            out: dict[str, Any] = {"x-kubernetes-int-or-string": True}
        elif len(non_null) == 1:
            out = _structural({**non_null[0], **{k: v for k, v in node.items() if k != "anyOf"}},
                              defs)
            return out
        else:
            raise ValueError(f"cannot express anyOf {types} in a structural schema")
    elif "const" in node:
        out = {"type": "string", "enum": [node["const"]]}
    elif "enum" in node:
        out = {"type": node.get("type", "string"), "enum": list(node["enum"])}
    else:
        out = {"type": node["type"]}
        kind = node["type"]
        if kind == "object":
            props = node.get("properties")
            if props:
                out["properties"] = {k: _structural(v, defs) for k, v in props.items()}
                required = node.get("required")
                if required:
                    out["required"] = list(required)
            additional = node.get("additionalProperties")
            patterns = node.get("patternProperties")
            if patterns:  # key patterns are not structural: CEL rules check map keys
                (additional,) = patterns.values()
            if isinstance(additional, dict):
                out["additionalProperties"] = _structural(additional, defs)
            elif not props and not additional:
                out["x-kubernetes-preserve-unknown-fields"] = True
            for key in ("minProperties", "maxProperties"):
                if key in node:
                    out[key] = node[key]
        elif kind == "array":
            out["items"] = _structural(node["items"], defs)
            for key in ("minItems", "maxItems"):
                if key in node:
                    out[key] = node[key]
        elif kind in ("integer", "number"):
            for key in ("minimum", "maximum"):
                if key in node:
                    out[key] = node[key]
            if "exclusiveMinimum" in node:
                out["minimum"] = node["exclusiveMinimum"]
                out["exclusiveMinimum"] = True
            if "exclusiveMaximum" in node:
                out["maximum"] = node["exclusiveMaximum"]
                out["exclusiveMaximum"] = True
        elif kind == "string":
            for key in ("pattern", "minLength", "maxLength", "format"):
                if key in node:
                    out[key] = node[key]
    if "description" in node:
        out["description"] = _prose(node["description"])
    if "default" in node and node["default"] is not None:
        out["default"] = node["default"]
    out.update(extras)
    return {k: v for k, v in out.items() if k not in _DROP or k == "additionalProperties"}


def openapi_schema(resource: type[Resource]) -> dict[str, Any]:
    """The structural ``openAPIV3Schema`` of one kind. Pure."""
    raw = resource.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    props: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "APIVersion of this object."},
        "kind": {"type": "string", "description": "Kind of this object."},
        "metadata": {"type": "object"},
        "spec": _structural(raw["properties"]["spec"], defs),
    }
    if "status" in raw["properties"]:
        props["status"] = _structural(raw["properties"]["status"], defs)
    schema: dict[str, Any] = {
        "type": "object",
        "description": _prose(resource.__doc__ or ""),
        "required": ["spec"],
        "properties": props,
    }
    rules = getattr(resource, "name_rules", ())
    if rules:  # rules on metadata.name: what every rendered member object name needs
        schema["x-kubernetes-validations"] = list(rules)
    return schema


def crd_manifest(resource: type[Resource]) -> dict[str, Any]:
    """The whole CustomResourceDefinition of one kind. Pure."""
    info = resource.crd
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": openapi_schema(resource)},
    }
    if info.has_status:
        version["subresources"] = {"status": {}}
    if info.printer_columns:
        version["additionalPrinterColumns"] = [dict(c) for c in info.printer_columns]
    names: dict[str, Any] = {
        "kind": info.kind,
        "listKind": f"{info.kind}List",
        "plural": info.plural,
        "singular": info.singular,
    }
    if info.short_names:
        names["shortNames"] = list(info.short_names)
    if info.categories:
        names["categories"] = list(info.categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": info.name,
            "labels": {"app.kubernetes.io/part-of": "twinhull"},
        },
        "spec": {
            "group": GROUP,
            "names": names,
            "scope": info.scope,
            "versions": [version],
        },
    }


def crd_filename(resource: type[Resource]) -> str:
    """File name of a kind's CRD in ``crds/``. Pure."""
    return f"{GROUP}_{resource.crd.plural}.yaml"
