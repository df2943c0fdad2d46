"""Where the lab keeps things: the cluster topology, ports and directories.

Everything here is pure: it computes names, paths and ports from the
environment and touches nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LABKIT = Path(__file__).resolve().parent
REPO = LABKIT.parent.parent
BUILD_SCRIPT = LABKIT / "build.sh"
HOST = "127.0.0.1"
DEFAULT_PORT_BASE = 17400


class LabError(Exception):
    """A lab operation failed; the message says what and where to look."""


MAX_NODES_PER_ZONE = 20
"""At most this many nodes a zone (each node's pod network is its own /24 of the member's
127.x.0.0/16, see members.pod_cidr)."""


def _nodes_per_zone(environ: Mapping[str, str]) -> int:
    """How many KWOK nodes each zone has: TWINHULL_LAB_NODES_PER_ZONE, 2 by default, up to
    20. Each takes 110 pods, as a real kubelet by default: the scale benchmark's 2,000
    deployments need 1,000 pods per zone, more than two nodes hold."""
    text = environ.get("TWINHULL_LAB_NODES_PER_ZONE") or "2"
    if not text.isdigit() or not 1 <= int(text) <= MAX_NODES_PER_ZONE:
        raise LabError(f"TWINHULL_LAB_NODES_PER_ZONE={text!r} must be a number from 1 to 20 "
                       "(each node holds 110 pods)")
    return int(text)


try:
    NODES_PER_ZONE = _nodes_per_zone(os.environ)
except LabError:  # Layout.from_env reports it before anything is started
    NODES_PER_ZONE = 2


@dataclass(frozen=True)
class Cluster:
    """One lab cluster. The hub has no zones and no nodes; members have KWOK nodes per zone."""

    name: str
    index: int
    zones: tuple[str, ...] = ()

    @property
    def is_member(self) -> bool:
        """True for clusters that run workloads (east, west)."""
        return bool(self.zones)

    def nodes(self, zone: str) -> list[str]:
        """Names of the KWOK nodes in `zone`, e.g. east-a-0, east-a-1."""
        return [f"{zone}-{i}" for i in range(NODES_PER_ZONE)]


HUB = Cluster("hub", 0)
_ALL_MEMBERS = (Cluster("east", 1, ("east-a", "east-b")), Cluster("west", 2, ("west-a", "west-b")),
                Cluster("south", 3, ("south-a", "south-b")))
"""Every member a lab can have; TWINHULL_LAB_MEMBERS=3 adds south (the scale benchmark's
third member; tests and examples use east and west)."""


def _member_count(environ: Mapping[str, str]) -> int:
    """How many members TWINHULL_LAB_MEMBERS asks for (2, the default, or 3)."""
    text = environ.get("TWINHULL_LAB_MEMBERS") or "2"
    if text not in ("2", "3"):
        raise LabError(f"TWINHULL_LAB_MEMBERS={text!r} must be 2 (east, west) or 3 (and south)")
    return int(text)


def _members(environ: Mapping[str, str]) -> tuple[Cluster, ...]:
    try:
        return _ALL_MEMBERS[:_member_count(environ)]
    except LabError:  # Layout.from_env reports it before anything is started
        return _ALL_MEMBERS[:2]


MEMBERS = _members(os.environ)
CLUSTERS = (HUB, *MEMBERS)

# Each cluster owns a block of ten ports starting at base + 10 * index.
_PORT_OFFSETS = {
    "kube-apiserver": 0,
    "etcd": 1,
    "etcd-peer": 2,
    "kube-controller-manager": 3,
    "kube-scheduler": 4,
    "prometheus": 5,
}
_PROMETHEUS_OFFSET = 90
_TOXIPROXY_OFFSET = 95
"""toxiproxy's API; each member's proxy listens on the next ports (east +96, west +97,
south +98)."""


def cluster(name: str) -> Cluster:
    """The cluster called `name`, or LabError listing the valid names."""
    for candidate in CLUSTERS:
        if candidate.name == name:
            return candidate
    raise LabError(f"unknown cluster {name!r}; choose one of {', '.join(c.name for c in CLUSTERS)}")


def member_zone(cluster_name: str, zone: str) -> Cluster:
    """The member cluster `cluster_name`, checking that it has `zone`."""
    found = cluster(cluster_name)
    if zone not in found.zones:
        zones = ", ".join(found.zones) or "none"
        raise LabError(f"cluster {cluster_name!r} has no zone {zone!r}; zones: {zones}")
    return found


@dataclass(frozen=True)
class Layout:
    """Directories and ports of one lab instance."""

    cache: Path
    run: Path
    port_base: int
    audit_requests: bool = False
    """TWINHULL_LAB_AUDIT=requests: every API server logs every request (reads too) made
    as a ServiceAccount, not only the hub's writes (the scale benchmark's request rates)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Layout:
        """Read TWINHULL_LAB_CACHE, TWINHULL_LAB_RUN and TWINHULL_LAB_PORT_BASE."""
        cache = (
            Path(environ.get("TWINHULL_LAB_CACHE") or Path.home() / ".cache/twinhull/lab")
            .expanduser()
            .absolute()
        )
        run = Path(environ.get("TWINHULL_LAB_RUN") or cache / "run").expanduser().absolute()
        if run == REPO or REPO in run.parents:
            raise LabError(
                f"TWINHULL_LAB_RUN={run} is inside the repository; put run state elsewhere"
            )
        base_text = environ.get("TWINHULL_LAB_PORT_BASE") or str(DEFAULT_PORT_BASE)
        if not base_text.isdigit() or not 1024 <= int(base_text) <= 65000:
            raise LabError(
                f"TWINHULL_LAB_PORT_BASE={base_text!r} must be a number between 1024 and 65000"
            )
        _member_count(environ)
        _nodes_per_zone(environ)
        audit = environ.get("TWINHULL_LAB_AUDIT") or "writes"
        if audit not in ("writes", "requests"):
            raise LabError(f"TWINHULL_LAB_AUDIT={audit!r} must be writes (the hub's, the "
                           "default) or requests (every request by a ServiceAccount, everywhere)")
        return cls(cache=cache, run=run, port_base=int(base_text),
                   audit_requests=audit == "requests")

    def port(self, cluster: Cluster, component: str) -> int:
        """The fixed port of `component` in `cluster`."""
        return self.port_base + 10 * cluster.index + _PORT_OFFSETS[component]

    @property
    def prometheus_port(self) -> int:
        """Prometheus's web port."""
        return self.port_base + _PROMETHEUS_OFFSET

    @property
    def prometheus_url(self) -> str:
        """Base URL of the lab's global Prometheus (the hub's view of every member)."""
        return f"http://{HOST}:{self.prometheus_port}"

    def member_prometheus_url(self, cluster: Cluster) -> str:
        """Base URL of a member cluster's own Prometheus."""
        return f"http://{HOST}:{self.port(cluster, 'prometheus')}"

    def member_prometheus_dir(self, cluster: Cluster) -> Path:
        """A member Prometheus's config, data, discovery kubeconfig, pid file and log."""
        return self.cluster_dir(cluster) / "prometheus"

    def server_url(self, cluster: Cluster) -> str:
        """HTTPS URL of the cluster's API server."""
        return f"https://{HOST}:{self.port(cluster, 'kube-apiserver')}"

    @property
    def toxiproxy_port(self) -> int:
        """toxiproxy's API port."""
        return self.port_base + _TOXIPROXY_OFFSET

    def proxy_port(self, member: Cluster) -> int:
        """The port of the proxy in front of a member's API server."""
        return self.port_base + _TOXIPROXY_OFFSET + member.index

    def proxied_url(self, member: Cluster) -> str:
        """HTTPS URL of a member's API server through its proxy: what twinhull is given
        (the member's certificate names 127.0.0.1, whatever the port)."""
        return f"https://{HOST}:{self.proxy_port(member)}"

    @property
    def toxiproxy_dir(self) -> Path:
        """toxiproxy's configuration, pid file and log."""
        return self.run / "toxiproxy"

    @property
    def dataplane_down_dir(self) -> Path:
        """One empty file per member whose data plane is down (`e2e/lab member-down`): the
        simulator serves nothing there."""
        return self.run / "dataplane-down"

    def cluster_dir(self, cluster: Cluster) -> Path:
        """Run directory of one cluster: etcd data, pid files, logs, kubeconfig."""
        return self.run / cluster.name

    def kubeconfig(self, cluster: Cluster) -> Path:
        """Admin kubeconfig of the cluster."""
        return self.cluster_dir(cluster) / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        """The hub API server's audit log (JSON lines): writes made as ServiceAccounts."""
        return self.audit_log_of(HUB)

    def audit_log_of(self, cluster: Cluster) -> Path:
        """A cluster's audit log (members have one with TWINHULL_LAB_AUDIT=requests)."""
        return self.cluster_dir(cluster) / "logs" / "audit.log"

    def twinhull_kubeconfig_path(self, member: str) -> Path:
        """Kubeconfig of the least-privilege identity a member grants twinhull."""
        return self.run / member / "twinhull-kubeconfig"

    @property
    def pki(self) -> Path:
        """Certificates and keys shared by all clusters."""
        return self.run / "pki"

    @property
    def prometheus_dir(self) -> Path:
        """The global Prometheus's config, data, pid file and log."""
        return self.run / "prometheus"

    @property
    def targets_dir(self) -> Path:
        """file_sd directory: drop `<name>.json` target files here to have them scraped."""
        return self.prometheus_dir / "targets"

    @property
    def rules_dir(self) -> Path:
        """Rule files of the global Prometheus: drop `<name>.yaml` here, then
        `e2e/lab prometheus-reload`."""
        return self.prometheus_dir / "rules"
