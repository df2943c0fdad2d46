"""The data-plane simulator: stands in for the model servers, which in the lab are KWOK
pods that serve nothing, and for the offline scaling benchmark (e2e/bench/scaling).

A simulator, not a benchmark of real servers. Its model (:class:`Pool`, pure, shared by
``e2e/loadsim`` on the wall clock and the benchmark in simulated time):

* each Ready replica serves ``replica_tokens`` tokens per second (prompt and generation
  together), shared equally by the requests it runs (processor sharing), at most
  ``concurrency`` requests per replica and no request faster than one replica;
* requests beyond the running slots wait in one FIFO queue per deployment and zone (what
  vLLM reports as ``vllm:num_requests_waiting``);
* a request's time to first token is its wait plus its prefill: the prompt tokens
  (``prompt_share`` of its tokens) at ``prefill_tokens_per_second``; it is *within target*
  if that is at most the tier's ``verification.maxLatencyP95Seconds``;
* a request is *dropped* when it has waited longer than the client ``timeout``, when the
  queue is over ``queue_limit`` requests per replica, or when no replica is Ready at all;
* a replica whose image tag ends in ``-errors`` fails every request it takes, one whose
  tag ends in ``-errorsN`` (N a percentage, e.g. ``-errors0.5``) fails N % of them, evenly
  spread (the lab's way to simulate a bad revision's error rate);
* replicas are counted, not placed: cold starts (model loading) are the caller's (the
  benchmark starts a replica ``--cold-start`` seconds before it is Ready; the lab's KWOK
  pods become Ready at once).

Its limits: no KV-cache or batching model beyond the concurrency limit, one throughput for
prompt and generation tokens, no per-replica routing (a zone's replicas share one queue,
as behind a least-loaded balancer), no network latency, no retries by clients.

In the lab (``e2e/loadsim``) demand comes from a trace: points
``{at, deployment, tokensPerSecond}`` each held until the next point for that deployment
(``--trace FILE``), or generated from apps.yaml (``--apps FILE``, see e2e/workload.py); it
is split over clusters by the weights of the hub's HTTPRoute, and inside a cluster over
zones in proportion to their Ready primary replicas (read from the members every second);
the fallback backend is served by the fallback replicas the same way; requests of
``--tokens-per-request`` tokens (or the app's token distribution with ``--apps``) arrive
evenly spaced at that rate. The model advances every :data:`STEP_SECONDS` (0.1 s), so
counters grow as smoothly as a server's; the lab is read every second on a thread of its
own, whose view replaces the model's whole.

What the model servers export, the simulator serves as they would: each Ready pod's
``/metrics`` at that pod's own address (KWOK gives pods loopback IPs, e2e/labkit/members.py)
and container port ``http``, written by the exporter of the ModelDeployment's runtime
(e2e/runtimes: vLLM, TGI or SGLang names, labels and buckets, no twinhull label). A
zone's requests go to its Ready pods round robin. The members' Prometheus find the pods
through their API servers, as a real installation does. The simulator's own counts
(``twinhull_sim_*``: tokens, requests arrived, succeeded, failed, dropped, within target,
running, waiting, Ready replicas, per namespace, twinhull_deployment, cluster, zone and
role) are the lab's ground truth, served on 127.0.0.1 and registered with the global
Prometheus through its file_sd target directory.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import os
import re
import sys
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol

import yaml

Cell = tuple[str, str, str, str, str]
"""(namespace, deployment, cluster, zone, role)."""

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
"""vLLM's buckets of ``vllm:time_to_first_token_seconds``."""
DEFAULT_TARGET_SECONDS = 5.0
"""Latency target where a deployment's tier is unknown (the standard tier's)."""
STEP_SECONDS = 0.1
"""How often the live simulator advances its model: tokens reach the exporters' counters
in steps this long, as a real server's engine steps add them (a counter that jumped by a
second's tokens at a time made the lab's 10 s rates of a steady load swing by a quarter)."""
OBSERVE_SECONDS = 1.0
"""How often the live simulator reads pods, weights and ModelDeployments from the lab (on
a thread of its own: a slow API server delays the view, never the serving)."""


