"""The vLLM exporter of the lab (e2e/runtimes/vllm.py) against the page written by hand from
vLLM 0.11.0's sources (tests/golden/vllm.prom) and the values tests/golden/vllm.yaml expects."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from runtimes import vllm  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
PROMPT, GENERATED, FAILED_AFTER, RUNNING_GENERATED = 800, 200, 50, 100
START = 1760000000.0
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
Key = tuple[str, tuple[tuple[str, str], ...]]

# Observed per engine step by vLLM, only when a request ends by the exporter: the golden
# page has the running requests' inter-token latencies, the exporter's not yet.
PER_STEP_LATENCIES = ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds")


class Clock:
    """Wall-clock time the test sets (for the ``_created`` series)."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def samples(text: str) -> dict[Key, float]:
    """(sample name, sorted labels) -> value, in page order."""
    out: dict[Key, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            out[(name, tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or ""))))] = (
                float(value))
    return out


def scenario() -> vllm.Exporter:
    """The 60 seconds of tests/golden/vllm.yaml, told to an exporter through the protocol."""
    clock = Clock()
    exporter = vllm.Exporter("llama-3-8b", clock=clock)
    ttfts = [0.03] * 10 + [0.15] * 20 + [0.4] * 15 + [0.9] * 4 + [3.0]
    failed = {10, 11}  # two of the 0.15 s group (the YAML's assumption)
    clock.now = START + 5.0  # the first response (2xx); the first 5xx is at +20 s
    for i, ttft in enumerate(ttfts):
        queue = max(ttft - 0.02, 0.0)
        exporter.started(prompt_tokens=PROMPT, queue_seconds=queue, ttft_seconds=ttft)
        ok = i not in failed
        if not ok:
            clock.now = START + 20.0
        exporter.finished(prompt_tokens=PROMPT, generation_tokens=GENERATED if ok else FAILED_AFTER,
                          queue_seconds=queue, ttft_seconds=ttft,
                          e2e_seconds=ttft + (4.0 if ok else 1.0), ok=ok)
    for _ in range(3):
        exporter.aborted(prompt_tokens=PROMPT, waited_seconds=5.0)
    for _ in range(6):
        exporter.started(prompt_tokens=PROMPT, queue_seconds=0.1, ttft_seconds=0.12)
    exporter.served(prompt=56 * PROMPT,
                    generation=48 * GENERATED + 2 * FAILED_AFTER + 6 * RUNNING_GENERATED)
    exporter.gauges(running=6, waiting=4)
    return exporter


@pytest.fixture(scope="module")
def golden() -> str:
    return (GOLDEN / "vllm.prom").read_text()


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    expected: dict[str, Any] = yaml.safe_load((GOLDEN / "vllm.yaml").read_text())["expected"]
    return expected


@pytest.fixture(scope="module")
def page() -> str:
    return scenario().text()


class Reparsed:
    """A collector yielding the families prometheus_client parsed from a page."""

    def __init__(self, text: str) -> None:
        self.families = list(text_string_to_metric_families(text))

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


@pytest.mark.parametrize("which", ["golden", "page"])
def test_page_is_what_prometheus_client_writes(which: str, request: pytest.FixtureRequest) -> None:
    """Parsed and written again by prometheus_client's generate_latest, the page comes
    back byte for byte (but for spaces ending HELP texts, which the parser drops): names,
    HELP/TYPE lines, label order and float formatting are the library's (vLLM serves
    generate_latest of its registry)."""
    text = request.getfixturevalue(which)
    assert generate_latest(Reparsed(text)).decode() == strip_help(text)
    # The parser drops what ends a HELP text; the instrumentator's end with a space.
    assert text.count("calculations. \n") == 2 and text.count("important. \n") == 2


def strip_help(text: str) -> str:
    """The page with the spaces that end HELP lines removed."""
    return "".join((line.rstrip(" ") if line.startswith("# HELP") else line) + "\n"
                   for line in text.splitlines())


def test_same_families_types_labels_and_buckets(golden: str, page: str) -> None:
    assert [line for line in page.splitlines() if line.startswith("#")] == [
        line for line in golden.splitlines() if line.startswith("#")]
    assert list(samples(page)) == list(samples(golden))


