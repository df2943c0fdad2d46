"""The lab itself: scheduling onto zones, faults and their undo, Prometheus.

These run against real API servers (see e2e/lab). Every fault is undone in a
`finally`, every namespace and helper process is removed afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

REPO = Path(__file__).resolve().parent.parent

if TYPE_CHECKING:  # the fixture's type; not imported at run time (tests/ has a conftest too)
    from conftest import Lab

pytestmark = pytest.mark.e2e

T = TypeVar("T")
CALL_TIMEOUT = 10
IMAGE = "registry.lab/models/qwen3:v1"


def eventually(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll `probe` until it returns something truthy; else fail naming `what` and its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not true after {timeout:.0f}s (last: {value!r})")
        time.sleep(interval)


def core(lab: Lab, cluster: str) -> client.CoreV1Api:
    return client.CoreV1Api(lab.api(cluster))


def reachable(lab: Lab, cluster: str, timeout: float) -> bool:
    """True if the cluster's API answers /version within `timeout` seconds."""
    try:
        client.VersionApi(lab.api(cluster)).get_code(_request_timeout=timeout)
    except Exception:  # connection refused, timeout, TLS error: all mean "not reachable"
        return False
    return True


def pod_ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def node_ready(node: client.V1Node) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


@pytest.fixture
def namespace(lab: Lab) -> Iterator[Callable[[str], str]]:
    """Create throwaway namespaces (ready for pods); all are deleted after the test."""
    created: list[tuple[str, str]] = []

    def make(cluster: str) -> str:
        name = f"lab-e2e-{uuid.uuid4().hex[:8]}"
        api = core(lab, cluster)
        api.create_namespace({"metadata": {"name": name}}, _request_timeout=CALL_TIMEOUT)
        created.append((cluster, name))
        eventually(
            lambda: api.list_namespaced_service_account(name, _request_timeout=CALL_TIMEOUT).items,
            30,
            f"{cluster}/{name} default ServiceAccount",
        )
        return name

    yield make
    for cluster, name in created:
        try:
            core(lab, cluster).delete_namespace(name, _request_timeout=CALL_TIMEOUT)
        except ApiException as err:
            if err.status != 404:
                raise


def deployment(
    name: str, replicas: int, zone: str | None = None, image: str = IMAGE
) -> dict[str, Any]:
    """A one-GPU model Deployment, pinned to `zone` if given."""
    spec: dict[str, Any] = {
        "containers": [
            {"name": "model", "image": image, "resources": {"limits": {"nvidia.com/gpu": "1"}}}
        ]
    }
    if zone:
        spec["nodeSelector"] = {"topology.kubernetes.io/zone": zone}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def create_deployment(lab: Lab, cluster: str, namespace: str, body: dict[str, Any]) -> None:
    client.AppsV1Api(lab.api(cluster)).create_namespaced_deployment(
        namespace, body, _request_timeout=CALL_TIMEOUT
    )


def ready_replicas(lab: Lab, cluster: str, namespace: str, name: str) -> int:
    status = (
        client.AppsV1Api(lab.api(cluster))
        .read_namespaced_deployment(name, namespace, _request_timeout=CALL_TIMEOUT)
        .status
    )
    return status.ready_replicas or 0


def wait_ready(lab: Lab, cluster: str, namespace: str, name: str, replicas: int) -> None:
    """Wait until Deployment `name` has `replicas` Ready pods."""
    eventually(
        lambda: ready_replicas(lab, cluster, namespace, name) == replicas,
        60,
        f"{cluster}/{namespace}/{name}: {replicas} Ready",
    )


def pods_of(lab: Lab, cluster: str, namespace: str, app: str) -> list[client.V1Pod]:
    return (
        core(lab, cluster)
        .list_namespaced_pod(namespace, label_selector=f"app={app}", _request_timeout=CALL_TIMEOUT)
        .items
    )


def test_deployment_per_zone_lands_ready_pods_on_that_zone(
    lab: Lab, namespace: Callable[[str], str]
) -> None:
    for cluster, zones in (("east", ("east-a", "east-b")), ("west", ("west-a", "west-b"))):
        ns = namespace(cluster)
        for zone in zones:
            create_deployment(lab, cluster, ns, deployment(f"model-{zone}", replicas=2, zone=zone))
        for zone in zones:
            wait_ready(lab, cluster, ns, f"model-{zone}", replicas=2)
            for pod in pods_of(lab, cluster, ns, f"model-{zone}"):
                labels = (
                    core(lab, cluster)
                    .read_node(pod.spec.node_name, _request_timeout=CALL_TIMEOUT)
                    .metadata.labels
                )
                assert pod_ready(pod)
                assert labels["topology.kubernetes.io/zone"] == zone
                assert labels["topology.kubernetes.io/region"] == cluster


