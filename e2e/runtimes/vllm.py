"""vLLM 0.11.0: the ``/metrics`` page of one OpenAI-compatible API server process
(``vllm serve``, one engine, ``--api-server-count 1``).

vLLM serves ``/metrics`` on its HTTP port (``--port``, 8000) with no flag; the page is
prometheus_client's default registry, written by ``generate_latest`` (text format 0.0.4).
What that means for the page, from the sources in :data:`SOURCES`:

* every ``vllm:*`` series carries ``model_name`` (the served model name) and ``engine``
  (``"0"``) and exists from startup at 0: the stat logger creates all its children when the
  engine starts, including ``vllm:request_success_total`` for each ``finished_reason``
  (``stop``, ``length``, ``abort``); counters and histograms also have ``_created`` series
  (vLLM 0.11.0 never calls ``disable_created_metrics``);
* tokens move per engine step, not at request end: a request's whole prompt is added to
  ``vllm:prompt_tokens_total`` in the step that yields its first token (together with that
  token's time to first token), and every generated token to
  ``vllm:generation_tokens_total`` in the step that made it, so running requests (and
  failed ones, before they failed) are on the page;
* the per-request histograms and ``vllm:request_success_total`` are recorded only for a
  request the engine finishes (stop or length). A client that disconnects and a request
  that fails in the server are both aborted in the front end, which records nothing for
  them: vLLM 0.11.0 has no failure counter (``finished_reason="abort"`` stays 0 on this
  path and ``"error"`` does not exist yet);
* the HTTP metrics of prometheus-fastapi-instrumentator (7.1.0, its defaults) count every
  request by ``method``, grouped ``status`` (``2xx``, ``5xx``) and route ``handler``: a
  non-streaming request that fails in the engine is a ``5xx``; a client that disconnects
  is a ``2xx`` (the cancelled handler returns ``None``, which FastAPI answers as 200).

The lab's requests are taken as non-streaming ``POST /v1/completions`` with one sequence
(``n=1``). Left out (the lab has nothing to give them): the process and Python collectors
(``process_*``, ``python_*``), ``vllm:cache_config_info`` (the GPU's block count among its
labels), ``vllm:iteration_tokens_total`` (one sample per engine step, and the lab has
ticks, not steps) and the HTTP size summaries (``http_request_size_bytes``,
``http_response_size_bytes``: body sizes).
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence

VERSION = "vLLM 0.11.0"
SOURCES = (
    "vllm-project/vllm@v0.11.0 vllm/v1/metrics/loggers.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/metrics/stats.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/metrics/prometheus.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/engine/output_processor.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/engine/async_llm.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/engine/parallel_sampling.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/engine/__init__.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/core/sched/scheduler.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/core/kv_cache_manager.py",
    "vllm-project/vllm@v0.11.0 vllm/v1/core/block_pool.py",
    "vllm-project/vllm@v0.11.0 vllm/entrypoints/openai/api_server.py",
    "vllm-project/vllm@v0.11.0 vllm/entrypoints/utils.py",
    "vllm-project/vllm@v0.11.0 vllm/entrypoints/cli/serve.py",
    "vllm-project/vllm@v0.11.0 vllm/engine/metrics.py (not imported by the V1 server)",
    "trallnag/prometheus-fastapi-instrumentator@v7.1.0 "
    "src/prometheus_fastapi_instrumentator/middleware.py",
    "trallnag/prometheus-fastapi-instrumentator@v7.1.0 "
    "src/prometheus_fastapi_instrumentator/metrics.py",
    "prometheus/client_python@v0.23.1 prometheus_client/exposition.py",
    "prometheus/client_python@v0.23.1 prometheus_client/utils.py",
)
EXTRA_ARGS: tuple[str, ...] = ()

ENGINE = "0"
"""The ``engine`` label of a server with one engine core."""
MAX_MODEL_LEN = 8192
"""Llama 3 8B's context length; vLLM derives the token-count buckets from it."""
KV_BLOCK_SIZE = 16
"""vLLM's default KV-cache block size on CUDA (tokens per block)."""
KV_GPU_BLOCKS = 27648
"""Blocks of an assumed GPU (Llama 3 8B in bf16 on one 80 GB A100 at the default
``--gpu-memory-utilization 0.9``: about 54 GiB of KV cache at 128 KiB per token). The lab
has no GPU, so this only scales ``vllm:kv_cache_usage_perc`` to a plausible value."""
HANDLER = "/v1/completions"
"""The route the lab's requests are taken to use (the instrumentator's ``handler``)."""

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
TOKEN_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
                         2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
                           40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
