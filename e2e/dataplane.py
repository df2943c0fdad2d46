"""The lab's data-plane simulator: stands in for the model servers, which in the lab are
KWOK pods that serve nothing.

A simulator, not a benchmark of real servers. Its model:

* demand per ModelDeployment comes from a trace: points ``{at, deployment, tokensPerSecond}``
  each held until the next point for that deployment (``--trace FILE``);
* demand is split over clusters by the weights of the hub's HTTPRoute, and inside a
  cluster over zones in proportion to their Ready primary replicas (read from the members
  every second); the fallback backend is served by the fallback replicas the same way;
* each Ready replica serves up to ``--replica-tokens`` tokens per second; what exceeds
  that waits, as requests of ``--tokens-per-request`` tokens, up to ``--queue-limit``
  requests per replica; beyond that requests are dropped;
* a replica whose image tag ends in ``-errors`` fails every request it takes (the lab's
  way to simulate a bad revision's error rate).

Exposed per (namespace, twinhull_deployment, cluster, zone, role) with vLLM's metric names
(``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
``vllm:request_success_total``, plus ``twinhull_sim_request_failure_total`` and
``twinhull_sim_dropped_requests_total``) on 127.0.0.1, registered with the lab's Prometheus
through its file_sd target directory. Its limits: no latency model beyond queueing, no
per-request token sizes (a fixed mean), no model of cold starts.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

Cell = tuple[str, str, str, str, str]
"""(namespace, deployment, cluster, zone, role)."""


@dataclass
class Counters:
    prompt: float = 0.0
    generation: float = 0.0
    success: float = 0.0
    failure: float = 0.0
    dropped: float = 0.0
    running: float = 0.0
    waiting: float = 0.0


@dataclass
class World:
    """What the simulator last read from the lab."""

    ready: dict[Cell, tuple[int, bool]] = field(default_factory=dict)
    """Ready replicas and whether they serve errors."""
    weights: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """(namespace, deployment) to backend weights (cluster names and ``fallback``)."""


def load_trace(path: Path) -> list[dict[str, Any]]:
    """Trace points sorted by time: ``{at: s, deployment: ns/name, tokensPerSecond: n}``."""
    points = yaml.safe_load(path.read_text()) or []
    for p in points:
        if not {"at", "deployment", "tokensPerSecond"} <= set(p):
            raise SystemExit(f"{path}: each point needs at, deployment, tokensPerSecond: {p}")
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


def observe(world: World, members: dict[str, Any], hub: Any) -> None:
    """Read Ready replicas from the members and weights from the hub (errors: keep the
    previous view of that cluster)."""
    from kubernetes import client

    for cluster, api in members.items():
        try:
            items = client.AppsV1Api(api).list_deployment_for_all_namespaces(
                label_selector="app.kubernetes.io/managed-by=twinhull", _request_timeout=2).items
        except Exception:  # a killed or frozen member: its pods keep their last state here
            continue
        for d in items:
            labels = d.metadata.labels or {}
            zone = labels.get("serving.twinhull.io/zone")
            role = labels.get("serving.twinhull.io/role")
            owner = labels.get("serving.twinhull.io/deployment")
            if not (zone and role and owner):
                continue
            image = d.spec.template.spec.containers[0].image
            world.ready[(d.metadata.namespace, owner, cluster, zone, role)] = (
                d.status.ready_replicas or 0, image.endswith("-errors"))
    try:
        routes = client.CustomObjectsApi(hub).list_cluster_custom_object(
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


def step(world: World, counters: dict[Cell, Counters], demand: dict[tuple[str, str], float],
         dt: float, *, replica_tokens: float, tokens_per_request: float,
         queue_limit: float) -> None:
    """Advance the model by ``dt`` seconds. Pure apart from updating ``counters``."""
    for (ns, name), tps in demand.items():
        weights = world.weights.get((ns, name)) or {}
        total_weight = sum(weights.values()) or 1
        for backend, weight in weights.items():
            share = tps * weight / total_weight
            role = "fallback" if backend == "fallback" else "primary"
            cells = [(c, r) for c, r in world.ready.items() if c[:2] == (ns, name)
                     and c[4] == role and (role == "fallback" or c[2] == backend)]
            replicas = sum(r[0] for _, r in cells)
            for cell, (ready, errors) in cells:
                part = share * ready / replicas if replicas else 0.0
                c = counters.setdefault(cell, Counters())
                capacity = ready * replica_tokens
                served = min(part + c.waiting * tokens_per_request / max(dt, 1e-9), capacity)
                backlog = c.waiting + (part - served) * dt / tokens_per_request
                limit = queue_limit * max(ready, 1)
                c.dropped += max(0.0, backlog - limit)
                c.waiting = min(max(backlog, 0.0), limit)
                c.running = served / replica_tokens if ready else 0.0
                requests = served * dt / tokens_per_request
                c.prompt += served * dt * 0.8
                c.generation += served * dt * 0.2
                if errors:
                    c.failure += requests
                else:
                    c.success += requests
            if not replicas:  # nothing Ready behind this backend: everything is dropped
                c = counters.setdefault((ns, name, backend, "", role), Counters())
                c.dropped += share * dt / tokens_per_request


def exposition(counters: dict[Cell, Counters]) -> str:
    """Prometheus text format of all counters. Pure."""
    metrics = [
        ("vllm:prompt_tokens_total", "counter", "prompt"),
        ("vllm:generation_tokens_total", "counter", "generation"),
        ("vllm:request_success_total", "counter", "success"),
        ("twinhull_sim_request_failure_total", "counter", "failure"),
        ("twinhull_sim_dropped_requests_total", "counter", "dropped"),
        ("vllm:num_requests_running", "gauge", "running"),
        ("vllm:num_requests_waiting", "gauge", "waiting"),
    ]
    lines = []
    for metric, kind, attr in metrics:
        lines.append(f"# TYPE {metric} {kind}")
        for (ns, name, cluster, zone, role), c in sorted(counters.items()):
            labels = (f'namespace="{ns}",twinhull_deployment="{name}",cluster="{cluster}",'
                      f'zone="{zone}",role="{role}"')
            lines.append(f"{metric}{{{labels}}} {getattr(c, attr):.3f}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e/loadsim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trace", type=Path, required=True,
                        help="YAML list of {at, deployment: ns/name, tokensPerSecond}")
    parser.add_argument("--tail", type=float, default=0.0,
                        help="seconds to keep running after the trace's last point")
    parser.add_argument("--port", type=int, default=0, help="metrics port (default: any)")
    parser.add_argument("--replica-tokens", type=float, default=3000.0,
                        help="tokens per second one Ready replica serves")
    parser.add_argument("--tokens-per-request", type=float, default=4000.0)
    parser.add_argument("--queue-limit", type=float, default=64.0,
                        help="waiting requests per replica before requests are dropped")
    args = parser.parse_args(argv)
    points = load_trace(args.trace)
    end = (float(points[-1]["at"]) if points else 0.0) + args.tail
    env = os.environ
    members = {c: _client(env[f"TWINHULL_{c.upper()}_KUBECONFIG"]) for c in ("east", "west")}
    hub = _client(env["TWINHULL_HUB_KUBECONFIG"])
    world, counters, lock = World(), {}, threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                body = exposition(counters).encode()
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
    print(f"loadsim: metrics on 127.0.0.1:{server.server_address[1]}, trace {args.trace}, "
          f"{end:.0f}s", flush=True)
    start = last = time.monotonic()
    try:
        while (now := time.monotonic()) - start <= end:
            observe(world, members, hub)
            with lock:
                step(world, counters, demand_at(points, now - start), now - last,
                     replica_tokens=args.replica_tokens,
                     tokens_per_request=args.tokens_per_request, queue_limit=args.queue_limit)
            last = now
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        target.unlink(missing_ok=True)
        server.shutdown()
    return 0
