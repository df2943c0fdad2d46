"""The audit record's layout and bounds, and the CLI's reading of it. Pure: no cluster."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import json
import re
from datetime import timedelta
from typing import Any

from test_fleet import T0, cluster, steady
from twinhull.auditcmd import parse_duration, records_in
from twinhull.clusters.kube import ClusterUnavailable, Conflict, NotFound
from twinhull.handlers.audit import (
    KEEP,
    MAX_BYTES,
    configmap_name,
    encoded,
    entries,
    evictions,
    keys_of,
    record,
    record_key,
    retries,
    waiting,
)
from twinhull.handlers.events import event_for
from twinhull.handlers.runtime import Runtime, Settings
from twinhull.plan.fleet import plan_fleet
from twinhull.plan.record import Replay, decode_replay, explain, record_of
from twinhull.policy import load_file


def failover_record():
    d, _ = steady()
    clusters = {"east": cluster("east"), "west": cluster("west", "Down")}
    plan = plan_fleet([d], clusters, now=T0)[(d.namespace, d.name)]
    decision = next(x for x in plan.decisions if x.kind == "Failover")
    return record_of(decision, obj=f"ModelDeployment/{d.namespace}/{d.name}",
                     time=T0.isoformat(), by="replica-1 (twinhull 0.2.0)", version="0.2.0",
                     replay=Replay("fleet", T0, deployment=d, clusters=clusters,
                                   basis=plan.basis))


def test_a_record_written_to_the_configmap_reads_back_and_replays():
    record = failover_record()
    data, binary = entries([record])
    key = record_key(record)
    assert key.startswith(f"{int(T0.timestamp() * 1000):013d}.") and key.endswith(record.id)
    cm = {"metadata": {"name": configmap_name("ai-platform", "ide-assistant")},
          "data": data, "binaryData": binary}
    ((k, summary, raw),) = list(records_in(cm))
    assert k == key and summary["kind"] == "Failover" and summary["by"].startswith("replica-1")
    assert "west" in json.dumps(summary["inputs"])
    assert raw is not None
    replayed = explain(record.__class__(**{**record.__dict__, "replay": decode_replay(raw)}),
                       "0.2.0")
    assert replayed.reproduced
    assert set(keys_of(cm)) == {key}


def test_a_damaged_entry_is_skipped_and_the_others_read(capsys):
    record = failover_record()
    data, binary = entries([record])
    data["0000000000001.broken.json"] = "{not json"
    cm = {"metadata": {"name": "twinhull-audit-x"}, "data": data, "binaryData": binary}
    assert [k for k, _, _ in records_in(cm)] == [record_key(record)]
    assert "record 0000000000001.broken is damaged" in capsys.readouterr().err


def test_the_oldest_records_go_past_the_count_or_the_bytes_and_the_newest_stays():
    kept = [(f"{i:013d}.id{i}", 1000) for i in range(KEEP)]
    added = [(f"{KEEP + 1:013d}.new", 1000)]
    assert evictions(kept, added) == ["0000000000000.id0"]
    big = [(f"{i:013d}.id{i}", MAX_BYTES // 4) for i in range(4)]
    assert evictions(big, [("9999999999999.new", 10)]) == ["0000000000000.id0"]
    huge = [("9999999999999.huge", MAX_BYTES * 2)]
    assert evictions([("0000000000001.old", 10)], huge) == ["0000000000001.old"], \
        "the newest record stays even when it alone is over the bound"
    assert evictions([], [("0000000000001.a", 10)]) == []


def test_the_configmap_name_is_valid_and_fixed_length_for_any_deployment():
    names = {configmap_name("ns", "a" * 253), configmap_name("ns", "b"), configmap_name("n", "sb")}
    assert len(names) == 3
    assert all(len(n) == len("twinhull-audit-") + 20 and n.islower() for n in names)


def test_durations():
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("24") is None and parse_duration("1w") is None


def test_a_decision_event_is_an_events_k8s_io_event_with_action_and_reporter():
    body = {"apiVersion": "serving.twinhull.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "ide", "namespace": "ai", "uid": "u1"}}
    e = event_for(body, "Warning", "ErrorRateExceeded", "x" * 2000, time=T0,
                  instance="replica-1", action="Rollback")
    assert e["apiVersion"] == "events.k8s.io/v1" and e["action"] == "Rollback"
    assert e["reason"] == "ErrorRateExceeded" and len(e["note"]) == 1024
    assert e["reportingController"] == "serving.twinhull.io/operator"
    assert e["reportingInstance"] == "replica-1"
    assert e["eventTime"] == "2026-11-25T10:00:00.000000Z"
    assert e["regarding"]["uid"] == "u1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*",
                        e["metadata"]["name"]), "a valid name: events.k8s.io checks it"
    assert e["metadata"]["name"] != event_for(body, "Warning", "R", "m", time=T0,
                                              instance="r")["metadata"]["name"]
    sentence = event_for(body, "Normal", "not camel case", "m", time=T0, instance="r")
    assert sentence["reason"] == "Decision", "reason must be CamelCase"


def test_binary_data_is_base64_of_gzip():
    _, binary = entries([failover_record()])
    (raw,) = binary.values()
    assert base64.b64decode(raw)[:2] == b"\x1f\x8b"


class FlakyHub:
    """The hub's ConfigMap API for the audit record (the ``Kube`` seam): one ConfigMap
    that a create makes (409 when it exists) and merge patches change (404 until it
    exists); the first ``failures`` writes fail as a hub shedding load fails them."""

    name = "hub"

    def __init__(self, failures: int, existing: dict[str, Any] | None = None) -> None:
        self.failures = failures
        self.cm: dict[str, Any] | None = existing
        self.gets = self.creates = self.patches = 0

    @property
    def data(self) -> dict[str, Any]:
        return (self.cm or {}).get("data") or {}

    def _shed(self) -> None:
        if self.failures:
            self.failures -= 1
            raise ClusterUnavailable("hub: writes queued; none free for 30s")

    async def get(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.gets += 1
        if self.cm is None:
            raise NotFound("hub: configmaps/twinhull-audit-x not found")
        return copy.deepcopy(self.cm)

    async def create(self, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self._shed()
        if self.cm is not None:
            raise Conflict('hub: POST configmaps: HTTP 409: configmaps "x" already exists')
        self.creates += 1
        self.cm = {"data": dict(obj.get("data") or {}),
                   "binaryData": dict(obj.get("binaryData") or {})}
        return obj

    async def request(self, method: str, resource: str, *, body: Any = None,
                      **kwargs: Any) -> Any:
        self._shed()
        if self.cm is None:
            raise NotFound("hub: configmaps/twinhull-audit-x not found")
        self.patches += 1
        for field in ("data", "binaryData"):
            for k, v in (body.get(field) or {}).items():
                if v is None:
                    self.cm[field].pop(k, None)
                else:
                    self.cm[field][k] = v
        return {}


def _record(i: int):
    r = failover_record()
    return dataclasses.replace(r, id=f"{r.id[:8]}{i:04d}",
                               time=(T0 + timedelta(seconds=i)).isoformat())


def test_records_whose_write_failed_are_written_with_the_next_round_not_lost():
    hub = FlakyHub(failures=2)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    key = ("ai", "ide")
    first, second = _record(1), _record(2)
    asyncio.run(record(rt, key, [first]))
    assert [r.id for r in rt.audit_pending[key]] == [first.id] and hub.data == {}
    asyncio.run(record(rt, key, [second]))  # fails again: both wait
    assert [r.id for r in rt.audit_pending[key]] == [first.id, second.id]
    assert retries(rt, busy={key}) == []  # its own write this round takes them along
    (retry,) = retries(rt, busy=set())
    asyncio.run(retry)
    assert rt.audit_pending == {}
    assert sorted(hub.data) == sorted(f"{record_key(r)}.json" for r in (first, second))
    assert rt.telemetry.audit_errors._value.get() == 3  # 1 + 2 records in failed writes
    assert rt.telemetry.audit_records._value.get() == 2
    assert rt.telemetry.audit_dropped._value.get() == 0


def test_at_most_what_the_configmap_keeps_waits_and_the_oldest_are_dropped():
    records = [_record(i) for i in range(KEEP + 3)]
    kept, dropped = waiting([encoded(r) for r in records])
    assert [r.id for r in dropped] == [r.id for r in records[:3]]
    assert [r.id for r in kept] == [r.id for r in records[3:]]
    hub = FlakyHub(failures=1)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    asyncio.run(record(rt, ("ai", "ide"), records))
    assert len(rt.audit_pending[("ai", "ide")]) == KEEP
    assert rt.telemetry.audit_dropped._value.get() == 3


def test_two_failed_writes_of_one_deployment_in_a_round_both_keep_their_records():
    hub = FlakyHub(failures=2)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    key = ("ai", "ide")
    first, second = _record(1), _record(2)

    async def round_() -> None:  # the fleet's and a drill's write, concurrently
        await asyncio.gather(record(rt, key, [second]), record(rt, key, [first]))

    asyncio.run(round_())
    assert [r.id for r in rt.audit_pending[key]] == [first.id, second.id]


def test_at_most_a_rounds_worth_of_deployments_is_retried_oldest_first(monkeypatch):
    import twinhull.handlers.audit as audit_module

    monkeypatch.setattr(audit_module, "RETRIES_PER_ROUND", 2)
    rt = Runtime(hub=FlakyHub(failures=0), policy=load_file(),  # type: ignore[arg-type]
                 settings=Settings())
    for i in (3, 1, 2):
        rt.audit_pending[("ai", f"md{i}")] = [encoded(_record(i))]
    due = retries(rt, busy=set())
    assert len(due) == 2

    async def run_all() -> None:
        await asyncio.gather(*due)

    asyncio.run(run_all())
    assert list(rt.audit_pending) == [("ai", "md3")]  # the newest waits for the next round


def test_a_failed_write_does_not_read_the_configmap_again_before_its_retry():
    """A hub too slow to answer read and write alike: reading the ConfigMap again before
    every retry added a GET per waiting deployment to each round."""

    hub = FlakyHub(failures=2, existing={"data": {}, "binaryData": {}})
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    key = ("ai", "ide")
    asyncio.run(record(rt, key, [_record(0)]))  # the create is shed
    asyncio.run(record(rt, key, [_record(1)]))  # 409, read, the patch is shed
    asyncio.run(record(rt, key, [_record(2)]))  # one patch with all three
    assert hub.gets == 1 and rt.audit_pending == {}
    assert sorted(hub.data) == sorted(f"{record_key(_record(i))}.json" for i in range(3))


def test_a_new_deployments_first_records_create_its_configmap_in_one_request():
    """Reading first (404), creating and patching took three requests per new deployment:
    at 2,000 of them on a slow hub the audit backlog outlived the fleet's convergence."""
    hub = FlakyHub(failures=0)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    key = ("ai", "ide")
    asyncio.run(record(rt, key, [_record(1), _record(2)]))
    assert (hub.gets, hub.creates, hub.patches) == (0, 1, 0)
    assert sorted(hub.data) == sorted(f"{record_key(_record(i))}.json" for i in (1, 2))
    asyncio.run(record(rt, key, [_record(3)]))  # then one patch each
    assert (hub.gets, hub.creates, hub.patches) == (0, 1, 1)
    assert len(hub.data) == 3 and rt.telemetry.audit_records._value.get() == 3


