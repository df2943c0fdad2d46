"""The durable audit record: every automated decision on a ModelDeployment, kept in one
ConfigMap per deployment in the operator's own namespace (tenants who may edit their
ModelDeployments cannot edit it), bounded, and surviving operator restarts and Event
expiry. ``twinhull audit`` lists it, ``twinhull explain`` replays one record.

Layout of ``twinhull-audit-<hash>`` (labels ``serving.twinhull.io/audit: "true"``,
annotations naming the deployment):

* ``data["<epoch ms>.<decision id>.json"]``: the record a person reads (who, what, why,
  the measured inputs, before and after: :meth:`AuditRecord.summary`);
* ``binaryData["<epoch ms>.<decision id>.replay"]``: the planner's input, gzip-compressed
  JSON (:func:`~twinhull.plan.record.encode_replay`).

Records are added with JSON merge patches (no read before a write); past
:data:`KEEP` records or :data:`MAX_BYTES`, the oldest are removed in the same patch. A
deployment's first records since the replica started create the ConfigMap with them (one
request); only when it exists already (a restarted replica) is it read, then patched.
A write that fails keeps its records in memory (:attr:`Runtime.audit_pending`) and they
are written with the deployment's next records or by :func:`retries` in the next round, so
a hub that sheds writes delays the audit record but does not lose it; at most what the
ConfigMap would keep waits (:data:`KEEP` records, :data:`MAX_BYTES`), and older records
are dropped as the ConfigMap would evict them (counted as ``result="dropped"``). Records
still waiting when the replica stops are lost (their decisions' Events and audit log lines
were emitted). Effects: hub reads and writes (failures are logged, never raised: an audit
write never stops a decision)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from twinhull.clusters.kube import (
    RECORD,
    WRITE_QUEUE_SECONDS,
    WRITE_SCOPE,
    Abandoned,
    ClusterUnavailable,
    Conflict,
    NotFound,
    log_level,
    path,
)
from twinhull.handlers.runtime import Key, Runtime
from twinhull.plan.record import AuditRecord, b64, encode_replay

log = logging.getLogger(__name__)

LABEL = "serving.twinhull.io/audit"
NAMESPACE_ANNOTATION = "serving.twinhull.io/deployment-namespace"
NAME_ANNOTATION = "serving.twinhull.io/deployment-name"
KEEP = 200
"""Records kept per ModelDeployment (the newest)."""
MAX_BYTES = 800_000
"""Bytes kept per ModelDeployment (a ConfigMap holds at most 1 MiB)."""


def configmap_name(namespace: str, name: str) -> str:
    """``twinhull-audit-`` and a hash of NAMESPACE/NAME: a valid name of fixed length
    whatever the deployment's. Pure."""
    digest = hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:20]
    return f"twinhull-audit-{digest}"


def record_key(record: AuditRecord) -> str:
    """``<epoch ms>.<decision id>``: keys sort by time. Pure."""
    millis = int(datetime.fromisoformat(record.time).timestamp() * 1000)
    return f"{millis:013d}.{record.id}"


def entries(records: Sequence[AuditRecord]) -> tuple[dict[str, str], dict[str, str]]:
    """The data and binaryData entries of ``records``. Pure."""
    data: dict[str, str] = {}
    binary: dict[str, str] = {}
    for r in records:
        key = record_key(r)
        data[f"{key}.json"] = json.dumps(r.summary(), sort_keys=True, default=str)
        if r.replay is not None:
            binary[f"{key}.replay"] = b64(encode_replay(r.replay))
    return data, binary


def evictions(kept: Sequence[tuple[str, int]], added: Sequence[tuple[str, int]]
              ) -> list[str]:
    """The oldest record keys to drop so that at most :data:`KEEP` records and
    :data:`MAX_BYTES` remain, from (key, bytes) of what is kept and what is added (the
    newest record always stays). Pure."""
    every = sorted([*kept, *added])
    drop: list[str] = []
    size = sum(n for _, n in every)
    while len(every) > 1 and (len(every) > KEEP or size > MAX_BYTES):
        key, n = every.pop(0)
        drop.append(key)
        size -= n
    return drop


def keys_of(cm: Mapping[str, Any]) -> dict[str, int]:
    """Record key to its bytes in a ConfigMap. Pure."""
    sizes: dict[str, int] = {}
    for field in ("data", "binaryData"):
        for k, v in (cm.get(field) or {}).items():
            key = k.rsplit(".", 1)[0]
            sizes[key] = sizes.get(key, 0) + len(k) + len(str(v))
    return sizes


@dataclass(frozen=True)
class Encoded:
    """One record as it is written: encoded once (the replay is gzip-compressed JSON), so
    a record that waits is not encoded again at every attempt."""

    key: str
    """:func:`record_key`."""
    id: str
    """The decision id."""
    data: dict[str, str]
    binary: dict[str, str]
    size: int
    """Bytes it takes in the ConfigMap (as :func:`keys_of` counts them)."""


