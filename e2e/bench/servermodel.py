"""A continuous-batching server model, closer to vLLM than e2e/dataplane.py's
processor-sharing :class:`dataplane.Pool` (which the lab's live simulator keeps using).
Used by the offline scaling benchmark (e2e/bench/scaling_engine.py). Pure.

The model, per deployment (its Ready replicas behind one FIFO queue, a balanced router:
every replica holds ``running / ready`` sequences, fluid):

* an engine **step** of a replica lasts ``step_base + step_per_seq * b + step_per_kv_token
  * kv + prefill / prefill_tokens_per_second`` seconds, where ``b`` is its running
  sequences, ``kv`` the KV-cache tokens they hold and ``prefill`` the prompt tokens the
  step processes: **prefill shares the step with the decodes** (chunked prefill), so a
  fuller batch makes every step longer;
* each step, every decoding sequence produces **one token** (its time per output token,
  TPOT, is the step time) and the sequences still in their prompt share what is left of
  the step's ``max_num_batched_tokens`` budget (at least ``min_prefill_tokens``): a
  request's **time to first token** (TTFT) is its wait in the queue plus the steps its
  prompt takes, which grow with the batch;
* a replica runs at most ``max_num_seqs`` sequences (vLLM's ``--max-num-seqs``) whose
  prompt and generation fit its ``kv_cache_tokens`` (**KV-cache pressure**: a sequence
  reserves ``P + G`` tokens when admitted; vLLM allocates blocks as it goes and preempts,
  the reservation is the conservative, simpler form); the queue is served first come,
  first served (vLLM's default scheduling), the head waiting until it fits;
* a prompt token costs ``1 / prefill_tokens_per_second`` of a step, a generated token a
  whole step shared with the batch: **prompt and generated tokens are priced differently**
  (at the defaults a generated token costs ~15-50 times a prompt token, by batch size);
* a request is **within target** when it was not dropped, its TTFT is at most the tier's
  ``verification.maxLatencyP95Seconds`` and its mean TPOT at most the tier's TPOT target
  (:data:`TPOT_TARGETS`); it is **dropped** after ``timeout`` seconds in the queue or when
  no replica is Ready.

What comes from the seeds and what is assumed (every parameter is in :class:`VllmParams`):

* from the seeds (apps.yaml, via e2e/workload.py): tokens per call (mean, maximum), call
  volumes and shapes, and the served model, Qwen3-Next-80B (usage report), whose replicas
  take the examples' 1-4 GPUs;
* assumed: the prompt share of a call's tokens (0.8, as e2e/dataplane.py; the reports give
  totals only), the step times, the prefill speed, the KV-cache size and the TPOT targets.
  They were chosen so a replica of the largest calls (aiops-platform, ~12k tokens) is
  KV-bound near 3,400 tokens/s, above the examples'
  ``targetTokensPerSecondPerReplica`` (2,000-2,500), as the examples' targets are meant
  to be a replica's throughput at a comfortable utilisation (hybrid-reasoning's 16k-token
  calls get ~2,700, against the default target of 2,500); a lone sequence decodes at
  ~65 tokens/s (a 3B-active MoE on a few GPUs), not the 3,000 tokens/s of the old model.

Its limits: one balanced fluid batch per deployment (no per-replica imbalance, no
preemption, no prefix caching, no speculative decoding; a replica prefilling is averaged
over the replicas), requests removed with a replica finish where they are (graceful
drain).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass

TPOT_TARGETS = {"critical": 0.06, "standard": 0.08, "best-effort": 0.12}
"""Seconds per output token a tier's requests must not exceed on average (assumed: a
reader reads ~10-15 tokens/s; the tiers declare only a TTFT-like p95 latency)."""
DEFAULT_TPOT_TARGET = 0.08


@dataclass(frozen=True)
class VllmParams:
    """The server model's parameters (see the module docstring for which are assumed)."""

    max_num_seqs: int = 256
    """Sequences a replica runs at once (vLLM's ``--max-num-seqs`` default)."""
    max_num_batched_tokens: int = 4096
    """Tokens a step processes (vLLM's ``--max-num-batched-tokens`` with chunked prefill):
    one per decoding sequence, the rest shared by the prompts being prefilled."""
    min_prefill_tokens: int = 256
    """Prompt tokens a step keeps for prefills when decodes fill the budget (assumed)."""
    kv_cache_tokens: float = 200_000.0
    """KV-cache tokens a replica holds (assumed: Qwen3-Next's hybrid attention keeps the
    cache small; 200k tokens of prompt and generation)."""
    step_base: float = 0.015
    """Seconds of a step with an empty batch (weights read once a step; assumed)."""
    step_per_seq: float = 0.0002
    """Seconds a step grows per running sequence (assumed)."""
    step_per_kv_token: float = 2e-8
    """Seconds a step grows per KV-cache token held (attention reads; assumed)."""
    prefill_tokens_per_second: float = 32_000.0
    """Prompt tokens a replica prefills per second of step time (assumed)."""
    prompt_share: float = 0.8
    """Share of a call's tokens that are prompt (assumed, as e2e/dataplane.py)."""
    timeout: float = 60.0
    """Seconds a client waits in the queue before giving up (a dropped request)."""

    def step(self, decoding: float, prefilling: float, kv: float) -> tuple[float, float]:
        """One replica's step with ``decoding`` and ``prefilling`` sequences and ``kv``
        cache tokens (fractions: an average over the replicas): its seconds and the prompt
        tokens each prefilling sequence gets. Pure."""
        left = max(self.max_num_batched_tokens - decoding, self.min_prefill_tokens)
        per_seq = left / max(prefilling, 1.0)
        prefill = min(prefilling, 1.0) * left
        seconds = (self.step_base + self.step_per_seq * (decoding + prefilling)
                   + self.step_per_kv_token * kv + prefill / self.prefill_tokens_per_second)
        return seconds, per_seq

    def split(self, tokens: float) -> tuple[float, int]:
        """A call's prompt tokens and generated tokens (at least one). Pure."""
        prompt = tokens * self.prompt_share
        return prompt, max(1, round(tokens - prompt))

    def capacity(self, mean_tokens: float, tpot_target: float) -> float:
        """Tokens per second (prompt and generated) one replica serves in steady state
        for calls of ``mean_tokens``: the largest decoding batch whose prompts fit the
        step's token budget, that fits the KV cache and the sequence limit, within the
        TPOT target. Pure (a fluid estimate, for the oracle)."""
        prompt, gen = self.split(mean_tokens)
        best = 0.0
        for b in range(1, self.max_num_seqs + 1):
            need = b * prompt / gen  # prompt tokens a step must prefill to keep b busy
            if (b + need > self.max_num_batched_tokens
                    or b * (prompt + gen) > self.kv_cache_tokens):
                break
            seconds = (self.step_base + self.step_per_seq * b
                       + self.step_per_kv_token * b * (prompt + gen / 2)
                       + need / self.prefill_tokens_per_second)
            if seconds > tpot_target:
                break
            best = b / seconds * (prompt + gen) / gen
        return best