def test_kill_makes_api_unreachable_and_revive_keeps_objects(
    lab: Lab, namespace: Callable[[str], str]
) -> None:
    ns = namespace("west")
    body = {"metadata": {"name": "survivor"}, "data": {"weights": "east=50,west=50"}}
    core(lab, "west").create_namespaced_config_map(ns, body, _request_timeout=CALL_TIMEOUT)
    try:
        asked = time.monotonic()
        lab.run("kill", "west")
        eventually(
            lambda: not reachable(lab, "west", timeout=0.2),
            1.0 - (time.monotonic() - asked),
            "west API unreachable within 1s of asking",
            interval=0.05,
        )
        assert reachable(lab, "east", timeout=2), "killing west must not affect east"
        west, east = (
            lab.env["TWINHULL_WEST_PROMETHEUS_URL"],
            lab.env["TWINHULL_EAST_PROMETHEUS_URL"],
        )
        assert http_status(f"{west}/-/ready") is None, "west's Prometheus dies with west"
        assert http_status(f"{east}/-/ready") == 200
    finally:
        lab.run("revive", "west")
    assert reachable(lab, "west", timeout=5)
    assert http_status(f"{lab.env['TWINHULL_WEST_PROMETHEUS_URL']}/-/ready") == 200
    kept = core(lab, "west").read_namespaced_config_map(
        "survivor", ns, _request_timeout=CALL_TIMEOUT
    )
    assert kept.data == {"weights": "east=50,west=50"}


def test_freeze_makes_calls_time_out_and_revive_recovers(lab: Lab) -> None:
    try:
        lab.run("freeze", "west")
        started = time.monotonic()
        assert not reachable(lab, "west", timeout=2)
        assert time.monotonic() - started >= 1.5, "a frozen API server hangs; it does not refuse"
    finally:
        lab.run("revive", "west")
    eventually(lambda: reachable(lab, "west", timeout=2), 10, "west API back after thaw")


def twinhull_route(lab: Lab, member: str) -> client.ApiClient:
    """A client of the member as twinhull reaches it: its kubeconfig (the one in the hub's
    Secret), through the lab's proxy."""
    from kubernetes import config

    path = Path(lab.env["TWINHULL_LAB_RUN"]) / member / "twinhull-kubeconfig"
    proxy = int(lab.env["TWINHULL_TOXIPROXY_URL"].rsplit(":", 1)[1]) + {"east": 1,
                                                                       "west": 2}[member]
    assert f"server: https://127.0.0.1:{proxy}\n" in path.read_text(), "through the proxy"
    return config.new_client_from_config(config_file=str(path))


def test_partition_hangs_twinhulls_route_only_and_heal_restores(lab: Lab) -> None:
    route = twinhull_route(lab, "west")
    client.VersionApi(route).get_code(_request_timeout=CALL_TIMEOUT)
    try:
        lab.run("partition", "west")
        started = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - a timeout, whatever urllib3 calls it
            client.VersionApi(route).get_code(_request_timeout=2)
        assert time.monotonic() - started >= 1.5, "a partition hangs; it does not refuse"
        assert reachable(lab, "west", timeout=2), "the member itself runs on"
    finally:
        lab.run("heal", "west")
    eventually(lambda: _answers(route), 10, "twinhull's route back after heal")


def _answers(api: client.ApiClient) -> bool:
    try:
        client.VersionApi(api).get_code(_request_timeout=2)
    except Exception:  # a timeout or a reset while the proxy heals
        return False
    return True


def test_a_model_load_image_runs_unready_until_its_load_time(
    lab: Lab, namespace: Callable[[str], str]
) -> None:
    ns = namespace("east")
    create_deployment(lab, "east", ns, deployment("loading", replicas=1,
                                                  image=f"{IMAGE}-load8"))
    started = time.monotonic()
    running = eventually(
        lambda: [p for p in pods_of(lab, "east", ns, "loading")
                 if p.status.phase == "Running" and p.status.pod_ip],
        15, "the pod Running with an IP")
    assert not pod_ready(running[0]), "a model server is not Ready while it loads"
    wait_ready(lab, "east", ns, "loading", replicas=1)
    took = time.monotonic() - started
    assert 7.0 <= took <= 25.0, f"Ready after {took:.1f}s; the image says 8 s of loading"


