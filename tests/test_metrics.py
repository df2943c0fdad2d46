"""Metric sources: the bad-value and bad-answer rules (table-driven and property-based),
the presets' freshness (with promtool's PromQL engine when it is installed) and the
Prometheus adapter against a real local HTTP server speaking the Prometheus query API."""

from __future__ import annotations

import base64
import json
import logging
import shutil
import subprocess
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinhull.metrics import MetricsUnavailable, Prometheus, read_vector
from twinhull.metrics.presets import (
    FLEET,
    FLEET_CELLS,
    demand_tokens,
    fleet_running,
    fleet_waiting,
    fresh,
    latency_p95,
    seconds,
    waiting,
)
from twinhull.metrics.prometheus import PrometheusDown, QueryTimeout, redact_url, secrets_of
from twinhull.metrics.samples import BadAnswer, read_answer

NOW = 1_700_000_000.0


def series(cluster: str, zone: str, value: str, age: float = 0.0) -> dict:
    return {"metric": {"cluster": cluster, "zone": zone}, "value": [NOW - age, value]}


@pytest.mark.parametrize(
    ("result", "values", "dropped"),
    [
        ([], {}, 0),                                                        # empty: missing
        ([series("east", "east-a", "120.5")], {("east", "east-a"): 120.5}, 0),
        ([series("east", "east-a", "100"), series("east", "east-a", "20")],  # several: summed
         {("east", "east-a"): 120.0}, 0),
        ([series("east", "east-a", "NaN")], {}, 1),                         # NaN: dropped
        ([series("east", "east-a", "+Inf"), series("west", "west-a", "5")],  # Inf: dropped
         {("west", "west-a"): 5.0}, 1),
        ([series("east", "east-a", "-Inf")], {}, 1),
        ([series("east", "east-a", "-3")], {("east", "east-a"): 0.0}, 0),   # negative: 0
        ([series("east", "east-a", "7", age=300)], {}, 1),                  # stale: dropped
        ([series("east", "east-a", "7", age=-300)], {}, 1),                 # clock ahead
        ([{"metric": {}, "value": "garbage"}], {}, 1),                      # malformed
        ([{"metric": {"cluster": 5, "zone": "east-a"}, "value": [NOW, "1"]}], {}, 1),
        ([{"metric": {"cluster": "e" * 2000, "zone": "a"}, "value": [NOW, "1"]}], {}, 1),
        ([{"metric": {"cluster": "east", "zone": "east-a"}, "value": [NOW, True]}], {}, 1),
        ([{"metric": {"cluster": "east", "zone": "east-a"}, "values": [[NOW, "1"]]}], {}, 1),
        ([[NOW, "3"]], {}, 1),                                              # not a series
    ],
    ids=["empty", "one", "several", "nan", "inf", "minus-inf", "negative", "stale",
         "clock-ahead", "malformed", "label-not-a-string", "label-too-long", "boolean",
         "range-sample", "scalar-pair"],
)
def test_the_bad_value_rule(result, values, dropped):
    reading = read_vector(result, now=NOW)
    assert reading.values == values
    assert len(reading.dropped) == dropped
    assert reading.missing([("east", "east-a")]) == ([] if ("east", "east-a") in values
                                                      else [("east", "east-a")])


def vector_answer(result: Any, kind: str = "vector") -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": kind, "result": result}}


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (vector_answer([NOW, "3"], "scalar"), "returned a scalar, not a vector; return an "
                                               "instant vector"),
        (vector_answer([NOW, "up"], "string"), "returned a string, not a vector"),
        (vector_answer([{"metric": {}, "values": [[NOW, "1"]]}], "matrix"),
         "returned a matrix, not a vector; return an instant vector: drop the [range]"),
        (vector_answer({"a": 1}), "not a list"),
        (vector_answer("x"), "not a list"),
        ({"status": "success"}, "without data.result"),
        ({"status": "success", "data": [1]}, "without data.result"),
        ({"status": "error", "errorType": "bad_data", "error": "parse error at char 3"},
         "refused the query (bad_data: parse error at char 3); fix the PromQL"),
        ([1, 2], "answered a JSON list, not an object"),
        (None, "answered a JSON NoneType"),
        (vector_answer([series("east", "east-a", "1")] * 3), "returned 3 series, more than"),
        (vector_answer([series("east", "east-a", "1", age=300)]),
         "answered an old evaluation (evaluated 300s before the request"),
    ],
    ids=["scalar", "string", "matrix", "dict-result", "string-result", "no-data",
         "data-not-a-map", "error", "list-body", "null-body", "too-many", "old-evaluation"],
)
def test_an_answer_that_is_not_a_fresh_vector_is_refused_with_the_fix(body, says):
    with pytest.raises(BadAnswer) as refused:
        read_answer(body, now=NOW, max_series=2)
    assert says in str(refused.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["status", "data", "resultType", "result", "metric", "value",
                         "cluster", "zone", "error"]) | st.text(max_size=4), inner, max_size=4),
    max_leaves=30)


