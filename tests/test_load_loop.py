"""The load reader's shell: per-query isolation, honest freshness and a loop that survives
every answer, driven by a fake Prometheus that answers with crafted JSON (checked by the
real :func:`read_answer`, as :class:`Prometheus` does) or raises what the real one raises."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinhull.api.deployment import ModelDeploymentSpec
from twinhull.handlers import scaling
from twinhull.handlers.runtime import Key, Runtime, Settings, now
from twinhull.handlers.scaling import (
    LoadReading,
    current_loads,
    load_loop,
    loads_bound,
    loop_bound,
    read_health,
    read_loads,
)
from twinhull.metrics.presets import (
    FLEET_CELLS,
    FLEET_REVISIONS,
    fleet_demand_tokens,
    fleet_error_percent,
    fleet_latency_p95,
    fleet_requests_ended,
)
from twinhull.metrics.prometheus import MetricsUnavailable, PrometheusDown, QueryTimeout
from twinhull.metrics.samples import BadAnswer, Reading, read_answer
from twinhull.plan.rollout import Health
from twinhull.plan.scaling import Load
from twinhull.plan.slo import PAGE
from twinhull.policy.tiers import load_file

Answer = Any
"""A JSON body to check, or an exception to raise."""


def vector(*series: tuple[dict[str, str], str]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": labels, "value": [time.time(), value]} for labels, value in series]}}


EMPTY = vector()
SCALAR = {"status": "success", "data": {"resultType": "scalar", "result": [1.7e9, "42"]}}


class FakePrometheus:
    """Answers by query (``answers``), else by ``default``; records what it was asked."""

    def __init__(self, answers: dict[str, Answer] | None = None, default: Answer = EMPTY,
                 pause: Callable[[str], float] = lambda query: 0.0) -> None:
        self.answers = answers or {}
        self.default = default
        self.pause = pause
        self.asked: list[str] = []

    def vector(self, query: str, *, max_age: float = 60.0,
               by: tuple[str, ...] = ("cluster", "zone")) -> Reading:
        self.asked.append(query)
        time.sleep(self.pause(query))
        answer = self.answers.get(query, self.default)
        if callable(answer):
            answer = answer()
        if isinstance(answer, BaseException):
            raise answer
        try:
            return read_answer(answer, now=time.time(), max_age=max_age, by=by)
        except BadAnswer as exc:
            raise MetricsUnavailable(f"fake Prometheus, query {query!r}", str(exc)) from None


def spec(metric: str = "tokens", *, query: str | None = None, runtime: str = "vllm"
         ) -> dict[str, Any]:
    scaling_spec: dict[str, Any] = {"metric": metric}
    if query is not None:
        scaling_spec["query"] = query
    return {"slaTier": "critical", "model": {"name": "m", "image": "i", "runtime": runtime},
            "placement": [{"cluster": "east", "zones": {"east-a": 1}}],
            "scaling": scaling_spec}


def specs(**by_name: dict[str, Any]) -> dict[Key, ModelDeploymentSpec]:
    return {("ai", name): ModelDeploymentSpec.model_validate(s) for name, s in by_name.items()}


def demand(runtime: str, *names: str, value: str = "100") -> tuple[str, dict[str, Any]]:
    """The fleet demand query of a runtime and an answer with a value for each name."""
    return fleet_demand_tokens(runtime, "1m", by=FLEET_CELLS), vector(*(
        ({"namespace": "ai", "twinhull_deployment": name, "cluster": "east", "zone": "east-a"},
         value) for name in names))


def runtime(metrics_seconds: float = 10.0, **by_name: dict[str, Any]) -> Runtime:
    rt = Runtime(hub=None, policy=load_file(),  # type: ignore[arg-type]
                 settings=Settings(metrics_seconds=metrics_seconds, prewarm_period_seconds=0))
    for name, s in by_name.items():
        rt.deployments[("ai", name)] = {"metadata": {"namespace": "ai", "name": name},
                                        "spec": s}
    return rt


def test_one_scalar_custom_query_marks_only_its_own_deployment():
    """Before, the scalar answer raised AttributeError out of read_vector: the whole batch
    (and the loop) died and every deployment lost its metrics."""
    good_query, bad_query = "sum(rate(requests_total[1m]))", "scalar(sum(up))"
    prometheus = FakePrometheus({
        **dict([demand("vllm", "tok")]),
        good_query: vector(({}, "7")),
        bad_query: SCALAR})
    reading = read_loads(prometheus, specs(
        tok=spec(), bad=spec("custom", query=bad_query), good=spec("custom", query=good_query)))
    assert isinstance(reading, LoadReading)
    assert set(reading.loads) == {("ai", "tok"), ("ai", "good")}
    assert reading.loads[("ai", "good")] == Load(custom=7.0)
    assert reading.loads[("ai", "tok")].tokens_per_second == 100.0
    assert list(reading.errors) == [("ai", "bad")]
    assert reading.errors[("ai", "bad")].startswith(
        "spec.scaling.query: returned a scalar, not a vector; return an instant vector: use "
        "e.g. sum(<expr>) or vector(<expr>)")


def test_health_covers_every_deployment_and_a_failing_runtime_holds_only_its_own():
    """Every deployment gets a Health: one with no series now but requests within the
    hour (recent), one that never served (empty), and the deployments of a runtime whose
    health queries fail, marked unread so their verification holds."""
    ended = fleet_requests_ended("vllm", PAGE.long)
    errors = fleet_error_percent("vllm", "1m")
    row = {"namespace": "ai", "twinhull_deployment": "served"}
    prometheus = FakePrometheus({
        ended: vector((row, "4000")), errors: vector((row, "0.5")),
        fleet_requests_ended("tgi", PAGE.long): MetricsUnavailable("fake", "HTTP 422")})
    health, problems = read_health(prometheus, specs(
        served=spec(), idle=spec(), t=spec(runtime="tgi")), window="1m", failures=None)
    assert set(health) == {("ai", "served"), ("ai", "idle"), ("ai", "t")}
    assert health[("ai", "served")] == Health(error_percent=0.5, recent=4000.0)
    assert health[("ai", "idle")] == Health()
    assert health[("ai", "t")].unread.startswith("the tgi health queries failed: ")
    assert not health[("ai", "served")].unread and not health[("ai", "idle")].unread
    assert [p.split(":")[0] for p in problems] == ["health of the tgi deployments"]


def test_a_runtimes_health_answers_reach_only_that_runtimes_deployments():
    """vLLM's fleet queries match any deployment with vllm:* series: a TGI deployment
    that ran vLLM within the hour, or whose pods export vLLM's names too. Its TGI
    readings stand; the vLLM answer for it (0 requests, no errors) is not taken, nor its
    revisions' (a stray 0 passed a TGI revision on readiness alone in the lab)."""
    t = {"namespace": "ai", "twinhull_deployment": "t"}
    t_rev = {**t, "revision": "abc"}
    prometheus = FakePrometheus({
        fleet_requests_ended("tgi", PAGE.long): vector((t, "300")),
        fleet_error_percent("tgi", "1m"): vector((t, "0.0")),
        fleet_requests_ended("vllm", PAGE.long): vector((t, "0")),
        fleet_error_percent("vllm", "1m"): vector((t, "100")),
        fleet_latency_p95("vllm", "1m"): vector((t, "9")),
        fleet_latency_p95("vllm", "1m", FLEET_REVISIONS): vector((t_rev, "9")),
        fleet_requests_ended("vllm", PAGE.long, by=FLEET_REVISIONS): vector((t_rev, "0"))})
    health, problems = read_health(prometheus, specs(t=spec(runtime="tgi"), v=spec()),
                                   window="1m", failures=None)
    assert health[("ai", "t")] == Health(error_percent=0.0, recent=300.0)
    assert health[("ai", "t")].served()
    assert health[("ai", "v")] == Health() and not problems


