"""The SGLang exporter of the lab (e2e/runtimes/sglang.py) against the page written by hand from
SGLang 0.5.23's sources (tests/golden/sglang.prom) and the values tests/golden/sglang.yaml
expects."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from runtimes import sglang  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
PROMPT, GENERATED, FAILED_AFTER, RUNNING_GENERATED = 800, 200, 50, 100
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
FIRST_USE = frozenset({
    "sglang:prompt_tokens_total", "sglang:generation_tokens_total",
    "sglang:num_requests_total", "sglang:num_aborted_requests_total",
    "sglang:http_responses_total", "sglang:time_to_first_token_seconds",
    "sglang:inter_token_latency_seconds", "sglang:request_time_per_output_token_seconds",
    "sglang:e2e_request_latency_seconds", "sglang:prompt_tokens_histogram",
    "sglang:uncached_prompt_tokens_histogram", "sglang:generation_tokens_histogram",
    "sglang:realtime_tokens_total", "sglang:queue_time_seconds",
})
"""Families absent from a fresh server's first scrape (the HTTP request families are there,
holding that scrape itself)."""

Families = dict[str, tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]]


def families(text: str) -> Families:
    """Family name as written in TYPE -> (type, {(sample name, sorted labels): value})."""
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    out: Families = {}
    current = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, current, kind = line.split()
            base = current.removesuffix("_total") if kind == "counter" else current
            assert types[base] == kind, line
            out[current] = (kind, {})
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            pairs = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or "")))
            out[current][1][(name, pairs)] = float(value)
    return out


def comments(text: str) -> list[str]:
    """The HELP and TYPE lines, in order."""
    return [line for line in text.splitlines() if line.startswith("#")]


def scenario() -> sglang.Exporter:
    """The 60 seconds of tests/golden/sglang.yaml, told to an exporter through the protocol."""
    exporter = sglang.Exporter("llama-3-8b")
    ttfts = [0.03] * 10 + [0.15] * 20 + [0.4] * 15 + [0.9] * 4 + [3.0]
    failed = {10, 11}  # two of the 0.15 s group (the YAML's assumption)
    for ttft in ttfts:
        exporter.started(prompt_tokens=PROMPT, queue_seconds=max(ttft - 0.02, 0.0),
                         ttft_seconds=ttft)
    half = (48 * GENERATED + 2 * FAILED_AFTER + 6 * RUNNING_GENERATED) / 2
    exporter.served(prompt=50 * PROMPT, generation=half)
    exporter.served(prompt=6 * PROMPT, generation=half)
    for i, ttft in enumerate(ttfts):
        ok = i not in failed
        exporter.finished(prompt_tokens=PROMPT, generation_tokens=GENERATED if ok else FAILED_AFTER,
                          queue_seconds=max(ttft - 0.02, 0.0), ttft_seconds=ttft,
                          e2e_seconds=ttft + (4.0 if ok else 1.0), ok=ok)
    for _ in range(3):
        exporter.aborted(prompt_tokens=PROMPT, waited_seconds=5.0)
    exporter.gauges(running=6, waiting=4)
    return exporter


@pytest.fixture(scope="module")
def golden_text() -> str:
    return (GOLDEN / "sglang.prom").read_text()


@pytest.fixture(scope="module")
def expected() -> dict:
    return yaml.safe_load((GOLDEN / "sglang.yaml").read_text())


@pytest.fixture(scope="module")
def page() -> str:
    return scenario().text()


def same(a: float, b: float) -> bool:
    """Equal within float rounding (NaN equals NaN)."""
    return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def test_pages_parse(golden_text: str, page: str) -> None:
    for text in (golden_text, page, sglang.Exporter("llama-3-8b").text()):
        assert list(text_string_to_metric_families(text))


def test_families_types_labels_and_help_match_the_golden_page(golden_text: str,
                                                              page: str) -> None:
    golden, ours = families(golden_text), families(page)
    assert {n: k for n, (k, _) in ours.items()} == {n: k for n, (k, _) in golden.items()}
    for name, (_, samples) in golden.items():
        assert set(ours[name][1]) == set(samples), name
    assert comments(page) == comments(golden_text)


def test_histogram_buckets_match_the_golden_page(golden_text: str, page: str) -> None:
    def bounds(fams: Families) -> dict[str, list[str]]:
        return {name: sorted({dict(labels)["le"] for (sample, labels) in samples
                              if sample.endswith("_bucket")}, key=float)
                for name, (kind, samples) in fams.items() if kind == "histogram"}

    golden = bounds(families(golden_text))
    assert golden == bounds(families(page))
    assert golden["sglang:time_to_first_token_seconds"][-2:] == ["400.0", "+Inf"]
    assert golden["sglang:e2e_request_latency_seconds"][-2:] == ["2400.0", "+Inf"]
    assert golden["sglang:queue_time_seconds"][0] == "0.0"
    assert "1.1e+06" in golden["sglang:prompt_tokens_histogram"]


def test_values_equal_the_golden_page(golden_text: str, page: str) -> None:
    golden, ours = families(golden_text), families(page)
    for name, (_, samples) in golden.items():
        for key, value in samples.items():
            assert same(ours[name][1][key], value), (name, key, ours[name][1][key], value)


def value(fams: Families, family: str, **labels: str) -> float:
    """The sum of a family's samples (bare name, or _count for histograms) matching labels."""
    kind, samples = fams[family]
    wanted = family + "_count" if kind == "histogram" else family
    return sum(v for (name, pairs), v in samples.items()
               if name == wanted and labels.items() <= dict(pairs).items())