@given(body=JSON, kind=st.sampled_from(["vector", "scalar", "matrix", "string", None]))
def test_any_json_is_read_or_refused_never_raises_anything_else(body, kind):
    """Whatever a Prometheus (or something pretending to be one) answers, the reader gets
    a Reading of finite, non-negative numbers or a BadAnswer: never a crash."""
    for candidate in (body, {"status": "success", "data": {"resultType": kind, "result": body}}):
        try:
            reading = read_answer(candidate, now=NOW)
        except BadAnswer:
            continue
        assert all(isinstance(v, float) and 0 <= v < float("inf")
                   for v in reading.values.values())


def test_presets_select_by_deployment_and_aggregate_by_cell():
    q = demand_tokens("vllm", "ai", "ide")
    prompt = ('sum by (cluster, zone) (rate({__name__="vllm:prompt_tokens_total", '
              'namespace="ai", twinhull_deployment="ide"}[1m]))')
    generated = prompt.replace("prompt_tokens", "generation_tokens")
    assert q == f"({prompt} + {generated}) or {prompt} or {generated}", \
        "a zone missing one of the two counters keeps the other's value"
    assert waiting("tgi", "ai", "x").startswith(
        'sum by (cluster, zone) ({__name__="tgi_queue_size", namespace="ai", '
        'twinhull_deployment="x"} and (time() - timestamp({__name__="tgi_queue_size", '
        'namespace="ai", twinhull_deployment="x"}) < 60))')
    assert '{__name__="tgi_request_queue_duration_bucket", namespace="ai"' in latency_p95(
        "tgi", "ai", "x")


def test_a_presets_own_label_matchers_join_twinhulls_in_one_selector():
    from twinhull.metrics.presets import fleet_error_percent, selector

    q = fleet_error_percent("vllm", "1m")
    assert ('{__name__="http_requests_total", status="5xx", handler=~"/v1/.+", '
            'twinhull_deployment!=""}') in q
    assert 'finished_reason=~"stop|length"' in q
    override = fleet_error_percent("vllm", "1m", "gateway_failures_total")
    assert '{__name__="gateway_failures_total", twinhull_deployment!=""}' in override
    assert "http_requests_total" not in override
    assert selector("m", (("a", "=", 'x"y\\z'),)) == '{__name__="m", a="x\\"y\\\\z"}'


def test_gauge_presets_keep_only_series_scraped_within_the_window():
    """An instant query's timestamp is the evaluation time, so freshness must be in the
    PromQL: the gauges are filtered on their raw samples' own timestamps."""
    assert fresh("g{a=\"b\"}", "90s") == '(g{a="b"} and (time() - timestamp(g{a="b"}) < 90))'
    for query in (fleet_running("vllm", window="10s"), fleet_waiting("tgi", FLEET_CELLS, "10s")):
        assert "time() - timestamp(" in query and query.endswith("< 10))")
    assert seconds("1m30s") == 90 and seconds("500ms") == 0.5 and seconds("2h") == 7200
    for bad in ("", "1", "m", "1m 30s", "-1m", "1.5m"):
        with pytest.raises(ValueError, match="is not a PromQL duration"):
            seconds(bad)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) absent")
