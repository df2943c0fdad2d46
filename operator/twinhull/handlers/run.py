"""``twinhull run``: load the tier policy, connect to the hub, run the kopf operator.
Effects: everything the operator does."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from twinhull.api.compat import crd_verdict
from twinhull.clusters.kube import ClusterUnavailable, Kube, set_write_fence
from twinhull.errors import InstallError
from twinhull.handlers.leader import Elector, LeaseSettings
from twinhull.handlers.runtime import Runtime, Settings
from twinhull.handlers.telemetry import serve
from twinhull.policy.tiers import load_file


class _JsonFormatter(logging.Formatter):
    """One JSON object per log line. Messages never carry Secret data: kubeconfigs are read
    into memory and only cluster names and errors are logged."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _hub_configuration(kubeconfig: str | None) -> Configuration:
    config = Configuration()
    if kubeconfig or os.environ.get("KUBECONFIG"):
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=config)
    else:
        kube_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=config)
    return config


async def _standby_health(liveness: str | None) -> Any:
    """While standing by for the Lease, answer the liveness URL (a standby is alive; kopf
    serves it once leading). Returns the aiohttp runner to clean up, or None."""
    if not liveness:
        return None
    from urllib.parse import urlsplit

    from aiohttp import web

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    parts = urlsplit(liveness)
    app = web.Application()
    app.router.add_get(parts.path or "/", alive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, parts.hostname, parts.port, reuse_address=True).start()
    return runner


async def _require_current_crds(hub: Kube, retry_seconds: float = 2.0) -> None:
    """Raise :class:`InstallError` when the hub's CRDs are older than this code (after a
    ``helm upgrade``, which never upgrades a chart's CRDs): the replica then never stands
    for the Lease, and the running ones keep acting. Waits while the hub does not answer.
    Effects: reads the hub's CRDs."""
    while True:
        try:
            found = await hub.list("apiextensions.k8s.io/v1", "CustomResourceDefinition")
            break
        except ClusterUnavailable as exc:
            logging.getLogger(__name__).warning("cannot read the hub's CRDs yet: %s", exc)
            await asyncio.sleep(retry_seconds)
    verdict = crd_verdict({c["metadata"]["name"]: c for c in found})
    if verdict:
        raise InstallError(verdict)


async def _operate(hub: Kube, runtime: Runtime, lease: LeaseSettings | None,
                   liveness: str | None, metrics: str | None = None) -> None:
    """Check the CRDs, stand by until leading (with a Lease), then run kopf; stop at once
    when the Lease is lost, release it on a clean stop. Effects: everything the operator
    does."""
    await _require_current_crds(hub)
    elector = renewing = None
    if lease is not None:
        # the Lease has a client of its own (its own threads): a backlog of the operator's
        # writes to the hub never delays a renewal
        elector = Elector(Kube("hub", hub.configuration, timeout=hub.timeout, threads=1,
                               read_threads=1), lease)
        set_write_fence(elector.leading)
    if metrics:
        serve(runtime, metrics, lease.identity if lease is not None else "standalone",
              elector.leading if elector is not None else lambda: True)
    if lease is not None and elector is not None:
        standby = await _standby_health(liveness)
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(elector.acquire())
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, waiting.cancel)
        try:
            await waiting
        except asyncio.CancelledError:
            logging.getLogger(__name__).info("stopped while standing by")
            return
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
            if standby is not None:
                await standby.cleanup()

        def lost() -> None:  # fenced already; leave no chance to act: exit now
            logging.shutdown()
            os._exit(EXIT_LOST_LEASE)

        renewing = elector.keep_in_thread(lost)
        _watchdog(elector, lost)
    try:
        await kopf.operator(clusterwide=True, standalone=True, liveness_endpoint=liveness,
                            memo=kopf.Memo(runtime=runtime))
    finally:
        if elector is not None:
            elector.stepping_down = True
            if renewing is not None:  # a renewal under way ends first
                await asyncio.to_thread(renewing.join,
                                        hub.timeout + elector.settings.retry_seconds)
            await elector.release()
            elector.hub.close()


def _watchdog(elector: Elector, lost: Callable[[], None]) -> None:
    """A thread that ends the process as soon as the Lease's term is over, even while the
    event loop is busy or just woke from a pause (SIGSTOP, a VM freeze): twinhull's own
    writes are fenced, kopf's (finalizers, its Events) are not. Effects: a thread."""

    def watch() -> None:
        while not elector.stepping_down:
            if not elector.leading():
                logging.getLogger(__name__).error("the lease's term is over: stopping")
                lost()
            time.sleep(0.1)

    threading.Thread(target=watch, name="lease-watchdog", daemon=True).start()


EXIT_LOST_LEASE = 3
"""Exit code of a replica that lost the leader Lease (it restarts as a candidate)."""


def run(*, kubeconfig: str | None, policy: Path | None, settings: Settings,
        liveness: str | None, verbose: bool = False, lease: LeaseSettings | None = None,
        metrics: str | None = None) -> None:
    """Run until SIGTERM/SIGINT: with ``lease``, only while holding it (leader election).
    Raises :class:`~twinhull.errors.PolicyError` before starting when the tier policy is
    invalid, :class:`~twinhull.errors.InstallError` when the hub's CRDs are older than the
    code."""
    tiers = load_file(policy)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf's own login reads it too
    handler = logging.StreamHandler()
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler],
                        force=True)
    for noisy in ("kubernetes", "urllib3", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    hub = Kube("hub", _hub_configuration(kubeconfig), timeout=settings.hub_timeout_seconds,
               threads=8)
    runtime = Runtime(hub=hub, policy=tiers, settings=settings,
                      identity=lease.identity if lease is not None else "standalone")
    from twinhull import handlers  # noqa: F401  (registers the handlers)

    try:
        asyncio.run(_operate(hub, runtime, lease, liveness, metrics))
    finally:
        hub.close()
