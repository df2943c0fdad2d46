"""SGLang's ``/metrics`` page for one server (``--enable-metrics``), as SGLang 0.5.23 serves it.

SGLang runs prometheus_client in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) and the HTTP
server answers ``/metrics`` with a ``MultiProcessCollector`` over every process's files: the
tokenizer process (request counters and latency histograms, written when a request's outputs
reach it, and the HTTP counters of its middleware) and the scheduler process (running/queued
gauges and KV usage at each stats report, token counters per prefill batch and decode step,
queue time at a request's first forward). That mode shapes the page: no ``_created`` series,
labels sorted by name, a series exists only once its first event wrote it, and gauges whose
``multiprocess_mode`` is the default ``all`` carry the writing process's ``pid``.

The simulated clients are non-streaming ``POST /v1/chat/completions`` requests
(``is_streaming="false"``): a server error then answers 500, a client that leaves while queued
400, a rejection (``--max-queued-requests``) 503. Series whose values depend on GPU timing,
CPU time or hardware constants are not written (tests/golden/sglang.yaml lists them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

VERSION = "SGLang 0.5.23"
SOURCES = (
    "sglang 0.5.23 (PyPI wheel sglang-0.5.23-cp311-cp311-manylinux_2_34_x86_64.whl, sha256 "
    "00b3cd5b265ac76c64185fbb6b95424f324ddd9f428d0306b77bc9db9d859937):",
    "sglang/srt/observability/metrics_collector.py",
    "sglang/srt/observability/http_request_metrics.py",
    "sglang/srt/observability/req_time_stats.py",
    "sglang/srt/observability/cpu_monitor.py",
    "sglang/srt/observability/func_timer.py",
    "sglang/srt/managers/tokenizer_manager.py",
    "sglang/srt/managers/scheduler.py",
    "sglang/srt/managers/scheduler_components/metrics_reporter.py",
    "sglang/srt/managers/scheduler_components/batch_result_processor.py",
    "sglang/srt/managers/scheduler_components/output_streamer.py",
    "sglang/srt/managers/scheduler_components/pool_stats_observer.py",
    "sglang/srt/entrypoints/http_server.py",
    "sglang/srt/entrypoints/openai/serving_base.py",
    "sglang/srt/entrypoints/openai/serving_chat.py",
    "sglang/srt/utils/common.py",
    "sglang/srt/utils/gauge_histogram.py",
    "sglang/srt/arg_groups/fields/observability.py",
    "sglang/srt/arg_groups/fields/serving.py",
    "sglang/srt/environ.py",
    "prometheus_client 0.26.0: multiprocess.py, exposition.py, utils.py",
    "cross-checked: github.com/sgl-project/sglang python/sglang/srt/observability/"
    "metrics_collector.py at 016d8605e45876180312e29d6988e1de06562472 (older than 0.5.23; "
    "the same families on this page)",
)
EXTRA_ARGS = ("--enable-metrics",)

FORCE_STREAM_INTERVAL = 50
"""SGLANG_FORCE_STREAM_INTERVAL: a non-streaming request's outputs reach the tokenizer every
50 generated tokens and at its end; TTFT and inter-token latency are observed per output."""
KV_POOL_TOKENS = 400_000
"""Assumed KV pool (max_total_num_tokens) of Llama-3-8B on one 80 GB GPU; SGLang sizes it from
the GPU memory left at startup."""
SCHEDULER_PID = "1234"
"""Illustrative: the real page carries the scheduler process's OS pid."""

CHAT = ("/v1/chat/completions", "POST")
SCRAPE = ("/metrics", "GET")
SEEDED_PREFILL_MODES = ("input", "device_hit", "host_hit", "storage_hit")

TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (*TTFT_BUCKETS, 600, 1200, 1800, 2400)
ITL_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.010, 0.015, 0.020, 0.025, 0.030, 0.035, 0.040,
               0.060, 0.080, 0.100, 0.200, 0.400, 0.600, 0.800, 1.0, 2.0, 4.0, 6.0, 8.0)
TOKEN_BUCKETS = (100, 300, 500, 700, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 7000, 8000,
                 9000, 10000, 12500, 15000, 17500, 20000, 22500, 25000, 27500, 30000, 35000,
                 40000, 60000, 80000, 100000, 200000, 300000, 400000, 600000, 800000,
                 1000000, 1100000)
QUEUE_BUCKETS = (0.0, 0.001, 0.005, 0.010, 0.050, 0.100, 0.200, 0.500, 1, 2, 3, 4, 5, 10, 15,
                 20, 30, 40, 50, 60, 70, 80, 90, 100, 200, 300, 400, 500, 600, 700, 800, 900,
                 1000, 1200, 1400, 1600, 1800, 2000, 2500, 3000)