N_BUCKETS = (1, 2, 5, 10, 20)
HTTP_HIGHR_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3,
                      3.5, 4, 4.5, 5, 7.5, 10, 30, 60)
HTTP_LOWR_BUCKETS = (0.1, 0.5, 1)


def buckets_1_2_5(limit: int) -> tuple[int, ...]:
    """vLLM's token-count buckets: 1, 2, 5 times powers of ten up to ``limit``."""
    out: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            if mantissa * scale > limit:
                return tuple(out)
            out.append(mantissa * scale)
        scale *= 10


def go_float(value: float) -> str:
    """A sample value or bound as prometheus_client writes it (``floatToGoString``)."""
    value = float(value)
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+0{dot - 1}"
    return text


def _escape(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Child:
    """One labelled series: its value (a histogram's sum), bucket counts (histograms,
    not cumulative) and creation time."""

    __slots__ = ("counts", "created", "labels", "value")

    def __init__(self, labels: tuple[tuple[str, str], ...], created: float,
                 buckets: int) -> None:
        self.labels, self.created = labels, created
        self.value = 0.0
        self.counts = [0] * buckets


class _Family:
    """One metric family as prometheus_client keeps it: children in creation order."""

    def __init__(self, name: str, documentation: str, kind: str, labelnames: Sequence[str],
                 clock: Callable[[], float], buckets: Sequence[float] = ()) -> None:
        self.name, self.documentation, self.kind = name, documentation, kind
        self.labelnames = tuple(labelnames)
        self.bounds = (*map(float, buckets), math.inf) if kind == "histogram" else ()
        self.children: dict[tuple[str, ...], _Child] = {}
        self._clock = clock

    def labels(self, *values: str) -> _Child:
        """The child of these label values, created (now) on first use."""
        child = self.children.get(values)
        if child is None:
            child = _Child(tuple(zip(self.labelnames, values, strict=True)), self._clock(),
                           len(self.bounds))
            self.children[values] = child
        return child

    def observe(self, child: _Child, value: float, times: int = 1) -> None:
        """``times`` observations of ``value`` (bounds are inclusive, as ``le`` says)."""
        child.counts[bisect_left(self.bounds, value)] += times
        child.value += value * times

    def render(self) -> list[str]:
        """The family's lines as ``generate_latest`` writes them."""
        shown = f"{self.name}_total" if self.kind == "counter" else self.name
        help_text = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        lines = [f"# HELP {shown} {help_text}", f"# TYPE {shown} {self.kind}"]
        for child in self.children.values():
            if self.kind == "histogram":
                cumulative = 0
                for bound, count in zip(self.bounds, child.counts, strict=True):
                    cumulative += count
                    lines.append(_sample(f"{self.name}_bucket",
                                         (*child.labels, ("le", go_float(bound))),
                                         cumulative))
                lines.append(_sample(f"{self.name}_count", child.labels, cumulative))
                lines.append(_sample(f"{self.name}_sum", child.labels, child.value))
            else:
                lines.append(_sample(shown, child.labels, child.value))
        if self.kind != "gauge" and self.children:
            lines += [f"# HELP {self.name}_created {help_text}",
                      f"# TYPE {self.name}_created gauge"]
            lines += [_sample(f"{self.name}_created", child.labels, child.created)
                      for child in self.children.values()]
        return lines


def _sample(name: str, labels: tuple[tuple[str, str], ...], value: float) -> str:
    """One sample line, labels sorted by name as prometheus_client writes them."""
    if not labels:
        return f"{name} {go_float(value)}"
    pairs = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels))
    return f"{name}{{{pairs}}} {go_float(value)}"


