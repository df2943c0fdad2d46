"""Metric sources: the bad-value rule (table-driven) and the Prometheus adapter against a
real local HTTP server speaking the Prometheus query API."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar
from urllib.parse import parse_qs, urlparse

import pytest

from twinhull.metrics import MetricsUnavailable, Prometheus, read_vector
from twinhull.metrics.presets import demand_tokens, latency_p95, waiting

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
        ([{"metric": {}, "value": "garbage"}], {}, 1),                      # malformed
    ],
    ids=["empty", "one", "several", "nan", "inf", "minus-inf", "negative", "stale",
         "malformed"],
)
def test_the_bad_value_rule(result, values, dropped):
    reading = read_vector(result, now=NOW)
    assert reading.values == values
    assert len(reading.dropped) == dropped
    assert reading.missing([("east", "east-a")]) == ([] if ("east", "east-a") in values
                                                      else [("east", "east-a")])


def test_presets_select_by_deployment_and_aggregate_by_cell():
    q = demand_tokens("vllm", "ai", "ide")
    assert 'rate(vllm:prompt_tokens_total{namespace="ai", twinhull_deployment="ide"}[1m])' in q
    assert "vllm:generation_tokens_total" in q and q.count("sum by (cluster, zone)") == 2
    assert waiting("sglang", "ai", "x").startswith("sum by (cluster, zone) (sglang:num_queue_reqs")
    assert "tgi_request_duration_bucket" in latency_p95("tgi", "ai", "x")


class _Prometheus(BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, dict]]] = {}
    delay: ClassVar[float] = 0.0

    def do_GET(self) -> None:
        query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
        time.sleep(self.delay)
        status, body = self.answers.get(query, (200, {"status": "success", "data": {
            "resultType": "vector", "result": []}}))
        data = json.dumps(body).encode()
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
    _Prometheus.answers, _Prometheus.delay = {}, 0.0
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
        fleet_demand_tokens,
    )

    url, handler = prometheus
    now = time.time()

    def answer(value: float, **cell: str) -> tuple[int, dict]:
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"namespace": "ai", "twinhull_deployment": "ide", **cell},
             "value": [now, str(value)]}]}}
    day = fleet_demand_forecast("vllm", "1m", start_s=86_400, end_s=85_800)
    assert day.startswith("max_over_time((sum by (namespace, twinhull_deployment)")
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
    loads = read_loads(Prometheus(url), {("ai", "ide"): spec}, prewarm=windows)
    assert loads[("ai", "ide")].tokens_per_second == 1_000.0
    assert loads[("ai", "ide")].zones == {"east/east-a": 1_000.0}
    assert loads[("ai", "ide")].forecast_tokens_per_second == 12_000.0, "the higher day"
    off = spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"pre_warm": False})})
    assert read_loads(Prometheus(url), {("ai", "ide"): off}, prewarm=windows)[
        ("ai", "ide")].forecast_tokens_per_second is None
