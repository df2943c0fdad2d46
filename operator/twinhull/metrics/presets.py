"""PromQL per serving runtime: the metric names vLLM, TGI and SGLang export, and the
queries twinhull reads per ModelDeployment, by cluster and zone. Pure.

Freshness of each series. The timestamp of an instant-query sample is the evaluation time,
not the time the value was scraped, so the reader cannot tell an old series from a live
one (:mod:`.samples` only catches old *evaluations*). Each query keeps out series whose
newest raw sample is older than the rate window:

* counters are read through ``rate(c[window])``, which has a value only while there are
  two samples within the window: a series that stopped being scraped disappears after one
  window by itself;
* gauges (running, queued requests) are not: an instant selector returns the last sample
  up to the lookback delta (5 minutes by default) after scraping stopped, and federation
  or remote write (samples with explicit timestamps) never writes the staleness marker
  that would end it sooner. A dead pod's queue would then count for minutes. So a gauge
  ``g`` is read as ``g and (time() - timestamp(g) < window)``: ``timestamp()`` of a plain
  selector is the time of the raw sample, and ``and`` matches on every label but the
  metric name, keeping exactly the fresh series. (``last_over_time(g[window])`` would not
  do: it keeps the last value for one whole window, the same problem shortened.)

A ``metric: custom`` query is the tenant's: write it the same way (``rate`` over counters,
the ``timestamp()`` filter over gauges).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from twinhull.api.deployment import Runtime

Matcher = tuple[str, str, str]
"""(label, operator, value) of one PromQL label matcher, e.g. ("status", "=", "5xx")."""


@dataclass(frozen=True)
class Series:
    """A metric name and the label matchers that select what the preset means by it (the
    runtime's own labels only; twinhull's come from the scrape, :mod:`.scrape`)."""

    name: str
    matchers: tuple[Matcher, ...] = ()


@dataclass(frozen=True)
class Preset:
    """The series of one runtime, as its server writes them (golden pages in
    tests/golden/, written from the sources of the versions named there)."""

    prompt_tokens: Series
    """Counter of prompt (input) tokens."""
    generation_tokens: Series
    """Counter of generated (output) tokens."""
    running: Series
    """Gauge of requests being served."""
    waiting: Series
    """Gauge of requests queued."""
    latency: Series
    """Histogram (base name: ``_bucket`` is added) the tier's p95 latency target is
    compared with."""
    latency_meaning: str
    """What :attr:`latency` measures, for status messages and docs."""
    success: Series
    """Counter of requests served to the end (not aborted, not failed)."""
    failure: Series
    """Counter of requests the server failed (not client aborts, not load shedding)."""


def _s(name: str, *matchers: Matcher) -> Series:
    return Series(name, matchers)


PRESETS: dict[Runtime, Preset] = {
    # vLLM 0.11: every vllm:* series exists from start-up, labelled engine and model_name;
    # prompt tokens are counted when a request's first token comes out, generated tokens
    # every engine step. request_success_total counts every finished request by
    # finished_reason (stop, length, abort); a request the server fails is not counted
    # there at all: it shows only as an HTTP 5xx (prometheus-fastapi-instrumentator's
    # http_requests_total on the same page, status grouped as 2xx/4xx/5xx), and only for
    # non-streaming requests (a stream has answered 200 before it fails).
    "vllm": Preset(
        _s("vllm:prompt_tokens_total"), _s("vllm:generation_tokens_total"),
        _s("vllm:num_requests_running"), _s("vllm:num_requests_waiting"),
        _s("vllm:time_to_first_token_seconds"), "time to first token",
        _s("vllm:request_success_total", ("finished_reason", "=~", "stop|length")),
        _s("http_requests_total", ("status", "=", "5xx"), ("handler", "=~", "/v1/.+"))),
    # TGI 3.3: no token counters and no time-to-first-token histogram; nothing exists
    # before the first request (metrics-rs creates a series on first use) and counters
    # have no _total. Prompt tokens: the _sum of the input-length histogram, recorded when
    # a request arrives; generated tokens: that of the generated-tokens histogram,
    # recorded when a request completes (so the rate lags: it moves at completions).
    # Latency: the time a request waited in TGI's queue before joining a batch, the
    # closest TGI has to a time to first token (it leaves out the prefill itself).
    # Failures: err="generation" (engine error) and "incomplete" (a stream cut short);
    # "dropped" is a client that left, "overloaded" a 429 beyond max concurrency.
    "tgi": Preset(
        _s("tgi_request_input_length_sum"), _s("tgi_request_generated_tokens_sum"),
        _s("tgi_batch_current_size"), _s("tgi_queue_size"),
        _s("tgi_request_queue_duration"),
        "time waiting in the queue before joining a batch (TGI has no time to first token)",
        _s("tgi_request_success"),
        _s("tgi_request_failure", ("err", "=~", "generation|incomplete"))),
    # SGLang 0.5 (with --enable-metrics, which the renderer adds): one page merged from
    # its processes (prometheus_client multiprocess), a series exists once written. Its
    # prompt/generation counters move only when a request ends; realtime_tokens_total
    # moves every prefill batch and every 40 decode steps, by mode (prefill_compute,
    # prefill_cache: the prompt; decode: the output). Scheduler series carry rank labels
    # (every TP rank writes them with --enable-metrics-for-all-schedulers: keep rank 0,
    # or no rank label in older releases) and, with priority scheduling, one series per
    # priority plus the total under priority="" (which also matches no priority label).
    # No success or failure counter: num_requests_total counts every ended request,
    # server errors and client aborts included. Its HTTP counters do: 2xx served, 500
    # server error, 503 rejected (--max-queued-requests, load shedding: not a failure),
    # 400 a client gone while queued; streaming requests have answered 200 before any
    # error, so only non-streaming failures show.
    "sglang": Preset(
        _s("sglang:realtime_tokens_total", ("mode", "=~", "prefill_compute|prefill_cache"),
           ("tp_rank", "=~", "0|")),
        _s("sglang:realtime_tokens_total", ("mode", "=", "decode"), ("tp_rank", "=~", "0|")),
        _s("sglang:num_running_reqs", ("priority", "=", ""), ("tp_rank", "=~", "0|")),
        _s("sglang:num_queue_reqs", ("priority", "=", ""), ("tp_rank", "=~", "0|")),
        _s("sglang:time_to_first_token_seconds"), "time to first token",
        _s("sglang:http_responses_total", ("status_code", "=~", "2.."),
           ("endpoint", "=~", "/v1/.+|/generate")),
        _s("sglang:http_responses_total", ("status_code", "=~", "5.."),
           ("status_code", "!=", "503"), ("endpoint", "=~", "/v1/.+|/generate"))),
}
PRESETS["generic"] = PRESETS["vllm"]  # servers that mimic vLLM's names (most do)

BY = "sum by (cluster, zone)"
FLEET = ("namespace", "twinhull_deployment")
"""Labels of the fleet-wide queries: one series per ModelDeployment."""
FLEET_CELLS = (*FLEET, "cluster", "zone")
"""Labels of the per-zone fleet-wide queries: one series per ModelDeployment and zone."""
FLEET_REVISIONS = (*FLEET, "revision")
"""Labels of the per-revision fleet-wide queries: one series per ModelDeployment and
revision its pods run (the pods' ``serving.twinhull.io/revision`` label), so a rollout is
verified on the new revision's own requests."""
_FLEET: tuple[Matcher, ...] = (("twinhull_deployment", "!=", ""),)


def _by(labels: tuple[str, ...]) -> str:
    return f"sum by ({', '.join(labels)})"


def selector(name: str, matchers: tuple[Matcher, ...] = ()) -> str:
    """One PromQL selector: the metric name as a ``__name__`` matcher and every other
    matcher in it, so a preset's own matchers and twinhull's never make two selectors.
    Values are escaped. Pure."""
    parts = [("__name__", "=", name), *matchers]
    return "{" + ", ".join(f'{label}{op}"{_escape(value)}"' for label, op, value in parts) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _of(series: Series, extra: tuple[Matcher, ...], suffix: str = "") -> str:
    return selector(series.name + suffix, (*series.matchers, *extra))


def _tokens(p: Preset, extra: tuple[Matcher, ...], agg: str, window: str) -> str:
    """Prompt plus generated tokens per second, per ``agg`` labels, where a zone that has
    only one of the two counters yet (TGI's generated tokens appear at the first
    completion) keeps that one's value instead of dropping out of the ``+`` (which only
    matches label sets both sides have). One selector with both names cannot do it:
    ``rate`` drops the metric name, and the two series would then collide. Pure."""
    prompt = f"{agg} (rate({_of(p.prompt_tokens, extra)}[{window}]))"
    generation = f"{agg} (rate({_of(p.generation_tokens, extra)}[{window}]))"
    return f"({prompt} + {generation}) or {prompt} or {generation}"


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0,
          "y": 31536000.0}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")