def test_values_equal_the_golden_page(golden: str, page: str) -> None:
    """Every sample but the per-step latencies and the split of finished reasons."""
    ours, theirs = samples(page), samples(golden)
    for key, value in theirs.items():
        name = key[0]
        if name.startswith(PER_STEP_LATENCIES) and not name.endswith("_created"):
            continue
        if name == "vllm:request_success_total":
            continue
        assert ours[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_finished_reasons_sum_to_the_golden_page(golden: str, page: str) -> None:
    def by_reason(text: str) -> dict[str, float]:
        return {dict(labels)["finished_reason"]: value
                for (name, labels), value in samples(text).items()
                if name == "vllm:request_success_total"}

    ours, theirs = by_reason(page), by_reason(golden)
    assert sum(ours.values()) == sum(theirs.values()) == 48
    assert ours == {"stop": 48, "length": 0, "abort": 0}  # the lab does not say which
    assert theirs == {"stop": 40, "length": 8, "abort": 0}


def test_per_step_latencies_lag_by_the_running_requests(golden: str, page: str) -> None:
    ours, theirs = samples(page), samples(golden)
    labels = (("engine", "0"), ("model_name", "llama-3-8b"))
    running_intervals = 6 * (RUNNING_GENERATED - 1)
    for name in PER_STEP_LATENCIES:
        count = (f"{name}_count", labels)
        assert ours[count] == theirs[count] - running_intervals == 48 * 199 + 2 * 49
        assert ours[(f"{name}_sum", labels)] == pytest.approx(48 * 4.0 + 2 * 1.0)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL histogram_quantile over (upper bound, cumulative count) pairs."""
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    raise AssertionError("rank beyond +Inf")


@pytest.mark.parametrize("which", ["golden", "page"])
def test_expected_values(which: str, expected: dict[str, Any],
                         request: pytest.FixtureRequest) -> None:
    values = samples(request.getfixturevalue(which))

    def total(name: str, **match: str) -> float:
        return sum(v for (n, labels), v in values.items()
                   if n == name and match.items() <= dict(labels).items())

    prompt, generation = total("vllm:prompt_tokens_total"), total("vllm:generation_tokens_total")
    assert (prompt + generation) / 60 == pytest.approx(expected["tokens_per_second"], rel=1e-6)
    assert prompt / 60 == pytest.approx(expected["prompt_tokens_per_second"], rel=1e-6)
    assert generation / 60 == pytest.approx(expected["generation_tokens_per_second"], rel=1e-6)
    assert total("vllm:num_requests_running") == expected["running"]
    assert total("vllm:num_requests_waiting") == expected["waiting"]
    latency = expected["latency_series"]
    buckets = sorted((float(dict(labels)["le"]), v) for (n, labels), v in values.items()
                     if n == f"{latency}_bucket")
    assert quantile(0.95, buckets[:-1]) == pytest.approx(expected["latency_p95_seconds"])
    success = (total("vllm:request_success_total", finished_reason="stop")
               + total("vllm:request_success_total", finished_reason="length"))
    failure = total("http_requests_total", status="5xx")
    assert success / 60 == pytest.approx(expected["success_per_second"], rel=1e-6)
    assert failure / 60 == pytest.approx(expected["failure_per_second"], rel=1e-5)
    assert 100 * failure / (failure + success) == pytest.approx(expected["error_percent"])


def test_fresh_server_has_every_engine_series_at_zero(golden: str) -> None:
    """Everything but the HTTP series of a handler and status exists before the first
    request, at 0; the HTTP families are announced with no samples."""
    fresh = vllm.Exporter("llama-3-8b", clock=lambda: START).text()
    first_use = ("http_requests_", "http_request_duration_seconds_")
    assert list(samples(fresh)) == [key for key in samples(golden)
                                    if not key[0].startswith(first_use)]
    assert all(value == (START if name.endswith("_created") else 0.0)
               for (name, _), value in samples(fresh).items())
    assert "# TYPE http_requests_total counter\n# HELP http_request_duration_highr" in fresh
    assert fresh.endswith("# TYPE http_request_duration_seconds histogram\n")


def test_aborts_and_rejections_touch_only_http() -> None:
    exporter = vllm.Exporter("llama-3-8b", clock=lambda: START)
    before = samples(exporter.text())
    exporter.aborted(prompt_tokens=PROMPT, waited_seconds=2.0)
    exporter.rejected()
    after = samples(exporter.text())
    changed = {key[0] for key, value in after.items() if before.get(key) != value}
    assert changed and all(name.startswith("http_") for name in changed)
    requests = {dict(labels)["status"]: value for (name, labels), value in after.items()
                if name == "http_requests_total"}
    assert requests == {"2xx": 2.0}


def test_tokens_move_per_step_not_at_request_end() -> None:
    exporter = vllm.Exporter("llama-3-8b", clock=lambda: START)
    exporter.started(prompt_tokens=PROMPT, queue_seconds=0.0, ttft_seconds=0.05)
    exporter.served(prompt=100.0, generation=7.0)
    values = samples(exporter.text())
    labels = (("engine", "0"), ("model_name", "llama-3-8b"))
    assert values[("vllm:prompt_tokens_total", labels)] == PROMPT
    assert values[("vllm:generation_tokens_total", labels)] == 7.0
    assert values[("vllm:time_to_first_token_seconds_count", labels)] == 1
    assert values[("vllm:e2e_request_latency_seconds_count", labels)] == 0


def test_kv_cache_usage_is_the_running_requests_blocks(page: str) -> None:
    labels = (("engine", "0"), ("model_name", "llama-3-8b"))
    usage = samples(page)[("vllm:kv_cache_usage_perc", labels)]
    assert usage == pytest.approx(6 * math.ceil(900 / 16) / (vllm.KV_GPU_BLOCKS - 1))


def test_buckets_follow_the_sources() -> None:
    assert vllm.buckets_1_2_5(8192) == (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
    assert vllm.buckets_1_2_5(100) == (1, 2, 5, 10, 20, 50, 100)  # the docstring's example
    assert vllm.go_float(1760000005.0) == "1.760000005e+09"
    assert vllm.go_float(2560.0) == "2560.0"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
@pytest.mark.parametrize("which", ["golden", "page"])
def test_promtool_parses_the_page(which: str, request: pytest.FixtureRequest) -> None:
    """Only lint about vLLM's own names (the colon), no parse error."""
    text = request.getfixturevalue(which)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                            capture_output=True, check=False)
    assert result.returncode in (0, 3), result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert all(line.endswith("metric names should not contain ':'") for line in lines), lines
