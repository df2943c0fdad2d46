"""What the lab benchmarks share: finding the lab, running the operator, reading the fleet
through the Kubernetes API (the python client, fast enough to poll every 0.1 s)."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, config

E2E = Path(__file__).resolve().parent.parent
GROUP, VERSION = "serving.twinhull.io", "v1alpha1"


IMAGE_ARENAS = os.environ.get("TWINHULL_BENCH_MALLOC_ARENA_MAX", "2")
"""``MALLOC_ARENA_MAX`` as the Dockerfile sets it (``TWINHULL_BENCH_MALLOC_ARENA_MAX``
overrides it to compare; glibc's default is 8 per core)."""


def _stop(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# A benchmark stopped with SIGTERM (kill, a CI timeout) runs its `finally` blocks as on
# Ctrl-C: the operator and the simulator it started are stopped and the fault it injected
# is undone. Python's default SIGTERM ends the process at once, which left a frozen west
# API server and an orphaned operator behind.
signal.signal(signal.SIGTERM, _stop)


@functools.cache
def _claim() -> Any:
    """The lab's session lock, taken once and kept for the rest of the process
    (``labkit.session``): a benchmark and an e2e session on one lab would share its Lease
    and its objects."""
    if str(E2E) not in sys.path:
        sys.path.insert(0, str(E2E))
    from labkit.layout import Layout
    from labkit.session import LabBusy, claim
    try:
        return claim(Layout.from_env(), f"benchmark {Path(sys.argv[0]).name}",
                     wait=float(os.environ.get("TWINHULL_LAB_WAIT", "1800")))
    except LabBusy as exc:
        sys.exit(str(exc))


def lab_env() -> dict[str, str]:
    """The lab's settings (`e2e/lab env`); the lab must be up (`e2e/lab up`). Holds the
    lab's session lock from the first call on (:func:`_claim`)."""
    _claim()
    if subprocess.run([str(E2E / "lab"), "status"], capture_output=True).returncode != 0:
        sys.exit("the lab is not up: run `e2e/lab up` (or `make lab-up`) first")
    out = subprocess.run([str(E2E / "lab"), "env"], capture_output=True, text=True,
                         check=True).stdout
    return dict(shlex.split(line)[1].split("=", 1) for line in out.splitlines() if line)


def api(kubeconfig: str) -> client.ApiClient:
    """A client that fails fast instead of retrying."""
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]  # kubernetes.config is untyped
        kubeconfig, client_configuration=configuration)
    configuration.retries = False
    return client.ApiClient(configuration)


def lab(*verb: str) -> None:
    """Run an `e2e/lab` verb."""
    subprocess.run([str(E2E / "lab"), *verb], check=True, capture_output=True)