ROUTING_KEY_BOUNDS = (1, 2, 3, 5, 7, 10, 20, 50, 100, 200)
TOKENIZER_HISTOGRAMS = (  # name, with the is_streaming label
    ("time_to_first_token_seconds", True),
    ("inter_token_latency_seconds", False),
    ("request_time_per_output_token_seconds", True),
    ("e2e_request_latency_seconds", True),
    ("prompt_tokens_histogram", False),
    ("uncached_prompt_tokens_histogram", False),
    ("generation_tokens_histogram", False),
)

HELP = {
    "prompt_tokens_total": "Number of prefill tokens processed.",
    "generation_tokens_total": "Number of generation tokens processed.",
    "num_requests_total": "Number of requests processed.",
    "num_aborted_requests_total": "Number of requests aborted.",
    "http_requests_total": "Total number of HTTP requests by endpoint and method",
    "http_responses_total": "Total number of HTTP responses by endpoint and status code",
    "time_to_first_token_seconds": "Histogram of time to first token in seconds.",
    "inter_token_latency_seconds": "Histogram of inter-token latency in seconds.",
    "request_time_per_output_token_seconds": "Per-request TPOT in seconds: (finished_time - "
    "first_token_time) / (completion_tokens - 1).",
    "e2e_request_latency_seconds": "Histogram of End-to-end request latency in seconds",
    "prompt_tokens_histogram": "Histogram of prompt token length.",
    "uncached_prompt_tokens_histogram": "Histogram of uncached (compute) prompt token length.",
    "generation_tokens_histogram": "Histogram of generation token length.",
    "http_requests_active": "Number of currently active HTTP requests",
    "routing_keys_active": "Number of unique routing keys with active requests",
    "prefill_effective_tokens_total": "Effective prefill tokens with retracted-request re-counts "
    "excluded, updated on each log interval. mode: device_hit, host_hit, storage_hit, input. "
    "Windowed prefix cache hit rate = rate(sum of *_hit) / rate(sum of all modes); per-tier rate "
    "uses a single *_hit mode in the numerator.",
    "realtime_tokens_total": "Total number of tokens processed (updated on each log interval). "
    "mode: prefill_compute, prefill_cache, decode.",
    "queue_time_seconds": "Histogram of queueing time in seconds.",
}

GAUGE_HELP = {  # the scheduler's log_stats gauges, in the order it writes them
    "num_running_reqs": "The number of running requests.",
    "num_queue_reqs": "The number of requests in the waiting queue.",
    "num_grammar_queue_reqs": "The number of requests in the grammar waiting queue.",
    "cache_hit_rate": "The prefix cache hit rate.",
    "decode_sum_seq_lens": "The sum of all sequence lengths in decode.",
    "token_usage": "The token usage.",
    "full_token_usage": "The token usage for full attention layers.",
    "swa_token_usage": "The token usage for SWA layers.",
    "mamba_usage": "The token usage for Mamba layers.",
    "num_used_tokens": "The number of used tokens.",
    "kv_used_tokens": "Number of actively used token slots in the KV cache pool.",
    "swa_available_tokens": "Number of free token slots in the SWA pool (hybrid-SWA only).",
    "swa_evictable_tokens": "Number of evictable (radix-cached) token slots in the SWA pool.",
    "swa_used_tokens": "Number of actively used token slots in the SWA pool.",
    "mamba_available_tokens": "Number of free state slots in the mamba SSM pool (hybrid-SSM "
    "only).",
    "mamba_evictable_tokens": "Number of evictable (radix-cached) state slots in the mamba SSM "
    "pool.",
    "mamba_used_tokens": "Number of actively used state slots in the mamba SSM pool.",
    "spec_accept_length": "Mean acceptance length of speculative decoding (accepted drafts + "
    "bonus token per forward).",
    "spec_accept_rate": "Speculative acceptance rate (`accepted drafts / proposed drafts` in "
    "batch).",
    "spec_cap_length": "Mean DSpark confidence-scheduled verify window per verify step, incl the "
    "bonus slot (0 when no cap is scheduled).",
    "spec_block_accept_length": "Mean uncapped full-block accept length per verify step (accept "
    "+ cap-trimmed drafts; exact only in DSpark cap-accept mode).",
    "spec_num_steps": "Currently active speculative_num_steps.",
    "spec_num_draft_tokens": "Currently active speculative_num_draft_tokens (decouples from "
    "steps under topk>1).",
    "num_prefill_bootstrap_queue_reqs": "The number of requests in the prefill bootstrap queue.",
    "num_prefill_inflight_queue_reqs": "The number of requests in the prefill inflight queue.",
    "num_decode_prealloc_queue_reqs": "The number of requests in the decode prealloc queue.",
    "num_decode_transfer_queue_reqs": "The number of requests in the decode transfer queue.",
    "num_decode_host_receive_queue_reqs": "Requests in the decode transfer queue receiving into "
    "host memory or waiting for device admission.",
    "num_decode_deferred_kv_release_reqs": "The number of failed decode requests whose KV "
    "allocations are held pending transfer drain acknowledgement or timeout.",
    "pending_prealloc_token_usage": "The token usage for pending preallocated tokens (not "
    "preallocated yet).",
    "prealloc_full_token_usage": "Share of the full-attention KV pool held by decode requests "
    "whose KV transfer is pending (preallocated, not yet running); same capacity basis as "
    "sglang:full_token_usage.",
    "prealloc_swa_token_usage": "Share of the SWA KV pool held by decode requests whose KV "
    "transfer is pending; same capacity basis as sglang:swa_token_usage.",
    "utilization": "The utilization.",
    "fwd_occupancy": "Forward pass GPU occupancy percentage.",
    "is_cuda_graph": "Whether the batch is using CUDA graph.",
    "num_unique_running_routing_keys": "Number of unique routing keys in running batch.",
}
ROUTING_KEY_HELP = {
    "routing_key_running_req_count": "Distribution of routing keys by running request count "
    "(gt < count <= le).",
    "routing_key_all_req_count": "Distribution of routing keys by running+waiting request count "
    "(gt < count <= le).",
}
PID_GAUGE_HELP = {  # multiprocess_mode "all": one series per writing process, with its pid
    "num_retracted_reqs": "The number of retracted requests.",
    "num_paused_reqs": "The number of paused requests by async weight sync.",
}

