"""Text Generation Inference (TGI) 3.3.7: the ``/metrics`` page of one router process.

TGI's router (Rust) records through the ``metrics`` crate 0.23 into
``metrics-exporter-prometheus`` 0.15.3 and serves ``PrometheusHandle::render()`` at
``/metrics`` on its main HTTP port (``--port``, 3000 by default, 80 in the Docker image);
no flag is needed. What that means for the page, from the sources in :data:`SOURCES`:

* names are written as recorded: counters have no ``_total`` suffix and no ``_created``
  series; no series carries a model label (the page has no labels but ``err``, ``le`` and
  ``quantile``);
* a series exists only once recorded after the recorder was installed, so a fresh
  server's page is empty (``tgi_batch_max_total_tokens`` is set during warmup, before the
  recorder exists, and never shows);
* histograms named ``*duration`` have 35 geometric buckets (0.0001 * 1.5**k),
  ``tgi_request_input_length`` and ``tgi_request_generated_tokens`` 100 linear buckets up to
  ``max_input_tokens`` and ``max_total_tokens``; a distribution without configured buckets
  (``tgi_request_skipped_tokens``) is a summary;
* token counts exist only as histograms: the prompt length of every validated request (at
  arrival, also for requests later aborted) and the generated tokens of each successful
  request (at its end); nothing moves per iteration except the count of
  ``tgi_request_skipped_tokens``, one sample per token sent;
* ``tgi_request_success`` and the request duration histograms are recorded only for
  requests that complete; failures are ``tgi_request_failure{err=...}``: ``generation``
  (engine error), ``dropped`` (client gone), ``overloaded`` (over
  ``--max-concurrent-requests``), ``validation``, ``template``, ``incomplete``.

Left out (the lab has nothing to give them): the per-batch series (``tgi_batch_*``
histograms and counters, ``tgi_batch_current_max_tokens``) and
``tgi_request_max_new_tokens`` (the client's parameter).
"""

from __future__ import annotations

from bisect import bisect_left
from decimal import Decimal

VERSION = "Text Generation Inference 3.3.7"
SOURCES = (
    "huggingface/text-generation-inference@v3.3.7 router/src/server.rs",
    "huggingface/text-generation-inference@v3.3.7 router/src/infer/mod.rs",
    "huggingface/text-generation-inference@v3.3.7 router/src/validation.rs",
    "huggingface/text-generation-inference@v3.3.7 backends/v3/src/backend.rs",
    "huggingface/text-generation-inference@v3.3.7 backends/v3/src/queue.rs",
    "huggingface/text-generation-inference@v3.3.7 backends/v3/src/lib.rs",
    "huggingface/text-generation-inference@v3.3.7 backends/v3/src/main.rs",
    "huggingface/text-generation-inference@v3.3.7 launcher/src/main.rs",
    "huggingface/text-generation-inference@v3.3.7 Cargo.lock",
    "metrics-rs/metrics@metrics-exporter-prometheus-v0.15.3 "
    "metrics-exporter-prometheus/src/recorder.rs",
    "metrics-rs/metrics@metrics-exporter-prometheus-v0.15.3 "
    "metrics-exporter-prometheus/src/formatting.rs",
    "metrics-rs/metrics@metrics-exporter-prometheus-v0.15.3 "
    "metrics-exporter-prometheus/src/distribution.rs",
    "metrics-rs/metrics@metrics-exporter-prometheus-v0.15.3 metrics-util/src/histogram.rs",
    "metrics-rs/metrics@metrics-v0.23.0 metrics/src/recorder/mod.rs",
)
EXTRA_ARGS: tuple[str, ...] = ()

MAX_INPUT_TOKENS = 8191
"""TGI's default for Llama 3 8B: max_position_embeddings (8192) - 1, when the GPU holds it."""
MAX_TOTAL_TOKENS = 8192
"""TGI's default for Llama 3 8B: max_position_embeddings."""

