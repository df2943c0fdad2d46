"""The TGI exporter of the lab (e2e/runtimes/tgi.py) against the page written by hand from
TGI 3.3.7's sources (tests/golden/tgi.prom) and the values tests/golden/tgi.yaml expects."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from runtimes import tgi  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
PROMPT, GENERATED, FAILED_AFTER = 800, 200, 50
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')


def families(text: str) -> dict[str, tuple[str, dict[tuple[str, tuple], float]]]:
    """Family name -> (type, {(sample name, sorted labels): value}), with the sample names
    as written (prometheus_client's parser adds ``_total`` to counters; TGI does not)."""
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    out: dict[str, tuple[str, dict]] = {name: (kind, {}) for name, kind in types.items()}
    current = ""
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            current = line.split()[2]
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            pairs = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', labels or "")))
            out[current][1][(name, pairs)] = float(value)
    return out


def scenario() -> tgi.Exporter:
    """The 60 seconds of tests/golden/tgi.yaml, told to an exporter through the protocol."""
    exporter = tgi.Exporter("llama-3-8b")
    ttfts = [0.03] * 10 + [0.15] * 20 + [0.4] * 15 + [0.9] * 4 + [3.0]
    failed = {10, 11}  # two of the 0.15 s group (the YAML's assumption)
    for i, ttft in enumerate(ttfts):
        queue = max(ttft - 0.02, 0.0)
        exporter.started(prompt_tokens=PROMPT, queue_seconds=queue, ttft_seconds=ttft)
        ok = i not in failed
        exporter.finished(prompt_tokens=PROMPT, generation_tokens=GENERATED if ok else FAILED_AFTER,
                          queue_seconds=queue, ttft_seconds=ttft,
                          e2e_seconds=ttft + (4.0 if ok else 1.0), ok=ok)
    for _ in range(3):
        exporter.aborted(prompt_tokens=PROMPT, waited_seconds=5.0)
    for _ in range(6):
        exporter.started(prompt_tokens=PROMPT, queue_seconds=0.1, ttft_seconds=0.12)
    exporter.served(prompt=56 * PROMPT, generation=48 * GENERATED + 2 * FAILED_AFTER + 6 * 100)
    exporter.gauges(running=6, waiting=4)
    return exporter


@pytest.fixture(scope="module")
def golden_text() -> str:
    return (GOLDEN / "tgi.prom").read_text()


@pytest.fixture(scope="module")
def golden(golden_text: str) -> dict:
    return families(golden_text)


@pytest.fixture(scope="module")
def expected() -> dict:
    return yaml.safe_load((GOLDEN / "tgi.yaml").read_text())["expected"]


@pytest.fixture(scope="module")
def page() -> str:
    return scenario().text()


def test_page_has_the_golden_families_types_labels_and_buckets(golden: dict, page: str) -> None:
    mine = families(page)
    assert mine.keys() == golden.keys()
    for name, (kind, samples) in golden.items():
        assert mine[name][0] == kind, name
        assert mine[name][1].keys() == samples.keys(), name


def test_help_and_type_lines_and_layout_match(golden_text: str, page: str) -> None:
    def meta(text: str) -> set[str]:
        return {line for line in text.splitlines() if line.startswith("#")}
    assert meta(page) == meta(golden_text)
    # The Rust exporter ends every family with an empty line; no _total, no _created.
    assert page.endswith("\n\n") and "\n\n\n" not in page
    assert "_total" not in page and "_created" not in page


# The lab tells an exporter of a request when it starts or is aborted, never when it
# arrives: TGI counts the 4 queued requests already (validated, in the queue); the
# exporter counts them when they start.
QUEUED_NOT_TOLD = {"tgi_request_count": 4, "tgi_request_input_length_count": 4,
                   "tgi_request_input_length_sum": 4 * PROMPT,
                   "tgi_request_input_length_bucket": 4}


def test_values_equal_the_golden_page_but_the_queued_arrivals(golden: dict, page: str) -> None:
    mine = families(page)
    for name, (_, samples) in golden.items():
        for key, value in samples.items():
            gap = QUEUED_NOT_TOLD.get(key[0], 0) if value else 0
            assert math.isclose(mine[name][1][key], value - gap, rel_tol=1e-9, abs_tol=1e-9), key


def test_expected_values_come_out(golden: dict, page: str, expected: dict) -> None:
    def value(fams: dict, family: str, sample: str, **labels: str) -> float:
        return fams[family][1][(sample, tuple(sorted(labels.items())))]

    for fams, queued_tokens in ((golden, 0), (families(page), 4 * PROMPT)):
        prompt = value(fams, "tgi_request_input_length", "tgi_request_input_length_sum")
        generated = value(fams, "tgi_request_generated_tokens",
                          "tgi_request_generated_tokens_sum")
        assert (prompt + queued_tokens) / 60 == pytest.approx(expected["prompt_tokens_per_second"])
        assert generated / 60 == pytest.approx(expected["generation_tokens_per_second"])
        assert (prompt + queued_tokens + generated) / 60 == pytest.approx(
            expected["tokens_per_second"])
        assert value(fams, "tgi_batch_current_size", "tgi_batch_current_size") == expected[
            "running"]
        assert value(fams, "tgi_queue_size", "tgi_queue_size") == expected["waiting"]
        ok = value(fams, "tgi_request_success", "tgi_request_success")
        failed = value(fams, "tgi_request_failure", "tgi_request_failure", err="generation")
        assert ok / 60 == pytest.approx(expected["success_per_second"])
        assert failed / 60 == pytest.approx(expected["failure_per_second"], rel=1e-4)
        assert 100 * failed / (failed + ok) == pytest.approx(expected["error_percent"])
        name = expected["latency_series"]
        assert histogram_quantile(0.95, fams[name][1], name) == pytest.approx(
            expected["latency_p95_seconds"], abs=1e-4)


def histogram_quantile(q: float, samples: dict, name: str) -> float:
    """Prometheus's histogram_quantile over one unlabelled histogram's buckets."""
    buckets = sorted((float(dict(labels)["le"]), count) for (sample, labels), count
                     in samples.items() if sample == f"{name}_bucket")
    rank = q * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            return previous_bound + (bound - previous_bound) * (
                (rank - previous_count) / (count - previous_count))
        previous_bound, previous_count = bound, count
    raise AssertionError("no bucket reaches the rank")


def test_bucket_bounds_are_server_rs_ones() -> None:
    durations = tgi.duration_buckets()
    assert len(durations) == 35
    assert durations[0] == pytest.approx(0.00015) and durations[-1] == pytest.approx(
        0.0001 * 1.5 ** 35)
    assert tgi.linear_buckets(8192)[:3] == (81.92, 163.84, 245.76)
    assert tgi.linear_buckets(8191)[-1] == 8191.0


def test_rust_float_formatting() -> None:
    assert tgi.rust_float(6.0) == "6"
    assert tgi.rust_float(0.0) == "0"
    assert tgi.rust_float(0.00015000000000000001) == "0.00015000000000000001"
    assert tgi.rust_float(1e-05) == "0.00001"
    assert tgi.rust_float(737.1899999999999) == "737.1899999999999"
    assert tgi.rust_float(1e16) == "10000000000000000"


def test_fresh_page_is_empty() -> None:
    """Nothing is recorded before the first request, and tgi_batch_max_total_tokens is set
    before the recorder exists: a fresh TGI serves an empty page."""
    exporter = tgi.Exporter("llama-3-8b")
    assert exporter.text() == ""
    exporter.gauges(running=0, waiting=0)
    exporter.served(prompt=0.0, generation=0.0)
    assert exporter.text() == ""


def test_series_appear_with_their_first_use() -> None:
    exporter = tgi.Exporter("llama-3-8b")
    exporter.gauges(running=0, waiting=1)
    assert set(families(exporter.text())) == {"tgi_queue_size"}
    exporter.started(prompt_tokens=PROMPT, queue_seconds=0.1, ttft_seconds=0.12)
    exporter.gauges(running=1, waiting=0)
    assert set(families(exporter.text())) == {
        "tgi_request_count", "tgi_request_input_length", "tgi_queue_size",
        "tgi_batch_current_size", "tgi_request_skipped_tokens"}
    exporter.rejected()
    fams = families(exporter.text())
    assert fams["tgi_request_failure"][1] == {
        ("tgi_request_failure", (("err", "overloaded"),)): 1.0}
    assert fams["tgi_request_count"][1][("tgi_request_count", ())] == 2
    assert fams["tgi_request_input_length"][1][("tgi_request_input_length_count", ())] == 1
    assert "tgi_request_success" not in fams and "tgi_request_duration" not in fams


def test_tokens_move_only_when_requests_end() -> None:
    exporter = tgi.Exporter("llama-3-8b")
    exporter.started(prompt_tokens=PROMPT, queue_seconds=0.0, ttft_seconds=0.02)
    exporter.served(prompt=PROMPT, generation=150)
    fams = families(exporter.text())
    assert "tgi_request_generated_tokens" not in fams
    assert fams["tgi_request_skipped_tokens"][1][("tgi_request_skipped_tokens_count", ())] == 150
    exporter.finished(prompt_tokens=PROMPT, generation_tokens=150, queue_seconds=0.0,
                      ttft_seconds=0.02, e2e_seconds=3.0, ok=False)
    fams = families(exporter.text())
    assert "tgi_request_generated_tokens" not in fams and "tgi_request_success" not in fams


def test_golden_page_parses(golden_text: str) -> None:
    assert len(list(text_string_to_metric_families(golden_text))) == 13