def test_gauge_presets_drop_a_dead_pods_lingering_series_in_real_promql(tmp_path: Path):
    """Prometheus' own engine (promtool): a pod scraped until minute 2 still answers an
    instant selector at minute 5 (lookback 5m, no staleness marker with federation); the
    preset counts only the pod that is still scraped."""
    labels = 'namespace="ai",twinhull_deployment="ide",cluster="east"'
    (tmp_path / "rules.yml").write_text("groups: []\n")
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "15s",
        "input_series": [
            {"series": f'{metric}{{{labels},zone="east-a",pod="live"}}', "values": "3x40"}
            for metric in ("vllm:num_requests_running", "vllm:num_requests_waiting")] + [
            {"series": f'{metric}{{{labels},zone="east-b",pod="dead"}}', "values": "5x8"}
            for metric in ("vllm:num_requests_running", "vllm:num_requests_waiting")],
        "promql_expr_test": [
            {"expr": fleet_running("vllm", FLEET, "1m"), "eval_time": "5m",
             "exp_samples": [{"labels": '{namespace="ai",twinhull_deployment="ide"}',
                              "value": 3}]},
            {"expr": fleet_waiting("vllm", FLEET_CELLS, "1m"), "eval_time": "5m",
             "exp_samples": [{"labels": f'{{{labels},zone="east-a"}}', "value": 3}]},
        ]}]}
    (tmp_path / "test.json").write_text(json.dumps(tests))  # YAML is a superset of JSON
    run = subprocess.run(["promtool", "test", "rules", "test.json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


class _Prometheus(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, Any]]] = {}
    """Query to (HTTP status, JSON body, or the raw bytes to send)."""
    delay: ClassVar[float] = 0.0
    seen: ClassVar[list[tuple[str, str | None]]] = []
    """(path, Authorization header) of every request."""

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("Authorization")))
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        time.sleep(self.delay)
        status, body = self.answers.get(query, (200, {"status": "success", "data": {
            "resultType": "vector", "result": []}}))
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[tuple[str, type[_Prometheus]]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Prometheus.answers, _Prometheus.delay, _Prometheus.seen = {}, 0.0, []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Prometheus
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_vector_reads_cells_from_a_prometheus_answer(prometheus):
    url, handler = prometheus
    now = time.time()
    handler.answers["up"] = (200, {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"cluster": "east", "zone": "east-a"}, "value": [now, "3"]},
        {"metric": {"cluster": "west", "zone": "west-b"}, "value": [now, "NaN"]},
    ]}})
    reading = Prometheus(url).vector("up")
    assert reading.values == {("east", "east-a"): 3.0}
    assert reading.dropped == ("('west', 'west-b'): NaN",)


def test_errors_and_silence_are_unavailable_not_zero(prometheus):
    url, handler = prometheus
    handler.answers["bad("] = (400, {"status": "error", "errorType": "bad_data",
                                     "error": "parse error"})
    with pytest.raises(MetricsUnavailable):
        Prometheus(url).vector("bad(")
    with pytest.raises(MetricsUnavailable):
        Prometheus("http://127.0.0.1:9").vector("up")  # nothing listens: refused
    handler.delay = 3.0
    start = time.monotonic()
    with pytest.raises(MetricsUnavailable):
        Prometheus(url, timeout=1).vector("up")
    assert time.monotonic() - start < 2.5


def test_prewarm_reads_the_highest_demand_of_earlier_days(prometheus):
    from twinhull.api.deployment import ModelDeploymentSpec
    from twinhull.handlers.scaling import read_loads
    from twinhull.metrics.presets import (
        FLEET_CELLS,
        fleet_demand_forecast,
        fleet_demand_peak,
        fleet_demand_tokens,
    )

    url, handler = prometheus
    now = time.time()

    def answer(value: float, **cell: str) -> tuple[int, dict]:
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"namespace": "ai", "twinhull_deployment": "ide", **cell},
             "value": [now, str(value)]}]}}
    day = fleet_demand_forecast("vllm", "1m", start_s=86_400, end_s=85_800)
    assert day.startswith("max_over_time(((sum by (namespace, twinhull_deployment)")
    assert day.endswith(")[600s:30s] offset 85800s)")
    week = fleet_demand_forecast("vllm", "1m", start_s=604_800, end_s=604_200)
    by_zone = fleet_demand_tokens("vllm", "1m", by=FLEET_CELLS)
    handler.answers.update({by_zone: answer(1_000.0, cluster="east", zone="east-a"),
                            day: answer(9_000.0), week: answer(12_000.0)})
    spec = ModelDeploymentSpec.model_validate({
        "slaTier": "critical", "model": {"name": "m", "image": "i"},
        "placement": [{"cluster": "east", "zones": {"east-a": 1}}],
        "scaling": {"metric": "tokens"}})
    windows = [(86_400.0, 85_800.0), (604_800.0, 604_200.0)]
    loads = read_loads(Prometheus(url), {("ai", "ide"): spec}, prewarm=windows).loads
    assert loads[("ai", "ide")].tokens_per_second == 1_000.0
    assert loads[("ai", "ide")].zones == {"east/east-a": 1_000.0}
    assert loads[("ai", "ide")].forecast_tokens_per_second == 12_000.0, "the higher day"
    # what the same windows said a lead ago (shifted by 600 s), and the recent peak
    said_day = fleet_demand_forecast("vllm", "1m", start_s=87_000, end_s=86_400)
    said_week = fleet_demand_forecast("vllm", "1m", start_s=605_400, end_s=604_800)
    handler.answers.update({said_day: answer(7_000.0), said_week: answer(5_000.0),
                            fleet_demand_peak("vllm", "1m"): answer(1_400.0)})
    loads = read_loads(Prometheus(url), {("ai", "ide"): spec}, prewarm=windows).loads
    assert loads[("ai", "ide")].forecast_said_tokens_per_second == 7_000.0
    assert loads[("ai", "ide")].tokens_per_second_peak == 1_400.0
    off = spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"pre_warm": False})})
    assert read_loads(Prometheus(url), {("ai", "ide"): off}, prewarm=windows).loads[
        ("ai", "ide")].forecast_tokens_per_second is None