def test_one_runtimes_failing_preset_query_marks_only_that_runtimes_deployments():
    query, answer = demand("vllm", "v")
    tgi_demand = fleet_demand_tokens("tgi", "1m", by=FLEET_CELLS)
    prometheus = FakePrometheus({query: answer, tgi_demand: {
        "status": "error", "errorType": "execution", "error": "too many samples"}})
    reading = read_loads(prometheus, specs(v=spec(), t=spec(runtime="tgi"),
                                           q=spec("queue", runtime="tgi")))
    assert set(reading.loads) == {("ai", "v")}
    assert set(reading.errors) == {("ai", "t"), ("ai", "q")}
    assert reading.errors[("ai", "t")] == (
        "spec.model.runtime tgi: its metrics could not be read: refused the query "
        "(execution: too many samples); fix the PromQL")


def test_a_deployment_without_series_is_missing_with_the_reason():
    reading = read_loads(FakePrometheus(), specs(new=spec(), custom=spec("custom", query="x")))
    assert reading.loads == {}
    assert "no series of vllm:prompt_tokens_total" in reading.errors[("ai", "new")]
    assert "twinhull_deployment='new'" in reading.errors[("ai", "new")]
    assert reading.errors[("ai", "custom")].startswith(
        "spec.scaling.query: returned no usable value; it must return one number")


