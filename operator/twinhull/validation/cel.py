"""Evaluate the CRDs' CEL rules and the tier admission rules offline. Pure.

The expressions are the very strings in the generated CRDs and in the
ValidatingAdmissionPolicy; they are evaluated with the ``common-expression-language``
package (a maintained CEL implementation), never re-implemented in Python. Objects are
defaulted first, as the API server does before it runs CEL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import cel

from twinhull.api import KINDS
from twinhull.api.crd import openapi_schema
from twinhull.policy.admission import TIER_RULES, TierRule

FieldPath = tuple[str | int, ...]

_FIELD_PATH_PART = re.compile(r"\.([A-Za-z0-9_]+)|\[(\d+)\]|\['([^']*)'\]")


@cache
def _program(expression: str) -> Any:
    return cel.compile(expression)


def _field_path(field_path: str) -> FieldPath:
    """Parse a CEL rule's ``fieldPath`` (``.a.b[0]``) into path parts. Pure."""
    parts: list[str | int] = []
    for name, index, quoted in _FIELD_PATH_PART.findall(field_path):
        parts.append(int(index) if index else (name or quoted))
    return tuple(parts)


def evaluate(expression: str, activation: dict[str, Any]) -> Any:
    """Evaluate one CEL expression. Raises ``ValueError``/``KeyError``/``TypeError`` from
    the CEL library when the expression cannot be evaluated on this input. Pure."""
    return _program(expression).execute(activation)


_CEL_ERRORS = (KeyError, ValueError, TypeError, RuntimeError)


def evaluate_all(expressions: tuple[str, ...], activation: dict[str, Any]
                 ) -> list[bool | Exception]:
    """Evaluate several boolean expressions on one activation: True, False, or the error
    that stopped one. Pure.

    The activation is converted to CEL values once, in one call of a combined list
    expression; only when that fails are the expressions evaluated one by one to find
    which.
    """
    if not expressions:
        return []
    try:
        values = _program("[" + ", ".join(f"({e})" for e in expressions) + "]").execute(
            activation
        )
        return [v is True for v in values]
    except _CEL_ERRORS:
        pass
    results: list[bool | Exception] = []
    for expression in expressions:
        try:
            results.append(evaluate(expression, activation) is True)
        except _CEL_ERRORS as exc:
            results.append(exc)
    return results


def _has_rules(schema: dict[str, Any]) -> bool:
    """Whether a schema node or any node below it carries CEL rules. Pure."""
    if schema.get("x-kubernetes-validations"):
        return True
    children = list((schema.get("properties") or {}).values())
    children += [schema[k] for k in ("items", "additionalProperties")
                 if isinstance(schema.get(k), dict)]
    return any(_has_rules(c) for c in children)


def _prune(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of a schema keeping only the nodes on the way to CEL rules. Pure."""
    out = {k: v for k, v in schema.items() if k == "x-kubernetes-validations"}
    props = {k: _prune(v) for k, v in (schema.get("properties") or {}).items() if _has_rules(v)}
    if props:
        out["properties"] = props
    for key in ("items", "additionalProperties"):
        child = schema.get(key)
        if isinstance(child, dict) and _has_rules(child):
            out[key] = _prune(child)
    return out


def _walk(value: Any, schema: dict[str, Any], path: FieldPath
          ) -> Iterator[tuple[FieldPath, str]]:
    # transition rules need the stored object (oldSelf); only the API server has it
    entries = [e for e in schema.get("x-kubernetes-validations", ()) if "oldSelf" not in e["rule"]]
    outcomes = evaluate_all(tuple(e["rule"] for e in entries), {"self": value})
    for entry, outcome in zip(entries, outcomes, strict=True):
        if isinstance(outcome, Exception):
            yield path, f"rule {entry['rule']!r} could not be evaluated: {outcome}"
        elif not outcome:
            yield path + _field_path(entry.get("fieldPath", "")), entry["message"]
    if isinstance(value, dict):
        props = schema.get("properties")
        if props:
            for key, child in value.items():
                if key in props:
                    yield from _walk(child, props[key], (*path, key))
        elif isinstance(schema.get("additionalProperties"), dict):
            for key, child in value.items():
                yield from _walk(child, schema["additionalProperties"], (*path, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, child in enumerate(value):
            yield from _walk(child, schema["items"], (*path, index))


@cache
def _spec_schema(kind: str) -> dict[str, Any]:
    return _prune(openapi_schema(KINDS[kind])["properties"]["spec"])


def name_rules(kind: str) -> tuple[dict[str, str], ...]:
    """The CEL rules a kind sets at its schema's root, on ``metadata.name`` (the CRD's
    root ``x-kubernetes-validations``). Pure."""
    rules: tuple[dict[str, str], ...] = getattr(KINDS[kind], "name_rules", ())
    return rules


def crd_rule_errors(kind: str, obj: dict[str, Any]) -> list[tuple[FieldPath, str]]:
    """Violations of the CRD's CEL rules by a defaulted object: its spec's, and the root
    rules on its name. Pure."""
    root = {"self": {"metadata": {"name": (obj.get("metadata") or {}).get("name", "")},
                     "spec": obj.get("spec")}}
    rules = name_rules(kind)
    problems: list[tuple[FieldPath, str]] = []
    for entry, outcome in zip(rules, evaluate_all(tuple(r["rule"] for r in rules), root),
                              strict=True):
        if isinstance(outcome, Exception):
            problems.append(((), f"rule {entry['rule']!r} could not be evaluated: {outcome}"))
        elif not outcome:
            # every root rule is about the name (the API server refuses a fieldPath into
            # metadata, so the CRD cannot say so itself)
            problems.append((("metadata", "name"), entry["message"]))
    return problems + list(_walk(obj.get("spec"), _spec_schema(kind), ("spec",)))


def tier_rule_errors(obj: dict[str, Any], tier: dict[str, Any],
                     rules: tuple[TierRule, ...] = TIER_RULES
                     ) -> list[tuple[FieldPath, str]]:
    """Violations of the admission policy's tier rules by a defaulted ModelDeployment,
    with ``tier`` (a ServingTier object) as ``params``. Pure."""
    activation = {"object": obj, "params": tier}
    problems: list[tuple[FieldPath, str]] = []
    outcomes = evaluate_all(tuple(r.expression for r in rules), activation)
    for tier_rule, outcome in zip(rules, outcomes, strict=True):
        path = tuple(tier_rule.field.split("."))
        if isinstance(outcome, Exception):
            problems.append(
                (path, f"tier rule {tier_rule.name} could not be evaluated: {outcome}")
            )
            continue
        if outcome:
            continue
        try:
            message = str(evaluate(tier_rule.message_expression, activation))
        except _CEL_ERRORS:
            message = f"violates tier rule {tier_rule.name}"
        prefix = tier_rule.field + ": "
        problems.append((path, message.removeprefix(prefix)))
    return problems
