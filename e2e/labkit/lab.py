"""The lab as a whole: bring it up, take it down, report on it."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

from . import hub, members
from .components import (
    AUDIT_POLICY,
    AUDIT_REQUESTS_POLICY,
    SHIPPED_SCRAPE_CONFIG,
    Component,
    Prober,
    components,
    member_prometheus_config,
    prometheus_config,
    scratch_components,
    toxiproxy_config,
)
from .kube import Kubectl
from .layout import BUILD_SCRIPT, CLUSTERS, HOST, HUB, MEMBERS, Cluster, LabError, Layout
from .pki import Pki, token_kubeconfig, write_private
from .processes import State, kill_pid, strays
from .waiting import wait_until

BINARIES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kwok",
)
SYSTEM_TOOLS = ("openssl",)  # from Debian: apt-get install openssl
START_TIMEOUT = 120.0
SCRATCH_INDEX = 5
"""Port block of a scratch API server (:meth:`Lab.scratch`): after hub, east and west."""
NODES_TIMEOUT = 60.0
CONTROLLERS_TIMEOUT = 150.0
"""How long a revived member may take to run a new pod again: its controller-manager,
scheduler and KWOK retry their watches with client-go's backoff (up to 30 s each, longer
the more often the API server went away), so a Deployment created right after a revive can
take a minute to become Ready, as in a real cluster."""
CANARY = "lab-canary"


def say(message: str) -> None:
    """Progress for humans, on stderr so stdout stays parseable."""
    print(f"[lab] {message}", file=sys.stderr, flush=True)


class Lab:
    """One lab instance, located by a Layout."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.pki = Pki(layout.pki)

    def _build_path(self, what: str) -> Path:
        env = {**os.environ, "TWINHULL_LAB_CACHE": str(self.layout.cache)}
        result = subprocess.run(
            [str(BUILD_SCRIPT), what], env=env, capture_output=True, text=True, check=True
        )
        return Path(result.stdout.strip())

    @cached_property
    def versions_dir(self) -> Path:
        """The build cache directory of the pinned versions (`build.sh dir`)."""
        return self._build_path("dir")

    @cached_property
    def prometheus_binary(self) -> Path:
        """Prometheus built with Kubernetes discovery (`build.sh prometheus`)."""
        return self._build_path("prometheus")

    @cached_property
    def toxiproxy_binary(self) -> Path:
        """toxiproxy (`build.sh toxiproxy`)."""
        return self._build_path("toxiproxy")

    @property
    def bin_dir(self) -> Path:
        return self.versions_dir / "bin"

    @property
    def share_dir(self) -> Path:
        return self.versions_dir / "share"

    @cached_property
    def components(self) -> list[Component]:
        """Every lab process, in start order."""
        return components(self.layout, self.bin_dir, str(self.prometheus_binary),
                          str(self.toxiproxy_binary))

    def component(self, cluster: str, name: str) -> Component:
        """The component `name` of `cluster` (the global Prometheus is the hub's)."""
        for found in self.components:
            if (found.cluster, found.name) == (cluster, name):
                return found
        raise LabError(f"no component {cluster}/{name}")

    def kubectl(self, cluster: Cluster) -> Kubectl:
        """kubectl bound to `cluster`'s admin kubeconfig."""
        return Kubectl(self.bin_dir / "kubectl", self.layout.kubeconfig(cluster), cluster.name)

    # -- up -----------------------------------------------------------------

    def up(self) -> None:
        """Start what is not running, apply hub and member objects, wait until all is ready."""
        began = time.monotonic()
        self._ensure_tools()
        self._write_run_dir()
        etcd = [c for c in self.components if c.name == "etcd"]
        apiservers = [c for c in self.components if c.name == "kube-apiserver"]
        for phase in (etcd, apiservers, [c for c in self.components if c not in etcd + apiservers]):
            self.start(phase)
        monitoring_crds = sorted((self.share_dir / "prometheus-operator").glob("*.yaml"))
        if not members.MEMBER_RBAC.is_file():
            raise LabError(f"{members.MEMBER_RBAC} is missing; run `make crds`")
        for member in MEMBERS:
            self.kubectl(member).apply_objects(
                [*members.node_objects(member), *members.prometheus_rbac()]
            )
            # Members run prometheus-operator's CRDs as real ones do (the lab's Prometheus
            # reads the plain scrape job instead; the CRDs check what the chart renders).
            self.kubectl(member).apply_files([*monitoring_crds, members.MEMBER_RBAC])
            self._twinhull_identity(member)
        say(f"hub: applied {hub.bootstrap(self.kubectl(HUB), self.layout, self.share_dir)}")
        for member in MEMBERS:
            self.wait_nodes(member)
        say(f"lab is up ({time.monotonic() - began:.1f}s); `e2e/lab env` prints its settings")

    def _twinhull_identity(self, member: Cluster) -> None:
        """Write the kubeconfig twinhull uses for `member`: a token (TokenRequest) of the
        ServiceAccount the member grants twinhull, kept while it exists."""
        path = self.layout.twinhull_kubeconfig_path(member.name)
        server = self.layout.proxied_url(member)  # through the member's proxy
        if path.exists() and f"server: {server}\n" in path.read_text():
            return
        namespace, account = members.TWINHULL_ACCOUNT
        token = (
            self.kubectl(member)
            .run(
                "create",
                "token",
                account,
                "--namespace",
                namespace,
                f"--duration={members.TOKEN_SECONDS}s",
            )
            .strip()
        )
        user = f"system:serviceaccount:{namespace}:{account}"
        write_private(
            path,
            token_kubeconfig(
                member.name, server, self.pki.ca_cert, user, token
            ),
        )

    def _ensure_tools(self) -> None:
        """Check system tools; run build.sh if a binary or asset is missing, showing progress."""
        missing = [tool for tool in SYSTEM_TOOLS if shutil.which(tool) is None]
        if missing:
            raise LabError(
                f"{', '.join(missing)} not found; install with apt-get (make system-deps)"
            )
        wanted = [self.bin_dir / b for b in BINARIES] + [self.prometheus_binary,
                                                         self.toxiproxy_binary]
        wanted += [
            self.share_dir / "gateway-api",
            self.share_dir / "kwok-stage",
            self.share_dir / "prometheus-operator",
        ]
        if all(path.exists() for path in wanted):
            return
        say(
            "building the lab binaries from Go modules (about 10 minutes on 2 cores the first time)"
        )
        env = {**os.environ, "TWINHULL_LAB_CACHE": str(self.layout.cache)}
        build = subprocess.run([str(BUILD_SCRIPT), "all"], env=env, stdout=subprocess.DEVNULL)
        if build.returncode != 0:
            raise LabError(f"{BUILD_SCRIPT} failed; see its output above")

    def _write_run_dir(self) -> None:
        """Certificates, kubeconfigs, KWOK and Prometheus configuration (unchanged files stay)."""
        self.pki.ensure()
        for cluster in CLUSTERS:
            (self.layout.cluster_dir(cluster) / "logs").mkdir(parents=True, exist_ok=True)
            if self.layout.audit_requests:
                write_private(self.layout.cluster_dir(cluster) / "audit-policy.yaml",
                              AUDIT_REQUESTS_POLICY)
            elif cluster is HUB:
                write_private(self.layout.cluster_dir(HUB) / "audit-policy.yaml", AUDIT_POLICY)
            write_private(
                self.layout.kubeconfig(cluster),
                self.pki.kubeconfig(cluster.name, self.layout.server_url(cluster)),
            )
        stages = members.kwok_config(self.share_dir / "kwok-stage")
        for member in MEMBERS:
            write_private(self.layout.cluster_dir(member) / "kwok.yaml", stages)
        self.layout.toxiproxy_dir.mkdir(parents=True, exist_ok=True)
        self.layout.dataplane_down_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.layout.toxiproxy_dir / "proxies.json", toxiproxy_config(self.layout))
        self.layout.targets_dir.mkdir(parents=True, exist_ok=True)
        self.layout.rules_dir.mkdir(parents=True, exist_ok=True)
        write_private(self.layout.prometheus_dir / "prometheus.yml", prometheus_config(self.layout))
        if not SHIPPED_SCRAPE_CONFIG.is_file():
            raise LabError(f"{SHIPPED_SCRAPE_CONFIG} is missing; run `make crds`")
        shipped = SHIPPED_SCRAPE_CONFIG.read_text()
        for member in MEMBERS:
            directory = self.layout.member_prometheus_dir(member)
            discovery = directory / "kubeconfig"
            write_private(
                discovery,
                self.pki.kubeconfig(member.name, self.layout.server_url(member), "prometheus"),
            )
            write_private(
                directory / "prometheus.yml", member_prometheus_config(member, discovery, shipped)
            )

    def start(self, wanted: list[Component]) -> None:
        """Start (or thaw) each of `wanted` that is not running, then wait until all are healthy."""
        for component in wanted:
            state = component.process.state()
            if state is State.FROZEN:
                say(f"{component.label}: thawing (SIGCONT)")
                component.process.signal(signal.SIGCONT)
            elif state is State.STOPPED:
                _check_port_free(component)
                pid = component.process.start()
                say(
                    f"{component.label}: started, pid {pid}"
                    + (f", port {component.port}" if component.port else "")
                )
        self.wait_healthy(wanted)

    def wait_healthy(self, wanted: list[Component], timeout: float = START_TIMEOUT) -> None:
        """Wait until every component answers its health check; fail fast if one exits."""
        prober = Prober(self.pki)
        deadline = time.monotonic() + timeout
        while pending := [c for c in wanted if not prober.healthy(c)]:
            for component in pending:
                if component.process.state() is State.STOPPED:
                    log = component.process.logfile
                    tail = component.process.log_tail()
                    raise LabError(f"{component.label} exited; end of {log}:\n{tail}")
            if time.monotonic() > deadline:
                names = ", ".join(c.label for c in pending)
                raise LabError(
                    f"{names} not healthy after {timeout:.0f}s; logs in {self.layout.run}"
                )
            time.sleep(0.25)

    def wait_nodes(self, member: Cluster) -> None:
        """Wait until KWOK tends every node of `member` and they are Ready (but downed zones)."""
        took = wait_until(
            lambda: self._nodes_settled(member), NODES_TIMEOUT, f"{member.name} nodes to be Ready"
        )
        say(f"{member.name}: nodes Ready ({took:.1f}s)")

    def wait_controllers(self, member: Cluster) -> None:
        """Wait until `member`'s control plane runs a new pod again: a canary Deployment
        in kube-system (outside every zone that is down) becomes Ready, then is deleted.
        A revived API server answers long before its controllers, whose watches back off,
        act again; tests and benchmarks that start right after a revive need both."""
        kubectl = self.kubectl(member)
        kubectl.run("delete", "deployment", CANARY, "-n", "kube-system", "--ignore-not-found",
                    "--wait=true")
        kubectl.apply_objects([members.canary_deployment(CANARY)])
        try:
            took = wait_until(
                lambda: (kubectl.get("deployment", CANARY, "-n", "kube-system")
                         .get("status", {}).get("readyReplicas") == 1),
                CONTROLLERS_TIMEOUT, f"{member.name} controllers to run a new pod")
        finally:
            kubectl.run("delete", "deployment", CANARY, "-n", "kube-system",
                        "--ignore-not-found", "--wait=false")
        say(f"{member.name}: controllers run new pods ({took:.1f}s)")

    def _nodes_settled(self, member: Cluster) -> bool:
        """True when KWOK renews every node lease and nodes are Ready (except in a downed zone)."""
        kubectl = self.kubectl(member)
        nodes = kubectl.get("nodes")["items"]
        leases = {
            lease["metadata"]["name"]: lease
            for lease in kubectl.get("leases", "-n", "kube-node-lease")["items"]
        }
        now = datetime.now(UTC)
        return len(nodes) >= len(members.node_objects(member)) and all(
            members.lease_fresh(leases.get(node["metadata"]["name"]), now)
            and (members.ready(node) or members.zone_down(node))
            for node in nodes
        )

    # -- down ---------------------------------------------------------------

    def down(self, purge: bool = False) -> None:
        """Stop every lab process (controllers, API servers, then etcd); make sure none is left."""
        for names in (
            ("kwok", "kube-scheduler", "kube-controller-manager", "prometheus"),
            ("kube-apiserver",),
            ("etcd",),
        ):
            self._stop([c for c in self.components if c.name in names])
        programs = {Path(c.process.argv[0]).name for c in self.components}
        inside_run_dir = f"{self.layout.run}{os.sep}"
        for pid, cmdline in strays(inside_run_dir, programs):
            say(f"killing stray lab process {pid}: {cmdline[:120]}")
            kill_pid(pid)
        left = strays(inside_run_dir, programs)
        if left:
            raise LabError(f"processes still running: {', '.join(str(pid) for pid, _ in left)}")
        if purge and self.layout.run.exists():
            shutil.rmtree(self.layout.run)
            say(f"removed {self.layout.run}")
        say("lab is down")

    @contextmanager
    def scratch(self, name: str = "scratch", index: int = SCRATCH_INDEX) -> Iterator[Path]:
        """A bare API server of its own (no controllers, no nodes) for the block; yields its
        admin kubeconfig. Stopped and its data removed afterwards, even on failure."""
        cluster = Cluster(name, index)
        directory = self.layout.cluster_dir(cluster)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        wanted = scratch_components(self.layout, cluster, self.bin_dir)
        try:
            for component in wanted:
                _check_port_free(component)
            self.start(wanted)
            kubeconfig = directory / "kubeconfig"
            write_private(kubeconfig, self.pki.kubeconfig(name, self.layout.server_url(cluster)))
            yield kubeconfig
        finally:
            self._stop(wanted)
            shutil.rmtree(directory, ignore_errors=True)

    def _stop(self, wanted: list[Component]) -> None:
        running = [c for c in wanted if c.process.pid() is not None]
        for component in running:
            say(f"{component.label}: stopping pid {component.process.pid()}")
        with ThreadPoolExecutor(max_workers=max(len(running), 1)) as pool:
            list(pool.map(lambda c: c.process.stop(), running))

    # -- status and env -----------------------------------------------------

    def status(self) -> int:
        """Print each component's state; exit code 0 all up, 3 nothing running, 1 anything else."""
        prober = Prober(self.pki) if self.pki.admin_cert.exists() else None
        states = []
        for component in self.components:
            state = component.process.state()
            word = {State.RUNNING: "up", State.FROZEN: "frozen", State.STOPPED: "down"}[state]
            if state is State.RUNNING and (prober is None or not prober.healthy(component)):
                word = "unhealthy"
            states.append(word)
            pid = component.process.pid()
            port = f"{HOST}:{component.port}" if component.port else "-"
            print(
                f"{component.cluster:<5} {component.name:<24} {word:<9} pid {pid or '-':<8} {port}"
            )
        if all(word == "up" for word in states):
            return 0
        return 3 if all(word == "down" for word in states) else 1

    def env(self) -> str:
        """Shell `export` lines describing the lab."""
        values = {
            "TWINHULL_LAB_RUN": str(self.layout.run),
            "TWINHULL_LAB_BIN": str(self.bin_dir),
            **{
                f"TWINHULL_{c.name.upper()}_KUBECONFIG": str(self.layout.kubeconfig(c))
                for c in CLUSTERS
            },
            "TWINHULL_PROMETHEUS_URL": self.layout.prometheus_url,
            **{
                f"TWINHULL_{m.name.upper()}_PROMETHEUS_URL": self.layout.member_prometheus_url(m)
                for m in MEMBERS
            },
            "TWINHULL_PROMETHEUS_TARGETS": str(self.layout.targets_dir),
            "TWINHULL_TOXIPROXY_URL": f"http://{HOST}:{self.layout.toxiproxy_port}",
            "TWINHULL_DATAPLANE_DOWN": str(self.layout.dataplane_down_dir),
            "TWINHULL_PROMETHEUS_RULES": str(self.layout.rules_dir),
            "TWINHULL_HUB_AUDIT_LOG": str(self.layout.audit_log),
            "TWINHULL_LAB_MEMBERS": str(len(MEMBERS)),
            **({f"TWINHULL_{c.name.upper()}_AUDIT_LOG": str(self.layout.audit_log_of(c))
                for c in MEMBERS} if self.layout.audit_requests else {}),
        }
        return "".join(f"export {key}={shlex.quote(value)}\n" for key, value in values.items())


def _check_port_free(component: Component) -> None:
    """Refuse to start a component whose port something else already holds."""
    if component.port is None:
        return
    with socket.socket() as sock:
        sock.settimeout(0.5)
        if sock.connect_ex((HOST, component.port)) == 0:
            raise LabError(
                f"port {component.port} for {component.label} is in use by another process; "
                "stop it or choose other ports with TWINHULL_LAB_PORT_BASE"
            )
