"""The lab's processes: their command lines and how to tell each one is serving.

Pure except for `Prober`, which makes HTTP requests.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from pathlib import Path

from .layout import CLUSTERS, HOST, Cluster, Layout
from .pki import Pki
from .processes import Process

# Node failure timings, shortened for tests. KWOK renews node leases every quarter of
# NODE_LEASE_SECONDS; the node lifecycle controller looks every NODE_MONITOR_PERIOD and
# turns a node whose lease went stale for NODE_MONITOR_GRACE_PERIOD Unknown (and its pods
# unready). Default NoExecute tolerations keep pods on failed nodes bound for a day:
# unready, not evicted.
NODE_MONITOR_PERIOD = "1s"
NODE_MONITOR_GRACE_PERIOD = "20s"
NODE_LEASE_SECONDS = "10"
DEFAULT_TOLERATION_SECONDS = "86400"

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node=fake"
HEALTH_PATHS = "/healthz,/readyz,/livez,/metrics"


@dataclass(frozen=True)
class Component:
    """A lab process, where it listens and where to ask whether it is healthy."""

    cluster: str
    name: str
    port: int | None
    process: Process
    health_url: str | None = None
    client_cert: bool = False

    @property
    def label(self) -> str:
        return f"{self.cluster}/{self.name}"


def components(layout: Layout, bin_dir: Path, prometheus: str) -> list[Component]:
    """Every lab process: per cluster etcd, API server, then the rest; Prometheus last."""
    pki = Pki(layout.pki)
    found: list[Component] = []
    for cluster in CLUSTERS:
        found.append(_etcd(layout, cluster, bin_dir))
        found.append(_apiserver(layout, cluster, bin_dir, pki))
        found.append(_controller_manager(layout, cluster, bin_dir, pki))
        if cluster.is_member:
            found.append(_scheduler(layout, cluster, bin_dir))
            found.append(_kwok(layout, cluster, bin_dir))
    found.append(_prometheus(layout, prometheus))
    return found


def _process(directory: Path, name: str, argv: list[str]) -> Process:
    return Process(
        argv=tuple(argv),
        pidfile=directory / f"{name}.pid",
        logfile=directory / "logs" / f"{name}.log",
    )


def _etcd(layout: Layout, cluster: Cluster, bin_dir: Path) -> Component:
    client = f"http://{HOST}:{layout.port(cluster, 'etcd')}"
    peer = f"http://{HOST}:{layout.port(cluster, 'etcd-peer')}"
    directory = layout.cluster_dir(cluster)
    argv = [
        str(bin_dir / "etcd"),
        f"--name={cluster.name}",
        f"--data-dir={directory / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster={cluster.name}={peer}",
        "--unsafe-no-fsync=true",
        "--log-level=warn",
    ]
    return Component(
        cluster.name,
        "etcd",
        layout.port(cluster, "etcd"),
        _process(directory, "etcd", argv),
        f"{client}/health",
    )


def _apiserver(layout: Layout, cluster: Cluster, bin_dir: Path, pki: Pki) -> Component:
    port = layout.port(cluster, "kube-apiserver")
    argv = [
        str(bin_dir / "kube-apiserver"),
        f"--etcd-servers=http://{HOST}:{layout.port(cluster, 'etcd')}",
        f"--bind-address={HOST}",
        f"--advertise-address={HOST}",
        f"--secure-port={port}",
        f"--tls-cert-file={pki.serving_cert}",
        f"--tls-private-key-file={pki.serving_key}",
        f"--client-ca-file={pki.ca_cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={pki.service_account_pub}",
        f"--service-account-signing-key-file={pki.service_account_key}",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=RBAC",
        "--allow-privileged=true",
        f"--default-not-ready-toleration-seconds={DEFAULT_TOLERATION_SECONDS}",
        f"--default-unreachable-toleration-seconds={DEFAULT_TOLERATION_SECONDS}",
    ]
    process = _process(layout.cluster_dir(cluster), "kube-apiserver", argv)
    return Component(
        cluster.name,
        "kube-apiserver",
        port,
        process,
        f"{layout.server_url(cluster)}/readyz",
        client_cert=True,
    )


def _controller_manager(layout: Layout, cluster: Cluster, bin_dir: Path, pki: Pki) -> Component:
    port = layout.port(cluster, "kube-controller-manager")
    argv = [
        str(bin_dir / "kube-controller-manager"),
        f"--kubeconfig={layout.kubeconfig(cluster)}",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        "--leader-elect=false",
        f"--authorization-always-allow-paths={HEALTH_PATHS}",
        f"--root-ca-file={pki.ca_cert}",
        f"--service-account-private-key-file={pki.service_account_key}",
        f"--cluster-signing-cert-file={pki.ca_cert}",
        f"--cluster-signing-key-file={pki.ca_key}",
        f"--node-monitor-period={NODE_MONITOR_PERIOD}",
        f"--node-monitor-grace-period={NODE_MONITOR_GRACE_PERIOD}",
        "--kube-api-qps=100",
        "--kube-api-burst=200",
    ]
    process = _process(layout.cluster_dir(cluster), "kube-controller-manager", argv)
    return Component(
        cluster.name, "kube-controller-manager", port, process, f"https://{HOST}:{port}/healthz"
    )


def _scheduler(layout: Layout, cluster: Cluster, bin_dir: Path) -> Component:
    port = layout.port(cluster, "kube-scheduler")
    argv = [
        str(bin_dir / "kube-scheduler"),
        f"--kubeconfig={layout.kubeconfig(cluster)}",
        f"--bind-address={HOST}",
        f"--secure-port={port}",
        "--leader-elect=false",
        f"--authorization-always-allow-paths={HEALTH_PATHS}",
    ]
    process = _process(layout.cluster_dir(cluster), "kube-scheduler", argv)
    return Component(
        cluster.name, "kube-scheduler", port, process, f"https://{HOST}:{port}/healthz"
    )


def _kwok(layout: Layout, cluster: Cluster, bin_dir: Path) -> Component:
    """KWOK's controller. It serves nothing: it is healthy while it runs and nodes are Ready."""
    directory = layout.cluster_dir(cluster)
    argv = [
        str(bin_dir / "kwok"),
        f"--kubeconfig={layout.kubeconfig(cluster)}",
        f"--config={directory / 'kwok.yaml'}",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}",
        f"--node-lease-duration-seconds={NODE_LEASE_SECONDS}",
        f"--cidr=10.{cluster.index}.0.0/16",
        f"--node-ip=192.168.{cluster.index}.1",
        "--v=WARN",
    ]
    return Component(cluster.name, "kwok", None, _process(directory, "kwok", argv))