def test_a_configmap_from_before_a_restart_is_read_and_its_oldest_records_evicted():
    old = {"data": {f"{record_key(_record(i))}.json": "{}" for i in range(KEEP)},
           "binaryData": {}}
    hub = FlakyHub(failures=0, existing=old)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    new = _record(KEEP + 1)
    asyncio.run(record(rt, ("ai", "ide"), [new]))
    assert (hub.gets, hub.creates, hub.patches) == (1, 0, 1)  # a 409, a read, a patch
    assert len(hub.data) == KEEP
    assert f"{record_key(_record(0))}.json" not in hub.data  # the oldest went
    assert f"{record_key(new)}.json" in hub.data


def test_a_configmap_deleted_by_hand_is_created_again_with_the_next_records():
    hub = FlakyHub(failures=0)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    key = ("ai", "ide")
    asyncio.run(record(rt, key, [_record(1)]))
    hub.cm = None  # kubectl delete configmap
    asyncio.run(record(rt, key, [_record(2)]))
    assert (hub.gets, hub.creates, hub.patches) == (0, 2, 0)
    assert sorted(hub.data) == [f"{record_key(_record(2))}.json"]
    assert rt.audit[key] == {record_key(_record(2)): encoded(_record(2)).size}


class SlowHub(FlakyHub):
    """A hub whose writes wait until ``go`` is set, counting how many are in flight and
    the queue time each was given."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.go = asyncio.Event()
        self.flying = self.most = 0
        self.queues: list[float] = []

    async def create(self, obj: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        self.queues.append(kwargs["queue_seconds"])
        self.flying += 1
        self.most = max(self.most, self.flying)
        await self.go.wait()
        self.flying -= 1
        self.cm = None  # one ConfigMap per deployment: each creates its own
        return await super().create(obj, **kwargs)


def test_a_rounds_records_take_turns_and_each_is_encoded_at_its_turn(monkeypatch):
    """Encoded as the round reported and written all at once, a member lost at 2,000
    ModelDeployments held 5,200 encoded records until their writes."""
    import twinhull.handlers.audit as audit_module

    made: list[str] = []
    monkeypatch.setattr(audit_module, "encoded",
                        lambda r: made.append(r.id) or encoded(r))
    hub = SlowHub()
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]

    async def round_() -> None:
        gate = asyncio.Semaphore(3)
        writes = asyncio.gather(*(record(rt, ("ai", f"md{i}"), [_record(i)], gate=gate)
                                  for i in range(10)))
        for _ in range(5):
            await asyncio.sleep(0)
        assert hub.flying == 3 and len(made) == 3  # the others are not encoded yet
        hub.go.set()
        await writes

    asyncio.run(round_())
    assert hub.most == 3 and len(made) == 10 and hub.creates == 10
    assert rt.audit_pending == {} and rt.telemetry.audit_records._value.get() == 10
    assert all(0 < q <= 30 for q in hub.queues)


def test_records_without_a_turn_wait_as_they_are_and_go_with_the_next_write(monkeypatch):
    import twinhull.handlers.audit as audit_module

    monkeypatch.setattr(audit_module, "WRITE_QUEUE_SECONDS", 0.05)
    made: list[str] = []
    monkeypatch.setattr(audit_module, "encoded",
                        lambda r: made.append(r.id) or encoded(r))
    hub = FlakyHub(failures=0)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    key = ("ai", "ide")
    first = _record(1)

    async def no_turn() -> None:
        gate = asyncio.Semaphore(1)
        await gate.acquire()  # another deployment's write holds the only place
        await record(rt, key, [first], gate=gate)

    asyncio.run(no_turn())
    assert rt.audit_pending[key] == [first] and made == []  # kept, not encoded
    assert hub.creates == 0 and rt.telemetry.audit_errors._value.get() == 1
    (retry,) = retries(rt, busy=set())
    asyncio.run(retry)
    assert rt.audit_pending == {} and made == [first.id]
    assert sorted(hub.data) == [f"{record_key(first)}.json"]
    # waiting unencoded counts against what the ConfigMap keeps, by number
    many = [_record(i) for i in range(KEEP + 2)]
    kept, dropped = waiting(many)
    assert [r.id for r in dropped] == [r.id for r in many[:2]] and len(kept) == KEEP


def test_a_replaced_rounds_records_wait_unencoded_and_count_as_not_sent(monkeypatch):
    import twinhull.handlers.audit as audit_module
    from twinhull.clusters.kube import WRITE_SCOPE, WriteScope

    made: list[str] = []
    monkeypatch.setattr(audit_module, "encoded",
                        lambda r: made.append(r.id) or encoded(r))
    hub = FlakyHub(failures=0)
    rt = Runtime(hub=hub, policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    scope = WriteScope("the fleet round")
    first = _record(1)

    async def preempted() -> None:
        token = WRITE_SCOPE.set(scope)
        try:
            scope.abandon("west went Down")
            await record(rt, ("ai", "ide"), [first], gate=asyncio.Semaphore(1))
        finally:
            WRITE_SCOPE.reset(token)

    asyncio.run(preempted())
    assert rt.audit_pending[("ai", "ide")] == [first] and made == [] and hub.creates == 0
    assert scope.dropped == 1 and rt.telemetry.audit_errors._value.get() == 1