class Exporter:
    """The page of one vLLM 0.11.0 server (see the module's docstring). ``clock`` gives the
    wall-clock time of ``_created`` series (tests fix it)."""

    def __init__(self, model_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._families: list[_Family] = []
        self._cached_tokens = 0.0
        engine_labels = ("model_name", "engine")

        def family(name: str, documentation: str, kind: str,
                   buckets: Sequence[float] = (),
                   labelnames: Sequence[str] = engine_labels) -> _Family:
            created = _Family(name, documentation, kind, labelnames, clock, buckets)
            self._families.append(created)
            return created

        def engine(name: str, documentation: str, kind: str,
                   buckets: Sequence[float] = ()) -> tuple[_Family, _Child]:
            created = family(name, documentation, kind, buckets)
            return created, created.labels(model_name, ENGINE)

        tokens = buckets_1_2_5(MAX_MODEL_LEN)
        self._running = engine("vllm:num_requests_running",
                               "Number of requests in model execution batches.", "gauge")
        self._waiting = engine("vllm:num_requests_waiting",
                               "Number of requests waiting to be processed.", "gauge")
        self._kv_usage = engine("vllm:kv_cache_usage_perc",
                                "KV-cache usage. 1 means 100 percent usage.", "gauge")
        self._prefix_queries = engine(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in terms of number of queried tokens.", "counter")
        engine("vllm:prefix_cache_hits",
               "Prefix cache hits, in terms of number of cached tokens.", "counter")
        engine("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
               "counter")
        self._prompt = engine("vllm:prompt_tokens", "Number of prefill tokens processed.",
                              "counter")
        self._generation = engine("vllm:generation_tokens",
                                  "Number of generation tokens processed.", "counter")
        success = family("vllm:request_success", "Count of successfully processed requests.",
                         "counter", labelnames=(*engine_labels, "finished_reason"))
        self._success = {reason: success.labels(model_name, ENGINE, reason)
                         for reason in ("stop", "length", "abort")}
        self._request_prompt = engine("vllm:request_prompt_tokens",
                                      "Number of prefill tokens processed.", "histogram",
                                      tokens)
        self._request_generation = engine("vllm:request_generation_tokens",
                                          "Number of generation tokens processed.",
                                          "histogram", tokens)
        self._max_generation = engine(
            "vllm:request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.", "histogram", tokens)
        self._n = engine("vllm:request_params_n", "Histogram of the n request parameter.",
                         "histogram", N_BUCKETS)
        self._max_tokens = engine("vllm:request_params_max_tokens",
                                  "Histogram of the max_tokens request parameter.",
                                  "histogram", tokens)
        self._ttft = engine("vllm:time_to_first_token_seconds",
                            "Histogram of time to first token in seconds.", "histogram",
                            TTFT_BUCKETS)
        self._tpot = engine(
            "vllm:time_per_output_token_seconds",
            "Histogram of time per output token in seconds."
            "DEPRECATED: Use vllm:inter_token_latency_seconds instead.",
            "histogram", TOKEN_LATENCY_BUCKETS)
        self._itl = engine("vllm:inter_token_latency_seconds",
                           "Histogram of inter-token latency in seconds.", "histogram",
                           TOKEN_LATENCY_BUCKETS)
        self._request_tpot = engine("vllm:request_time_per_output_token_seconds",
                                    "Histogram of time_per_output_token_seconds per request.",
                                    "histogram", TOKEN_LATENCY_BUCKETS)
        self._e2e = engine("vllm:e2e_request_latency_seconds",
                           "Histogram of e2e request latency in seconds.", "histogram",
                           REQUEST_LATENCY_BUCKETS)
        self._queue = engine("vllm:request_queue_time_seconds",
                             "Histogram of time spent in WAITING phase for request.",
                             "histogram", REQUEST_LATENCY_BUCKETS)
        self._inference = engine("vllm:request_inference_time_seconds",
                                 "Histogram of time spent in RUNNING phase for request.",
                                 "histogram", REQUEST_LATENCY_BUCKETS)
        self._prefill = engine("vllm:request_prefill_time_seconds",
                               "Histogram of time spent in PREFILL phase for request.",
                               "histogram", REQUEST_LATENCY_BUCKETS)
        self._decode = engine("vllm:request_decode_time_seconds",
                              "Histogram of time spent in DECODE phase for request.",
                              "histogram", REQUEST_LATENCY_BUCKETS)
        # The instrumentator names it http_requests_total; prometheus_client keeps the
        # name without _total and writes the suffix back.
        self._http_total = family("http_requests",
                                  "Total number of requests by method, status and handler.",
                                  "counter", labelnames=("method", "status", "handler"))
        highr = family("http_request_duration_highr_seconds",
                       "Latency with many buckets but no API specific labels. "
                       "Made for more accurate percentile calculations. ",
                       "histogram", HTTP_HIGHR_BUCKETS, labelnames=())
        self._http_highr = (highr, highr.labels())
        self._http_lowr = family("http_request_duration_seconds",
                                 "Latency with only few buckets by handler. "
                                 "Made to be only used if aggregation by handler is important. ",
                                 "histogram", HTTP_LOWR_BUCKETS, labelnames=("method", "handler"))

    def served(self, prompt: float, generation: float) -> None:
        """Generated tokens count as they are made; the prompt was counted whole at the
        request's first token (:meth:`started`), so ``prompt`` is not used."""
        self._generation[1].value += generation
        self._cached_tokens += generation

    def started(self, *, prompt_tokens: int, queue_seconds: float,
                ttft_seconds: float) -> None:
        """The step that yields the first token counts the whole prompt and the time to
        first token; the prefix-cache lookup when it was scheduled queried every prompt
        token (the lab has no shared prefixes: no hits)."""
        self._prompt[1].value += prompt_tokens
        self._prefix_queries[1].value += prompt_tokens
        _observe(self._ttft, ttft_seconds)
        self._cached_tokens += prompt_tokens

    def finished(self, *, prompt_tokens: int, generation_tokens: int, queue_seconds: float,
                 ttft_seconds: float, e2e_seconds: float, ok: bool) -> None:
        """Inter-token latencies are observed per step in vLLM; the lab knows them only now
        (evenly spaced over the decode time). A completed request is counted as
        ``finished_reason="stop"`` (the lab does not tell stop from length) with its
        per-request histograms; a failed one is aborted in the front end and only its HTTP
        status shows."""
        decode = e2e_seconds - ttft_seconds
        intervals = generation_tokens - 1
        if intervals > 0:
            _observe(self._itl, decode / intervals, intervals)
            _observe(self._tpot, decode / intervals, intervals)
        self._cached_tokens -= prompt_tokens + generation_tokens
        self._http("2xx" if ok else "5xx", e2e_seconds)
        if not ok:
            return
        self._success["stop"].value += 1
        _observe(self._e2e, e2e_seconds)
        _observe(self._queue, queue_seconds)
        _observe(self._prefill, ttft_seconds - queue_seconds)
        _observe(self._decode, decode)
        _observe(self._inference, e2e_seconds - queue_seconds)
        _observe(self._request_prompt, prompt_tokens)
        _observe(self._request_generation, generation_tokens)
        _observe(self._request_tpot, decode / intervals if intervals > 0 else 0.0)
        _observe(self._max_generation, generation_tokens)
        _observe(self._n, 1)
        if generation_tokens:
            # The OpenAI server always sets max_tokens; the lab's clients are taken to ask
            # for what they get.
            _observe(self._max_tokens, generation_tokens)

    def aborted(self, *, prompt_tokens: int, waited_seconds: float) -> None:
        """Nothing in the engine's metrics; the HTTP request ends as a 200."""
        self._http("2xx", waited_seconds)

    def rejected(self) -> None:
        """vLLM has no queue limit: a client that gives up at once."""
        self._http("2xx", 0.0)

    def gauges(self, *, running: int, waiting: int) -> None:
        """The scheduler's state, with the KV blocks the running requests hold (their
        tokens shared evenly, whole blocks each; the null block is not counted)."""
        self._running[1].value = running
        self._waiting[1].value = waiting
        if running == 0:
            self._cached_tokens = 0.0
        per_request = max(self._cached_tokens, 0.0) / running if running else 0.0
        blocks = running * math.ceil(per_request / KV_BLOCK_SIZE)
        self._kv_usage[1].value = min(blocks / (KV_GPU_BLOCKS - 1), 1.0)

    def text(self) -> str:
        """The page, family by family in registration order."""
        return "".join(line + "\n" for family in self._families for line in family.render())

    def _http(self, status: str, seconds: float) -> None:
        """One request through the instrumentator's middleware."""
        self._http_total.labels("POST", status, HANDLER).value += 1
        _observe(self._http_highr, seconds)
        _observe((self._http_lowr, self._http_lowr.labels("POST", HANDLER)), seconds)


def _observe(series: tuple[_Family, _Child], value: float, times: int = 1) -> None:
    """``times`` observations of ``value`` into a histogram child."""
    series[0].observe(series[1], value, times)