@dataclass(frozen=True)
class ServerModel:
    """The parameters of the replica model (see the module's docstring)."""

    replica_tokens: float = 3000.0
    """Tokens per second one Ready replica serves, all its requests together."""
    concurrency: int = 16
    """Requests one replica runs at a time; more wait."""
    prefill_tokens_per_second: float = 30000.0
    """Prompt tokens per second of one request's prefill (the time to its first token)."""
    prompt_share: float = 0.8
    """Share of a request's tokens that are prompt (the rest are generated)."""
    timeout: float = 60.0
    """Seconds a client waits in the queue before giving up (a dropped request)."""
    queue_limit: float | None = None
    """Waiting requests per Ready replica beyond which new requests are rejected."""


class Listener(Protocol):
    """Who is told what happens to a pool's requests (the lab's per-pod metrics,
    :class:`CellPods`); ``serial`` identifies a request from its start to its end."""

    def served(self, prompt: float, generation: float) -> None: ...

    def started(self, serial: int, *, tokens: float, queue_seconds: float,
                ttft_seconds: float) -> bool:
        """A request started; False if the replica that took it fails it."""

    def finished(self, serial: int, *, e2e_seconds: float) -> None: ...

    def aborted(self, *, tokens: float, waited_seconds: float) -> None: ...

    def rejected(self) -> None: ...


class Pool:
    """The Ready replicas of one deployment (or one zone of it) behind one FIFO queue, in
    continuous time: call :meth:`advance` to a time, then :meth:`arrive` or
    :meth:`set_ready` at it. Event-driven and exact between calls (processor sharing with
    a virtual clock: every running request gets the same rate, so one counter ``v`` of
    tokens served per request orders completions). Pure.

    Counters for the metrics count everything; ``requests``, ``within`` and ``dropped``
    count only requests that arrived at or after ``count_from`` (a benchmark's warm-up)."""

    def __init__(self, model: ServerModel, target_seconds: float, *, ready: int = 0,
                 errors: bool = False, count_from: float = 0.0, start: float = 0.0,
                 listener: Listener | None = None) -> None:
        self.model, self.target, self.ready, self.errors = model, target_seconds, ready, errors
        self.listener = listener
        self.started: dict[int, tuple[float, bool]] = {}
        """Running requests' arrival times and whether they fail (with a listener)."""
        self.count_from = count_from
        self.t = start
        self.v = 0.0
        self.running: list[tuple[float, int]] = []
        self.queue: deque[tuple[float, float]] = deque()
        self._serial = 0
        self.requests = self.within = self.dropped = 0
        self.all_dropped = self.success = self.failure = self.all_within = 0
        self.prompt = self.generation = 0.0
        self.ttft_buckets = [0] * len(TTFT_BUCKETS)
        self.ttft_sum, self.ttft_count = 0.0, 0

    @property
    def served(self) -> float:
        """Tokens served so far."""
        return self.prompt + self.generation

    def _serve(self, tokens: float) -> None:
        prompt = tokens * self.model.prompt_share
        generation = tokens - prompt
        self.prompt += prompt
        self.generation += generation
        if self.listener is not None and tokens > 0:
            self.listener.served(prompt, generation)

    def advance(self, t: float) -> None:
        """Serve until ``t``: completions, and queued requests taking the freed slots."""
        rt = self.model.replica_tokens
        while self.t < t:
            n = len(self.running)
            if not n or not self.ready:
                self.t = t
                break
            rate = min(rt, self.ready * rt / n)
            head = self.running[0][0]
            done = self.t + (head - self.v) / rate
            if done <= t:
                self._serve(rate * n * (done - self.t))
                self.t, self.v = done, head
                while self.running and self.running[0][0] <= head:
                    serial = heapq.heappop(self.running)[1]
                    arrival, fails = self.started.pop(serial, (self.t, self.errors))
                    if self.listener is not None:
                        self.listener.finished(serial, e2e_seconds=self.t - arrival)
                    if fails:
                        self.failure += 1
                    else:
                        self.success += 1
                self._admit()
            else:
                self._serve(rate * n * (t - self.t))
                self.v += rate * (t - self.t)
                self.t = t
        self.expire()

    def _drop(self, arrival: float) -> None:
        self.all_dropped += 1
        if arrival >= self.count_from:
            self.dropped += 1

    def _give_up(self, arrival: float, tokens: float) -> None:
        """A queued request's client gave up waiting."""
        self._drop(arrival)
        if self.listener is not None:
            self.listener.aborted(tokens=tokens, waited_seconds=self.t - arrival)

    def _start(self, arrival: float, tokens: float) -> None:
        ttft = self.t - arrival + tokens * self.model.prompt_share / (
            self.model.prefill_tokens_per_second)
        self._serial += 1
        fails = self.errors
        if self.listener is not None:
            fails = not self.listener.started(self._serial, tokens=tokens,
                                              queue_seconds=self.t - arrival, ttft_seconds=ttft)
        self.started[self._serial] = (arrival, fails)
        i = bisect_left(TTFT_BUCKETS, ttft)
        if i < len(self.ttft_buckets):
            self.ttft_buckets[i] += 1
        self.ttft_sum += ttft
        self.ttft_count += 1
        if ttft <= self.target and not fails:
            self.all_within += 1
            if arrival >= self.count_from:
                self.within += 1
        heapq.heappush(self.running, (self.v + tokens, self._serial))

    def _admit(self) -> None:
        slots = self.ready * self.model.concurrency
        while self.queue and len(self.running) < slots:
            arrival, tokens = self.queue.popleft()
            if self.t - arrival > self.model.timeout:
                self._give_up(arrival, tokens)
            else:
                self._start(arrival, tokens)

    def expire(self) -> None:
        """Drop the queued requests whose clients gave up."""
        while self.queue and self.t - self.queue[0][0] > self.model.timeout:
            self._give_up(*self.queue.popleft())

    def arrive(self, t: float, tokens: float) -> None:
        """A request of ``tokens`` tokens arrives at ``t`` (after :meth:`advance` to it)."""
        self.advance(t)
        if t >= self.count_from:
            self.requests += 1
        limit = self.model.queue_limit
        if not self.ready:
            self._drop(t)
        elif not self.queue and len(self.running) < self.ready * self.model.concurrency:
            self._start(t, tokens)
        elif limit is not None and len(self.queue) >= limit * self.ready:
            self._drop(t)
            if self.listener is not None:
                self.listener.rejected()
        else:
            self.queue.append((t, tokens))

    def set_ready(self, t: float, ready: int) -> None:
        """The Ready replicas from ``t`` on."""
        self.advance(t)
        self.ready = max(0, ready)
        self._admit()

    @property
    def waiting(self) -> int:
        """Requests in the queue."""
        return len(self.queue)