@pytest.mark.parametrize(
    ("answer", "kind", "says"),
    [
        ((200, {"status": "success", "data": {"resultType": "scalar", "result": [1, "3"]}}),
         MetricsUnavailable, "returned a scalar, not a vector"),
        ((200, {"status": "success", "data": {"resultType": "string", "result": [1, "x"]}}),
         MetricsUnavailable, "returned a string, not a vector"),
        ((200, {"status": "success", "data": {"resultType": "matrix", "result": []}}),
         MetricsUnavailable, "returned a matrix, not a vector"),
        ((200, {"status": "success"}), MetricsUnavailable, "without data.result"),
        ((200, b"<html>please log in</html>"), PrometheusDown, "not JSON"),
        ((200, b'{"status": "succ'), PrometheusDown, "not JSON"),
        ((200, b"[" * 4_000), PrometheusDown, "not JSON"),
        ((200, b" " * 5_000), MetricsUnavailable, "answered more than 4096 bytes"),
        ((404, b"404 page not found"), PrometheusDown, "HTTP 404; check --prometheus points"),
        ((401, b"Unauthorized"), PrometheusDown, "HTTP 401; check the user and password"),
        ((502, b"Bad Gateway"), PrometheusDown, "HTTP 502"),
        ((503, {"status": "error", "errorType": "timeout", "error": "query timed out"}),
         MetricsUnavailable, "refused the query (timeout: query timed out)"),
        ((414, b"URI Too Long"), MetricsUnavailable, "the query is too long"),
    ],
    ids=["scalar", "string", "matrix", "no-data", "html", "truncated-json", "deep-json",
         "too-big", "not-found", "unauthorized", "bad-gateway", "query-timeout", "too-long"],
)
def test_every_odd_answer_is_unavailable_with_the_query_and_the_fix(prometheus, answer, kind,
                                                                     says):
    """Before, a scalar or a string answer raised AttributeError out of read_vector and a
    body without data raised KeyError: both killed the load loop for good."""
    url, handler = prometheus
    handler.answers["q"] = answer
    with pytest.raises(MetricsUnavailable) as caught:
        Prometheus(url, max_bytes=4096).vector("q")
    assert type(caught.value) is kind
    assert says in caught.value.problem and "query 'q'" in str(caught.value)
    error = caught.value  # no library exception (holding the raw URL) chained to it
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_an_old_evaluation_is_refused_against_the_local_clock(prometheus):
    """The timestamp of an instant query is its evaluation time: a caching proxy or a
    federation answering a five-minute-old evaluation is caught against the operator's
    own clock, and so is a Prometheus whose clock runs ahead."""
    url, handler = prometheus
    for query, age in (("old", 300.0), ("ahead", -300.0)):
        handler.answers[query] = (200, vector_answer([
            {"metric": {"cluster": "east", "zone": "east-a"}, "value": [time.time() - age, "3"]}]))
    with pytest.raises(MetricsUnavailable, match=r"answered an old evaluation \(evaluated 30\d"):
        Prometheus(url).vector("old")
    with pytest.raises(MetricsUnavailable, match="after the request: its clock is ahead"):
        Prometheus(url).vector("ahead")