def quantile(q: float, fams: Families, family: str) -> float:
    """histogram_quantile over one histogram series' cumulative buckets."""
    buckets = sorted((float(dict(pairs)["le"]), v) for (name, pairs), v in fams[family][1].items()
                     if name == family + "_bucket")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    raise AssertionError("rank beyond the last bucket")


def test_expected_values_come_out(page: str, expected: dict) -> None:
    fams = families(page)
    want = expected["expected"]
    prompt = value(fams, "sglang:prompt_tokens_total")
    generation = value(fams, "sglang:generation_tokens_total")
    chat = {"endpoint": "/v1/chat/completions"}
    success = value(fams, "sglang:http_responses_total", status_code="200", **chat)
    failure = value(fams, "sglang:http_responses_total", status_code="500", **chat)
    got = {
        "tokens_per_second": (prompt + generation) / 60,
        "prompt_tokens_per_second": prompt / 60,
        "generation_tokens_per_second": generation / 60,
        "running": value(fams, "sglang:num_running_reqs"),
        "waiting": value(fams, "sglang:num_queue_reqs"),
        "latency_p95_seconds": quantile(0.95, fams, want["latency_series"]),
        "success_per_second": success / 60,
        "failure_per_second": failure / 60,
        "error_percent": 100 * failure / (failure + success),
    }
    for key, number in got.items():
        assert math.isclose(number, want[key], rel_tol=1e-5), (key, number, want[key])
    assert value(fams, "sglang:request_time_per_output_token_seconds") == success
    assert value(fams, "sglang:num_requests_total") == success + failure


def test_a_fresh_server_has_only_its_startup_series(golden_text: str, expected: dict) -> None:
    fresh = families(sglang.Exporter("llama-3-8b").text())
    assert set(fresh) == set(families(golden_text)) - FIRST_USE
    listed = " ".join(expected["appear_on_first_use"])
    assert all(name in listed for name in FIRST_USE)
    for name, (_, samples) in fresh.items():
        for (_, pairs), number in samples.items():
            if name.startswith("sglang:http_requests"):  # the scrape counts itself
                assert dict(pairs) == {"endpoint": "/metrics", "method": "GET"}
                assert number == 1.0
            elif name != "sglang:fwd_occupancy":
                assert number == 0.0, (name, pairs)


def test_token_counters_move_as_the_runtime_moves_them() -> None:
    exporter = sglang.Exporter("m")
    exporter.started(prompt_tokens=800, queue_seconds=0.1, ttft_seconds=0.2)
    exporter.served(prompt=800, generation=30)
    fams = families(exporter.text())
    assert "sglang:prompt_tokens_total" not in fams  # only when the request ends
    assert value(fams, "sglang:realtime_tokens_total", mode="prefill_compute") == 800
    assert value(fams, "sglang:realtime_tokens_total", mode="decode") == 29  # first from prefill
    assert value(fams, "sglang:prefill_effective_tokens_total", mode="input") == 800


def test_failures_aborts_and_rejections() -> None:
    exporter = sglang.Exporter("m")
    exporter.started(prompt_tokens=100, queue_seconds=0.0, ttft_seconds=0.05)
    exporter.finished(prompt_tokens=100, generation_tokens=10, queue_seconds=0.0,
                      ttft_seconds=0.05, e2e_seconds=0.5, ok=False)
    exporter.aborted(prompt_tokens=100, waited_seconds=3.0)
    exporter.rejected()
    fams = families(exporter.text())
    # failed before its first output (token 50): counted as a request, no TTFT, no TPOT
    assert value(fams, "sglang:num_requests_total") == 1
    assert value(fams, "sglang:prompt_tokens_total") == 100
    assert "sglang:time_to_first_token_seconds" not in fams
    assert "sglang:request_time_per_output_token_seconds" not in fams
    assert value(fams, "sglang:num_aborted_requests_total") == 1  # the client abort only
    codes = {dict(pairs)["status_code"]: v
             for (_, pairs), v in fams["sglang:http_responses_total"][1].items()}
    assert codes == {"500": 1, "400": 1, "503": 1}
    assert value(fams, "sglang:http_requests_total", endpoint="/v1/chat/completions") == 3


def test_in_flight_requests_are_counted_once() -> None:
    exporter = sglang.Exporter("m")
    exporter.gauges(running=2, waiting=1)
    exporter.started(prompt_tokens=10, queue_seconds=0.0, ttft_seconds=0.1)
    exporter.finished(prompt_tokens=10, generation_tokens=5, queue_seconds=0.0,
                      ttft_seconds=0.1, e2e_seconds=0.3, ok=True)
    exporter.gauges(running=1, waiting=1)
    chat = {"endpoint": "/v1/chat/completions"}
    fams = families(exporter.text())
    assert value(fams, "sglang:http_requests_total", **chat) == 3
    assert value(fams, "sglang:http_requests_active", **chat) == 2


def test_second_scrape_sees_the_first_answered() -> None:
    exporter = sglang.Exporter("m")
    exporter.text()
    fams = families(exporter.text())
    scrape = {"endpoint": "/metrics"}
    assert value(fams, "sglang:http_requests_total", **scrape) == 2
    assert value(fams, "sglang:http_responses_total", status_code="200", **scrape) == 1
    assert value(fams, "sglang:http_requests_active", **scrape) == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_parses_the_golden_page() -> None:
    """Lint warnings about SGLang's own names (colons, _count gauges) are expected."""
    result = subprocess.run(["promtool", "check", "metrics"], input=(GOLDEN / "sglang.prom")
                            .read_bytes(), capture_output=True, check=False)
    output = (result.stdout + result.stderr).decode()
    assert "parsing error" not in output and "error while linting" not in output, output
    assert result.returncode in (0, 3), output