Labels = tuple[tuple[str, str], ...]


def go_float(value: float) -> str:
    """A value or ``le`` as prometheus_client writes it (exponent form from 1e6 on, as Go)."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def render_labels(labels: Labels) -> str:
    """``{k="v",...}`` sorted by label name, or nothing without labels."""
    if not labels:
        return ""
    pairs = (f'{k}="{escape(v)}"' for k, v in sorted(labels))
    return "{" + ",".join(pairs) + "}"


def escape(value: str) -> str:
    """A label value escaped as the text format requires."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def header(name: str, kind: str, doc: str) -> list[str]:
    """The HELP and TYPE lines of one family."""
    return [f"# HELP sglang:{name} {doc}", f"# TYPE sglang:{name} {kind}"]


def sample(name: str, labels: Labels, value: float) -> str:
    """One sample line."""
    return f"sglang:{name}{render_labels(labels)} {go_float(value)}"


@dataclass
class Histogram:
    """One histogram series: per-bucket counts (not cumulative) and the sum."""

    bounds: tuple[float, ...]
    counts: list[float] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0.0] * (len(self.bounds) + 1)

    def observe(self, value: float, count: float = 1.0, total: float | None = None) -> None:
        """``count`` observations of ``value`` adding ``total`` (default ``value * count``) to
        the sum, as SGLang's batched inter-token observation does."""
        index = next((i for i, b in enumerate(self.bounds) if value <= b), len(self.bounds))
        self.counts[index] += count
        self.total += value * count if total is None else total

    def lines(self, name: str, labels: Labels) -> list[str]:
        """_sum, cumulative _bucket and _count, in the multiprocess collector's order."""
        out = [sample(f"{name}_sum", labels, self.total)]
        running = 0.0
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append(sample(f"{name}_bucket", (*labels, ("le", go_float(bound))), running))
        out.append(sample(f"{name}_count", labels, running))
        return out