QUANTILES = (0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)
"""The exporter's default summary quantiles (PrometheusBuilder::new)."""


def duration_buckets() -> tuple[float, ...]:
    """Bounds of every histogram whose name ends in ``duration`` (server.rs: 35 terms of a
    geometric sequence from 0.0001 * 1.5, multiplied step by step as the Rust loop does,
    so the floats are the same)."""
    value, bounds = 0.0001, []
    for _ in range(35):
        value *= 1.5
        bounds.append(value)
    return tuple(bounds)


def linear_buckets(limit: int) -> tuple[float, ...]:
    """Bounds of a token-count histogram: 100 steps of ``limit / 100`` (server.rs)."""
    return tuple((limit / 100.0) * (x + 1) for x in range(100))


def rust_float(value: float) -> str:
    """``value`` as Rust's ``Display`` for f64 writes it: the shortest digits that read
    back the same, never an exponent, no ``.0`` on whole numbers."""
    text = format(Decimal(repr(value)), "f")
    return text[:-2] if text.endswith(".0") else text


class _Histogram:
    """One unlabelled histogram as metrics-util keeps it: a sample counts in every bucket
    whose bound is >= the sample."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        index = bisect_left(self.bounds, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str) -> list[str]:
        out, cumulative = [], 0
        for bound, n in zip(self.bounds, self.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{le="{rust_float(bound)}"}} {cumulative}')
        out.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        out.append(f"{name}_sum {rust_float(self.sum)}")
        out.append(f"{name}_count {self.count}")
        return out


def _family(name: str, kind: str, help_text: str | None, samples: list[str]) -> str:
    """One family as the exporter renders it: HELP only for described names, then TYPE,
    the samples, and an empty line."""
    head = [f"# HELP {name} {help_text}"] if help_text is not None else []
    return "\n".join([*head, f"# TYPE {name} {kind}", *samples]) + "\n\n"


_DURATION_HELP = {
    # The first describe_histogram! call for a name wins (add_description_if_missing).
    "tgi_request_duration": "Request duration",
    "tgi_request_validation_duration": "Request validation duration",
    "tgi_request_queue_duration": "Request queue duration",
    "tgi_request_inference_duration": "Request inference duration",
    "tgi_request_mean_time_per_token_duration": "Mean time per token per request",
}


class Exporter:
    """The metrics of one TGI server process. ``model_name`` is not used: TGI labels no
    series with the model."""

    def __init__(self, model_name: str, *, max_input_tokens: int = MAX_INPUT_TOKENS,
                 max_total_tokens: int = MAX_TOTAL_TOKENS) -> None:
        del model_name
        self._requests = 0
        self._success = 0
        self._failures: dict[str, int] = {}
        self._batch_size: float | None = None
        self._queue_size: float | None = None
        durations = duration_buckets()
        self._durations = {name: _Histogram(durations) for name in _DURATION_HELP}
        self._generated = _Histogram(linear_buckets(max_total_tokens))
        self._input_length = _Histogram(linear_buckets(max_input_tokens))
        self._generations = 0.0
        self._generating = False

    def served(self, prompt: float, generation: float) -> None:
        """TGI counts no tokens per iteration; only the skipped-tokens summary gets one
        sample per token sent to a client."""
        self._generations += generation

    def _arrived(self, prompt_tokens: int) -> None:
        """What the router records when a request arrives and is validated. The protocol
        has no arrival event, so this runs when the request starts or is aborted."""
        self._requests += 1
        self._input_length.observe(prompt_tokens)

    def started(self, *, prompt_tokens: int, queue_seconds: float,
                ttft_seconds: float) -> None:
        self._arrived(prompt_tokens)
        self._generating = True
        # Both gauges exist from the first queued request and the first batch on; their
        # values come with the next gauges() call.
        if self._batch_size is None:
            self._batch_size = 0.0
        if self._queue_size is None:
            self._queue_size = 0.0

    def finished(self, *, prompt_tokens: int, generation_tokens: int, queue_seconds: float,
                 ttft_seconds: float, e2e_seconds: float, ok: bool) -> None:
        if not ok:
            self._fail("generation")
            return
        # The lab has no validation step: all of e2e is queue plus inference.
        inference = e2e_seconds - queue_seconds
        self._success += 1
        self._durations["tgi_request_duration"].observe(e2e_seconds)
        self._durations["tgi_request_validation_duration"].observe(0.0)
        self._durations["tgi_request_queue_duration"].observe(queue_seconds)
        self._durations["tgi_request_inference_duration"].observe(inference)
        # A completed TGI request has at least its first token; max() keeps a lab event
        # without tokens from dividing by zero.
        self._durations["tgi_request_mean_time_per_token_duration"].observe(
            inference / max(generation_tokens, 1))
        self._generated.observe(generation_tokens)

    def aborted(self, *, prompt_tokens: int, waited_seconds: float) -> None:
        """The queue drops an entry whose client left, counting it ``dropped``, when it
        next pops it (soon after, while the batcher runs); counted at once here."""
        self._arrived(prompt_tokens)
        if self._queue_size is None:
            self._queue_size = 0.0
        self._fail("dropped")

    def rejected(self) -> None:
        """Over ``--max-concurrent-requests``: 429, before validation."""
        self._requests += 1
        self._fail("overloaded")

    def _fail(self, err: str) -> None:
        self._failures[err] = self._failures.get(err, 0) + 1

    def gauges(self, *, running: int, waiting: int) -> None:
        """``tgi_queue_size`` appears with the first queued request,
        ``tgi_batch_current_size`` with the first batch."""
        if running or self._batch_size is not None:
            self._batch_size = float(running)
        if waiting or self._queue_size is not None:
            self._queue_size = float(waiting)

    def text(self) -> str:
        parts = []
        if self._requests:
            parts.append(_family("tgi_request_count", "counter", "Total number of requests",
                                 [f"tgi_request_count {self._requests}"]))
        if self._success:
            parts.append(_family("tgi_request_success", "counter",
                                 "Number of successful requests",
                                 [f"tgi_request_success {self._success}"]))
        if self._failures:
            parts.append(_family("tgi_request_failure", "counter", None, [
                f'tgi_request_failure{{err="{err}"}} {n}'
                for err, n in sorted(self._failures.items())]))
        if self._batch_size is not None:
            parts.append(_family("tgi_batch_current_size", "gauge", "Current batch size",
                                 [f"tgi_batch_current_size {rust_float(self._batch_size)}"]))
        if self._queue_size is not None:
            parts.append(_family("tgi_queue_size", "gauge", "Current queue size",
                                 [f"tgi_queue_size {rust_float(self._queue_size)}"]))
        if self._success:
            for name, help_text in _DURATION_HELP.items():
                parts.append(_family(name, "histogram", help_text,
                                     self._durations[name].lines(name)))
            parts.append(_family("tgi_request_generated_tokens", "histogram",
                                 "Generated tokens per request",
                                 self._generated.lines("tgi_request_generated_tokens")))
        if self._input_length.count:
            parts.append(_family("tgi_request_input_length", "histogram",
                                 "Input token length per request",
                                 self._input_length.lines("tgi_request_input_length")))
        if self._generating or self._generations:
            parts.append(_family("tgi_request_skipped_tokens", "summary",
                                 "Speculated tokens per request", self._skipped_lines()))
        return "".join(parts)

    def _skipped_lines(self) -> list[str]:
        """Without speculation every generation carries one token: each sample is 0."""
        name = "tgi_request_skipped_tokens"
        return [*(f'{name}{{quantile="{rust_float(q)}"}} 0' for q in QUANTILES),
                f"{name}_sum 0", f"{name}_count {int(self._generations)}"]
