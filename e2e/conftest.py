"""Fixtures for end-to-end tests against the local lab (see `e2e/lab --help`).

The session-scoped `lab` fixture reuses a lab that is already up, or brings
one up and takes it down at the end of the session. It never takes down a lab
it did not start.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LAB_SCRIPT = Path(__file__).resolve().parent / "lab"
ROOT = Path(__file__).resolve().parent.parent
HELM = Path(os.environ.get("TWINHULL_HELM",
                           Path.home() / ".cache/twinhull/tools/helm-v3.22.0/helm"))
CHART_ACCOUNT = ("twinhull-system", "twinhull")
"""The chart's ServiceAccount (release "twinhull" in namespace twinhull-system): the
identity the e2e operator runs as."""

# `e2e/lab status` exit codes.
STATUS_ALL_UP = 0
STATUS_NOTHING_RUNNING = 3


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: needs the local lab (real API servers); see e2e/lab")


class Lab:
    """A running lab: where its kubeconfigs and Prometheus are, and a way to run `e2e/lab` verbs."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self._clients: dict[str, Any] = {}

    def kubeconfig(self, cluster: str) -> Path:
        """Admin kubeconfig of hub, east or west."""
        return Path(self.env[f"TWINHULL_{cluster.upper()}_KUBECONFIG"])

    @property
    def prometheus_url(self) -> str:
        return self.env["TWINHULL_PROMETHEUS_URL"]

    @property
    def prometheus_targets(self) -> Path:
        """file_sd directory Prometheus scrapes: write `<name>.json` target files here."""
        return Path(self.env["TWINHULL_PROMETHEUS_TARGETS"])

    @property
    def bin_dir(self) -> Path:
        """Directory holding the lab's kubectl."""
        return Path(self.env["TWINHULL_LAB_BIN"])

    def run(self, *verb: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run `e2e/lab <verb...>`, failing the test if it fails."""
        return _lab(*verb, timeout=timeout, check=True)

    def api(self, cluster: str) -> Any:
        """A kubernetes ApiClient for `cluster` that never retries, so a dead cluster fails fast."""
        if cluster not in self._clients:
            from kubernetes import client, config

            configuration = client.Configuration()
            config.load_kube_config(
                str(self.kubeconfig(cluster)), client_configuration=configuration
            )
            configuration.retries = False
            self._clients[cluster] = client.ApiClient(configuration)
        return self._clients[cluster]


def _lab(
    *verb: str, timeout: float = 300.0, check: bool = False
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(LAB_SCRIPT), *verb], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"e2e/lab {' '.join(verb)} failed ({result.returncode}):\n{result.stderr}")
    return result


def _parse_env(text: str) -> dict[str, str]:
    """`export KEY=value` lines, as printed by `e2e/lab env`, to a dict."""
    assignments = (shlex.split(line)[1] for line in text.splitlines() if line.strip())
    return dict(assignment.split("=", 1) for assignment in assignments)


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """The lab, up for the whole session; taken down at the end only if this session started
    it. A session that starts it starts from a clean lab (no objects left by an earlier one).
    The session holds the lab's session lock throughout (:mod:`labkit.session`): a second
    session on the same lab waits for it, instead of sharing its Lease and namespaces."""
    from labkit.layout import Layout
    from labkit.session import LabBusy, claim

    try:
        held = claim(Layout.from_env(), "e2e session",
                     wait=float(os.environ.get("TWINHULL_LAB_WAIT", "1800")))
    except LabBusy as exc:
        pytest.fail(str(exc))
    with held:
        yield from _session_lab()


def _session_lab() -> Iterator[Lab]:
    status = _lab("status").returncode
    started = status == STATUS_NOTHING_RUNNING
    try:
        if started:  # a stopped lab keeps its etcd data: start from a clean one instead
            _lab("down", "--purge", timeout=120.0, check=True)
        if status != STATUS_ALL_UP:
            _lab("up", timeout=1800.0, check=True)
        yield Lab(env=_parse_env(_lab("env", check=True).stdout))
    finally:
        if started:  # also after a failed `up`: stop whatever it started
            _lab("down", timeout=120.0, check=True)


def helm(*args: str) -> str:
    """Run the helm built by `make tools`; its stdout."""
    if not HELM.is_file():
        pytest.fail(f"helm not found at {HELM}: run `make tools`")
    return subprocess.run([str(HELM), *args], capture_output=True, text=True, check=True,
                          timeout=60).stdout


class ChartIdentity:
    """The chart's ServiceAccount on the hub: the identity the e2e operator runs as, as an
    install of the chart has it, never the admin."""

    def __init__(self, lab: Lab, directory: Path) -> None:
        self.lab, self.directory = lab, directory
        self.issued: dict[str, str] = {}
        """Kubeconfig path to the credential id (token JTI) the audit log names it by."""

    def kubeconfig(self) -> Path:
        """A kubeconfig with a fresh token (TokenRequest): each replica has its own, as
        each pod of the chart's Deployment has its own projected token."""
        import base64
        import json

        import yaml

        namespace, account = CHART_ACCOUNT
        token = subprocess.run(
            [str(self.lab.bin_dir / "kubectl"), "--kubeconfig", str(self.lab.kubeconfig("hub")),
             "create", "token", account, "-n", namespace, "--duration=24h"],
            capture_output=True, text=True, check=True, timeout=60).stdout.strip()
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        admin = yaml.safe_load(self.lab.kubeconfig("hub").read_text())
        user = f"system:serviceaccount:{namespace}:{account}"
        config = {"apiVersion": "v1", "kind": "Config",
                  "clusters": [{"name": "hub", "cluster": admin["clusters"][0]["cluster"]}],
                  "users": [{"name": user, "user": {"token": token}}],
                  "contexts": [{"name": "hub", "context": {"cluster": "hub", "user": user}}],
                  "current-context": "hub"}
        path = self.directory / f"hub-kubeconfig-{len(self.issued)}"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        self.issued[str(path)] = f"JTI={claims['jti']}"
        return path


def install_chart_rbac(lab: Lab, directory: Path) -> ChartIdentity:
    """The chart's RBAC objects applied to the hub (helm template, rbac.yaml only: the
    Deployment would be a KWOK pod that runs nothing); tokens for its ServiceAccount."""
    namespace, account = CHART_ACCOUNT
    rbac = helm("template", account, str(ROOT / "charts/twinhull"), "--namespace", namespace,
                "--show-only", "templates/rbac.yaml")
    subprocess.run([str(lab.bin_dir / "kubectl"), "--kubeconfig", str(lab.kubeconfig("hub")),
                    "apply", "--server-side", "--force-conflicts", "-f", "-"],
                   input=rbac, capture_output=True, text=True, check=True, timeout=60)
    return ChartIdentity(lab, directory)


@pytest.fixture(scope="session")
def chart_identity(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> ChartIdentity:
    """See :func:`install_chart_rbac`."""
    return install_chart_rbac(lab, tmp_path_factory.mktemp("identity"))


PREWARM_PERIOD, PREWARM_LEAD = 120, 20
"""The lab's "day" for pre-warm (tests that scale set preWarm: false unless testing it)."""
LEASE = ("twinhull-system", "twinhull-leader")


class Replica:
    """One `twinhull run` process: its identity in the Lease, log and liveness URL."""

    def __init__(self, process: subprocess.Popen[bytes], identity: str, log: Path,
                 liveness: str, kubeconfig: Path) -> None:
        self.process, self.identity, self.log = process, identity, log
        self.liveness, self.kubeconfig = liveness, kubeconfig

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Operator:
    """The operator as the chart runs it: two replicas electing a leader on a Lease, as
    the chart's ServiceAccount (a permission the chart lacks fails tests). A replica that
    dies is replaced, as its Deployment would."""

    def __init__(self, lab: Lab, identity: ChartIdentity, directory: Path,
                 prometheus_password: str, args: list[str]) -> None:
        self.lab, self.identity, self.directory, self.args = lab, identity, directory, args
        self.prometheus_password = prometheus_password
        """The password in the Prometheus URL the operator was given (as a real one may
        carry): tests check it never reaches a log, an Event or a status."""
        self.replicas: list[Replica] = []
        self.started = 0
        self.credentials: dict[str, str] = {}
        """Credential id (token JTI, as the audit log names it) to replica identity."""

    def start_replica(self) -> Replica:
        """Start one more replica and wait until it answers its liveness URL (a standby
        answers too). Effects: a process."""
        import json
        import os
        import sys
        import time
        import urllib.request

        self.started += 1
        name = f"replica-{self.started}"
        log = self.directory / f"{name}.log"
        liveness = f"http://127.0.0.1:{_free_port()}/healthz"
        metrics = f"127.0.0.1:{_free_port()}"
        kubeconfig = self.identity.kubeconfig()
        # the global Prometheus scrapes every replica's own metrics (the alert rules' input)
        target = self.lab.prometheus_targets / f"operator-{name}.json"
        target.write_text(json.dumps([{"targets": [metrics],
                                       "labels": {"job": "twinhull-operator"}}]))
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "twinhull.cli", "run", "--kubeconfig", str(kubeconfig),
                 "--identity", name, "--liveness", liveness, "--metrics-address", metrics,
                 *self.args],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        replica = Replica(process, name, log, liveness, kubeconfig)
        self.replicas.append(replica)
        self.credentials[self.identity.issued[str(kubeconfig)]] = name
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(liveness, timeout=2) as response:
                    if response.status == 200:
                        return replica
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"replica {name} did not start:\n{replica.tail()}")
            time.sleep(0.3)

    def holder(self) -> str:
        """The Lease's holder now ("" when released or absent)."""
        import json

        namespace, name = LEASE
        out = subprocess.run(
            [str(self.lab.bin_dir / "kubectl"), "--kubeconfig", str(self.lab.kubeconfig("hub")),
             "get", "lease", name, "-n", namespace, "-o", "json"],
            capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            return ""
        return str(json.loads(out.stdout)["spec"].get("holderIdentity") or "")

    def leader(self, timeout: float = 60.0) -> Replica:
        """The live replica holding the Lease (waiting for one)."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            holder = self.holder()
            for replica in self.replicas:
                if replica.identity == holder and replica.process.poll() is None:
                    return replica
            time.sleep(0.2)
        pytest.fail(f"no live replica holds the Lease (holder {self.holder()!r})")

    def kill(self, replica: Replica) -> None:
        """SIGKILL a replica (no release) and start a replacement. Effects: processes."""
        import signal

        replica.process.send_signal(signal.SIGKILL)
        replica.process.wait()
        self.replicas.remove(replica)
        self.start_replica()

    def logs(self) -> str:
        """Every replica's log, killed ones included."""
        return "\n".join(p.read_text(errors="replace")
                         for p in sorted(self.directory.glob("replica-*.log")))

    def stop(self) -> list[str]:
        """SIGTERM every replica; the problems of those that did not stop cleanly."""
        import signal

        problems = []
        holder = self.holder()  # standbys first: the leader's release would hand over
        ordered = sorted(self.replicas, key=lambda r: r.identity == holder)
        for replica in ordered:
            replica.process.send_signal(signal.SIGTERM)
            try:
                code = replica.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                replica.process.wait()
                problems.append(f"{replica.identity} ignored SIGTERM for 30 s:\n"
                                f"{replica.tail()}")
                continue
            if code != 0:
                problems.append(f"{replica.identity} exited {code} on SIGTERM:\n"
                                f"{replica.tail()}")
        return problems


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_operator(lab: Lab, identity: ChartIdentity, directory: Path) -> Operator:
    """The e2e operator's replicas (none started yet), with the fast-failback tiers and a
    Prometheus URL carrying a password (which Prometheus ignores)."""
    import secrets

    password = f"prom-{secrets.token_hex(8)}"
    scheme, _, rest = lab.prometheus_url.partition("://")
    prometheus = f"{scheme}://twinhull:{password}@{rest}"
    args = ["--policy", str(Path(__file__).parent / "tiers-fast.yaml"), "--resync", "5",
            "--prometheus", prometheus, "--metrics-interval", "2", "--rate-window", "10s",
            "--prewarm-period", str(PREWARM_PERIOD), "--prewarm-lead", str(PREWARM_LEAD)]
    return Operator(lab, identity, directory, password, args)


@pytest.fixture(scope="session")
def operator(lab: Lab, chart_identity: ChartIdentity,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator against the lab for the session, with the fast-failback tiers: two
    replicas and a Lease, as the chart runs it. Stopped with SIGTERM at the end; a stop
    that is not clean fails the session."""
    operator = new_operator(lab, chart_identity, tmp_path_factory.mktemp("operator"))
    try:
        operator.start_replica()
        operator.leader()  # the first one leads; the second stands by
        operator.start_replica()
        yield operator
    finally:
        problems = operator.stop()
        for target in lab.prometheus_targets.glob("operator-*.json"):
            target.unlink(missing_ok=True)
        if problems:
            pytest.fail("\n".join(problems))


@pytest.fixture
def simulator(lab: Lab, tmp_path: Path) -> Iterator[Any]:
    """Start e2e/loadsim on a trace; stopped at the end of the test, even when it fails."""
    import sys
    import time

    import yaml

    processes: list[subprocess.Popen[bytes]] = []

    def start(points: list[dict[str, Any]], tail: float, *args: str) -> float:
        trace = tmp_path / f"trace-{len(processes)}.yaml"
        trace.write_text(yaml.safe_dump(points))
        processes.append(subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "loadsim"), "--trace", str(trace),
             "--tail", str(tail), *args],
            env={**lab.env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return time.monotonic()
    try:
        yield start
    finally:
        for p in processes:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