def test_a_timeout_of_twinhulls_own_query_ends_the_round_a_tenants_does_not():
    slow = QueryTimeout("fake", "did not answer within 5s")
    query, answer = demand("vllm", "v")
    tenant = read_loads(FakePrometheus({query: answer, "heavy": slow}),
                        specs(v=spec(), c=spec("custom", query="heavy")))
    assert set(tenant.loads) == {("ai", "v")}
    assert tenant.errors[("ai", "c")] == "spec.scaling.query: did not answer within 5s"
    with pytest.raises(PrometheusDown):
        read_loads(FakePrometheus({query: slow}), specs(v=spec(), c=spec("custom", query="x")))


def test_the_round_budget_stops_new_queries_and_yesterdays_failures_go_last():
    """One slow tenant cannot stretch the round without bound, nor starve the others: the
    query that failed last round is asked after everyone else's."""
    prometheus = FakePrometheus({"slow": vector(({}, "1")), "quick": vector(({}, "2"))},
                                pause=lambda q: 0.3 if q == "slow" else 0.0)
    both = specs(a=spec("custom", query="slow"), b=spec("custom", query="quick"))
    first = read_loads(prometheus, both, deadline=time.monotonic() + 0.1)
    assert prometheus.asked == ["slow"]
    assert set(first.loads) == {("ai", "a")}
    assert first.errors[("ai", "b")].startswith("spec.scaling.query: not read this round")
    prometheus.asked.clear()
    second = read_loads(prometheus, both, deadline=time.monotonic() + 0.1, defer={("ai", "a")})
    assert prometheus.asked == ["quick", "slow"]
    assert set(second.loads) == {("ai", "a"), ("ai", "b")}


def test_loads_older_than_the_bound_count_as_missing():
    rt = runtime(metrics_seconds=10.0)
    rt.loads = {("ai", "x"): Load(tokens_per_second=5.0)}
    assert loads_bound(rt.settings) == 60.0 and loop_bound(rt.settings) == 70.0
    at = now()
    assert current_loads(rt, at) == {}, "never read"
    rt.loads_time = at - timedelta(seconds=59)
    assert current_loads(rt, at) == rt.loads
    rt.loads_time = at - timedelta(seconds=61)
    assert current_loads(rt, at) == {}, "a reader late by more than the bound"


async def _rounds(rt: Runtime, source: FakePrometheus, until: Callable[[], bool],
                  timeout: float = 5.0) -> asyncio.Task[None]:
    """Run the loop until ``until()`` holds; the task is returned still running."""
    task = asyncio.create_task(load_loop(rt, source))
    deadline = time.monotonic() + timeout
    while not until():
        assert not task.done(), task.exception() if task.done() else None
        assert time.monotonic() < deadline, "the loop did not get there in time"
        await asyncio.sleep(0.005)
    return task


def test_prometheus_down_clears_the_loads_and_the_loop_beats_on():
    rt = runtime(metrics_seconds=0.01, x=spec(), y=spec("custom", query="q"))
    rt.loads = {("ai", "x"): Load(tokens_per_second=5.0)}
    rt.loads_time = now()
    down = PrometheusDown("Prometheus at http://prom", "cannot be reached (refused)")
    source = FakePrometheus(default=down)

    async def scenario() -> None:
        task = await _rounds(rt, source, lambda: len(source.asked) >= 3 and "loads" in rt.beats)
        assert not task.done()
        task.cancel()

    asyncio.run(scenario())
    assert rt.loads == {} and rt.loads_time is None and rt.health == {}
    assert rt.health_of(("ai", "x")) == Health(
        unread="Prometheus cannot be read: cannot be reached (refused)")
    assert rt.load_errors == {
        key: "Prometheus cannot be read: cannot be reached (refused)"
        for key in (("ai", "x"), ("ai", "y"))}
    assert rt.loop_bounds["loads"] == loop_bound(rt.settings)


GARBAGE: list[Answer] = [
    SCALAR,
    {"status": "success", "data": {"resultType": "string", "result": [1.7e9, "x"]}},
    {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1.7e9, "1"]]}]}},
    {"status": "success", "data": {"resultType": "vector", "result": {"not": "a list"}}},
    {"status": "success", "data": {"resultType": "vector", "result": [[1, 2], "x", None]}},
    {"status": "success"}, [], None, "<html>", 42,
    {"status": "error", "errorType": "bad_data", "error": "parse error"},
    MetricsUnavailable("fake", "answered HTTP 422"),
    QueryTimeout("fake", "did not answer within 5s"),
    PrometheusDown("fake", "cannot be reached"),
]