def test_credentials_are_sent_but_never_shown(prometheus, caplog):
    url, handler = prometheus
    caplog.set_level(logging.DEBUG)
    handler.answers["up"] = (200, vector_answer([
        {"metric": {"cluster": "east", "zone": "east-a"}, "value": [time.time(), "1"]}]))
    host = url.removeprefix("http://")
    reading = Prometheus(f"http://ops:p%40ss-w0rd@{host}/prom/?access_token=T0KEN-x1&org=7"
                         ).vector("up")
    assert reading.values == {("east", "east-a"): 1.0}
    path, authorization = handler.seen[-1]
    assert path.startswith("/prom/api/v1/query?") and "access_token=T0KEN-x1" in path
    assert "org=7" in path and "query=up" in path
    assert authorization == "Basic " + base64.b64encode(b"ops:p@ss-w0rd").decode()
    request_lines = [r.getMessage() for r in caplog.records if "/api/v1/query" in r.getMessage()]
    assert request_lines, "urllib3 logs its request lines at debug level"
    assert all("access_token=***" in line and "T0KEN" not in line for line in request_lines)
    assert redact_url("https://ops:pw@prom.example:9443/x?access_token=t&org=7") == (
        "https://***@prom.example:9443/x?access_token=***&org=***")
    assert {"p@ss-w0rd", "p%40ss-w0rd", "T0KEN-x1"} <= set(secrets_of(
        f"http://ops:p%40ss-w0rd@{host}/?access_token=T0KEN-x1&org=7"))


def test_the_url_password_never_reaches_a_log_or_an_error(caplog):
    """Prometheus unreachable (nothing listens on port 9): the error, its traceback and
    every log record (the HTTP libraries' debug lines included) hold neither the URL's
    password nor its token. Before, the error began with the raw URL."""
    from twinhull.api.deployment import ModelDeploymentSpec
    from twinhull.handlers.scaling import read_loads

    url = "http://admin:hunter2-SECRET@127.0.0.1:9/?token=TOK-31337&x=1"
    caplog.set_level(logging.DEBUG)
    errors: list[BaseException] = []
    with pytest.raises(PrometheusDown) as caught:
        Prometheus(url, timeout=1).vector("up")
    errors.append(caught.value)
    spec = ModelDeploymentSpec.model_validate({
        "slaTier": "critical", "model": {"name": "m", "image": "i"},
        "placement": [{"cluster": "east", "zones": {"east-a": 1}}],
        "scaling": {"metric": "tokens"}})
    with pytest.raises(PrometheusDown) as again:
        read_loads(Prometheus(url, timeout=1), {("ai", "ide"): spec})
    errors.append(again.value)
    logging.getLogger("test").exception("as a supervisor logs it", exc_info=again.value)
    text = "\n".join([*(r.getMessage() for r in caplog.records), caplog.text,
                      *("".join(traceback.format_exception(e)) for e in errors)])
    assert "Connection refused" in text or "ConnectionError" in text  # the cause is told
    assert "127.0.0.1" in text
    for secret in ("hunter2-SECRET", "TOK-31337"):
        assert secret not in text


def test_a_slow_answer_is_a_query_timeout(prometheus):
    url, handler = prometheus
    handler.delay = 2.0
    with pytest.raises(QueryTimeout, match="did not answer within 1s"):
        Prometheus(url, timeout=1).vector("up")


def test_requests_during_a_drill_count_served_failed_and_fallback_over_its_window():
    from twinhull.metrics.presets import requests_during

    q = requests_during("vllm", "ai", "ide", 64.4)
    assert set(q) == {"requestsServed", "requestsFailed", "fallbackRequests"}
    assert all("[64s]" in v and 'namespace="ai"' in v and 'twinhull_deployment="ide"' in v
               for v in q.values())
    assert 'role="fallback"' in q["fallbackRequests"]
    assert 'role="fallback"' not in q["requestsServed"]
    assert 'finished_reason=~"stop|length"' in q["requestsServed"]  # aborts are not served
    assert 'status="5xx"' in q["requestsFailed"]
    assert 'gateway_errors' in requests_during("vllm", "ai", "ide", 10,
                                               failures="gateway_errors")["requestsFailed"]
