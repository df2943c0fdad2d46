"""The annotations twinhull reads on a ModelDeployment, as validated models. Pure.

Annotations are written by people and pipelines, not by the API server's schema, so each
is parsed here with a size limit and a strict model. A value that does not parse is
*invalid*: the operator ignores it, says so on that object (a condition and a Warning
Event naming the annotation and the fix) and never raises, so one object's bad annotation
cannot stop any other object.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

ROLLBACK = "serving.twinhull.io/rollback"
"""JSON ``{"id", "to", "by", "at"}`` asking for a rollback (``twinhull rollback`` writes
it; ``to`` empty: the last Good snapshot), or a bare snapshot name."""
APPROVE = "serving.twinhull.io/approve"
"""The id of one pending decision an SRE approves (``status.pending.id``)."""

MAX_BYTES = 4096
"""The largest annotation value read; longer ones are invalid (and never parsed)."""
_DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
_DECISION_ID = re.compile(r"^[0-9a-f]{12}$")


class RollbackAnnotation(BaseModel):
    """The rollback request in :data:`ROLLBACK`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]
    to: Annotated[str, Field(max_length=253, pattern=rf"^$|{_DNS_SUBDOMAIN}")] = ""
    by: Annotated[str, Field(max_length=256)] = ""
    at: Annotated[str, Field(max_length=64)] = ""


@dataclass(frozen=True)
class Annotations:
    """What twinhull takes from a ModelDeployment's annotations: the valid requests, and a
    problem per invalid annotation (annotation name to message)."""

    rollback: RollbackAnnotation | None = None
    approve: str | None = None
    problems: Mapping[str, str] = field(default_factory=dict)


def _rollback(raw: str) -> RollbackAnnotation:
    """Parse :data:`ROLLBACK`. Raises ValueError with a message for the user."""
    if raw.lstrip()[:1] in ("{", "["):  # JSON (a bare snapshot name starts otherwise)
        try:
            data: Any = json.loads(raw)
        except (ValueError, RecursionError) as exc:  # deeply nested JSON: RecursionError
            raise ValueError(f"not valid JSON ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise ValueError("must be a JSON object")
        data = {**data, "to": data.get("to") or ""}
        if "id" not in data or data["id"] in (None, ""):
            raise ValueError('needs "id" (any unique text): twinhull rollback writes one')
    else:  # a bare snapshot name, keyed by itself
        data = {"id": raw[:64], "to": raw}
    try:
        return RollbackAnnotation.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "value"
        raise ValueError(f"{where}: {first['msg']}") from None


def parse(annotations: Mapping[str, Any] | None) -> Annotations:
    """Read and validate the annotations twinhull acts on. Never raises. Pure."""
    if not isinstance(annotations, Mapping):
        return Annotations()
    problems: dict[str, str] = {}
    rollback: RollbackAnnotation | None = None
    approve: str | None = None
    raw = annotations.get(ROLLBACK)
    if raw:
        if not isinstance(raw, str) or len(raw) > MAX_BYTES:
            problems[ROLLBACK] = (f"longer than {MAX_BYTES} bytes; write "
                                  '{"id": "<unique>", "to": "<snapshot>"} or run twinhull '
                                  "rollback")
        else:
            try:
                rollback = _rollback(raw)
            except ValueError as exc:
                problems[ROLLBACK] = (f"{exc}; write {{\"id\": \"<unique>\", \"to\": "
                                      "\"<snapshot name or empty for the last Good>\"} or run "
                                      "twinhull rollback")
    raw = annotations.get(APPROVE)
    if raw:
        text = raw.strip() if isinstance(raw, str) else ""
        if _DECISION_ID.match(text):
            approve = text
        else:
            problems[APPROVE] = ("not a decision id (12 hexadecimal characters); copy the id "
                                 "from status.pending.id or the ApprovalRequired Event")
    return Annotations(rollback=rollback, approve=approve, problems=problems)