def seconds(duration: str) -> float:
    """A PromQL duration (``1m``, ``90s``, ``1m30s``) in seconds. Raises ValueError naming
    the text when it is not one. Pure."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a PromQL duration such as 30s, 1m or 1m30s")
    return sum(int(n) * _UNITS[u] for n, u in parts)


def fresh(selector: str, window: str) -> str:
    """A gauge selector keeping only series whose newest raw sample is younger than
    ``window`` (see the module docstring). Pure."""
    return f"({selector} and (time() - timestamp({selector}) < {seconds(window):g}))"


def fleet_demand_tokens(runtime: Runtime, window: str = "1m", by: tuple[str, ...] = FLEET
                        ) -> str:
    """Tokens per second of every ModelDeployment of a runtime, in one query, per ``by``
    labels. Pure."""
    return _tokens(PRESETS[runtime], _FLEET, _by(by), window)


def fleet_running(runtime: Runtime, by: tuple[str, ...] = FLEET, window: str = "1m") -> str:
    """Requests being served, of every ModelDeployment of a runtime, from series scraped
    within ``window``. Pure."""
    return f"{_by(by)} {fresh(_of(PRESETS[runtime].running, _FLEET), window)}"


def fleet_waiting(runtime: Runtime, by: tuple[str, ...] = FLEET, window: str = "1m") -> str:
    """Queued requests of every ModelDeployment of a runtime, in one query, from series
    scraped within ``window``. Pure."""
    return f"{_by(by)} {fresh(_of(PRESETS[runtime].waiting, _FLEET), window)}"


def fleet_latency_p95(runtime: Runtime, window: str = "1m", by: tuple[str, ...] = FLEET
                      ) -> str:
    """95th percentile of the runtime's latency histogram (:attr:`Preset.latency`) per
    ``by`` labels (a ModelDeployment, or one of its revisions), in one query. Pure."""
    p = PRESETS[runtime]
    return (f"histogram_quantile(0.95, {_by((*by, 'le'))} "
            f"(rate({_of(p.latency, _FLEET, '_bucket')}[{window}])))")


def fleet_demand_forecast(runtime: Runtime, window: str, *, start_s: float, end_s: float
                          ) -> str:
    """The highest tokens per second of every ModelDeployment of a runtime over a past
    window, from ``start_s`` to ``end_s`` seconds ago (a pre-warm window of
    :func:`twinhull.plan.scaling.prewarm_windows`), as one subquery. Pure."""
    length = max(1, round(start_s - end_s))
    step = max(1, length // 20)
    return (f"max_over_time(({fleet_demand_tokens(runtime, window)})[{length}s:{step}s] "
            f"offset {max(0, round(end_s))}s)")


def fleet_demand_peak(runtime: Runtime, window: str, *, over_s: float = 600) -> str:
    """The highest tokens per second of every ModelDeployment of a runtime over the last
    ``over_s`` seconds (its variability: adaptive headroom), as one subquery. Pure."""
    length = max(1, round(over_s))
    step = max(1, length // 20)
    return f"max_over_time(({fleet_demand_tokens(runtime, window)})[{length}s:{step}s])"


def fleet_error_percent(runtime: Runtime, window: str = "1m", failures: str | None = None,
                        by: tuple[str, ...] = FLEET) -> str:
    """Failed requests in percent of those that ended (failed or served to the end), per
    ``by`` labels (a ModelDeployment, or one of its revisions), in one query, from the
    runtime's own counters (:attr:`Preset.failure`, :attr:`Preset.success`), or from
    ``failures`` (a counter labelled like the runtime's, e.g. the gateway's) instead of
    the runtime's failure counter. A counter that does not
    exist yet (TGI creates its failure series at the first failure, its success series at
    the first success) counts as zero while the other exists. Pure."""
    p, agg = PRESETS[runtime], _by(by)
    failed = Series(failures) if failures else p.failure
    fail = f"{agg} (rate({_of(failed, _FLEET)}[{window}]))"
    ok = f"{agg} (rate({_of(p.success, _FLEET)}[{window}]))"
    fail0, ok0 = f"({fail} or 0 * {ok})", f"({ok} or 0 * {fail})"
    return f"100 * {fail0} / ({fail0} + {ok0})"


def fleet_requests_ended(runtime: Runtime, window: str, failures: str | None = None,
                         by: tuple[str, ...] = FLEET) -> str:
    """Requests that ended (failed or served to the end) over ``window``, per ``by`` labels,
    from the same counters as :func:`fleet_error_percent`: the volume of a burn-rate
    condition's low-traffic guard. Pure."""
    p, agg = PRESETS[runtime], _by(by)
    failed = Series(failures) if failures else p.failure
    fail = f"{agg} (increase({_of(failed, _FLEET)}[{window}]))"
    ok = f"{agg} (increase({_of(p.success, _FLEET)}[{window}]))"
    return f"({fail} or 0 * {ok}) + ({ok} or 0 * {fail})"


