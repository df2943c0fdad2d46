"""Read metrics from Prometheus (prometheus-api-client), with a timeout on every query.
Effects: network I/O; the base URL and the HTTP session are injected."""

from __future__ import annotations

import time
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from twinhull.errors import TwinhullError
from twinhull.metrics.samples import Reading, read_vector


class MetricsUnavailable(TwinhullError):
    """Prometheus did not answer, or answered with an error: no metric is known. Callers
    hold their last decision (never scale down on it) and retry."""


class Prometheus:
    """One Prometheus server."""

    def __init__(self, url: str, *, timeout: float = 5.0,
                 session: requests.Session | None = None) -> None:
        self.url = url
        self.timeout = timeout
        # No retries inside a query: the library's default (3, with backoff) turns a 1 s
        # timeout into ~5 s; the caller asks again on its next round instead.
        self._client = PrometheusConnect(url=url, disable_ssl=True, session=session,
                                         timeout=int(max(1, timeout)), retry=Retry(total=0))

    def vector(self, query: str, *, max_age: float = 60.0,
               by: tuple[str, ...] = ("cluster", "zone")) -> Reading:
        """Run an instant query and apply the bad-value rule (:mod:`.samples`).
        Raises :class:`MetricsUnavailable`. Effects: one HTTP request."""
        try:
            result: list[dict[str, Any]] = self._client.custom_query(query)
        except (requests.RequestException, PrometheusApiClientException, ValueError) as exc:
            raise MetricsUnavailable(f"{self.url}: {type(exc).__name__}: {exc}"[:500]) from exc
        return read_vector(result, now=time.time(), max_age=max_age, by=by)