def within_target_share(within: float, requests: float) -> float:
    """Percent of requests served within the latency target (100 without requests); the
    benchmark's measure, from its counters or from loadsim's (the increase of
    ``twinhull_sim_requests_within_target_total`` over that of all requests). Pure."""
    return 100.0 * within / requests if requests else 100.0


@dataclass
class Feed:
    """Turns a cell's demand (tokens per second) into requests, evenly spaced."""

    size: Callable[[], float]
    """The next request's tokens."""
    owed: float = 0.0
    next_size: float = 0.0

    def arrivals(self, start: float, dt: float, tokens_per_second: float
                 ) -> list[tuple[float, float]]:
        """Requests arriving in ``(start, start + dt]`` at that rate."""
        if self.next_size <= 0:
            self.next_size = self.size()
        out: list[tuple[float, float]] = []
        pos = 0.0
        while tokens_per_second > 0:
            needed = (self.next_size - self.owed) / tokens_per_second
            if pos + needed > dt:
                self.owed += tokens_per_second * (dt - pos)
                break
            pos += needed
            out.append((start + pos, self.next_size))
            self.owed, self.next_size = 0.0, self.size()
        return out


@dataclass(frozen=True)
class PodInfo:
    """A Ready model-server pod as the simulator serves it."""

    uid: str
    name: str
    ip: str
    port: int
    runtime: str
    model: str
    errors: bool
    """Its image tag ends in ``-errors``: it fails every request it takes."""
    error_percent: float = 0.0
    """The share of its requests it fails, in percent (:func:`error_percent_of`)."""


def error_percent_of(image: str) -> float:
    """100 for an image tag ending in ``-errors``, N for ``-errorsN``, else 0. Pure."""
    match = re.search(r"-errors(\d+(?:\.\d+)?)?$", image)
    if match is None:
        return 0.0
    return min(100.0, float(match[1])) if match[1] else 100.0