def _deployment(namespace: str, deployment: str) -> tuple[Matcher, ...]:
    return (("namespace", "=", namespace), ("twinhull_deployment", "=", deployment))


def requests_during(runtime: Runtime, namespace: str, deployment: str, seconds: float,
                    failures: str | None = None) -> dict[str, str]:
    """Requests of one ModelDeployment over the last ``seconds`` (a failover drill): served
    to the end, failed, and served by the fallback model; each one series labelled
    ``namespace`` and ``twinhull_deployment``. Pure."""
    p, sel = PRESETS[runtime], _deployment(namespace, deployment)
    window = f"{max(1, round(seconds))}s"
    failed = Series(failures) if failures else p.failure

    def count(series: Series, extra: tuple[Matcher, ...] = ()) -> str:
        return f"{_by(FLEET)} (increase({_of(series, (*sel, *extra))}[{window}]))"
    return {"requestsServed": count(p.success), "requestsFailed": count(failed),
            "fallbackRequests": count(p.success, (("role", "=", "fallback"),))}


def demand_tokens(runtime: Runtime, namespace: str, deployment: str, window: str = "1m"
                  ) -> str:
    """Tokens per second (prompt + generated) of one ModelDeployment, per cluster and
    zone. Pure."""
    return _tokens(PRESETS[runtime], _deployment(namespace, deployment), BY, window)


def waiting(runtime: Runtime, namespace: str, deployment: str, window: str = "1m") -> str:
    """Queued requests of one ModelDeployment, per cluster and zone, from series scraped
    within ``window``. Pure."""
    sel = _of(PRESETS[runtime].waiting, _deployment(namespace, deployment))
    return f"{BY} {fresh(sel, window)}"


def latency_p95(runtime: Runtime, namespace: str, deployment: str, window: str = "5m") -> str:
    """95th percentile of the runtime's latency histogram, in seconds, of one
    ModelDeployment, per cluster and zone. Pure."""
    sel = _of(PRESETS[runtime].latency, _deployment(namespace, deployment), "_bucket")
    return f"histogram_quantile(0.95, sum by (cluster, zone, le) (rate({sel}[{window}])))"
