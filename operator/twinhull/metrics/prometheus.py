"""Read metrics from Prometheus' HTTP query API: a timeout on every query (connect, each
read and the whole answer), a size limit on every answer, every answer checked whole
(:func:`.samples.read_answer`), and the URL's credentials kept out of every log line and
every error. Effects: network I/O, logging filters; the base URL and the HTTP session are
injected.

The query is sent with ``requests`` directly, not prometheus-api-client's
``custom_query``: that returns ``data.result`` alone, so a scalar ``[t, "v"]`` cannot be
told from a vector and a body without ``data`` raises ``KeyError``; the answer must be
checked whole, with its ``resultType``.

The URL may hold credentials: ``https://user:password@prometheus/`` (sent as basic auth,
never as part of a logged URL) or a secret query parameter (``?token=...``, sent with
every query). Errors name the URL as :func:`redact_url` writes it, never chain the library's
exception (whose text and traceback hold the raw URL), and are scrubbed of every secret;
the HTTP libraries' own debug lines are scrubbed by a logging filter.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit, urlunsplit

import requests

from twinhull.errors import TwinhullError
from twinhull.metrics.samples import BadAnswer, Reading, read_answer

MAX_BYTES = 8 * 1024 * 1024
"""The largest answer read (a fleet query of thousands of cells is well under 1 MiB)."""

SECRET_PARAM = re.compile(r"token|key|secret|pass|auth|sig|credential|session|code", re.I)
"""Query parameter names whose values are credentials (``access_token``, ``api_key``,
``X-Amz-Signature``, ...)."""

_HIDDEN = "***"


class MetricsUnavailable(TwinhullError):
    """Prometheus did not answer, or answered with an error: no metric is known. Callers
    hold their last decision (never scale down on it) and retry. :attr:`problem` says what
    went wrong and how to fix it, without the URL (for status messages)."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}"[:600])


class PrometheusDown(MetricsUnavailable):
    """Prometheus itself cannot be used (refused, unreachable, not a Prometheus API, wrong
    credentials): every other query would fail the same way, so a reader stops its round."""


class QueryTimeout(MetricsUnavailable):
    """Prometheus accepted the query but did not answer in time: either this query is too
    heavy or Prometheus is stuck (the caller tells by whose query it was)."""


def redact_url(url: str) -> str:
    """The URL as it may be logged: user and password replaced by ``***``, every query
    parameter value replaced by ``***``. Pure."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an unparsable URL)"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{_HIDDEN}@{host}{port}" if "@" in parts.netloc else f"{host}{port}"
    query = "&".join(f"{name}={_HIDDEN}" for name, _ in
                     parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def secrets_of(url: str) -> tuple[str, ...]:
    """The credentials a URL holds, as they may appear in any text (raw, decoded and
    re-encoded): the password and the values of secret-looking query parameters (the
    user name is not a secret; :func:`redact_url` hides it all the same). Pure."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return (url,) if url else ()
    found: list[str] = []
    if password:
        found.append(password)
    found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True)
              if SECRET_PARAM.search(name) and value]
    raw = [part for part in parts.query.split("&") if "=" in part]
    found += [part.split("=", 1)[1] for part in raw
              if SECRET_PARAM.search(part.split("=", 1)[0]) and part.split("=", 1)[1]]
    forms = {form for secret in found
             for form in (secret, unquote(secret), quote(unquote(secret), safe=""),
                          quote_plus(unquote(secret)))
             if len(form) >= 3}
    return tuple(sorted(forms, key=len, reverse=True))


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``. Pure."""
    for secret in secrets:
        text = text.replace(secret, _HIDDEN)
    return text


def _reason(exc: Exception) -> str:
    """The root cause of a transport error in a few words (``[Errno 111] Connection
    refused``), without the request line the library's text repeats. Pure."""
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
    if errno:
        return f"{type(exc).__name__}: {errno.group(0).strip()}"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "ConnectTimeout: no connection within the timeout"
    return type(exc).__name__


class _Scrub(logging.Filter):
    """Removes known secrets from records of the HTTP libraries (urllib3 logs request
    lines, query string included, at debug level)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = scrub(message, sorted(self.secrets, key=len, reverse=True))
        if clean != message:
            record.msg, record.args = clean, None
        return True


_SCRUB = _Scrub()
_LIBRARY_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry",
                    "urllib3.response", "requests")


def _guard_library_logs(secrets: Iterable[str]) -> None:
    """Scrub ``secrets`` from the HTTP libraries' log records. Effects: logging filters."""
    _SCRUB.secrets.update(secrets)
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if _SCRUB not in logger.filters:
            logger.addFilter(_SCRUB)


