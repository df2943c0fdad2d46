"""The audit record of an automated decision, and its replay. Pure.

Every decision twinhull takes (failover, failback step, traffic shift, scale, capacity
move, snapshot, rollout step, rollback) is recorded once with who or what decided it,
why, the measured inputs and the before and after (the decision's own inputs), and
with what the planner was given to decide it (:class:`Replay`): the deployment's input,
the cluster views and the GPUs the deployments ranked ahead left it, or the revision
planner's input. :func:`explain` runs the same pure planner on that input again and says
whether it reaches the same decision (same id, kind, reason and inputs), or how it
differs, or that the recorded planner version is not this one.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from twinhull.plan.fleet import (
    ClusterView,
    Decision,
    DeploymentInput,
    LedgerState,
    replan,
)
from twinhull.plan.rollout import RevisionInput, plan_revision

Planner = Literal["fleet", "revision"]
FORMAT = 1
"""Version of the record's layout (not of the planner)."""

_DEPLOYMENT = TypeAdapter(DeploymentInput)
_CLUSTERS = TypeAdapter(dict[str, ClusterView])
_LEDGER = TypeAdapter(LedgerState)
_REVISION = TypeAdapter(RevisionInput)


class RecordError(ValueError):
    """A record that cannot be read back (damaged, or written by another format)."""


@dataclass(frozen=True)
class Replay:
    """What a planner was given when it decided."""

    planner: Planner
    now: datetime
    deployment: DeploymentInput | None = None
    clusters: Mapping[str, ClusterView] = field(default_factory=dict)
    basis: LedgerState | None = None
    revision: RevisionInput | None = None


@dataclass(frozen=True)
class AuditRecord:
    """One automated decision, as recorded."""

    id: str
    kind: str
    reason: str
    inputs: Mapping[str, Any]
    object: str
    """``ModelDeployment/NAMESPACE/NAME``."""
    time: str
    """RFC 3339."""
    by: str
    """Who or what decided: the operator replica (and an SRE's approval, if one was used)."""
    version: str
    """The planner's version (twinhull's) that decided."""
    applied: bool = True
    replay: Replay | None = None

    def summary(self) -> dict[str, Any]:
        """The record without its replay input: what a person reads. Pure."""
        return {"format": FORMAT, "id": self.id, "kind": self.kind, "reason": self.reason,
                "inputs": dict(self.inputs), "object": self.object, "time": self.time,
                "by": self.by, "version": self.version, "applied": self.applied}


def record_of(decision: Decision, *, obj: str, time: str, by: str, version: str,
              replay: Replay | None) -> AuditRecord:
    """The record of one decision. Pure."""
    return AuditRecord(id=decision.id, kind=decision.kind, reason=decision.reason,
                       inputs=decision.inputs, object=obj, time=time, by=by, version=version,
                       applied=decision.applied, replay=replay)


def encode_replay(replay: Replay) -> bytes:
    """The replay input as gzip-compressed JSON. Pure."""
    doc: dict[str, Any] = {"format": FORMAT, "planner": replay.planner,
                           "now": replay.now.isoformat()}
    if replay.planner == "fleet":
        assert replay.deployment is not None and replay.basis is not None
        deployment = _DEPLOYMENT.dump_python(replay.deployment, mode="json", by_alias=True)
        deployment["observed"] = [[*slot, r.desired, r.ready]
                                  for slot, r in replay.deployment.observed.items()]
        doc.update(deployment=deployment,
                   clusters=_CLUSTERS.dump_python(dict(replay.clusters), mode="json"),
                   basis=_LEDGER.dump_python(replay.basis, mode="json"))
    else:
        assert replay.revision is not None
        doc["revision"] = _REVISION.dump_python(replay.revision, mode="json", by_alias=True)
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return gzip.compress(raw, mtime=0)


def decode_replay(data: bytes) -> Replay:
    """The inverse of :func:`encode_replay`. Raises :class:`RecordError`. Pure."""
    try:
        doc = json.loads(gzip.decompress(data))
        if doc.get("format") != FORMAT:
            raise RecordError(f"replay format {doc.get('format')!r}; this version reads "
                              f"{FORMAT}")
        now = datetime.fromisoformat(doc["now"])
        if doc["planner"] == "fleet":
            raw = dict(doc["deployment"])
            raw["observed"] = {(c, role, z): {"desired": d, "ready": r}
                               for c, role, z, d, r in raw.get("observed") or []}
            return Replay("fleet", now, deployment=_DEPLOYMENT.validate_python(raw),
                          clusters=_CLUSTERS.validate_python(doc["clusters"]),
                          basis=_LEDGER.validate_python(doc["basis"]))
        if doc["planner"] == "revision":
            return Replay("revision", now, revision=_REVISION.validate_python(doc["revision"]))
        raise RecordError(f"unknown planner {doc['planner']!r}")
    except RecordError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, ValidationError) as exc:
        raise RecordError(f"the replay input cannot be read: {exc}"[:500]) from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Explanation:
    """What replaying a record gave."""

    reproduced: bool
    """The planner reached the same decision: same id, kind, reason and inputs."""
    verdict: str
    """One line for a person."""
    replayed: Decision | None = None
    """The replayed decision of the same id, or else of the same kind (None: none)."""
    differences: tuple[str, ...] = ()


def replay_decisions(replay: Replay) -> list[Decision]:
    """Run the recorded planner on the recorded input again; its decisions. Pure."""
    if replay.planner == "fleet":
        assert replay.deployment is not None and replay.basis is not None
        plan = replan(replay.deployment, replay.clusters, replay.basis, now=replay.now)
        return [*plan.decisions, *([plan.pending] if plan.pending is not None else [])]
    assert replay.revision is not None
    return list(plan_revision(replay.revision).decisions)


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def explain(record: AuditRecord, version: str) -> Explanation:
    """Replay ``record`` with this planner (``version``) and compare. Pure."""
    if record.replay is None:
        return Explanation(False, f"decision {record.id} was recorded without its planner "
                                  "input: it cannot be replayed")
    again = replay_decisions(record.replay)
    same = next((d for d in again if d.id == record.id), None)
    other = same or next((d for d in again if d.kind == record.kind), None)
    note = ("" if version == record.version else
            f" (recorded by planner {record.version}, replayed with {version}: a difference "
            "may come from the planner's own change)")
    if other is None:
        kinds = ", ".join(sorted({d.kind for d in again})) or "nothing"
        return Explanation(False, f"the planner does not decide {record.kind} again on the "
                                  f"recorded inputs; it decides {kinds}{note}",
                           differences=(f"kind: {record.kind} -> none",))
    differences = []
    if other.id != record.id:
        differences.append(f"id: {record.id} -> {other.id}")
    if other.reason != record.reason:
        differences.append(f"reason: {record.reason!r} -> {other.reason!r}")
    was, now = _canonical(dict(record.inputs)), _canonical(dict(other.inputs))
    for key in sorted(set(was) | set(now)):
        if was.get(key) != now.get(key):
            differences.append(f"inputs.{key}: {json.dumps(was.get(key))} -> "
                               f"{json.dumps(now.get(key))}")
    if not differences:
        return Explanation(True, f"reproduced: the {record.replay.planner} planner decides "
                                 f"{record.kind} {record.id} again on the recorded inputs"
                                 f"{note}", other)
    return Explanation(False, f"not reproduced: the {record.replay.planner} planner decides "
                              f"{other.kind} differently on the recorded inputs{note}", other,
                       tuple(differences))
