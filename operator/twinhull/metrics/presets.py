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


@dataclass(frozen=True)
class Preset:
    """The metric names of one runtime."""

    prompt_tokens: str
    """Counter of prompt (input) tokens processed."""
    generation_tokens: str
    """Counter of generated (output) tokens."""
    running: str
    """Gauge of requests being served."""
    waiting: str
    """Gauge of requests queued."""
    latency_bucket: str
    """Histogram buckets of the latency the tier targets (time to first token, else the
    whole request)."""
    success: str
    """Counter of requests completed."""


PRESETS: dict[Runtime, Preset] = {
    "vllm": Preset("vllm:prompt_tokens_total", "vllm:generation_tokens_total",
                   "vllm:num_requests_running", "vllm:num_requests_waiting",
                   "vllm:time_to_first_token_seconds_bucket", "vllm:request_success_total"),
    "sglang": Preset("sglang:prompt_tokens_total", "sglang:generation_tokens_total",
                     "sglang:num_running_reqs", "sglang:num_queue_reqs",
                     "sglang:time_to_first_token_seconds_bucket", "sglang:num_requests_total"),
    # TGI exports token counts as histograms: their _sum is the token counter.
    "tgi": Preset("tgi_request_input_length_sum", "tgi_request_generated_tokens_sum",
                  "tgi_batch_current_size", "tgi_queue_size", "tgi_request_duration_bucket",
                  "tgi_request_success"),
}
PRESETS["generic"] = PRESETS["vllm"]  # servers that mimic vLLM's names (most do)

BY = "sum by (cluster, zone)"
FLEET = ("namespace", "twinhull_deployment")
"""Labels of the fleet-wide queries: one series per ModelDeployment."""
FLEET_CELLS = (*FLEET, "cluster", "zone")
"""Labels of the per-zone fleet-wide queries: one series per ModelDeployment and zone."""
_SEL = '{twinhull_deployment!=""}'


def _by(labels: tuple[str, ...]) -> str:
    return f"sum by ({', '.join(labels)})"


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
    p, agg = PRESETS[runtime], _by(by)
    return (f"{agg} (rate({p.prompt_tokens}{_SEL}[{window}])) + "
            f"{agg} (rate({p.generation_tokens}{_SEL}[{window}]))")


def fleet_running(runtime: Runtime, by: tuple[str, ...] = FLEET, window: str = "1m") -> str:
    """Requests being served, of every ModelDeployment of a runtime, from series scraped
    within ``window``. Pure."""
    return f"{_by(by)} {fresh(PRESETS[runtime].running + _SEL, window)}"


def fleet_latency_p95(runtime: Runtime, window: str = "1m") -> str:
    """95th percentile of the runtime's latency histogram (time to first token where the
    runtime has it) per ModelDeployment, in one query. Pure."""
    p = PRESETS[runtime]
    return (f"histogram_quantile(0.95, sum by (namespace, twinhull_deployment, le) "
            f"(rate({p.latency_bucket}{_SEL}[{window}])))")


def fleet_demand_forecast(runtime: Runtime, window: str, *, start_s: float, end_s: float
                          ) -> str:
    """The highest tokens per second of every ModelDeployment of a runtime over a past
    window, from ``start_s`` to ``end_s`` seconds ago (a pre-warm window of
    :func:`twinhull.plan.scaling.prewarm_windows`), as one subquery. Pure."""
    length = max(1, round(start_s - end_s))
    step = max(1, length // 20)
    return (f"max_over_time(({fleet_demand_tokens(runtime, window)})[{length}s:{step}s] "
            f"offset {max(0, round(end_s))}s)")


def fleet_error_percent(runtime: Runtime, failures: str, window: str = "1m") -> str:
    """Failed requests in percent of all, per ModelDeployment, in one query: ``failures``
    is a counter of failed requests labelled like the runtime's (the servers themselves
    count only successes; failures are counted by whatever fronts them, e.g. the gateway).
    A deployment without a failure series gets no value: not verified on errors. Pure."""
    p, agg = PRESETS[runtime], _by(FLEET)
    fail = f"{agg} (rate({failures}{_SEL}[{window}]))"
    ok = f"{agg} (rate({p.success}{_SEL}[{window}]))"
    return f"100 * {fail} / ({fail} + {ok})"


def fleet_waiting(runtime: Runtime, by: tuple[str, ...] = FLEET, window: str = "1m") -> str:
    """Queued requests of every ModelDeployment of a runtime, in one query, from series
    scraped within ``window``. Pure."""
    return f"{_by(by)} {fresh(PRESETS[runtime].waiting + _SEL, window)}"


def _selector(namespace: str, deployment: str) -> str:
    return f'{{namespace="{namespace}", twinhull_deployment="{deployment}"}}'


def demand_tokens(runtime: Runtime, namespace: str, deployment: str, window: str = "1m"
                  ) -> str:
    """Tokens per second (prompt + generated), per cluster and zone. Pure."""
    p, sel = PRESETS[runtime], _selector(namespace, deployment)
    return (f"{BY} (rate({p.prompt_tokens}{sel}[{window}])) + "
            f"{BY} (rate({p.generation_tokens}{sel}[{window}]))")


def waiting(runtime: Runtime, namespace: str, deployment: str, window: str = "1m") -> str:
    """Queued requests, per cluster and zone, from series scraped within ``window``.
    Pure."""
    p = PRESETS[runtime]
    return f"{BY} {fresh(p.waiting + _selector(namespace, deployment), window)}"


def latency_p95(runtime: Runtime, namespace: str, deployment: str, window: str = "5m") -> str:
    """95th percentile latency in seconds, per cluster and zone. Pure."""
    p = PRESETS[runtime]
    return (f"histogram_quantile(0.95, sum by (cluster, zone, le) "
            f"(rate({p.latency_bucket}{_selector(namespace, deployment)}[{window}])))")