class VllmPool:
    """The Ready replicas of one deployment behind one FIFO queue, in continuous time, with
    two virtual clocks: ``u``, prompt tokens prefilled per prefilling sequence, and ``v``,
    tokens generated per decoding sequence (all advance at the same rate, fluid): call
    :meth:`advance` to a time, then :meth:`arrive` or :meth:`set_ready` at it.
    ``requests``, ``within``, ``dropped`` count only requests arriving at or after
    ``count_from``. Pure."""

    def __init__(self, params: VllmParams, ttft_target: float, tpot_target: float, *,
                 ready: int = 0, count_from: float = 0.0, start: float = 0.0) -> None:
        self.p, self.ttft_target, self.tpot_target = params, ttft_target, tpot_target
        self.ready, self.count_from, self.t = ready, count_from, start
        self.u = self.v = 0.0
        self.queue: deque[tuple[float, float, int]] = deque()  # arrival, prompt, gen
        self.first: list[tuple[float, int]] = []  # (u at the end of the prompt, serial)
        self.done: list[tuple[float, int]] = []   # (v at the last token, serial)
        self.info: dict[int, list[float]] = {}    # arrival, kv, gen, first-token time
        self.running = self.prefilling = 0
        self.kv = 0.0
        self.serial = 0
        self.requests = self.within = self.dropped = 0
        self.ttft_late = self.tpot_late = 0
        self.served = 0.0
        """Tokens served so far (prompt tokens as prefilled, generated ones as decoded)."""
        self.ttft_sum = self.tpot_sum = 0.0
        self.finished = 0

    @property
    def waiting(self) -> int:
        """Requests in the queue (``vllm:num_requests_waiting``)."""
        return len(self.queue)

    def step(self) -> tuple[float, float]:
        """A replica's step time and prompt tokens per prefilling sequence now (the batch
        spread evenly over the Ready replicas)."""
        r = max(self.ready, 1)
        return self.p.step((self.running - self.prefilling) / r, self.prefilling / r,
                           self.kv / r)

    def advance(self, t: float) -> None:
        """Serve until ``t``: first tokens, completions, queued requests admitted."""
        while self.t < t:
            if not self.running or not self.ready:
                self.t = t
                break
            s, chunk = self.step()
            decoding = self.running - self.prefilling
            du = chunk / s if self.prefilling else 0.0  # prompt tokens/s per prefilling seq
            dv = 1.0 / s
            to_first = (self.first[0][0] - self.u) / du if self.first else math.inf
            to_done = (self.done[0][0] - self.v) / dv if self.done else math.inf
            dt = min(to_first, to_done, t - self.t)
            self.served += dt * (decoding * dv + self.prefilling * du)
            self.u += dt * du
            self.v += dt * dv
            if dt < t - self.t:  # an event: set its clock exactly (no float residue)
                self.t += dt
                if to_first <= to_done:
                    self.u = self.first[0][0]
                else:
                    self.v = self.done[0][0]
                self._events()
                self._admit()
            else:
                self.t = t
        self._expire()

    def _events(self) -> None:
        while self.first and self.first[0][0] <= self.u:
            serial = heapq.heappop(self.first)[1]
            info = self.info[serial]
            info[3] = self.t
            self.prefilling -= 1
            self.ttft_sum += self.t - info[0]
            heapq.heappush(self.done, (self.v + info[2] - 1, serial))
        while self.done and self.done[0][0] <= self.v:
            serial = heapq.heappop(self.done)[1]
            arrival, kv, gen, first = self.info.pop(serial)
            self.running -= 1
            self.kv -= kv
            ttft = first - arrival
            tpot = (self.t - first) / (gen - 1) if gen > 1 else 0.0
            self.tpot_sum += tpot
            self.finished += 1
            if arrival >= self.count_from:
                late_ttft, late_tpot = ttft > self.ttft_target, tpot > self.tpot_target
                self.ttft_late += late_ttft
                self.tpot_late += late_tpot
                if not (late_ttft or late_tpot):
                    self.within += 1

    def _admit(self) -> None:
        slots = self.ready * self.p.max_num_seqs
        room = self.ready * self.p.kv_cache_tokens
        while self.queue and self.running < slots:
            arrival, prompt, gen = self.queue[0]
            if self.t - arrival > self.p.timeout:
                self.queue.popleft()
                self._drop(arrival)
                continue
            if self.kv + prompt + gen > room and self.running:
                break  # first come, first served: the head waits for room
            self.queue.popleft()
            self._start(arrival, prompt, gen)

    def _start(self, arrival: float, prompt: float, gen: int) -> None:
        self.serial += 1
        self.info[self.serial] = [arrival, prompt + gen, gen, 0.0]
        heapq.heappush(self.first, (self.u + max(prompt, 1.0), self.serial))
        self.running += 1
        self.prefilling += 1
        self.kv += prompt + gen

    def _drop(self, arrival: float) -> None:
        if arrival >= self.count_from:
            self.dropped += 1

    def _expire(self) -> None:
        while self.queue and self.t - self.queue[0][0] > self.p.timeout:
            self._drop(self.queue.popleft()[0])

    def arrive(self, t: float, tokens: float) -> None:
        """A call of ``tokens`` tokens (prompt and generation) arrives at ``t``."""
        self.advance(t)
        if t >= self.count_from:
            self.requests += 1
        if not self.ready:
            self._drop(t)
            return
        prompt, gen = self.p.split(tokens)
        self.queue.append((t, prompt, gen))
        self._admit()

    def set_ready(self, t: float, ready: int) -> None:
        """The Ready replicas from ``t`` on."""
        self.advance(t)
        self.ready = max(0, ready)
        self._admit()
