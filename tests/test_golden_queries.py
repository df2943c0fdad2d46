"""The presets' queries run by Prometheus' own engine (promtool's rule test harness) over
each runtime's golden /metrics page (tests/golden/<runtime>.prom, written from the
runtime's sources): they must read the demand, queue, running requests, latency and error
rate the golden YAML expects.

The page is a server that started at t=0 with every counter at 0 and was scraped at t=60:
counters (histogram buckets, sums and counts included) grow linearly between, gauges hold
their value. Every series gets the labels the shipped scrape job adds
(twinhull.metrics.scrape), so the queries see what a real installation stores."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from twinhull.metrics.presets import (
    FLEET,
    FLEET_CELLS,
    FLEET_REVISIONS,
    PRESETS,
    fleet_demand_tokens,
    fleet_error_percent,
    fleet_latency_p95,
    fleet_running,
    fleet_waiting,
)

GOLDEN = Path(__file__).parent / "golden"
RUNTIMES = sorted(p.stem for p in GOLDEN.glob("*.prom"))
SCRAPED = {"namespace": "ai", "twinhull_deployment": "ide", "cluster": "east",
           "zone": "east-a", "role": "primary", "revision": "0123456789abcdef",
           "pod": "ide-east-a-7d9f-x2x4k", "job": "twinhull-model-servers",
           "instance": "10.1.1.5:8000"}
STEPS = 4  # samples every 15 s from 0 to 60 s

TOKENS_PER_SECOND = {"sglang": (44800 + 10250) / 60}
"""Where the preset's token counters are not the YAML's: SGLang's preset reads
sglang:realtime_tokens_total (prefill 44800, decode 10250 on the page), which moves while
requests run, not its prompt/generation counters, which move when they end."""
LATENCY_P95 = {"tgi": 0.991, "sglang": 0.925}
"""Where the preset's latency series is not the YAML's. SGLang: its time to first token
(50 observations: cumulative 45 at le=0.8, 49 at le=1.0; rank 47.5: 0.8 + 0.2 x 2.5 / 4
= 0.925). TGI's preset reads the queue time
(tgi_request_queue_duration: ttft - 0.02 s of the 48 completed requests: 10 at 0.01, 18 at
0.13, 15 at 0.38, 4 at 0.88, 1 at 2.98). Rank 0.95 x 48 = 45.6 falls in the bucket
(0.0001 x 1.5^22, 0.0001 x 1.5^23] = (0.74818, 1.12227] holding samples 44..47, so
0.74818 + 0.37409 x (45.6 - 43) / 4 = 0.99134, 0.991 at the test's rounding."""

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+-?\d+)?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def read_page(text: str) -> list[tuple[str, dict[str, str], float, str]]:
    """(name, labels, value, type) of every sample of a text-format page, names exactly as
    written (Prometheus stores TGI's counters without _total; prometheus_client's parser
    would add it)."""
    types: dict[str, str] = {}
    out = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(maxsplit=3)
            types[family] = kind
            continue
        if not line.strip() or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name, body, value = match.groups()
        labels = {k: v for k, v in _LABEL.findall(body or "")}
        family = next((f for f in (name, re.sub(r"_(bucket|sum|count|total|created)$", "",
                                                 name)) if f in types), name)
        out.append((name, labels, float(value), types.get(family, "untyped")))
    return out


def input_series(page: str) -> list[dict[str, str]]:
    """promtool input series: counters linear from 0 to their value, the rest constant."""
    series = []
    for name, labels, value, kind in read_page(page):
        if name.endswith("_created") or value != value:  # timestamps; NaN quantiles
            continue
        all_labels = {**labels, **SCRAPED}
        text = ",".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
        grows = kind in ("counter", "histogram") or (
            kind == "summary" and name.endswith(("_sum", "_count")))
        values = f"0+{value / STEPS!r}x{STEPS}" if grows else f"{value!r}x{STEPS}"
        series.append({"series": f"{name}{{{text}}}", "values": values})
    return series


def _expect(query: str, labels: tuple[str, ...], value: float) -> dict:
    shown = ",".join(f'{k}="{SCRAPED[k]}"' for k in labels)
    return {"expr": f"round({query}, 0.001)", "eval_time": "1m",
            "exp_samples": [{"labels": f"{{{shown}}}", "value": round(value, 3)}]}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) absent")
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_presets_read_the_golden_page_as_expected(runtime: str, tmp_path: Path):
    page = (GOLDEN / f"{runtime}.prom").read_text()
    golden = yaml.safe_load((GOLDEN / f"{runtime}.yaml").read_text())
    want = golden["expected"]
    latency = LATENCY_P95.get(runtime, want["latency_p95_seconds"])
    if runtime not in LATENCY_P95:
        assert want["latency_series"] == PRESETS[runtime].latency.name
    tests = [
        _expect(fleet_demand_tokens(runtime, "1m", FLEET_CELLS), FLEET_CELLS,
                TOKENS_PER_SECOND.get(runtime, want["tokens_per_second"])),
        _expect(fleet_running(runtime, FLEET, "1m"), FLEET, want["running"]),
        _expect(fleet_waiting(runtime, FLEET_CELLS, "1m"), FLEET_CELLS, want["waiting"]),
        _expect(fleet_latency_p95(runtime, "1m"), FLEET, latency),
        _expect(fleet_error_percent(runtime, "1m"), FLEET, want["error_percent"]),
        # per revision (rollout verification reads the new revision's own requests)
        _expect(fleet_latency_p95(runtime, "1m", FLEET_REVISIONS), FLEET_REVISIONS, latency),
        _expect(fleet_error_percent(runtime, "1m", by=FLEET_REVISIONS), FLEET_REVISIONS,
                want["error_percent"]),
    ]
    (tmp_path / "rules.yml").write_text("groups: []\n")
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s", "input_series": input_series(page), "promql_expr_test": tests}]}
    (tmp_path / "test.json").write_text(json.dumps(spec))  # YAML is a superset of JSON
    run = subprocess.run(["promtool", "test", "rules", "test.json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) absent")
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_zone_whose_generated_tokens_do_not_exist_yet_keeps_its_prompt_tokens(
        runtime: str, tmp_path: Path):
    """A new zone where no request has completed: TGI has no generated-token series yet.
    Its demand is its prompt tokens, not missing (a ``+`` of two sums would drop it)."""
    p = PRESETS[runtime]
    own = {label: value.split("|")[0] for label, op, value in p.prompt_tokens.matchers
           if op in ("=", "=~") and value.split("|")[0]}  # a value each matcher takes
    labels = ",".join(f'{k}="{v}"' for k, v in sorted({**own, **SCRAPED}.items()))
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "15s", "tests": [{
        "interval": "15s",
        "input_series": [{"series": f"{p.prompt_tokens.name}{{{labels}}}",
                          "values": "0+150x4"}],
        "promql_expr_test": [_expect(fleet_demand_tokens(runtime, "1m", FLEET_CELLS),
                                     FLEET_CELLS, 10.0)]}]}
    (tmp_path / "rules.yml").write_text("groups: []\n")
    (tmp_path / "test.json").write_text(json.dumps(spec))
    run = subprocess.run(["promtool", "test", "rules", "test.json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-1000:]
