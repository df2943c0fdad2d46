"""Fixtures for end-to-end tests against the local lab (see `e2e/lab --help`).

The session-scoped `lab` fixture reuses a lab that is already up, or brings
one up and takes it down at the end of the session. It never takes down a lab
it did not start.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

LAB_SCRIPT = Path(__file__).resolve().parent / "lab"

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
    it. A session that starts it starts from a clean lab (no objects left by an earlier one)."""
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


PREWARM_PERIOD, PREWARM_LEAD = 90, 20
"""The lab's "day" for pre-warm (tests that scale set preWarm: false unless testing it)."""


class Operator:
    """A `twinhull run` process on the lab's hub, with its log."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, liveness: str,
                 prometheus_password: str = "") -> None:
        self.process = process
        self.log = log
        self.liveness = liveness
        self.prometheus_password = prometheus_password
        """The password in the Prometheus URL the operator was given (as a real one may
        carry): tests check it never reaches a log, an Event or a status."""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def operator(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Operator]:
    """The operator running against the lab for the session, with the fast-failback tiers.
    Stopped with SIGTERM at the end; a stop that is not clean fails the session."""
    import os
    import secrets
    import signal
    import sys
    import time
    import urllib.request

    log = tmp_path_factory.mktemp("operator") / "operator.log"
    liveness = f"http://127.0.0.1:{_free_port()}/healthz"
    password = f"prom-{secrets.token_hex(8)}"
    scheme, _, rest = lab.prometheus_url.partition("://")
    prometheus = f"{scheme}://twinhull:{password}@{rest}"  # Prometheus ignores the auth
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "twinhull.cli", "run",
             "--kubeconfig", str(lab.kubeconfig("hub")),
             "--policy", str(Path(__file__).parent / "tiers-fast.yaml"),
             "--liveness", liveness, "--resync", "5",
             "--prometheus", prometheus, "--metrics-interval", "2",
             "--rate-window", "10s", "--prewarm-period", str(PREWARM_PERIOD),
             "--prewarm-lead", str(PREWARM_LEAD)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ},
        )
    operator = Operator(process, log, liveness, password)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(liveness, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the operator did not start:\n{operator.tail()}")
            time.sleep(0.5)
        yield operator
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail(f"the operator ignored SIGTERM for 30 s:\n{operator.tail()}")
        if code != 0:
            pytest.fail(f"the operator exited {code} on SIGTERM:\n{operator.tail()}")


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
