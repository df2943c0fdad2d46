"""The handlers' shell without a cluster: annotation parsing, per-object isolation of the
fleet round, status replacement, approvals applied once, stale views and loads, name
collisions, HTTPRoute drift and loop supervision. The hub is reached through the same seam
the operator uses (the ``Kube`` methods), here a recorder of the calls."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from twinhull.api.annotations import APPROVE, MAX_BYTES, ROLLBACK, parse
from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.clusters.kube import (
    NOTICE,
    TRAFFIC,
    WRITE_SCOPE,
    ClusterUnavailable,
    WriteScope,
)
from twinhull.handlers import fleet, revisions, supervise
from twinhull.handlers.runtime import Runtime, Settings, deployment_spec, now, slim
from twinhull.plan.fleet import ClusterView
from twinhull.plan.scaling import Load
from twinhull.policy import load_file

ROOT = Path(__file__).resolve().parent.parent
API = "serving.twinhull.io/v1alpha1"


class Hub:
    """Records the calls the operator makes on the hub's API (the ``Kube`` seam)."""

    def __init__(self) -> None:
        self.status: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.applied: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.fail_create: ClusterUnavailable | None = None
        self.priorities: dict[str, set[int | None]] = {}

    async def patch_status(self, api_version: str, kind: str, name: str, status: Any, *,
                           namespace: str | None = None, **kw: Any) -> None:
        self.status.setdefault((namespace or "", name), []).append(copy.deepcopy(status))

    async def apply(self, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.priorities.setdefault(obj["kind"], set()).add(kw.get("priority"))
        self.applied.append(copy.deepcopy(obj))
        return obj

    async def create(self, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.priorities.setdefault(obj["kind"], set()).add(kw.get("priority"))
        if obj["kind"] == "Event":
            self.events.append(obj)
            return obj
        if self.fail_create is not None:
            raise self.fail_create
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj
        return obj

    async def get(self, api_version: str, kind: str, name: str, *,
                  namespace: str | None = None) -> dict[str, Any]:
        if (kind, name) not in self.objects:
            raise ClusterUnavailable(f"{name}: HTTP 403: forbidden")
        return self.objects[(kind, name)]

    async def delete(self, *args: Any, **kwargs: Any) -> None:
        return None

    def last_status(self, name: str, namespace: str = "ai") -> dict[str, Any]:
        return self.status[(namespace, name)][-1]

    def events_of(self, name: str) -> list[tuple[str, str]]:
        return [(e["reason"], e["note"]) for e in self.events
                if e["regarding"]["name"] == name]


def example_spec(name: str) -> dict[str, Any]:
    doc = next(yaml.safe_load_all((ROOT / "examples" / f"{name}.yaml").read_text()))
    return dict(doc["spec"])


def body(name: str, spec: dict[str, Any] | None = None, *, annotations: dict[str, Any] | None
         = None, status: Any = None, created: str = "2026-11-01T00:00:00Z") -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "ai", "generation": 1, "uid": f"uid-{name}",
                         "creationTimestamp": created, "annotations": annotations or {}},
            "spec": spec if spec is not None else example_spec("ide-assistant"),
            "status": status if status is not None else {}}