def zone_nodes(lab: Lab, cluster: str, zone: str) -> list[client.V1Node]:
    selector = f"topology.kubernetes.io/zone={zone}"
    return (
        core(lab, cluster).list_node(label_selector=selector, _request_timeout=CALL_TIMEOUT).items
    )


def test_zone_down_makes_nodes_and_pods_unready_and_zone_up_restores(
    lab: Lab, namespace: Callable[[str], str]
) -> None:
    ns = namespace("east")
    create_deployment(lab, "east", ns, deployment("model-east-a", replicas=2, zone="east-a"))
    create_deployment(lab, "east", ns, deployment("model-east-b", replicas=1, zone="east-b"))
    wait_ready(lab, "east", ns, "model-east-a", replicas=2)
    wait_ready(lab, "east", ns, "model-east-b", replicas=1)
    try:
        deadline = time.monotonic() + 15  # pods on a failed zone must turn unready within ~15s
        lab.run("zone-down", "east", "east-a")
        eventually(
            lambda: not any(node_ready(n) for n in zone_nodes(lab, "east", "east-a")),
            deadline - time.monotonic(),
            "east-a nodes NotReady",
        )
        eventually(
            lambda: not any(pod_ready(p) for p in pods_of(lab, "east", ns, "model-east-a")),
            deadline - time.monotonic(),
            "east-a pods unready",
        )
        down_zone_pods = pods_of(lab, "east", ns, "model-east-a")
        assert all(p.metadata.deletion_timestamp is None for p in down_zone_pods), "not evicted"
        assert all(pod_ready(p) for p in pods_of(lab, "east", ns, "model-east-b")), "east-b Ready"
    finally:
        lab.run("zone-up", "east", "east-a")
    assert all(node_ready(n) for n in zone_nodes(lab, "east", "east-a"))
    wait_ready(lab, "east", ns, "model-east-a", replicas=2)


def test_crashloop_image_never_becomes_ready(lab: Lab, namespace: Callable[[str], str]) -> None:
    ns = namespace("east")
    broken_image = "registry.lab/models/qwen3:v2-crashloop"
    create_deployment(lab, "east", ns, deployment("healthy", replicas=1))
    create_deployment(lab, "east", ns, deployment("broken", replicas=1, image=broken_image))
    wait_ready(lab, "east", ns, "healthy", replicas=1)

    def restarts_while_unready() -> int:
        """Restart count of the broken pod once it is in CrashLoopBackOff, else 0."""
        pods = pods_of(lab, "east", ns, "broken")
        assert not any(pod_ready(p) for p in pods), "a -crashloop pod must never be Ready"
        if not pods or pods[0].status.phase != "Running":
            return 0
        for status in pods[0].status.container_statuses or []:
            if status.state.waiting and status.state.waiting.reason == "CrashLoopBackOff":
                return int(status.restart_count)
        return 0

    first = eventually(restarts_while_unready, 30, "broken pod in CrashLoopBackOff")
    eventually(lambda: restarts_while_unready() > first, 30, "restart count climbing")
    assert ready_replicas(lab, "east", ns, "broken") == 0


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """HTTP status of GET `url`, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except (urllib.error.URLError, OSError):
        return None


def test_prometheus_stop_and_start(lab: Lab) -> None:
    ready = f"{lab.prometheus_url}/-/ready"
    assert http_status(ready) == 200
    try:
        lab.run("prometheus-stop")
        assert http_status(ready) is None
    finally:
        lab.run("prometheus-start")
    assert http_status(ready) == 200


def _page(body: bytes) -> type[BaseHTTPRequestHandler]:
    """A handler serving ``body`` at /metrics (404 elsewhere)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/metrics" else 404)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Page


_Metrics = _page(b"# TYPE lab_e2e_probe gauge\nlab_e2e_probe 42\n")
"""One fixed gauge."""