class Exporter:
    """The tokenizer's and the scheduler's metrics of one SGLang server, merged as its
    /metrics handler merges them."""

    def __init__(self, model_name: str) -> None:
        self.tokenizer: Labels = (("engine_type", "unified"), ("model_name", model_name))
        self.streamed: Labels = (*self.tokenizer, ("is_streaming", "false"))
        self.scheduler: Labels = (*self.tokenizer, ("moe_ep_rank", "0"), ("pp_rank", "0"),
                                  ("tp_rank", "0"))
        self.counters: dict[str, float] = {}
        self.histograms: dict[str, Histogram] = {}
        self.http_requests: dict[tuple[str, str], float] = {}
        self.http_responses: dict[tuple[str, str, str], float] = {}
        self.http_active: dict[tuple[str, str], float] = {}
        self.realtime: dict[str, float] = {}
        self.effective = dict.fromkeys(SEEDED_PREFILL_MODES, 0.0)
        self.first_tokens_owed = 0.0
        self.kv_tokens = 0.0
        self.answered = 0.0
        self.arrived = 0.0
        self.gauge_values = dict.fromkeys(GAUGE_HELP, 0.0)
        self.gauge_values["fwd_occupancy"] = math.nan  # no device timer: SGLang writes NaN

    def _observe(self, name: str, bounds: tuple[float, ...], value: float, count: float = 1.0,
                 total: float | None = None) -> None:
        self.histograms.setdefault(name, Histogram(bounds)).observe(value, count, total)

    def _count(self, name: str, amount: float) -> None:
        self.counters[name] = self.counters.get(name, 0.0) + amount

    def _respond(self, status: int, *, in_flight: bool = True) -> None:
        """A chat request's HTTP answer: the middleware counts the response and, for a request
        it saw in flight, no longer counts it active."""
        key = (*CHAT, str(status))
        self.http_responses[key] = self.http_responses.get(key, 0.0) + 1
        self.answered += 1
        if in_flight and self.http_active.get(CHAT, 0.0) > 0:
            self.http_active[CHAT] -= 1
        self._note_arrivals(self.answered + self.http_active.get(CHAT, 0.0))

    def _note_arrivals(self, seen: float) -> None:
        """The middleware's request count: answered plus in-flight requests, never
        decreasing; its series exist from the first request on."""
        if seen > self.arrived:
            self.arrived = seen
            self.http_requests[CHAT] = seen
            self.http_active.setdefault(CHAT, 0.0)

    def served(self, prompt: float, generation: float) -> None:
        """Prefill batches and decode steps count their tokens as they run; each request's
        first token comes from its prefill forward, so it is not a decode token."""
        if prompt > 0:
            self.realtime["prefill_compute"] = self.realtime.get("prefill_compute", 0.0) + prompt
            self.effective["input"] += prompt
        first = min(self.first_tokens_owed, generation)
        self.first_tokens_owed -= first
        if generation - first > 0:
            self.realtime["decode"] = self.realtime.get("decode", 0.0) + generation - first
        self.kv_tokens += prompt + generation

    def started(self, *, prompt_tokens: int, queue_seconds: float,
                ttft_seconds: float) -> None:
        """The scheduler observes the queue time at the request's first forward."""
        self._observe("queue_time_seconds", QUEUE_BUCKETS, queue_seconds)
        self.first_tokens_owed += 1

    def finished(self, *, prompt_tokens: int, generation_tokens: int, queue_seconds: float,
                 ttft_seconds: float, e2e_seconds: float, ok: bool) -> None:
        """The tokenizer's metrics of a request's outputs: its first output (token 50 or the
        end) observes TTFT unless it is already the server's abort; later outputs observe the
        inter-token latency; the end counts the request (failed ones too), its tokens and its
        latency, and TPOT only for a stop or length finish. The protocol has no per-token
        event, so TTFT and inter-token latency are observed here, at the end."""
        n = generation_tokens
        if ok or n >= FORCE_STREAM_INTERVAL:
            self._observe("time_to_first_token_seconds", TTFT_BUCKETS, ttft_seconds)
        per_token = (e2e_seconds - ttft_seconds) / (n - 1) if n > 1 else 0.0
        later = n - min(FORCE_STREAM_INTERVAL, n)
        if later > 0:
            self._observe("inter_token_latency_seconds", ITL_BUCKETS, per_token, later,
                          later * per_token)
        self._count("prompt_tokens_total", prompt_tokens)
        self._count("generation_tokens_total", n)
        self._count("num_requests_total", 1)
        self._observe("e2e_request_latency_seconds", E2E_BUCKETS, e2e_seconds)
        if ok and n > 1 and per_token > 0:
            self._observe("request_time_per_output_token_seconds", ITL_BUCKETS, per_token)
        self._observe("prompt_tokens_histogram", TOKEN_BUCKETS, prompt_tokens)
        self._observe("uncached_prompt_tokens_histogram", TOKEN_BUCKETS, prompt_tokens)
        self._observe("generation_tokens_histogram", TOKEN_BUCKETS, n)
        self.kv_tokens = max(0.0, self.kv_tokens - prompt_tokens - n)
        self._respond(200 if ok else 500)

    def aborted(self, *, prompt_tokens: int, waited_seconds: float) -> None:
        """The tokenizer notices the disconnect, counts an abort and answers 400 (the scheduler
        drops the queued request without a metric)."""
        self._count("num_aborted_requests_total", 1)
        self._respond(400)

    def rejected(self) -> None:
        """A full queue (--max-queued-requests) aborts the request with 503 and no metric."""
        self._respond(503, in_flight=False)

    def gauges(self, *, running: int, waiting: int) -> None:
        """A scheduler stats report: request gauges and KV usage (decode_sum_seq_lens only
        from decode batches); the middleware's in-flight chat requests."""
        values = self.gauge_values
        values["num_running_reqs"], values["num_queue_reqs"] = float(running), float(waiting)
        usage = self.kv_tokens / KV_POOL_TOKENS
        values["token_usage"], values["full_token_usage"] = round(usage, 2), usage
        values["num_used_tokens"] = values["kv_used_tokens"] = self.kv_tokens
        if running:
            values["decode_sum_seq_lens"] = self.kv_tokens
        in_flight = float(running + waiting)
        if in_flight or CHAT in self.http_active:
            self.http_active[CHAT] = in_flight
        self._note_arrivals(self.answered + in_flight)

    def text(self) -> str:
        """The page served to this scrape, which the middleware has already counted."""
        self.http_requests[SCRAPE] = self.http_requests.get(SCRAPE, 0.0) + 1
        self.http_active[SCRAPE] = 1.0
        page = "\n".join(self._tokenizer_lines() + self._scheduler_lines()) + "\n"
        self.http_active[SCRAPE] = 0.0
        key = (*SCRAPE, "200")
        self.http_responses[key] = self.http_responses.get(key, 0.0) + 1
        return page

    def _tokenizer_lines(self) -> list[str]:
        out: list[str] = []
        for name, labels in (("prompt_tokens_total", self.streamed),
                             ("generation_tokens_total", self.streamed),
                             ("num_requests_total", self.streamed),
                             ("num_aborted_requests_total", self.tokenizer)):
            if name in self.counters:
                out += header(name, "counter", HELP[name])
                out.append(sample(name, labels, self.counters[name]))
        if self.http_requests:
            out += header("http_requests_total", "counter", HELP["http_requests_total"])
            out += [sample("http_requests_total", (("endpoint", e), ("method", m)), v)
                    for (e, m), v in self.http_requests.items()]
        if self.http_responses:
            out += header("http_responses_total", "counter", HELP["http_responses_total"])
            out += [sample("http_responses_total",
                           (("endpoint", e), ("method", m), ("status_code", s)), v)
                    for (e, m, s), v in self.http_responses.items()]
        for name, streamed in TOKENIZER_HISTOGRAMS:
            if name in self.histograms:
                out += header(name, "histogram", HELP[name])
                labels = self.streamed if streamed else self.tokenizer
                out += self.histograms[name].lines(name, labels)
        if self.http_active:
            out += header("http_requests_active", "gauge", HELP["http_requests_active"])
            out += [sample("http_requests_active", (("endpoint", e), ("method", m)), v)
                    for (e, m), v in self.http_active.items()]
        out += header("routing_keys_active", "gauge", HELP["routing_keys_active"])
        out.append(sample("routing_keys_active", (), 0.0))
        return out

    def _scheduler_lines(self) -> list[str]:
        out = header("prefill_effective_tokens_total", "counter",
                     HELP["prefill_effective_tokens_total"])
        out += [sample("prefill_effective_tokens_total", (*self.scheduler, ("mode", mode)), v)
                for mode, v in self.effective.items()]
        if self.realtime:
            out += header("realtime_tokens_total", "counter", HELP["realtime_tokens_total"])
            out += [sample("realtime_tokens_total", (*self.scheduler, ("mode", mode)), v)
                    for mode, v in self.realtime.items()]
        for name, doc in GAUGE_HELP.items():
            out += header(name, "gauge", doc)
            out.append(sample(name, self.scheduler, self.gauge_values[name]))
        edges = (0, *ROUTING_KEY_BOUNDS)
        for name, doc in ROUTING_KEY_HELP.items():
            out += header(name, "gauge", doc)
            out += [sample(name, (*self.scheduler, ("gt", str(gt)), ("le", le)), 0.0)
                    for gt, le in zip(edges, (*map(str, ROUTING_KEY_BOUNDS), "+Inf"),
                                      strict=True)]
        for name, doc in PID_GAUGE_HELP.items():
            out += header(name, "gauge", doc)
            out.append(sample(name, (*self.scheduler, ("pid", SCHEDULER_PID)), 0.0))
        if "queue_time_seconds" in self.histograms:
            out += header("queue_time_seconds", "histogram", HELP["queue_time_seconds"])
            out += self.histograms["queue_time_seconds"].lines("queue_time_seconds",
                                                               self.scheduler)
        return out