@contextlib.contextmanager
def operator(env: dict[str, str], *, policy: Path | None = None, extra: list[str] | None = None,
             heap: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`twinhull run` on the lab's hub until the block ends (SIGTERM, then wait), as the
    chart's ServiceAccount (its RBAC applied, a TokenRequest token), as installed. With
    ``heap``, under e2e/bench/heapdump.py writing to that file on SIGUSR1."""
    sys.path.insert(0, str(E2E))
    from conftest import Lab, install_chart_rbac

    port = 18000 + os.getpid() % 1000
    log = Path(tempfile.mkstemp(prefix="twinhull-bench-", suffix=".log")[1])
    identity = install_chart_rbac(Lab(env), Path(tempfile.mkdtemp(prefix="twinhull-bench-")))
    runner = ([str(E2E / "bench" / "heapdump.py"), str(heap)] if heap
              else ["-m", "twinhull.cli"])
    args = [sys.executable, *runner, "run", "--kubeconfig",
            str(identity.kubeconfig()), "--liveness", f"http://127.0.0.1:{port}/healthz"]
    if policy:
        args += ["--policy", str(policy)]
    args += extra or []
    with log.open("wb") as out:
        # the image's environment (Dockerfile): glibc's malloc arenas capped
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "MALLOC_ARENA_MAX": IMAGE_ARENAS})
    try:
        wait(lambda: _live(port) or process.poll() is not None, 60, "operator liveness")
        if process.poll() is not None:
            sys.exit(f"the operator exited; see {log}")
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _live(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll until ``check()`` is truthy; return the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except Exception:  # a dead member answers with errors while we poll: keep polling
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def clusters_healthy(hub: client.ApiClient, names: tuple[str, ...] = ("east", "west")) -> bool:
    """Whether the lab's member ServingClusters are Healthy (not merely back: past their
    recovery count); others (e.g. the hostile corpus's, never reachable) do not count."""
    items = cast(dict[str, Any], client.CustomObjectsApi(hub).list_cluster_custom_object(
        GROUP, VERSION, "servingclusters"))["items"]
    phases = {i["metadata"]["name"]: (i.get("status") or {}).get("phase") for i in items}
    return all(phases.get(name) == "Healthy" for name in names)


def name_of(d: client.V1Deployment) -> str:
    """A listed Deployment's name (the API server's objects always have one)."""
    assert d.metadata is not None and d.metadata.name is not None
    return d.metadata.name


def ready_replicas(d: client.V1Deployment) -> int:
    """A listed Deployment's Ready replicas (0 while its status counts none)."""
    assert d.status is not None
    return d.status.ready_replicas or 0


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def bench_manifest(namespace: str, name: str, **spec: Any) -> list[dict[str, Any]]:
    """A namespace and a critical ModelDeployment with one 1-GPU replica in each of
    east-a, east-b, west-a, west-b and a cold 1-GPU fallback; ``spec`` adds fields."""
    image = "vllm/vllm-openai:v0.11.0"
    body = {
        "slaTier": "critical",
        "model": {"name": "bench-model", "image": image, "resources": {"gpus": 1}},
        "placement": [{"cluster": "east", "zones": {"east-a": 1, "east-b": 1}},
                      {"cluster": "west", "zones": {"west-a": 1, "west-b": 1}}],
        "fallback": {"model": {"name": "bench-small", "image": image,
                               "resources": {"gpus": 1}}, "replicasPerZone": 0},
        **spec,
    }
    return [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
            {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ModelDeployment",
             "metadata": {"name": name, "namespace": namespace}, "spec": body}]


SIM_COUNTS = ("twinhull_sim_dropped_requests_total", "twinhull_sim_request_failure_total",
              "twinhull_sim_requests_total")
"""The simulator's own counts a benchmark reads: dropped, failed and all requests."""


def quantile(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (p95 of 20 runs is the 19th). Pure."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def simulator(env: dict[str, str], deployment: str | Sequence[str], tokens_per_second: float
              ) -> Iterator[Callable[..., dict[tuple[str, str, str], float]]]:
    """The data-plane simulator under a constant load on ``deployment`` (NAMESPACE/NAME,
    or several, each under that load); yields a reader of its own counts
    (:data:`SIM_COUNTS`) per (count, cluster, role), of the first deployment or of the
    one it is given."""
    deployments = [deployment] if isinstance(deployment, str) else list(deployment)
    port = _free_port()
    trace = Path(tempfile.mkstemp(prefix="bench-failover-", suffix=".yaml")[1])
    trace.write_text(yaml.safe_dump([{"at": 0, "deployment": d,
                                      "tokensPerSecond": tokens_per_second}
                                     for d in deployments]))
    process = subprocess.Popen(
        [sys.executable, str(E2E / "loadsim"), "--trace", str(trace), "--tail", "86400",
         "--port", str(port), "--tokens-per-request", "200"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def counts(of: str = deployments[0]) -> dict[tuple[str, str, str], float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out: dict[tuple[str, str, str], float] = {}
        for name, labels, value in re.findall(r"^(\w+)\{([^}]*)\} (\S+)$", text, re.M):
            fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
            if name not in SIM_COUNTS or (fields.get("namespace"), fields.get(
                    "twinhull_deployment")) != tuple(of.split("/", 1)):
                continue
            key = (name, fields["cluster"], fields["role"])
            out[key] = out.get(key, 0.0) + float(value)
        return out

    try:
        wait(lambda: counts() is not None, 30, "the simulator's metrics")
        yield counts
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