def prometheus_value(lab: Lab, query: str) -> str | None:
    """The value of the first series `query` returns, or None."""
    url = f"{lab.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            result = json.load(response)["data"]["result"]
    except (urllib.error.URLError, OSError):
        return None
    return result[0]["value"][1] if result else None


def test_prometheus_scrapes_file_sd_targets(lab: Lab) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    job = f"lab-e2e-{uuid.uuid4().hex[:8]}"
    target = lab.prometheus_targets / f"{job}.json"
    try:
        staged = target.with_suffix(".tmp")
        staged.write_text(
            json.dumps([{"targets": [f"127.0.0.1:{server.server_port}"], "labels": {"job": job}}])
        )
        staged.rename(target)
        eventually(
            lambda: prometheus_value(lab, f'lab_e2e_probe{{job="{job}"}}') == "42",
            30,
            "file_sd target scraped",
        )
    finally:
        target.unlink(missing_ok=True)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


_PodPage = _page(b'# TYPE lab_e2e_pod_probe gauge\nlab_e2e_pod_probe{model_name="m"} 42\n')
"""A model server's page as a runtime writes it: no twinhull label."""


def test_a_pods_page_reaches_the_global_view_through_its_members_prometheus(
    lab: Lab, namespace: Callable[[str], str]
) -> None:
    """A pod labelled as twinhull renders them gets a loopback IP; the member's Prometheus
    finds it through the API server (as a pods-only identity) with the shipped scrape
    job, which adds the labels the queries use; the global Prometheus federates it."""
    ns = namespace("east")
    labels = {
        "app": "probe",
        "app.kubernetes.io/managed-by": "twinhull",
        "serving.twinhull.io/deployment": "probe",
        "serving.twinhull.io/cluster": "east",
        "serving.twinhull.io/zone": "east-b",
        "serving.twinhull.io/role": "primary",
        "serving.twinhull.io/revision": "0123456789abcdef",
    }
    body = deployment("probe", replicas=1, zone="east-b")
    body["spec"]["template"]["metadata"]["labels"] = labels
    body["spec"]["template"]["spec"]["containers"][0]["ports"] = [
        {"name": "http", "containerPort": 8000}
    ]
    create_deployment(lab, "east", ns, body)
    wait_ready(lab, "east", ns, "probe", 1)
    (pod,) = pods_of(lab, "east", ns, "probe")
    ip = pod.status.pod_ip
    assert ip.startswith("127.11."), f"a loopback pod IP inside east's pod CIDRs, not {ip}"
    server = ThreadingHTTPServer((ip, 8000), _PodPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        query = (
            f'lab_e2e_pod_probe{{namespace="{ns}", twinhull_deployment="probe", '
            'cluster="east", zone="east-b", role="primary", revision="0123456789abcdef", '
            f'pod="{pod.metadata.name}", model_name="m"}}'
        )
        eventually(lambda: prometheus_value(lab, query) == "42", 45, "the pod's page, federated")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_members_prometheus_may_read_pods_and_nothing_else(lab: Lab) -> None:
    import subprocess

    def can(verb: str, resource: str) -> str:
        run = subprocess.run(
            [
                str(lab.bin_dir / "kubectl"),
                "--kubeconfig",
                str(lab.kubeconfig("east")),
                "auth",
                "can-i",
                verb,
                resource,
                "--all-namespaces",
                "--as",
                "lab:prometheus",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return run.stdout.strip()

    assert can("list", "pods") == "yes" and can("watch", "pods") == "yes"
    for verb, resource in (("list", "secrets"), ("get", "nodes"), ("create", "pods")):
        assert can(verb, resource) == "no", f"{verb} {resource}"


def test_the_charts_pod_monitor_is_valid_for_prometheus_operator(lab: Lab, tmp_path) -> None:
    """The PodMonitor the chart renders for a member, dry-run against the real
    prometheus-operator CRD the lab installs on the members."""
    import subprocess

    monitor = (REPO / "charts" / "twinhull-member" / "files" / "podmonitor.yaml").read_text()
    run = subprocess.run(
        [
            str(lab.bin_dir / "kubectl"),
            "--kubeconfig",
            str(lab.kubeconfig("east")),
            "apply",
            "--dry-run=server",
            "-n",
            "default",
            "-f",
            "-",
        ],
        input=monitor.replace("namespace: monitoring", "namespace: default"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 0, run.stderr
    assert "podmonitor.monitoring.coreos.com/twinhull-model-servers created" in run.stdout