def encoded(record: AuditRecord) -> Encoded:
    """``record`` as it is written. Pure."""
    data, binary = entries([record])
    size = sum(keys_of({"data": data, "binaryData": binary}).values())
    return Encoded(record_key(record), record.id, data, binary, size)


Waiting = Encoded | AuditRecord
"""A record waiting for its write: encoded when a write of it failed, as made when it
never had a turn (see :func:`record`)."""


def key_of(record: Waiting) -> str:
    """:func:`record_key`, of a record encoded or not. Pure."""
    return record.key if isinstance(record, Encoded) else record_key(record)


def waiting(records: Sequence[Waiting]) -> tuple[list[Waiting], list[Waiting]]:
    """(kept, dropped): the newest of ``records`` that the ConfigMap would keep, to wait
    for the next write, and the older ones it would have evicted (one not encoded yet
    counts as a record, not by its bytes: those are counted when it is written). Pure."""
    drop = set(evictions([], sorted((key_of(e), e.size if isinstance(e, Encoded) else 0)
                                    for e in records)))
    return ([e for e in records if key_of(e) not in drop],
            [e for e in records if key_of(e) in drop])


AT_ONCE = 16
"""A fleet round writes at most this many deployments' records at a time, each encoded
when its turn comes (:func:`record`'s ``gate``). All at once, as every other write of the
round, a member lost at 2,000 ModelDeployments had the round hold 5,200 encoded records
(their replays' compressed JSON in base64 and their summaries: 12 MiB traced) from its
reporting until their writes, most of which then waited out their queue time behind the
routes and statuses. Encoding them at their turn also spreads their encoding (1.5 s of
the event loop in one piece when they were encoded as the writes started) over them."""


RETRIES_PER_ROUND = 100
"""At most this many deployments' waiting records are retried in one round (those waiting
longest first): a hub that sheds writes is not sent thousands more each round (at 2,000
deployments, retrying all of them every round queued 2,000 writes that failed again)."""


def retries(rt: Runtime, busy: set[Key], gate: asyncio.Semaphore | None = None
            ) -> list[Coroutine[Any, Any, None]]:
    """Writes of the records still waiting for deployments without a write of their own
    this round (``busy`` have one, which takes theirs along), at most
    :data:`RETRIES_PER_ROUND`, oldest first (``gate``: see :func:`record`). Effects: none
    until awaited."""
    # what waits is kept sorted oldest first (see :func:`record`)
    due = sorted((key_of(waits[0]), key) for key, waits in rt.audit_pending.items()
                 if key not in busy)
    return [record(rt, key, [], gate=gate) for _, key in due[:RETRIES_PER_ROUND]]


async def record(rt: Runtime, key: Key, new: Sequence[Waiting], *,
                 gate: asyncio.Semaphore | None = None) -> None:
    """Add ``new`` and the deployment's records still waiting to its audit ConfigMap; when
    the write fails, keep them waiting (see the module).

    With ``gate`` (a fleet round's, :data:`AT_ONCE` places), the write waits for a place
    before it encodes anything, and at most
    :data:`~twinhull.clusters.kube.WRITE_QUEUE_SECONDS` for the place and a write thread
    together, as any write waits for its thread; records that had no place by then wait
    for the next write as they are, not encoded (encoding thousands at that moment would
    hold the event loop, see :data:`AT_ONCE`). Effects: one hub write (the first time,
    when the ConfigMap exists already: a failed create and a read before it)."""
    if gate is None:
        await _record(rt, key, new, WRITE_QUEUE_SECONDS)
        return
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        await asyncio.wait_for(gate.acquire(), WRITE_QUEUE_SECONDS)
    except TimeoutError:
        _unwritten(rt, key, new, f"no turn to write within {WRITE_QUEUE_SECONDS:g}s",
                   logging.WARNING)
        return
    try:
        scope = WRITE_SCOPE.get()
        if scope is not None:  # replaced while it waited: nothing is encoded or sent
            scope.refuse(rt.hub.name)
        await _record(rt, key, new, max(0.0, WRITE_QUEUE_SECONDS - (loop.time() - start)))
    except Abandoned as exc:  # only the refusal above: _record keeps its own failures
        _unwritten(rt, key, new, str(exc), log_level(exc))
    finally:
        gate.release()


def _unwritten(rt: Runtime, key: Key, records: Sequence[Waiting], why: str, level: int
               ) -> None:
    """``records`` were not written (``why``): they wait for the next write, as many as
    the ConfigMap would keep; counted as failed and logged (at ``level``, a warning when
    some are dropped). Effects: memory, counters, a log line."""
    if not records:
        return
    dropped = _keep_waiting(rt, key, records)
    rt.telemetry.audit_errors.inc(len(records))
    log.log(logging.WARNING if dropped else level,
            "%s/%s: cannot write %d audit record(s) (%s), retrying next round%s: %s",
            key[0], key[1], len(records), ", ".join(r.id for r in records),
            f"; dropped the {len(dropped)} oldest ({', '.join(r.id for r in dropped)})"
            if dropped else "", why)