def _prometheus(layout: Layout, prometheus: str) -> Component:
    directory = layout.prometheus_dir
    argv = [
        prometheus,
        f"--config.file={directory / 'prometheus.yml'}",
        f"--storage.tsdb.path={directory / 'data'}",
        "--storage.tsdb.retention.time=2d",
        f"--web.listen-address={HOST}:{layout.prometheus_port}",
        "--web.enable-lifecycle",
        "--log.level=warn",
    ]
    process = _process(directory, "prometheus", argv)
    return Component(
        "lab", "prometheus", layout.prometheus_port, process, f"{layout.prometheus_url}/-/ready"
    )


def prometheus_config(layout: Layout) -> str:
    """Prometheus scrapes itself and every target listed in the file_sd directory, every 2s."""
    return f"""global:
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 2s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["{HOST}:{layout.prometheus_port}"]
  - job_name: lab
    file_sd_configs:
      - files: ["{layout.targets_dir}/*.json"]
        refresh_interval: 2s
"""


class Prober:
    """Health checks over HTTP(S); API servers are asked with the admin client certificate."""

    def __init__(self, pki: Pki) -> None:
        self._client = ssl.create_default_context(cafile=str(pki.ca_cert))
        self._client.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
        self._anonymous = ssl._create_unverified_context()  # kcm/scheduler serve self-signed certs

    def healthy(self, component: Component, timeout: float = 1.0) -> bool:
        """True if the component answers its health URL with 200 within `timeout` seconds."""
        if component.health_url is None:
            return True
        scheme, rest = component.health_url.split("://", 1)
        hostport, path = rest.split("/", 1)
        host, port = hostport.rsplit(":", 1)
        if scheme == "https":
            context = self._client if component.client_cert else self._anonymous
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, int(port), timeout=timeout, context=context
            )
        else:
            conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        try:
            conn.request("GET", "/" + path)
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