@dataclass
class World:
    """What the simulator last read from the lab."""

    ready: dict[Cell, tuple[int, bool]] = field(default_factory=dict)
    """Ready replicas and whether they serve errors."""
    pods: dict[Cell, list[PodInfo]] = field(default_factory=dict)
    """The Ready pods of each cell (with an IP)."""
    weights: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """(namespace, deployment) to backend weights (cluster names and ``fallback``)."""
    targets: dict[tuple[str, str], float] = field(default_factory=dict)
    """(namespace, deployment) to its tier's latency target, seconds."""
    runtimes: dict[tuple[str, str, str], tuple[str, str]] = field(default_factory=dict)
    """(namespace, deployment, role) to (runtime, model name) from the ModelDeployment."""

    def copy(self) -> World:
        """A copy :func:`observe` can update while the model steps on this one."""
        return World(dict(self.ready), {c: list(p) for c, p in self.pods.items()},
                     {k: dict(w) for k, w in self.weights.items()}, dict(self.targets),
                     dict(self.runtimes))


def load_trace(path: Path) -> list[dict[str, Any]]:
    """Trace points sorted by time: ``{at: s, deployment: ns/name, tokensPerSecond: n}``."""
    points = yaml.safe_load(path.read_text()) or []
    return check_points(points, str(path))


