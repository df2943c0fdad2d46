"""Check objects against the generated CRD schemas with jsonschema. Pure.

The openAPIV3Schema of each CRD is turned into an equivalent JSON Schema: unknown fields
are rejected as the API server does under strict field validation (``kubectl apply``'s
default), ``x-kubernetes-int-or-string`` becomes ``integer | string``, and OpenAPI 3.0's
boolean ``exclusiveMinimum`` the numeric form.
"""

from __future__ import annotations

from functools import cache
from typing import Any, cast

import fastjsonschema
import jsonschema

from twinhull.api import KINDS
from twinhull.api.crd import openapi_schema


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """Translate one structural schema node into JSON Schema. Pure."""
    out: dict[str, Any] = {}
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    elif "type" in node:
        out["type"] = node["type"]
    for key in ("enum", "pattern", "minLength", "maxLength", "minItems", "maxItems",
                "minProperties", "maxProperties", "required"):
        if key in node:
            out[key] = node[key]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if bound in node:
            out[exclusive if node.get(exclusive) else bound] = node[bound]
    if "properties" in node:
        out["properties"] = {k: to_json_schema(v) for k, v in node["properties"].items()}
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if "additionalProperties" in node:
        out["additionalProperties"] = to_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = to_json_schema(node["items"])
    return out


@cache
def _schema_for(kind: str) -> dict[str, Any]:
    schema = to_json_schema(openapi_schema(KINDS[kind]))
    schema["properties"]["metadata"] = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 253,
                     "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
        },
    }
    schema["properties"].pop("status", None)  # status is the operator's; manifests omit it
    schema["properties"]["status"] = {}
    return schema


@cache
def validator_for(kind: str) -> jsonschema.protocols.Validator:
    """The validator that lists every violation with its path (cached). Pure."""
    return jsonschema.Draft7Validator(_schema_for(kind))


@cache
def _fast_check(kind: str) -> Any:
    """The same schema compiled to Python by fastjsonschema: a quick yes/no for the common,
    valid case; jsonschema then explains the invalid ones (cached). Pure."""
    return fastjsonschema.compile(_schema_for(kind))


def schema_errors(kind: str, obj: Any) -> list[tuple[tuple[str | int, ...], str]]:
    """Every schema violation of ``obj`` as (field path, message with the fix). Pure."""
    try:
        _fast_check(kind)(obj)
        return []
    except fastjsonschema.JsonSchemaException:
        pass
    errors = list(validator_for(kind).iter_errors(obj))
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    problems = [
        (_located(e), _explain(e))
        for e in errors
        # a value of the wrong type also fails its enum: say it once
        if not (e.validator == "enum" and tuple(e.absolute_path) in mistyped)
    ]
    return sorted(problems, key=lambda p: [str(x) for x in p[0]])


def _located(error: jsonschema.ValidationError) -> tuple[str | int, ...]:
    """The path of the field an error is about (for a missing field: the field itself)."""
    path = tuple(error.absolute_path)
    if error.validator == "required":
        required: list[str] = list(cast(list[str], error.validator_value))
        instance = cast(dict[str, Any], error.instance)
        missing = [f for f in required if f not in instance]
        if missing:
            return (*path, missing[0])
    return path


def _explain(error: jsonschema.ValidationError) -> str:
    """A schema error in words, saying how to fix it."""
    v = error.validator
    if v == "additionalProperties":
        declared = set(cast(dict[str, Any], error.schema).get("properties", {}))
        extra = sorted(set(cast(dict[str, Any], error.instance)) - declared)
        known = ", ".join(sorted(declared))
        return (f"unknown field {', '.join(repr(e) for e in extra)}; "
                f"check the spelling (known fields: {known})")
    if v == "required":
        return f"required field {_located(error)[-1]!r} is missing; add it"
    if v == "enum":
        allowed = ", ".join(map(str, cast(list[Any], error.validator_value)))
        hint = " (quote it: bare Off is a YAML boolean)" if isinstance(error.instance, bool) else ""
        return f"{error.instance!r} is not allowed; use one of {allowed}{hint}"
    if v == "type":
        want = error.validator_value
        want_s = " or ".join(want) if isinstance(want, list) else want
        hint = " (quote it: bare Off is a YAML boolean)" if error.instance is False else ""
        return f"{error.instance!r} is not of type {want_s}{hint}"
    if v == "pattern":
        return (f"{error.instance!r} is not a valid name: use lower-case letters, digits and "
                "'-', starting and ending with a letter or digit")
    return error.message