def test_the_loop_survives_every_bad_answer_keeps_beating_and_recovers(monkeypatch):
    """Round n answers every query with the n-th piece of garbage (before, the first
    scalar ended the loop for good); then Prometheus heals and the loads come back."""
    rt = runtime(metrics_seconds=0.001, x=spec(), q=spec("queue", runtime="sglang"),
                 c=spec("custom", query="c"))
    healed = object()
    answers = itertools.chain(GARBAGE, itertools.repeat(healed))
    current: list[Answer] = [next(answers)]
    served: list[Answer] = [current[0]]
    source = FakePrometheus(default=lambda: current[0])
    healthy_query, healthy = demand("vllm", "x")
    beats: list[object] = []
    real_beat = scaling.beat

    def counting_beat(rt_: Runtime, loop: str) -> None:
        real_beat(rt_, loop)
        beats.append(rt_.beats[loop])
        following = next(answers)
        if following is healed:
            current[0] = EMPTY
            source.answers.update({healthy_query: healthy, "c": vector(({}, "3"))})
        else:
            current[0] = following
            served.append(following)

    monkeypatch.setattr(scaling, "beat", counting_beat)

    async def scenario() -> None:
        task = await _rounds(rt, source, lambda: len(beats) > len(GARBAGE) + 2
                             and rt.loads_time is not None, timeout=20)
        task.cancel()

    asyncio.run(scenario())
    assert served == GARBAGE, "one round per piece of garbage, each ending in a beat"
    assert set(rt.loads) == {("ai", "x"), ("ai", "c")}, "healed: fresh loads again"
    assert rt.loads_time is not None and set(rt.load_errors) == {("ai", "q")}
    assert "no series of sglang" in rt.load_errors[("ai", "q")]


def test_a_bug_clears_the_loads_and_ends_the_loop_for_the_supervisor():
    rt = runtime(x=spec())
    rt.loads = {("ai", "x"): Load(tokens_per_second=5.0)}
    rt.loads_time = now()
    with pytest.raises(RuntimeError, match="a bug"):
        asyncio.run(load_loop(rt, FakePrometheus(default=RuntimeError("a bug"))))
    assert rt.loads == {} and rt.loads_time is None


def test_without_prometheus_the_loop_beats_and_says_why(monkeypatch):
    rt = runtime(metrics_seconds=0.001, x=spec())

    async def scenario() -> None:
        task = asyncio.create_task(load_loop(rt))
        for _ in range(200):
            await asyncio.sleep(0.005)
            if "loads" in rt.beats:
                break
        assert not task.done(), "a loop that returns is restarted and reported as dead"
        task.cancel()

    asyncio.run(scenario())
    assert "loads" in rt.beats and rt.loads == {} and rt.loads_time is None
    assert rt.load_errors[("ai", "x")].startswith("no Prometheus")


def test_a_lasting_error_is_logged_once_not_every_round(caplog):
    rt = runtime(metrics_seconds=0.001, c=spec("custom", query="scalar(up)"))
    source = FakePrometheus({"scalar(up)": SCALAR})

    async def scenario() -> None:
        task = await _rounds(rt, source, lambda: source.asked.count("scalar(up)") >= 3)
        task.cancel()

    with caplog.at_level(logging.INFO, logger="twinhull.handlers.scaling"):
        asyncio.run(scenario())
    said = [r.getMessage() for r in caplog.records if "returned a scalar" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("load of ('ai', 'c'): spec.scaling.query")


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=6)
    | st.sampled_from(["vector", "scalar", "success", "ai", "x", "NaN", "1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["status", "data", "resultType", "result", "metric", "value",
                         "namespace", "twinhull_deployment", "cluster", "zone"]),
        inner, max_size=4),
    max_leaves=25)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(answers=st.lists(JSON, min_size=1, max_size=8))
def test_every_scaled_deployment_gets_a_load_or_a_reason_whatever_prometheus_says(answers):
    """Property: arbitrary JSON as the answer to every query never escapes read_loads;
    each deployment gets exactly one of a Load and a reason."""
    queue = itertools.cycle(answers)
    source = FakePrometheus(default=lambda: next(queue))
    fleet = specs(v=spec(), t=spec("queue", runtime="tgi"), c=spec("custom", query="c"),
                  d=spec("custom", query="d"))
    reading = read_loads(source, fleet, prewarm=[(86_400.0, 85_800.0)])
    assert set(reading.loads) | set(reading.errors) == set(fleet)
    assert not set(reading.loads) & set(reading.errors)