def check_points(points: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Trace points checked and sorted by time."""
    for p in points:
        if not {"at", "deployment", "tokensPerSecond"} <= set(p):
            raise SystemExit(f"{source}: each point needs at, deployment, tokensPerSecond: {p}")
    return sorted(points, key=lambda p: float(p["at"]))


def demand_at(points: list[dict[str, Any]], t: float) -> dict[tuple[str, str], float]:
    """Tokens per second per deployment at ``t`` seconds into the trace. Pure."""
    out: dict[tuple[str, str], float] = {}
    for p in points:
        if float(p["at"]) > t:
            break
        ns, _, name = str(p["deployment"]).partition("/")
        out[(ns, name)] = float(p["tokensPerSecond"])
    return out


def _client(kubeconfig: str) -> Any:
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(kubeconfig, client_configuration=configuration)
    configuration.retries = False
    return client.ApiClient(configuration)


def _pod_ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True"
               for c in (pod.status.conditions or []))


def _http_port(pod: Any) -> int | None:
    for port in pod.spec.containers[0].ports or []:
        if port.name == "http":
            return int(port.container_port)
    return None


def observe(world: World, members: dict[str, Any], hub: Any) -> None:
    """Read the model-server pods from the members and the ModelDeployments and weights
    from the hub (errors: keep the previous view of that cluster)."""
    from kubernetes import client

    objects = client.CustomObjectsApi(hub)
    try:
        tiers = {t["metadata"]["name"]: float(
            t["spec"].get("verification", {}).get("maxLatencyP95Seconds",
                                                   DEFAULT_TARGET_SECONDS))
            for t in objects.list_cluster_custom_object(
                "serving.twinhull.io", "v1alpha1", "servingtiers", _request_timeout=2)["items"]}
        for md in objects.list_cluster_custom_object(
                "serving.twinhull.io", "v1alpha1", "modeldeployments",
                _request_timeout=2)["items"]:
            key = (md["metadata"]["namespace"], md["metadata"]["name"])
            spec = md.get("spec") or {}
            world.targets[key] = tiers.get(spec.get("slaTier", ""), DEFAULT_TARGET_SECONDS)
            for role, model in (("primary", spec.get("model")),
                                ("fallback", (spec.get("fallback") or {}).get("model"))):
                if isinstance(model, dict):
                    world.runtimes[(*key, role)] = (str(model.get("runtime", "vllm")),
                                                    str(model.get("name", "")))
    except Exception:  # keep the last view; unknown deployments get the default target
        pass
    down = Path(os.environ.get("TWINHULL_DATAPLANE_DOWN") or "/nonexistent")
    for cluster, api in members.items():
        if (down / cluster).exists():  # the whole member is gone: nothing serves there
            for cell in [c for c in world.ready if c[2] == cluster]:
                world.ready[cell] = (0, world.ready[cell][1])
                world.pods[cell] = []
            continue
        try:
            items = client.CoreV1Api(api).list_pod_for_all_namespaces(
                label_selector="app.kubernetes.io/managed-by=twinhull", _request_timeout=2).items
        except Exception:  # a killed or frozen member: its pods keep their last state here
            continue
        for cell in [c for c in world.ready if c[2] == cluster]:
            world.ready[cell] = (0, world.ready[cell][1])
            world.pods[cell] = []
        for pod in items:
            labels = pod.metadata.labels or {}
            zone = labels.get("serving.twinhull.io/zone")
            role = labels.get("serving.twinhull.io/role")
            owner = labels.get("serving.twinhull.io/deployment")
            port = _http_port(pod)
            if not (zone and role and owner and port and pod.status.pod_ip):
                continue
            cell = (pod.metadata.namespace, owner, cluster, zone, role)
            runtime, model = world.runtimes.get((cell[0], owner, role), ("vllm", owner))
            image = pod.spec.containers[0].image
            count, errors = world.ready.get(cell, (0, False))
            world.ready[cell] = (count, errors)
            if pod.metadata.deletion_timestamp is None and _pod_ready(pod):
                world.ready[cell] = (count + 1, errors or image.endswith("-errors"))
                world.pods.setdefault(cell, []).append(PodInfo(
                    pod.metadata.uid, pod.metadata.name, pod.status.pod_ip, port, runtime,
                    model, image.endswith("-errors"), error_percent_of(image)))
    try:
        routes = objects.list_cluster_custom_object(
            "gateway.networking.k8s.io", "v1", "httproutes", _request_timeout=2)["items"]
    except Exception:
        return
    for route in routes:
        ns, name = route["metadata"]["namespace"], route["metadata"]["name"]
        weights = {}
        for ref in route["spec"]["rules"][0]["backendRefs"]:
            backend = ref["name"].removeprefix(f"{name}-")
            weights[backend] = ref.get("weight", 0)
        world.weights[(ns, name)] = weights


class CellPods:
    """The :class:`Listener` of one cell's pool: spreads what happens to its requests over
    the cell's Ready pods (requests round robin, tokens served by running requests),
    each pod's runtime exporter (e2e/runtimes) counting them as that runtime does."""

    def __init__(self) -> None:
        self.pods: list[Pod] = []
        self._next = 0
        self._running: dict[int, tuple[Pod, int, float, float, float, bool]] = {}
        """serial to (pod, prompt tokens, generated tokens, queue s, ttft s, fails)."""
        self._taken: dict[str, int] = {}
        """Requests each pod (by uid) took, to spread its failures evenly."""

    def _pick(self) -> Pod | None:
        if not self.pods:
            return None
        self._next = (self._next + 1) % len(self.pods)
        return self.pods[self._next]

    def served(self, prompt: float, generation: float) -> None:
        running = [entry[0] for entry in self._running.values() if entry[0] in self.pods]
        for pod in running:
            pod.exporter.served(prompt / len(running), generation / len(running))

    def started(self, serial: int, *, tokens: float, queue_seconds: float,
                ttft_seconds: float) -> bool:
        pod = self._pick()
        if pod is None:
            return True
        prompt = round(tokens * pod.prompt_share)
        k = self._taken.get(pod.info.uid, 0)
        self._taken[pod.info.uid] = k + 1
        share = pod.info.error_percent / 100
        fails = pod.info.errors or math.floor((k + 1) * share) > math.floor(k * share)
        self._running[serial] = (pod, prompt, round(tokens) - prompt, queue_seconds,
                                 ttft_seconds, fails)
        pod.exporter.started(prompt_tokens=prompt, queue_seconds=queue_seconds,
                             ttft_seconds=ttft_seconds)
        return not fails

    def finished(self, serial: int, *, e2e_seconds: float) -> None:
        entry = self._running.pop(serial, None)
        if entry is None or entry[0] not in self.pods:  # its pod is gone, and its counters
            return
        pod, prompt, generation, queue, ttft, fails = entry
        pod.exporter.finished(prompt_tokens=prompt, generation_tokens=generation,
                              queue_seconds=queue, ttft_seconds=ttft, e2e_seconds=e2e_seconds,
                              ok=not fails)

    def aborted(self, *, tokens: float, waited_seconds: float) -> None:
        pod = self._pick()
        if pod is not None:
            pod.exporter.aborted(prompt_tokens=round(tokens * pod.prompt_share),
                                 waited_seconds=waited_seconds)

    def rejected(self) -> None:
        pod = self._pick()
        if pod is not None:
            pod.exporter.rejected()

    def gauges(self, waiting: int) -> None:
        """Running requests per pod as assigned; the cell's queue spread evenly."""
        counts = {id(pod): 0 for pod in self.pods}
        for pod, *_ in self._running.values():
            if id(pod) in counts:
                counts[id(pod)] += 1
        for i, pod in enumerate(self.pods):
            share = waiting // len(self.pods) + (1 if i < waiting % len(self.pods) else 0)
            pod.exporter.gauges(running=counts[id(pod)], waiting=share)


class Pod:
    """One simulated model server: its runtime exporter, served at the pod's own address
    while the pod is Ready (a real server's /metrics answers once its HTTP server is up)."""

    def __init__(self, info: PodInfo, lock: threading.Lock, prompt_share: float) -> None:
        import importlib

        module = importlib.import_module(
            f"runtimes.{'vllm' if info.runtime == 'generic' else info.runtime}")
        self.info, self.prompt_share = info, prompt_share
        self.exporter = module.Exporter(info.model)
        self.server: ThreadingHTTPServer | None = None
        self._lock = lock

    def serve(self) -> str | None:
        """Listen at the pod's IP and port; the reason when that cannot be done."""
        if self.server is not None:
            return None
        exporter, lock = self.exporter, self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] != "/metrics":
                    self.send_error(404)
                    return
                with lock:
                    body = exporter.text().encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a: object) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer((self.info.ip, self.info.port), Handler)
        except OSError as exc:
            return f"{self.info.name}: cannot listen on {self.info.ip}:{self.info.port}: {exc}"
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return None

    def close(self) -> None:
        """Stop answering (the pod is gone or not Ready)."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def sync_pods(world: World, cells: dict[Cell, CellPods], pods: dict[str, Pod],
              lock: threading.Lock, prompt_share: float) -> list[str]:
    """Match the simulated servers to the Ready pods of ``world``: new pods start serving,
    pods no longer Ready stop (a pod that comes back keeps its counters, as its process
    did). Call with ``lock`` not held. Returns problems to report."""
    problems = []
    wanted = {info.uid: (cell, info) for cell, infos in world.pods.items() for info in infos}
    for uid, pod in pods.items():
        if uid not in wanted:
            pod.close()
    for uid, (_, info) in wanted.items():
        if uid not in pods or pods[uid].info.ip != info.ip:
            pods[uid] = Pod(info, lock, prompt_share)
        problem = pods[uid].serve()
        if problem:
            problems.append(problem)
    with lock:
        for cell in set(world.pods) | set(cells):
            cells.setdefault(cell, CellPods()).pods = [
                pods[info.uid] for info in world.pods.get(cell, [])]
    return problems


def step(world: World, pools: dict[Cell, Pool], feeds: dict[Cell, Feed],
         demand: dict[tuple[str, str], float], now: float, dt: float, *, model: ServerModel,
         size: Callable[[tuple[str, str]], Callable[[], float]],
         listeners: dict[Cell, CellPods] | None = None) -> None:
    """Advance the model by ``dt`` seconds to ``now``: the Ready replicas and weights of
    ``world``, requests from ``demand`` (tokens per second per deployment) of sizes drawn
    from ``size(deployment)``, told to each cell's pods (``listeners``) where given. Pure
    apart from updating ``pools``, ``feeds`` and ``listeners``."""
    for cell, (ready, errors) in world.ready.items():
        if cell in pools:
            pools[cell].errors = errors
            pools[cell].set_ready(now - dt, ready)
    for (ns, name), tps in demand.items():
        weights = world.weights.get((ns, name)) or {}
        total_weight = sum(weights.values()) or 1
        target = world.targets.get((ns, name), DEFAULT_TARGET_SECONDS)
        for backend, weight in weights.items():
            share = tps * weight / total_weight
            role = "fallback" if backend == "fallback" else "primary"
            cells = [(c, r) for c, r in world.ready.items() if c[:2] == (ns, name)
                     and c[4] == role and (role == "fallback" or c[2] == backend)]
            replicas = sum(r[0] for _, r in cells)
            if not replicas:  # nothing Ready behind this backend: everything is dropped
                cells = [((ns, name, backend, "", role), (0, False))]
            for cell, (ready, errors) in cells:
                part = share * ready / replicas if replicas else share
                pool = pools.get(cell)
                if pool is None:
                    pool = pools[cell] = Pool(model, target, ready=ready, errors=errors,
                                              start=now - dt,
                                              listener=(listeners or {}).get(cell))
                feed = feeds.setdefault(cell, Feed(size((ns, name))))
                for at, tokens in feed.arrivals(now - dt, dt, part):
                    pool.arrive(at, tokens)
    for cell, pool in pools.items():
        pool.advance(now)
        if listeners is not None and cell in listeners:
            pool.listener = listeners[cell]
            listeners[cell].gauges(pool.waiting)


def exposition(pools: dict[Cell, Pool]) -> str:
    """The simulator's own counts, per cell, in the Prometheus text format: the lab's
    ground truth (benchmarks, and the check of what twinhull reads from the servers'
    metrics). Names start with ``twinhull_sim_``, never a runtime's. Pure."""
    metrics: list[tuple[str, str, Callable[[Pool], float]]] = [
        ("twinhull_sim_prompt_tokens_total", "counter", lambda p: p.prompt),
        ("twinhull_sim_generation_tokens_total", "counter", lambda p: p.generation),
        ("twinhull_sim_requests_total", "counter", lambda p: p.requests),
        ("twinhull_sim_request_success_total", "counter", lambda p: p.success),
        ("twinhull_sim_request_failure_total", "counter", lambda p: p.failure),
        ("twinhull_sim_dropped_requests_total", "counter", lambda p: p.all_dropped),
        ("twinhull_sim_requests_within_target_total", "counter", lambda p: p.all_within),
        ("twinhull_sim_running", "gauge", lambda p: len(p.running)),
        ("twinhull_sim_waiting", "gauge", lambda p: p.waiting),
        ("twinhull_sim_ready_replicas", "gauge", lambda p: p.ready),
    ]
    lines = []

    def labels(cell: Cell) -> str:
        ns, name, cluster, zone, role = cell
        return (f'namespace="{ns}",twinhull_deployment="{name}",cluster="{cluster}",'
                f'zone="{zone}",role="{role}"')
    for metric, kind, get in metrics:
        lines.append(f"# TYPE {metric} {kind}")
        for cell, pool in sorted(pools.items()):
            lines.append(f"{metric}{{{labels(cell)}}} {get(pool):.3f}")
    metric = "twinhull_sim_time_to_first_token_seconds"
    lines.append(f"# TYPE {metric} histogram")
    for cell, pool in sorted(pools.items()):
        cumulative = 0
        for le, n in zip(TTFT_BUCKETS, pool.ttft_buckets, strict=True):
            cumulative += n
            lines.append(f'{metric}_bucket{{{labels(cell)},le="{le}"}} {cumulative}')
        lines.append(f'{metric}_bucket{{{labels(cell)},le="+Inf"}} {pool.ttft_count}')
        lines.append(f"{metric}_sum{{{labels(cell)}}} {pool.ttft_sum:.3f}")
        lines.append(f"{metric}_count{{{labels(cell)}}} {pool.ttft_count}")
    return "\n".join(lines) + "\n"


