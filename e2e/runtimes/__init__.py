"""What the lab's model servers export: one module per serving runtime (vllm, tgi,
sglang), each writing the ``/metrics`` page of one server process as that runtime's own
code does, with its names, types, labels and buckets, and nothing twinhull-specific.

The data-plane simulator (e2e/dataplane.py) feeds each simulated pod's :class:`Exporter`
with what happens to the requests routed to that pod, and serves :meth:`Exporter.text`
at the pod's own IP and port. Golden pages written from the runtimes' sources are in
tests/golden/ and the exporters are checked against them (tests/test_exposition_*.py).

Every runtime module defines:

* ``VERSION``: the runtime release whose sources it follows (e.g. ``"vLLM 0.11.0"``);
* ``SOURCES``: the source files read (repository paths);
* ``EXTRA_ARGS``: server arguments needed for ``/metrics`` to exist (SGLang:
  ``("--enable-metrics",)``), ``()`` otherwise;
* ``Exporter``: a class implementing the protocol below.
"""

from __future__ import annotations

from typing import Protocol


class Exporter(Protocol):
    """The metrics of one server process (one pod). Times are in seconds, tokens are
    counts (floats are allowed for token shares served during a tick)."""

    def __init__(self, model_name: str) -> None: ...

    def served(self, prompt: float, generation: float) -> None:
        """Tokens computed during a tick, of the requests running on this server (prefill
        and decode). Runtimes that count tokens per iteration (vLLM) add them here;
        runtimes that count them when a request ends ignore this."""

    def started(self, *, prompt_tokens: int, queue_seconds: float,
                ttft_seconds: float) -> None:
        """A request left the queue and got its first token ``ttft_seconds`` after it
        arrived (``queue_seconds`` of which it waited)."""

    def finished(self, *, prompt_tokens: int, generation_tokens: int, queue_seconds: float,
                 ttft_seconds: float, e2e_seconds: float, ok: bool) -> None:
        """A started request ended: ``ok`` False when the server failed it (an engine or
        model error the client sees as a 5xx or an error event), True when it completed
        (stop or length)."""

    def aborted(self, *, prompt_tokens: int, waited_seconds: float) -> None:
        """A queued request whose client gave up (disconnected) after waiting
        ``waited_seconds``; it never started."""

    def rejected(self) -> None:
        """A request refused on arrival because the server's queue is full (vLLM has no
        such limit and answers nothing special: treat as an abort after 0 s there)."""

    def gauges(self, *, running: int, waiting: int) -> None:
        """Requests running and queued on this server now."""

    def text(self) -> str:
        """The ``/metrics`` page now, in the Prometheus text format (0.0.4) exactly as the
        runtime writes it."""