class Prometheus:
    """One Prometheus server."""

    def __init__(self, url: str, *, timeout: float = 5.0,
                 session: requests.Session | None = None, max_bytes: int = MAX_BYTES) -> None:
        self.url = redact_url(url)
        """The URL as it may be logged (credentials hidden)."""
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._secrets = secrets_of(url)
        _guard_library_logs(self._secrets)
        try:
            parts = urlsplit(url)
            username, password = parts.username, parts.password
            host = parts.netloc.rsplit("@", 1)[-1]
        except ValueError:
            parts, username, password, host = urlsplit(""), None, None, ""
        self._endpoint = urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/api/v1/query",
                                     "", ""))
        self._params = parse_qsl(parts.query, keep_blank_values=True)
        self._auth = (unquote(username), unquote(password or "")) if username else None
        # No retries inside a query (requests' default): the caller asks again on its
        # next round instead.
        self._session = session or requests.Session()

    def _fail(self, kind: type[MetricsUnavailable], problem: str, query: str
              ) -> MetricsUnavailable:
        """The error to raise, naming this Prometheus and the query, free of secrets.
        Pure."""
        shown = query if len(query) <= 160 else query[:157] + "..."
        return kind(scrub(f"Prometheus at {self.url}, query {shown!r}", self._secrets),
                    scrub(problem, self._secrets))

    def _get(self, query: str) -> tuple[int, bytes]:
        """Send one query; the status and at most :attr:`max_bytes` of the body, within
        :attr:`timeout` overall. Effects: one HTTP request."""
        deadline = time.monotonic() + self.timeout
        try:
            with self._session.get(self._endpoint, params=[*self._params, ("query", query)],
                                   auth=self._auth, timeout=self.timeout, stream=True,
                                   allow_redirects=False) as response:
                body = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise self._fail(MetricsUnavailable, (
                            f"answered more than {self.max_bytes} bytes; aggregate the "
                            "query, e.g. sum by (cluster, zone) (...)"), query)
                    if time.monotonic() > deadline:
                        raise self._fail(QueryTimeout, (
                            f"did not finish its answer within {self.timeout:.0f}s; make "
                            "the query cheaper (e.g. a recording rule)"), query)
                return response.status_code, bytes(body)
        except requests.exceptions.ReadTimeout:
            raise self._fail(QueryTimeout, (
                f"did not answer within {self.timeout:.0f}s; make the query cheaper (e.g. "
                "a recording rule), or check Prometheus is not overloaded"), query) from None
        except (requests.RequestException, ValueError, OSError) as exc:
            raise self._fail(PrometheusDown, (
                f"cannot be reached ({_reason(exc)}); check --prometheus and that "
                "Prometheus is running"), query) from None

    def vector(self, query: str, *, max_age: float = 60.0,
               by: tuple[str, ...] = ("cluster", "zone")) -> Reading:
        """Run an instant query, check the answer and apply the bad-value rule
        (:mod:`.samples`). Raises :class:`MetricsUnavailable` (:class:`PrometheusDown`
        when no other query could succeed either). Effects: one HTTP request."""
        sent = time.time()
        status, raw = self._get(query)
        try:
            body: Any = json.loads(raw)
        except (ValueError, RecursionError):
            body = None
        api_error = isinstance(body, dict) and body.get("status") == "error"
        if status in (413, 414, 431):
            raise self._fail(MetricsUnavailable, (
                f"answered HTTP {status}: the query is too long for a GET request; shorten "
                "it (e.g. with a recording rule)"), query)
        if status != 200 and not api_error:
            hint = {401: "check the user and password of --prometheus",
                    403: "check the credentials of --prometheus",
                    404: "check --prometheus points at the Prometheus HTTP API"}.get(
                        status, "check --prometheus and that Prometheus is running")
            raise self._fail(PrometheusDown, f"answered HTTP {status}; {hint}", query)
        if body is None:
            raise self._fail(PrometheusDown, (
                "answered something that is not JSON (a login page or a proxy?); check "
                "--prometheus points at the Prometheus HTTP API"), query)
        try:
            return read_answer(body, now=sent, max_age=max_age, by=by)
        except BadAnswer as exc:
            raise self._fail(MetricsUnavailable, str(exc), query) from None