def _keep_waiting(rt: Runtime, key: Key, records: Sequence[Waiting]) -> list[Waiting]:
    """Keep ``records`` (and those already waiting) for the deployment's next write, as
    many as its ConfigMap would keep; the dropped ones. Effects: memory, counters."""
    kept, dropped = waiting(sorted([*rt.audit_pending.pop(key, []), *records], key=key_of))
    if kept:
        rt.audit_pending[key] = kept
    rt.telemetry.audit_dropped.inc(len(dropped))
    return dropped


async def _record(rt: Runtime, key: Key, new: Sequence[Waiting], queue_seconds: float
                  ) -> None:
    """:func:`record` once it may write; ``queue_seconds``: how long its write may wait for
    a write thread."""
    records: list[Encoded] = [r if isinstance(r, Encoded) else encoded(r)
                              for r in (*rt.audit_pending.pop(key, []), *new)]
    if not records:
        return
    namespace = rt.settings.namespace
    cm_name = configmap_name(*key)
    data = {k: v for e in records for k, v in e.data.items()}
    binary = {k: v for e in records for k, v in e.binary.items()}
    added = {e.key: e.size for e in records}
    try:
        sizes = rt.audit.get(key)
        if sizes is None:
            # Unknown since this replica started: most often it does not exist yet (a new
            # deployment), so it is created with the records, one request. Reading first
            # (404), creating and then patching took three: at 2,000 new deployments on a
            # slow hub the reads alone were 200-600 a minute, and the audit backlog still
            # drained a minute after the fleet had converged.
            try:
                rt.audit[key] = await _create(rt, key, data, binary, added, queue_seconds)
            except Conflict:  # it exists (written before this replica started): read it
                sizes = rt.audit[key] = keys_of(await rt.hub.get(
                    "v1", "ConfigMap", cm_name, namespace=namespace))
        if sizes is not None:
            drop = evictions(sorted(sizes.items()), sorted(added.items()))
            patch_data: dict[str, Any] = dict(data)
            patch_binary: dict[str, Any] = dict(binary)
            for k in drop:
                patch_data[f"{k}.json"] = None
                patch_binary[f"{k}.replay"] = None
            try:
                await rt.hub.request(
                    "PATCH", path("v1", "ConfigMap", namespace=namespace, name=cm_name),
                    body={"data": patch_data, "binaryData": patch_binary},
                    content_type="application/merge-patch+json", priority=RECORD,
                    queue_seconds=queue_seconds)
            except NotFound:  # deleted by hand meanwhile: start it again
                rt.audit[key] = await _create(rt, key, data, binary, added, queue_seconds)
            else:
                for k in drop:
                    sizes.pop(k, None)
                sizes.update(added)
        rt.hub_writes += 1
        rt.telemetry.audit_records.inc(len(records))
    except ClusterUnavailable as exc:
        # What the ConfigMap holds stays known: a patch that half-landed (the hub answered
        # too late) is sent again with the same keys, which changes nothing, and the keys
        # it evicted are the oldest, evicted again. Reading it again before each retry
        # sent a hundred GETs a round to a hub too slow to answer them: at 2,000
        # deployments they failed, and so did their records, round after round.
        # another write of this deployment's records in the same round may have failed
        # and left its own waiting: keep both
        _unwritten(rt, key, records, str(exc), log_level(exc))


async def _create(rt: Runtime, key: Key, data: Mapping[str, Any],
                  binary: Mapping[str, Any], added: Mapping[str, int],
                  queue_seconds: float = WRITE_QUEUE_SECONDS) -> dict[str, int]:
    """Create the deployment's ConfigMap with the records (past :data:`KEEP` or
    :data:`MAX_BYTES`, only the newest); what it holds. Raises :class:`Conflict` when it
    exists. Effects: one hub write."""
    first = set(evictions([], sorted(added.items())))

    def kept(entries: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entries.items() if k.rsplit(".", 1)[0] not in first}

    await rt.hub.create({**_configmap(rt.settings.namespace, configmap_name(*key), key),
                         "data": kept(data), "binaryData": kept(binary)}, priority=RECORD,
                        queue_seconds=queue_seconds)
    return {k: n for k, n in added.items() if k not in first}


def _configmap(namespace: str, cm_name: str, key: Key) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": cm_name, "namespace": namespace,
                     "labels": {LABEL: "true",
                                "app.kubernetes.io/managed-by": "twinhull"},
                     "annotations": {NAMESPACE_ANNOTATION: key[0], NAME_ANNOTATION: key[1]}},
    }