def _points(args: argparse.Namespace) -> list[dict[str, Any]]:
    if args.trace is not None:
        return load_trace(args.trace)
    from workload import replay_points

    return check_points(replay_points(
        args.apps, args.examples, day=args.day, start=args.start, hours=args.hours,
        compress=args.compress, step=args.step, seed=args.seed,
        load_factor=args.load_factor), str(args.apps))


def _sizes(args: argparse.Namespace) -> Callable[[tuple[str, str]], Callable[[], float]]:
    """Request sizes per deployment: the app's token distribution with ``--apps``, else
    ``--tokens-per-request``."""
    if args.apps is None:
        return lambda _: lambda: float(args.tokens_per_request)
    import random

    from workload import deployments, load_apps, token_sizes

    names = {(md["metadata"]["namespace"], name) for name, md in
             deployments(args.examples).items()}
    dists = {(ns, app.name): token_sizes(app) for app in load_apps(args.apps)
             for ns, name in names if name == app.name}

    def size(key: tuple[str, str]) -> Callable[[], float]:
        dist = dists.get(key)
        if dist is None:
            return lambda: float(args.tokens_per_request)
        rng = random.Random(f"{args.seed}:{key}")
        return lambda: dist.sample(rng)
    return size


def main(argv: list[str] | None = None) -> int:
    repo = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(prog="e2e/loadsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", type=Path,
                        help="YAML list of {at, deployment: ns/name, tokensPerSecond}, each "
                        "rate held until the deployment's next point")
    source.add_argument("--apps", type=Path,
                        help="generate the trace from apps.yaml (e2e/workload.py) for the "
                        "apps with a ModelDeployment in --examples")
    parser.add_argument("--examples", type=Path, default=repo / "examples",
                        help="ModelDeployments naming the apps' namespace/name (--apps)")
    parser.add_argument("--day", type=int, default=0, help="--apps: day, 0 = Monday")
    parser.add_argument("--start", default="09:00", help="--apps: local time to start at")
    parser.add_argument("--hours", type=float, default=3.0, help="--apps: hours to replay")
    parser.add_argument("--compress", type=float, default=60.0,
                        help="--apps: time compression (rates stay real, the clock is faster)")
    parser.add_argument("--step", type=float, default=None,
                        help="--apps: real seconds per trace point (default max(60, compress))")
    parser.add_argument("--seed", type=int, default=1, help="--apps: random seed")
    parser.add_argument("--load-factor", type=float, default=None,
                        help="--apps: volumes x F (default: e2e/workload.py's)")
    parser.add_argument("--print-trace", action="store_true",
                        help="print the trace as YAML and exit (no lab needed)")
    parser.add_argument("--tail", type=float, default=0.0,
                        help="seconds to keep running after the trace's last point")
    parser.add_argument("--port", type=int, default=0, help="metrics port (default: any)")
    parser.add_argument("--replica-tokens", type=float, default=3000.0,
                        help="tokens per second one Ready replica serves")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="requests one replica runs at once; more wait")
    parser.add_argument("--prefill-tokens", type=float, default=30000.0,
                        help="prompt tokens per second of a request's prefill")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a request waits before the client gives up (dropped)")
    parser.add_argument("--tokens-per-request", type=float, default=4000.0,
                        help="request size with --trace")
    parser.add_argument("--queue-limit", type=float, default=64.0,
                        help="waiting requests per replica before requests are dropped")
    args = parser.parse_args(argv)
    if args.load_factor is None:
        from workload import DEFAULT_LOAD_FACTOR

        args.load_factor = DEFAULT_LOAD_FACTOR
    points = _points(args)
    if args.print_trace:
        print(yaml.safe_dump(points, sort_keys=False), end="")
        return 0
    model = ServerModel(replica_tokens=args.replica_tokens, concurrency=args.concurrency,
                        prefill_tokens_per_second=args.prefill_tokens, timeout=args.timeout,
                        queue_limit=args.queue_limit)
    sizes = _sizes(args)
    end = (float(points[-1]["at"]) if points else 0.0) + args.tail
    env = os.environ
    members = {c: _client(env[f"TWINHULL_{c.upper()}_KUBECONFIG"]) for c in ("east", "west")}
    hub = _client(env["TWINHULL_HUB_KUBECONFIG"])
    world, pools, feeds, lock = World(), {}, {}, threading.Lock()
    cells: dict[Cell, CellPods] = {}
    servers: dict[str, Pod] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                body = exposition(pools).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    target = Path(env["TWINHULL_PROMETHEUS_TARGETS"]) / f"loadsim-{os.getpid()}.json"
    target.write_text(json.dumps([{"targets": [f"127.0.0.1:{server.server_address[1]}"],
                                   "labels": {"job": "loadsim"}}]))
    print(f"loadsim: metrics on 127.0.0.1:{server.server_address[1]}, "
          f"trace {args.trace or args.apps}, {end:.0f}s", flush=True)
    stop = threading.Event()
    current = [world]  # the newest complete view, swapped whole under the lock

    def observing() -> None:
        """Read the lab every OBSERVE_SECONDS on a thread of its own, into a copy that
        replaces the model's view whole (a half-read view would count replicas as gone)."""
        reported: set[str] = set()
        while not stop.is_set():
            began = time.monotonic()
            try:
                view = current[0].copy()
                observe(view, members, hub)
                problems = sync_pods(view, cells, servers, lock, model.prompt_share)
                with lock:
                    current[0] = view
            except Exception as exc:  # keep serving on the last view, and say why
                problems = [f"reading the lab failed, serving on the last view: {exc!r}"]
            for problem in problems:
                if problem not in reported:
                    reported.add(problem)
                    print(f"loadsim: {problem}", file=sys.stderr, flush=True)
            stop.wait(max(0.0, OBSERVE_SECONDS - (time.monotonic() - began)))

    observe(world, members, hub)
    sync_pods(world, cells, servers, lock, model.prompt_share)
    observer = threading.Thread(target=observing, name="observe", daemon=True)
    observer.start()
    start = last = time.monotonic()
    try:
        while (now := time.monotonic()) - start <= end:
            with lock:
                step(current[0], pools, feeds, demand_at(points, now - start), now - start,
                     now - last, model=model, size=sizes, listeners=cells)
            last = now
            time.sleep(STEP_SECONDS)
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        observer.join(timeout=10)
        target.unlink(missing_ok=True)
        server.shutdown()
        for pod in servers.values():
            pod.close()
    return 0
