"""``twinhull run``: load the tier policy, connect to the hub, run the kopf operator.
Effects: everything the operator does."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import kopf
from kubernetes import config as kube_config
from kubernetes.client import Configuration

from twinhull.clusters.kube import Kube
from twinhull.handlers.runtime import Runtime, Settings
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


def run(*, kubeconfig: str | None, policy: Path | None, settings: Settings,
        liveness: str | None, verbose: bool = False) -> None:
    """Run until SIGTERM/SIGINT. Raises :class:`~twinhull.errors.PolicyError` before
    starting when the tier policy is invalid."""
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
    runtime = Runtime(hub=hub, policy=tiers, settings=settings)
    from twinhull import handlers  # noqa: F401  (registers the handlers)

    try:
        asyncio.run(kopf.operator(
            clusterwide=True,
            standalone=True,
            liveness_endpoint=liveness,
            memo=kopf.Memo(runtime=runtime),
        ))
    finally:
        hub.close()