def runtime(*bodies: dict[str, Any], west: str = "Healthy") -> Runtime:
    rt = Runtime(hub=Hub(), policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    rt.started = now() - timedelta(hours=1)
    for name, phase in (("east", "Healthy"), ("west", west)):
        rt.views[name] = ClusterView(name=name, phase=phase,  # type: ignore[arg-type]
                                     zones_ready={f"{name}-a": True, f"{name}-b": True},
                                     gpus=64)
        rt.view_times[name] = now()
    for b in bodies:
        rt.deployments[(b["metadata"]["namespace"], b["metadata"]["name"])] = b
    return rt


def hub(rt: Runtime) -> Hub:
    assert isinstance(rt.hub, Hub)
    return rt.hub


def run(rt: Runtime) -> None:
    asyncio.run(fleet.reconcile(rt))


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


# -- annotations -------------------------------------------------------------------------

@pytest.mark.parametrize("raw, fragment", [
    ("[" * 50000, "longer than"),
    ('{"id": "x", "to": "a"', "not valid JSON"),
    ("[" * 4000, "not valid JSON"),
    ('{"id": "x", "to": ' + "[" * 1500 + "]" * 1500 + "}", "not valid JSON"),
    ('{"to": ["x"], "id": "r1"}', "to"),
    ('{"id": {"a": 1}}', "id"),
    ('{"to": "snap-1"}', "needs \"id\""),
    ('["a"]', "JSON object"),
    ('{"id": "r1", "to": "Not_A_Name"}', "to"),
    ('{"id": "r1", "extra": 1}', "extra"),
])
def test_invalid_rollback_annotations_are_problems_never_exceptions(raw, fragment):
    got = parse({ROLLBACK: raw})
    assert got.rollback is None
    assert fragment in got.problems[ROLLBACK]
    assert "twinhull rollback" in got.problems[ROLLBACK], "the message names the fix"


def test_valid_rollback_annotations():
    got = parse({ROLLBACK: json.dumps({"id": "r1", "to": "ide-7f3c2", "by": "sre@x"})})
    assert got.rollback is not None and got.rollback.to == "ide-7f3c2" and not got.problems
    bare = parse({ROLLBACK: "ide-7f3c2"})
    assert bare.rollback is not None and bare.rollback.id == "ide-7f3c2"
    assert parse({ROLLBACK: '{"id": "r2", "to": ""}'}).rollback.to == ""  # type: ignore[union-attr]


@pytest.mark.parametrize("raw", ["yes", "0123456789abcdef", "ZZZZZZZZZZZZ", "x" * MAX_BYTES])
def test_invalid_approvals_are_problems(raw):
    got = parse({APPROVE: raw})
    assert got.approve is None and "status.pending.id" in got.problems[APPROVE]


def test_annotations_that_are_not_text_or_a_map_are_ignored():
    assert parse(None).problems == {}
    assert parse({APPROVE: 12}).approve is None  # type: ignore[dict-item]
    assert parse({APPROVE: " 0123456789ab "}).approve == "0123456789ab"


# -- per-object isolation ----------------------------------------------------------------

TIME = re.compile(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"')


def good_statuses(rt: Runtime, names: list[str]) -> dict[str, Any]:
    """The last status written per good deployment, without times (they differ per run)."""
    return {name: TIME.sub('"T"', json.dumps(hub(rt).last_status(name), sort_keys=True))
            for name in names}


def test_a_malformed_annotation_is_reported_on_its_object_and_stops_nobody():
    hostile = body("hostile", annotations={ROLLBACK: "[" * 50000, APPROVE: "nope"})
    listy = body("listy", annotations={ROLLBACK: '{"id": "r", "to": ["x"]}'})
    good = body("good", example_spec("aiops-platform"))
    rt = runtime(hostile, listy, good)
    run(rt)
    assert ready(hub(rt).last_status("good"))["status"] in ("True", "False")
    assert ready(hub(rt).last_status("good"))["reason"] != "InvalidAnnotation"
    for name in ("hostile", "listy"):
        cond = ready(hub(rt).last_status(name))
        assert (cond["status"], cond["reason"]) == ("False", "InvalidAnnotation")
        assert ROLLBACK in cond["message"]
        assert ("InvalidAnnotation", cond["message"]) in hub(rt).events_of(name)
    # still planned and routed: an ignored annotation does not stop its own object either
    assert {r["metadata"]["name"] for r in hub(rt).applied} == {"hostile", "listy", "good"}
    events = len(hub(rt).events)
    rt.deployments = {k: {**b, "status": hub(rt).last_status(k[1])}
                      for k, b in rt.deployments.items()}
    run(rt)
    assert len(hub(rt).events) == events, "the same problem is not posted again every round"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=12)
STATUS_KEYS = st.sampled_from(["failover", "traffic", "scaling", "rollout", "pending",
                               "unservedReplicas", "conditions", "decisions", "approvals",
                               "currentSnapshot", "heldBack", "heldBackReason",
                               "rollbackRequest"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(spec=example_spec("code-review"), status={"conditions": 1}, notes={})
@example(spec=example_spec("code-review"), notes={},
         status={"decisions": "x", "failover": {"east": 5}, "traffic": {"east": "x"},
                 "scaling": [], "approvals": {"id": 1}, "rollout": {"target": 5}})
@given(spec=st.one_of(JSON, st.just(example_spec("code-review"))),
       status=st.one_of(JSON, st.dictionaries(STATUS_KEYS, JSON, max_size=6)),
       notes=st.dictionaries(st.sampled_from([ROLLBACK, APPROVE, "other"]),
                             st.one_of(st.text(max_size=40), st.just("[" * 3000)),
                             max_size=3))
def test_garbage_in_one_object_leaves_the_others_plans_unchanged(spec, status, notes):
    names = ["alpha", "omega"]
    good = [body(n, example_spec("aiops-platform" if n == "alpha" else "unit-test-agent"))
            for n in names]
    alone = runtime(*copy.deepcopy(good))
    run(alone)
    garbage = body("garbage", spec if isinstance(spec, dict) else {"x": spec},
                   annotations=notes, status=status)
    garbage["metadata"]["name"] = "mid"
    crowded = runtime(*copy.deepcopy(good), garbage)
    run(crowded)  # never raises
    assert good_statuses(crowded, names) == good_statuses(alone, names)
    assert ready(hub(crowded).last_status("mid"))["type"] == "Ready", "it reports on itself"


def test_a_planner_exception_on_one_object_holds_it_and_backs_off(monkeypatch):
    real = fleet.plan_fleet

    def flaky(inputs, views, *, now):
        if any(d.name == "boom" for d in inputs):
            raise IndexError("list index out of range")
        return real(inputs, views, now=now)

    monkeypatch.setattr(fleet, "plan_fleet", flaky)
    rt = runtime(body("boom"), body("calm", example_spec("aiops-platform")))
    run(rt)
    cond = ready(hub(rt).last_status("boom"))
    assert (cond["status"], cond["reason"]) == ("False", "PlanningFailed")
    assert "IndexError" in cond["message"] and "other objects are not affected" in cond["message"]
    assert ("ai", "boom") in rt.backoff
    assert hub(rt).last_status("calm")["traffic"], "the others are planned and routed"
    assert ("ai", "boom") not in {(r["metadata"]["namespace"], r["metadata"]["name"])
                                  for r in hub(rt).applied}
    writes = len(hub(rt).status[("ai", "boom")])
    run(rt)  # inside its backoff: not planned, nothing written
    assert len(hub(rt).status[("ai", "boom")]) == writes
    monkeypatch.setattr(fleet, "plan_fleet", real)
    rt.backoff[("ai", "boom")] = (1, now() - timedelta(seconds=1))
    run(rt)
    assert ("ai", "boom") not in rt.backoff, "a good round clears the backoff"
    assert ready(hub(rt).last_status("boom"))["reason"] != "PlanningFailed"


def test_a_long_round_lets_the_loop_run_and_plans_off_it(monkeypatch):
    """A round over many deployments gives the event loop back between them (the member
    probes share it), and the fleet planner runs on another thread; a view that moves
    while the round yields does not change what the round writes about that round."""
    monkeypatch.setattr(fleet, "YIELD_SECONDS", 0.0)  # yield after every deployment
    real, threads = fleet.plan_fleet, set()

    def planner(inputs, views, *, now):
        threads.add(threading.get_ident())
        return real(inputs, views, now=now)

    monkeypatch.setattr(fleet, "plan_fleet", planner)
    names = [f"md{i}" for i in range(20)]
    rt = runtime(*(body(n, example_spec("aiops-platform")) for n in names))
    ticks = 0

    async def round_beside_a_probe() -> None:
        nonlocal ticks
        done = asyncio.Event()

        async def probe() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                if ticks == 3:  # a member turns Suspect mid-round
                    rt.views["west"] = replace(rt.views["west"], phase="Suspect")
                await asyncio.sleep(0)

        task = asyncio.create_task(probe())
        await asyncio.sleep(0)
        await fleet.reconcile(rt)
        done.set()
        await task

    asyncio.run(round_beside_a_probe())
    assert ticks >= 4 * len(names), "the loop ran between the deployments of each stage"
    assert threads and threading.get_ident() not in threads, "planned on another thread"
    # the round planned with west Healthy; every status it wrote says so, none mixes
    for n in names:
        west = next(c for c in hub(rt).last_status(n)["clusters"] if c["name"] == "west")
        assert west["phase"] == "Healthy"


def test_routes_are_written_while_the_round_still_reports(monkeypatch):
    """Traffic does not wait for the round's reporting (statuses, decisions, audit
    records): the first routes are sent before the last deployment is reported."""
    monkeypatch.setattr(fleet, "YIELD_SECONDS", 0.0)
    reported: list[str] = []
    real_report = fleet._report

    def report(rt, rnd, d, *a, **kw):
        reported.append(d.name)
        return real_report(rt, rnd, d, *a, **kw)

    monkeypatch.setattr(fleet, "_report", report)
    at_route: list[int] = []
    real_apply = Hub.apply

    async def apply(self, obj, **kw):
        at_route.append(len(reported))
        return await real_apply(self, obj, **kw)

    monkeypatch.setattr(Hub, "apply", apply)
    names = [f"md{i}" for i in range(10)]
    run(runtime(*(body(n, example_spec("aiops-platform")) for n in names)))
    assert len(at_route) == len(names) and len(reported) == len(names)
    assert min(at_route) < len(names) // 2, at_route


def test_a_round_preempted_while_it_plans_publishes_and_writes_nothing(monkeypatch):
    """A member going Down mid-round (``rt.preempt``) stops the round before it publishes
    member objects, announces a decision or writes the hub; the next round starts at once
    and does all of it with the member Down."""
    monkeypatch.setattr(fleet, "YIELD_SECONDS", 0.0)
    names = [f"md{i}" for i in range(10)]
    rt = runtime(*(body(n, example_spec("aiops-platform")) for n in names))

    async def round_with_a_member_lost() -> None:
        async def probe() -> None:
            for _ in range(3):
                await asyncio.sleep(0)
            assert rt.round_scope is not None, "a round runs"
            rt.views["west"] = replace(rt.views["west"], phase="Down")
            rt.preempt("cluster west went Down")

        task = asyncio.create_task(probe())
        await fleet.reconcile(rt)
        await task

    asyncio.run(round_with_a_member_lost())
    assert not hub(rt).status and not hub(rt).applied and not hub(rt).events
    assert not rt.unrecorded, "nothing announced"
    assert rt.wake.is_set() and rt.round_scope is None
    assert rt.telemetry.preempted._value.get() == 1
    run(rt)
    for n in names:
        west = next(c for c in hub(rt).last_status(n)["clusters"] if c["name"] == "west")
        assert (west["phase"], west["weight"]) == ("Down", 0)


def test_every_hub_write_of_a_round_carries_its_scope(monkeypatch):
    """The round's writes (statuses, routes, Events, snapshots, audit records) run under
    its WriteScope, which ``rt.preempt`` abandons; writes made outside a round carry
    none."""
    seen: list[Any] = []
    for method in ("patch_status", "apply", "create", "request", "delete"):
        real = getattr(Hub, method, None)
        if real is None:
            continue

        def recording(self, *a, _real=real, **kw):
            seen.append(WRITE_SCOPE.get())
            return _real(self, *a, **kw)

        monkeypatch.setattr(Hub, method, recording)
    rt = runtime(body("ide"), body("ops", example_spec("aiops-platform")))
    run(rt)
    assert len(seen) > 4 and all(isinstance(s, WriteScope) for s in seen)
    assert len({id(s) for s in seen}) == 1 and rt.round_scope is None
    assert WRITE_SCOPE.get() is None


# -- status is replaced, not merged ------------------------------------------------------

def test_removed_keys_are_deleted_from_status():
    spec = example_spec("aiops-platform")
    spec["slaTier"] = "best-effort"
    spec["placement"] = [p for p in spec["placement"] if p["cluster"] == "east"]
    old = {"traffic": {"east": 50, "west": 50, "fallback": 0},
           "failover": {"west": {"state": "FailedOver", "since": "2026-11-01T00:00:00Z"},
                        "east": {"state": "Serving"}},
           "scaling": {"demandByZone": {"west/west-a": "1.0"}}}
    rt = runtime(body("solo", spec, status=old))
    run(rt)
    patch = hub(rt).last_status("solo")
    assert patch["traffic"]["west"] is None and patch["failover"]["west"] is None
    stored = fleet.merge_patch(old, patch)
    assert set(stored["traffic"]) == {"east", "fallback"} or set(stored["traffic"]) == {"east"}
    assert sum(stored["traffic"].values()) == 100
    assert "west" not in stored["failover"]


def test_replacing_and_merge_patch_round_trip():
    old = {"traffic": {"a": 1, "b": 2}, "other": {"x": 1}, "scaling": {"z": {"q": 1}}}
    new = {"traffic": {"a": 3}, "other": {"y": 2}}
    patch = fleet.replacing(new, old, ("traffic", "scaling"))
    assert patch == {"traffic": {"a": 3, "b": None}, "other": {"y": 2}, "scaling": None}
    assert fleet.merge_patch(old, patch) == {"traffic": {"a": 3}, "other": {"x": 1, "y": 2}}


# -- approvals ---------------------------------------------------------------------------

def test_an_approval_applies_once_and_is_recorded():
    spec = example_spec("aiops-platform")
    spec["traffic"] = {"failover": "Manual"}
    rt = runtime(body("manual", spec), west="Down")
    run(rt)
    pending = hub(rt).last_status("manual")["pending"]
    assert pending and pending["kind"] == "Failover"
    approved = body("manual", spec, annotations={APPROVE: pending["id"]},
                    status=hub(rt).last_status("manual"))
    rt.deployments[("ai", "manual")] = approved
    run(rt)
    status = fleet.merge_patch(approved["status"], hub(rt).last_status("manual"))
    assert [a["id"] for a in status["approvals"]] == [pending["id"]]
    assert status["failover"]["west"]["state"] == "FailedOver"


# -- stale views and loads ---------------------------------------------------------------

def test_a_view_older_than_its_probe_bound_is_suspect_never_healthy():
    rt = runtime()
    rt.view_times["west"] = now() - timedelta(minutes=10)
    views = fleet.current_views(rt, now())
    assert views["west"].phase == "Suspect" and views["east"].phase == "Healthy"
    del rt.view_times["east"]
    assert fleet.current_views(rt, now())["east"].phase == "Suspect"
    rt.views["west"] = ClusterView("west", "Down", {}, 64)
    assert fleet.current_views(rt, now())["west"].phase == "Down"


def test_loads_older_than_their_bound_are_missing():
    rt = Runtime(hub=Hub(), policy=load_file(),  # type: ignore[arg-type]
                 settings=Settings(prometheus_url="http://127.0.0.1:9"))
    rt.loads = {("ai", "x"): Load(tokens_per_second=10.0)}
    rt.loads_time = now()
    assert fleet.current_loads(rt, now())[0]
    rt.loads_time = now() - timedelta(minutes=5)
    loads, why = fleet.current_loads(rt, now())
    assert loads == {} and "old" in why
    rt.loads_time = None
    assert fleet.current_loads(rt, now())[0] == {}



def test_a_pre_warm_miss_is_kept_in_status_and_stands_the_next_forecast_down():
    rt = runtime(body("ide", example_spec("ide-assistant")))  # 4 zones, 2,500 tokens/s each
    rt.settings = replace(rt.settings, prometheus_url="http://127.0.0.1:9")
    # the earlier days' peak (40k tokens/s) has not come: 3k did
    rt.loads = {("ai", "ide"): Load(tokens_per_second=3_000, tokens_per_second_peak=3_000,
                                    forecast_tokens_per_second=40_000,
                                    forecast_said_tokens_per_second=40_000)}
    rt.loads_time = now()
    run(rt)
    status = hub(rt).last_status("ide")
    assert fleet.parse_time(status["scaling"]["forecastMissedAt"]) is not None
    assert status["scaling"]["replicas"] == 4
    # ten minutes later (confirmed), the windows forecast the next peak, right so far
    missed = fleet.rfc3339(now() - timedelta(minutes=10))
    status["scaling"]["forecastMissedAt"] = missed
    rt.deployments[("ai", "ide")] = body("ide", example_spec("ide-assistant"), status=status)
    rt.loads = {("ai", "ide"): Load(tokens_per_second=3_000, tokens_per_second_peak=3_000,
                                    forecast_tokens_per_second=40_000,
                                    forecast_said_tokens_per_second=3_000)}
    rt.loads_time = now()
    run(rt)
    again = fleet.merge_patch(status, hub(rt).last_status("ide"))
    assert again["scaling"]["replicas"] == 4  # not pre-warmed to 12
    assert again["scaling"]["forecastMissedAt"] == missed
    # a stored time that is not one is ignored: pre-warm acts
    for garbage in ("yesterday", 12, {"a": 1}):
        rt.deployments[("ai", "ide")] = body("ide", example_spec("ide-assistant"),
                                             status={**status, "scaling": {
                                                 **status["scaling"],
                                                 "forecastMissedAt": garbage}})
        run(rt)
        fresh = fleet.merge_patch(status, hub(rt).last_status("ide"))
        assert fresh["scaling"]["replicas"] == 8, garbage  # 4 -> 12, limited to double
        assert "forecastMissedAt" not in fresh["scaling"]


# -- names -------------------------------------------------------------------------------

def test_colliding_member_names_hold_the_newer_deployment():
    with_fallback = example_spec("ide-assistant")  # has a fallback
    plain = example_spec("ide-assistant")
    plain.pop("fallback", None)
    plain["slaTier"] = "best-effort"
    older = body("llama", with_fallback, created="2026-01-01T00:00:00Z")
    newer = body("llama-fallback", plain, created="2026-02-01T00:00:00Z")
    rt = runtime(older, newer)
    run(rt)
    cond = ready(hub(rt).last_status("llama-fallback"))
    assert (cond["status"], cond["reason"]) == ("False", "NameCollision")
    assert "llama" in cond["message"] and "rename" in cond["message"]
    assert ready(hub(rt).last_status("llama"))["reason"] != "NameCollision"


def test_zone_prefixes_collide_too():
    a = example_spec("unit-test-agent")
    b = copy.deepcopy(a)
    a["placement"] = [{"cluster": "east", "zones": {"b-east": 1}}]
    b["placement"] = [{"cluster": "east", "zones": {"east": 1}}]
    from twinhull.api.deployment import ModelDeploymentSpec
    from twinhull.plan.render import collisions, rendered_names
    got = collisions(
        {("ai", "a"): rendered_names("a", ModelDeploymentSpec.model_validate(a)),
         ("ai", "a-b"): rendered_names("a-b", ModelDeploymentSpec.model_validate(b))},
        {("ai", "a"): "2026-01-01T00:00:00Z", ("ai", "a-b"): "2026-01-02T00:00:00Z"})
    assert list(got) == [("ai", "a-b")]


# -- snapshots ---------------------------------------------------------------------------

def snapshot_manifest(digest: str) -> dict[str, Any]:
    return {"apiVersion": API, "kind": "ModelSnapshot",
            "metadata": {"name": "x-1", "namespace": "team-409"},
            "spec": {"hash": digest, "deploymentRef": {"name": "x"}}}


def _snapshot_body(deployment: Any) -> dict[str, Any]:
    return {"metadata": {"name": "ide-0123", "namespace": "ai",
                         "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": {"deploymentRef": {"name": "ide"}, "hash": "0123", "generation": 3,
                     "reason": "NewRevision", "deployment": deployment},
            "status": {"outcome": "Good"}}


def test_a_recorded_snapshot_keeps_its_spec_as_json_until_it_is_read():
    # a deployment keeps up to 10 snapshots and a round reads the spec of the one or two
    # it renders: the others are held as JSON, not as validated models (~8x the memory)
    raw = example_spec("ide-assistant")
    snap = revisions.snapshot_of(_snapshot_body(raw))
    assert snap is not None and isinstance(snap.source, str)
    assert json.loads(snap.source) == raw
    assert "spec" not in vars(snap)  # not validated again yet
    assert snap.spec == ModelDeploymentSpec.model_validate(raw)
    assert snap.spec is snap.spec  # validated once
    assert (snap.name, snap.hash, snap.generation, snap.outcome) == ("ide-0123", "0123", 3,
                                                                   "Good")
    # the same revision compares equal however its spec is held
    assert snap == replace(snap, source=ModelDeploymentSpec.model_validate(raw))
    assert replace(snap, outcome="Bad").spec == snap.spec


def test_an_unreadable_snapshot_is_none_at_once_not_when_read():
    raw = example_spec("ide-assistant")
    raw["placement"] = "everywhere"
    assert revisions.snapshot_of(_snapshot_body(raw)) is None


def test_a_refused_snapshot_is_not_taken_for_recorded_because_its_error_says_409():
    rt = runtime()
    hub(rt).fail_create = ClusterUnavailable(
        "hub: POST /apis/serving.twinhull.io/v1alpha1/namespaces/team-409/modelsnapshots: "
        "HTTP 403: forbidden")
    assert asyncio.run(revisions.record(rt, snapshot_manifest("abc"))) is False
    hub(rt).objects[("ModelSnapshot", "x-1")] = snapshot_manifest("other")
    assert asyncio.run(revisions.record(rt, snapshot_manifest("abc"))) is False
    hub(rt).objects[("ModelSnapshot", "x-1")] = snapshot_manifest("abc")
    assert asyncio.run(revisions.record(rt, snapshot_manifest("abc"))) is True


# -- HTTPRoute drift ---------------------------------------------------------------------

def test_a_route_edited_by_hand_is_written_again():
    rt = runtime(body("routed", example_spec("aiops-platform")))
    run(rt)
    assert len(hub(rt).applied) == 1
    rt.deployments[("ai", "routed")]["status"] = hub(rt).last_status("routed")
    run(rt)
    assert len(hub(rt).applied) == 1, "an unchanged route is not written again"
    edited = copy.deepcopy(hub(rt).applied[0])
    edited["spec"]["rules"][0]["backendRefs"][0]["weight"] = 100
    rt.route_live[("ai", "routed")] = fleet.route_projection(edited)
    run(rt)
    assert len(hub(rt).applied) == 2


# -- supervision -------------------------------------------------------------------------

def test_a_dead_loop_is_restarted_with_backoff_and_reported(monkeypatch):
    monkeypatch.setattr(supervise, "BACKOFF_START", 0.01)
    rt = runtime()
    runs: list[int] = []

    async def body_() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise TypeError("a scalar is not a vector")
        supervise.beat(rt, "loads")
        await asyncio.sleep(3600)

    async def main() -> None:
        task = asyncio.create_task(supervise.supervised(rt, "loads", body_))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(runs) >= 3:
                break
        await asyncio.sleep(0.02)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert len(runs) == 3 and rt.restarts["loads"] == 2
    assert "loads" not in rt.loop_errors, "a loop that beats again is healthy"


def test_stale_loops_fail_liveness():
    from twinhull.handlers.operator import loops

    rt = runtime()
    rt.loop_bounds.update({"fleet": 30.0, "member/west": 20.0})
    rt.beats.update({"fleet": now(), "member/west": now() - timedelta(minutes=2)})
    rt.loop_errors["member/west"] = "ConfigException: bad kubeconfig"
    memo = type("Memo", (), {"runtime": rt})()
    import kopf
    with pytest.raises(kopf.PermanentError, match=r"member/west .*ConfigException"):
        loops(memo=memo)
    rt.beats["member/west"] = now()
    assert set(loops(memo=memo)) == {"fleet", "member/west"}


def test_a_stale_watch_echo_of_an_earlier_write_is_not_an_edit():
    from twinhull.handlers.operator import route_event

    rt = runtime(body("echo", example_spec("aiops-platform")))
    run(rt)
    key = ("ai", "echo")
    older = copy.deepcopy(hub(rt).applied[0])
    older["spec"]["rules"][0]["backendRefs"][0]["weight"] = 7
    older["metadata"]["resourceVersion"] = "5"
    rt.route_versions[key] = 9
    memo = type("Memo", (), {"runtime": rt})()
    rt.wake.clear()
    asyncio.run(route_event(event={"type": "MODIFIED"}, body=older, memo=memo))
    assert not rt.wake.is_set() and rt.route_live[key] != fleet.route_projection(older)
    older["metadata"]["resourceVersion"] = "12"  # someone else's later edit
    asyncio.run(route_event(event={"type": "MODIFIED"}, body=older, memo=memo))
    assert rt.wake.is_set() and rt.route_live[key] == fleet.route_projection(older)


# -- GitOps conditions (issue 16) ----------------------------------------------------------

def _conds(*items: tuple[str, str, str]) -> list[Any]:
    from twinhull.plan.fleet import Condition
    return [Condition(t, s, r, f"{t} {r}") for t, s, r in items]  # type: ignore[arg-type]


def _gitops(*items: tuple[str, str, str]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in fleet.with_gitops(_conds(*items))}


SERVING = (("Available", "True", "Serving"), ("Ready", "True", "Serving"),
           ("RolledBack", "False", "RunningSpec"))


@pytest.mark.parametrize("progress, ready, reconciling", [
    (("Progressing", "True", "RollingOut"), ("False", "RollingOut"), ("True", "RollingOut")),
    (("Progressing", "True", "Verifying"), ("False", "Verifying"), ("True", "Verifying")),
    (("Progressing", "True", "RolloutPaused"), ("False", "RolloutPaused"),
     ("True", "RolloutPaused")),
    (("Progressing", "True", "WaitingForApproval"), ("True", "Serving"),
     ("True", "WaitingForApproval")),
    (("Progressing", "False", "Converged"), ("True", "Serving"), ("False", "Reconciled")),
])
def test_a_revision_on_its_way_is_reconciling_and_not_ready(progress, ready, reconciling):
    got = _gitops(*SERVING, progress)
    assert got["Ready"] == ready and got["Reconciling"] == reconciling
    assert got["Stalled"] == ("False", "NotStalled")


def test_a_held_back_or_failed_revision_is_stalled_and_not_ready():
    held = _gitops(("Ready", "True", "Serving"), ("Progressing", "False", "Converged"),
                   ("RolledBack", "True", "ProgressDeadlineExceeded"))
    assert held["Stalled"] == ("True", "ProgressDeadlineExceeded")
    assert held["Ready"] == ("False", "ProgressDeadlineExceeded")
    assert held["Reconciling"] == ("False", "Reconciled")
    failed = _gitops(("Ready", "True", "Serving"), ("Progressing", "False", "RolloutFailed"),
                     ("RolledBack", "False", "RunningSpec"))
    assert failed["Stalled"] == ("True", "RolloutFailed") and failed["Ready"][0] == "False"


@pytest.mark.parametrize("reason", ["InvalidSpec", "UnknownTier", "NameCollision",
                                    "InvalidAnnotation", "PlanningFailed"])
def test_objects_that_cannot_be_acted_on_are_stalled(reason):
    status = fleet._invalid_status(body("x"), reason, "why and the fix")
    got = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert got["Stalled"] == ("True", reason) and got["Ready"] == ("False", reason)


def test_a_steady_round_writes_nothing():
    rt = runtime(body("steady", example_spec("aiops-platform")))
    for _ in range(3):
        run(rt)
    assert len(hub(rt).status[("ai", "steady")]) == 1
    assert len(hub(rt).applied) == 1


def test_a_snapshot_that_cannot_be_rendered_fails_only_its_own_deployment(monkeypatch):
    real = revisions.snapshot_manifest

    def flaky(namespace, deployment, *args):
        if deployment == "boom":
            raise ValueError("cannot render")
        return real(namespace, deployment, *args)

    monkeypatch.setattr(revisions, "snapshot_manifest", flaky)
    rt = runtime(body("boom"), body("calm", example_spec("aiops-platform")))
    run(rt)
    assert ready(hub(rt).last_status("boom"))["reason"] == "PlanningFailed"
    assert hub(rt).last_status("calm")["traffic"]
    assert ("ModelSnapshot", hub(rt).last_status("calm")["currentSnapshot"]) in hub(rt).objects


def test_a_spec_is_validated_again_only_when_it_changed():
    rt = Runtime(hub=Hub(), policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    md = body("ide")
    key = ("ai", "ide")
    first = deployment_spec(rt, key, md)
    assert deployment_spec(rt, key, copy.deepcopy(md)) is first  # equal: the same model
    md["spec"]["placement"][0]["zones"] = {"east-a": 3}
    changed = deployment_spec(rt, key, md)
    assert changed is not first and changed.placement[0].zones == {"east-a": 3}
    md["spec"]["placement"] = "nowhere"
    with pytest.raises(pydantic.ValidationError):
        deployment_spec(rt, key, md)
    with pytest.raises(pydantic.ValidationError):  # an invalid spec is never cached
        deployment_spec(rt, key, md)


def test_member_objects_are_rendered_again_only_when_their_inputs_change():
    rt = Runtime(hub=Hub(), policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    key = ("ai", "ide")
    spec = deployment_spec(rt, key, body("ide"))
    tier = rt.policy.resolve(spec.sla_tier)
    replicas = {("east", "primary", "east-a"): 1, ("west", "primary", "west-a"): 1}
    first = fleet.rendered_objects(rt, key, "east", spec, tier, replicas)
    assert any(o["kind"] == "Deployment" for o in first)
    again = fleet.rendered_objects(rt, key, "east", spec.model_copy(deep=True), tier,
                                   dict(replicas))
    assert again is first  # equal inputs: the same objects
    # another cluster's replicas are not this cluster's input
    other = {**replicas, ("west", "primary", "west-a"): 3}
    assert fleet.rendered_objects(rt, key, "east", spec, tier, other) is first
    more = {**replicas, ("east", "primary", "east-a"): 2}
    grown = fleet.rendered_objects(rt, key, "east", spec, tier, more)
    assert grown is not first
    assert [o["spec"]["replicas"] for o in grown if o["kind"] == "Deployment"] == [2]
    md = body("ide")
    md["spec"]["model"]["image"] = md["spec"]["model"]["image"] + "-next"
    changed = deployment_spec(rt, key, md)
    assert fleet.rendered_objects(rt, key, "east", changed, tier, more) is not grown


def test_status_writes_past_the_rounds_budget_wait_for_the_next_round(monkeypatch):
    monkeypatch.setattr(fleet, "STATUS_WRITES_PER_ROUND", 2)
    names = [f"md{i}" for i in range(5)]
    rt = runtime(*(body(n, example_spec("aiops-platform")) for n in names))
    rt.deployments[("ai", "bad")] = body("bad", {"slaTier": "platinum"})
    run(rt)
    written = set(hub(rt).status)
    assert len(written) == 2 and ("ai", "bad") in written  # the invalid one is urgent
    assert rt.wake.is_set()  # another round at once for those that wait
    for _ in range(3):
        rt.wake.clear()
        run(rt)
    assert {n for _, n in hub(rt).status} == {*names, "bad"}
    assert all(len(v) == 1 for v in hub(rt).status.values())  # each written once
    assert not rt.wake.is_set()
    routes = [o for o in hub(rt).applied if o["kind"] == "HTTPRoute"]
    assert len(routes) == 5  # traffic is not held back by the status budget


def test_events_past_the_rounds_budget_are_dropped_warnings_first_and_counted(monkeypatch):
    monkeypatch.setattr(fleet, "EVENTS_PER_ROUND", 3)
    names = [f"md{i}" for i in range(4)]
    rt = runtime(*(body(n) for n in names))
    run(rt)  # serving in both clusters
    hub(rt).events.clear()
    rt.views["west"] = replace(rt.views["west"], phase="Down")  # Failovers: Warnings
    rt.deployments[("ai", "bad")] = body("bad", annotations={APPROVE: 7})  # and another
    run(rt)
    posted = hub(rt).events
    assert len(posted) == 3
    assert {e["type"] for e in posted} == {"Warning"}
    dropped = rt.telemetry.events_dropped._value.get()  # type: ignore[attr-defined]
    assert dropped >= 4 - 3  # four Failovers at least, three posted
    assert rt.telemetry.events_posted._value.get() == 3  # type: ignore[attr-defined]
    # what the budget drops is only the Event: every decision is in its status
    for n in names:
        assert any(d["kind"] == "Failover" for d in hub(rt).last_status(n)["decisions"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), max_size=40), st.integers(1, 6))
def test_a_round_keeps_only_the_statuses_and_events_its_budget_can_write(urgency, budget):
    # held while the round reports, they are let go as soon as they cannot be among the
    # first of the budget; which ones are written is what one sort at the end picks
    rt = runtime()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fleet, "STATUS_WRITES_PER_ROUND", budget)
        mp.setattr(fleet, "EVENTS_PER_ROUND", budget)
        mp.setattr(fleet.events, "post", lambda rt, body, type_, reason, message, action:
                   (body["n"], type_))
        rnd = fleet._Round(rt, now(), rt.views)
        for i, urgent in enumerate(urgency):
            rnd.status(("ai", f"md{i}"), {"n": i}, urgent=urgent)
            assert len(rnd.statuses) < 2 * budget
            rnd.event({"n": i}, "Normal" if urgent else "Warning", f"R{i % 3}", "m")
            assert len(rnd.events) < 2 * budget
        writes = rnd.status_writes()
        kept = [w.cr_frame.f_locals["key"] for w in writes]  # in the order written
        for w in writes:
            w.close()  # never sent
        posted = rnd.event_writes()
    expected = sorted(range(len(urgency)),
                      key=lambda i: not urgency[i])[:budget]
    assert kept == [("ai", f"md{i}") for i in expected]
    assert rnd.queued == {("ai", f"md{i}") for i in range(len(urgency))}
    assert rnd.deferred == max(0, len(urgency) - budget)
    warnings_first = sorted(range(len(urgency)),
                            key=lambda i: urgency[i])[:budget]
    assert [n for n, _ in posted] == warnings_first
    assert rnd.unposted.total() == max(0, len(urgency) - budget)


def test_routes_and_events_are_written_at_their_priorities():
    rt = runtime(body("md"), body("bad", annotations={APPROVE: 7}))
    run(rt)
    assert hub(rt).priorities["HTTPRoute"] == {TRAFFIC}
    assert hub(rt).priorities["Event"] == {NOTICE}


def test_a_kept_object_drops_its_managed_fields_and_keeps_the_rest():
    raw = body("md")
    raw["metadata"]["managedFields"] = [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]
    kept = slim(raw)
    assert "managedFields" not in kept["metadata"]
    assert kept["spec"] is raw["spec"] and kept["metadata"]["uid"] == "uid-md"
    assert raw["metadata"]["managedFields"]  # the watch's object is left as it was
    assert slim({"metadata": "junk"}) == {"metadata": "junk"}


def test_statuses_are_queued_ahead_of_the_rounds_other_writes(monkeypatch):
    # a status records the round's decisions; behind snapshot outcomes on a slow hub it
    # failed, and the next round decided the same again (see fleet.reconcile)
    order: list[str] = []

    async def other() -> None:
        order.append("other")

    monkeypatch.setattr(fleet.audit_log, "retries", lambda rt, busy, gate: [other()])
    rt = runtime(body("md"))
    written = hub(rt).patch_status

    async def status(*args: Any, **kwargs: Any) -> None:
        order.append("status")
        await written(*args, **kwargs)

    monkeypatch.setattr(hub(rt), "patch_status", status)
    run(rt)
    assert order.index("status") < order.index("other")


def test_a_decision_whose_status_waits_is_announced_once(monkeypatch):
    monkeypatch.setattr(fleet, "STATUS_WRITES_PER_ROUND", 1)
    names = ["md0", "md1", "md2"]
    rt = runtime(*(body(n) for n in names))
    for _ in names:  # serving in both clusters, every status written
        run(rt)
    hub(rt).events.clear()
    rt.views["west"] = replace(rt.views["west"], phase="Down")
    for _ in names:  # one status a round: md1 and md2 decide their Failover again meanwhile
        run(rt)
    for n in names:
        assert any(d["kind"] == "Failover" for d in hub(rt).last_status(n)["decisions"])
        failovers = [e for e in hub(rt).events
                     if e["regarding"]["name"] == n and e["action"] == "Failover"]
        assert len(failovers) == 1, n
    assert not rt.unrecorded  # every status landed


def test_a_status_is_written_after_its_own_snapshot_outcomes(monkeypatch):
    monkeypatch.setattr(fleet, "STATUS_WRITES_PER_ROUND", 1)
    order: list[str] = []

    async def outcomes(rt: Runtime, namespace: str, plan: Any, t: Any) -> None:
        order.append(f"outcome {plan}")

    monkeypatch.setattr(fleet.revisions, "write_outcomes", outcomes)
    rt = runtime()
    written = hub(rt).patch_status

    async def status(api: str, kind: str, name: str, *args: Any, **kwargs: Any) -> None:
        order.append(f"status {name}")
        await written(api, kind, name, *args, **kwargs)

    monkeypatch.setattr(hub(rt), "patch_status", status)
    rnd = fleet._Round(rt, now(), rt.views)
    rnd.status(("ai", "a"), {"phase": "x"}, urgent=True)
    rnd.status(("ai", "b"), {"phase": "y"}, urgent=False)  # over the budget: waits
    for name in ("a", "b", "c"):  # c has no status this round
        rnd.outcomes[("ai", name)] = ("ai", name, None)  # type: ignore[assignment]

    async def go() -> None:
        await asyncio.gather(*rnd.status_writes())

    asyncio.run(go())
    assert order.index("outcome a") < order.index("status a")
    assert "outcome c" in order
    assert "outcome b" not in order and "status b" not in order  # decided again next round


def test_a_drained_rollback_survives_the_status_round_trip_and_the_schema():
    from twinhull.api.deployment import RolloutStatus
    from twinhull.plan.rollout import Rollout

    r = Rollout(target="ide-abc", mode="Rollback", since=now().replace(microsecond=0),
                drained=("east",))
    raw = revisions.rollout_dict(r)
    assert raw is not None and raw["drained"] == ["east"]
    RolloutStatus.model_validate(raw)
    assert revisions.rollout_of({"rollout": raw}) == r
    assert "drained" not in (revisions.rollout_dict(replace(r, drained=())) or {})
    assert revisions.rollout_of({"rollout": {**raw, "drained": "east"}}) == replace(
        r, drained=())


def test_the_rollouts_clocks_survive_the_status_round_trip_to_the_microsecond():
    """Whole seconds started a rollout up to a second early once read back from status, so
    a 600 s progress deadline fired at 599.6 s."""
    from twinhull.plan.rollout import Rollout

    started = now().replace(microsecond=900_000)
    r = Rollout(target="ide-abc", mode="Rollout", since=started,
                verifying_since=started + timedelta(seconds=1.25),
                measured_since=started + timedelta(seconds=2.5))
    back = revisions.rollout_of({"rollout": revisions.rollout_dict(r)})
    assert back == r
    assert back.active_seconds(started + timedelta(seconds=599.5)) == pytest.approx(599.5)
    paused = replace(r, paused_since=started + timedelta(seconds=3.75), paused_seconds=1.5)
    assert revisions.rollout_of({"rollout": revisions.rollout_dict(paused)}) == paused


def test_a_failover_legs_clocks_survive_the_status_round_trip_to_the_microsecond():
    from twinhull.plan.fleet import Leg

    t = now().replace(microsecond=900_000)
    leg = Leg(state="FailingBack", since=t, step=1, step_since=t + timedelta(seconds=0.5))
    assert fleet._legs({"failover": {"west": fleet._leg_dict(leg)}}) == {"west": leg}


def test_an_outcome_written_again_waits_a_minute_after_a_failed_write():
    """A refused outcome written again (the status already states it) is retried once a
    minute, not every round; a new verdict is always tried; success clears the wait."""
    from twinhull.plan.rollout import RevisionPlan

    class Refusing(Hub):
        def __init__(self) -> None:
            super().__init__()
            self.refuse, self.tried = True, list[str]()

        async def patch_status(self, api_version: str, kind: str, name: str, status: Any,
                               **kw: Any) -> None:
            self.tried.append(name)
            if self.refuse:
                raise ClusterUnavailable(f"{name}: HTTP 403: forbidden")
            await super().patch_status(api_version, kind, name, status, **kw)

    rt = runtime()
    refusing = Refusing()
    rt.hub = refusing  # type: ignore[assignment]
    plan = RevisionPlan(render={}, record=None, outcomes={
        "ide-1": ("Good", "Verified", "recorded again"), "ide-2": ("Bad", "ErrorRateExceeded",
                                                                   "new")},
        current="ide-1", last_good="ide-1", held_back=None, held_back_why=None,
        rollout=None, decisions=[], conditions=[], again=frozenset({"ide-1"}))
    for _ in range(3):
        asyncio.run(revisions.write_outcomes(rt, "ai", plan, None))
    assert refusing.tried == ["ide-1", "ide-2", "ide-2", "ide-2"]
    rt.outcome_failed[("ai", "ide-1")] -= revisions.OUTCOME_RETRY_SECONDS
    refusing.refuse = False
    asyncio.run(revisions.write_outcomes(rt, "ai", plan, None))
    assert refusing.tried[4:] == ["ide-1", "ide-2"]
    assert rt.outcome_failed == {}
