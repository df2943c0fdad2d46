"""A Kubernetes API client for one cluster, with a timeout on every call and its own
threads, so a dead or frozen cluster never blocks work on another.

Effects: network I/O. Built on the ``kubernetes`` package's configuration loading and
HTTP client; requests are plain REST calls on the few paths twinhull uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import itertools
import json
import logging
import re
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from kubernetes.client import ApiClient, Configuration
from kubernetes.client.exceptions import ApiException
from kubernetes.config.kube_config import KubeConfigLoader
from urllib3.exceptions import MaxRetryError, ProtocolError
from urllib3.util.retry import Retry

from twinhull.errors import TwinhullError

FIELD_MANAGER = "twinhull"

T = TypeVar("T")


@dataclass(frozen=True)
class Kind:
    """Where a kind lives in the API."""

    prefix: str
    plural: str
    namespaced: bool


KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "Namespace"): Kind("/api/v1", "namespaces", False),
    ("v1", "Service"): Kind("/api/v1", "services", True),
    ("v1", "Secret"): Kind("/api/v1", "secrets", True),
    ("v1", "Event"): Kind("/api/v1", "events", True),
    ("v1", "ConfigMap"): Kind("/api/v1", "configmaps", True),
    ("events.k8s.io/v1", "Event"): Kind("/apis/events.k8s.io/v1", "events", True),
    ("v1", "Node"): Kind("/api/v1", "nodes", False),
    ("apps/v1", "Deployment"): Kind("/apis/apps/v1", "deployments", True),
    ("policy/v1", "PodDisruptionBudget"): Kind("/apis/policy/v1", "poddisruptionbudgets", True),
    ("scheduling.k8s.io/v1", "PriorityClass"): Kind("/apis/scheduling.k8s.io/v1",
                                                     "priorityclasses", False),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): Kind("/apis/gateway.networking.k8s.io/v1",
                                                        "httproutes", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): Kind(
        "/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    ("serving.twinhull.io/v1alpha1", "ServingTier"): Kind("/apis/serving.twinhull.io/v1alpha1",
                                                          "servingtiers", False),
    ("serving.twinhull.io/v1alpha1", "ServingCluster"): Kind(
        "/apis/serving.twinhull.io/v1alpha1", "servingclusters", False),
    ("serving.twinhull.io/v1alpha1", "ModelDeployment"): Kind(
        "/apis/serving.twinhull.io/v1alpha1", "modeldeployments", True),
    ("serving.twinhull.io/v1alpha1", "FailoverDrill"): Kind(
        "/apis/serving.twinhull.io/v1alpha1", "failoverdrills", True),
    ("serving.twinhull.io/v1alpha1", "ModelSnapshot"): Kind(
        "/apis/serving.twinhull.io/v1alpha1", "modelsnapshots", True),
}


class ClusterUnavailable(TwinhullError):
    """A call did not complete: the cluster is unreachable, too slow, or refused it.
    Retry later; nothing was half-done by twinhull (a call is sent again only when the API
    server did not act on it: :data:`RETRIES`)."""


class NotFound(ClusterUnavailable):
    """The object does not exist."""


class Conflict(ClusterUnavailable):
    """HTTP 409: a create found the object there already, or a replace's resourceVersion
    is not the object's any more."""


class Gone(ClusterUnavailable):
    """A watch's resourceVersion is too old (HTTP 410): list again."""


class Forbidden(ClusterUnavailable):
    """The identity may not do this (HTTP 403)."""


class Abandoned(ClusterUnavailable):
    """A write not sent because the work that queued it was abandoned
    (:class:`WriteScope`): nothing was sent, and the work that replaces it decides again."""


class WriteScope:
    """The writes one piece of work (a fleet round) queues, abandoned together when newer
    work replaces it: a write of an abandoned scope that has not taken a write thread yet
    is never sent (it raises :class:`Abandoned`); one already on a thread finishes. Set
    with :data:`WRITE_SCOPE`; tasks started under it inherit it. Effects: memory."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.why = ""
        self.abandoned = False
        self.dropped = 0
        """Writes not sent because of it."""

    def abandon(self, why: str) -> None:
        """Send none of the writes still queued. Effects: memory."""
        self.abandoned, self.why = True, why

    def refuse(self, cluster: str) -> None:
        """Raise :class:`Abandoned` for a write to ``cluster`` when this scope is
        abandoned (and count it). Effects: memory."""
        if self.abandoned:
            self.dropped += 1
            raise Abandoned(f"{cluster}: not sent: {self.what} was replaced ({self.why})")


WRITE_SCOPE: ContextVar[WriteScope | None] = ContextVar("twinhull_write_scope", default=None)
"""The scope of the writes the current task makes (none: they are always sent)."""


def log_level(exc: BaseException) -> int:
    """The level to log a failed write at: an :class:`Abandoned` one was replaced on
    purpose (counted where it was abandoned), the others are warnings. Pure."""
    return logging.DEBUG if isinstance(exc, Abandoned) else logging.WARNING


STREAMS = 8
"""Watches one client keeps open at most without opening a connection per event."""


def parse_line(line: bytes | str) -> tuple[str, dict[str, Any]] | None:
    """One line of a watch stream as (type, object); None when it is not one. Pure."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        return None
    return str(event.get("type", "")), event["object"]


def path(api_version: str, kind: str, *, namespace: str | None = None, name: str | None = None,
         subresource: str | None = None) -> str:
    """The REST path of a kind, optionally of one object. Pure."""
    k = KINDS[(api_version, kind)]
    out = k.prefix
    if k.namespaced and namespace:
        out += f"/namespaces/{quote(namespace)}"
    out += f"/{k.plural}"
    if name:
        out += f"/{quote(name)}"
    if subresource:
        out += f"/{subresource}"
    return out


class InvalidKubeconfig(TwinhullError):
    """A kubeconfig cannot be used: not a mapping, no usable current context, bad inline
    data, or it asks to run a plugin or read a local file. The message never quotes the
    kubeconfig's content."""


_REDACTED = "***"
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[^\s'\",;}]+")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.S)
_SECRET_FIELD = re.compile(
    r"(?i)((?:token|password|passwd|secret|api[_-]?key|authorization|client-key-data|"
    r"client-certificate-data|id-token|refresh-token|access-token)['\"]?\s*[:=]\s*['\"]?)"
    r"(?!\*\*\*)[^\s'\",;}]+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with credentials replaced by ``***``: the given secret values, a URL's
    user info, ``Bearer``/``Basic`` credentials, PEM blocks and the values of fields
    named like tokens, passwords and keys (``token=...``, ``'authorization': '...'``).
    For every error string that leaves a client: logs, Events and status never carry
    credentials. Pure."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    text = _PEM.sub(_REDACTED, text)
    text = _USERINFO.sub(lambda m: f"{m.group(1)}{_REDACTED}@", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
    return _SECRET_FIELD.sub(lambda m: f"{m.group(1)}{_REDACTED}", text)


_PLUGINS = ("exec", "auth-provider")
"""User entries that make the client run a command (exec) or an auth-provider's refresh
(gcp's cmd-path, oidc's token endpoint) inside the operator."""
_FILES = {"user": ("tokenFile", "client-certificate", "client-key"),
          "cluster": ("certificate-authority",)}
"""Entries that read a file of the operator's own filesystem (e.g. its service account
token) and could send it to the server the kubeconfig names."""


def _named(entries: Any, name: Any, field: str) -> Mapping[str, Any] | None:
    if not isinstance(entries, list):
        return None
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("name") == name:
            value = entry.get(field)
            return value if isinstance(value, Mapping) else None
    return None


def check_kubeconfig(kubeconfig: Any, *, allow_plugins: bool = False) -> None:
    """Refuse a kubeconfig that is not a mapping, or whose current context's user runs a
    plugin (unless ``allow_plugins``) or whose user or cluster reads a local file. Raises
    :class:`InvalidKubeconfig` naming the entry and the fix, never the content. Pure."""
    if not isinstance(kubeconfig, Mapping):
        raise InvalidKubeconfig(f"the kubeconfig is a YAML {type(kubeconfig).__name__}, not a "
                                "mapping; store a whole kubeconfig file under the key")
    context = _named(kubeconfig.get("contexts"), kubeconfig.get("current-context"), "context")
    if context is None:
        raise InvalidKubeconfig("the kubeconfig has no context named by its current-context; "
                                "set current-context to one of its contexts")
    user = _named(kubeconfig.get("users"), context.get("user"), "user") or {}
    cluster = _named(kubeconfig.get("clusters"), context.get("cluster"), "cluster") or {}
    for plugin in _PLUGINS:
        if plugin in user and not allow_plugins:
            raise InvalidKubeconfig(
                f"the kubeconfig's user uses an {plugin!r} plugin, which would run a command "
                "from the Secret inside the operator; use a token or client certificate "
                "(e.g. a ServiceAccount token) or start the operator with "
                "--allow-exec-plugins")
    for kind, entry in (("user", user), ("cluster", cluster)):
        for key in _FILES[kind]:
            if key in entry:
                raise InvalidKubeconfig(
                    f"the kubeconfig's {kind} reads the local file {key!r}, which is not "
                    f"there for the operator; inline it as {key.removesuffix('File')}"
                    f"{'' if key == 'tokenFile' else '-data'} instead")


def configuration(kubeconfig: Any, *, allow_plugins: bool = False) -> Configuration:
    """A client configuration from a parsed kubeconfig (its current context). Raises
    :class:`InvalidKubeconfig` for any kubeconfig that cannot be used (see
    :func:`check_kubeconfig`); the kubernetes package's errors are translated, redacted.
    Pure apart from writing temporary certificate files, as the kubernetes package does."""
    check_kubeconfig(kubeconfig, allow_plugins=allow_plugins)
    config = Configuration()
    try:
        loader = KubeConfigLoader(config_dict=dict(kubeconfig))  # type: ignore[no-untyped-call]
        loader.load_and_set(config)  # type: ignore[no-untyped-call]
    except Exception as exc:  # ConfigException, bad base64, wrong types: all bad input
        detail = redact(str(exc))[:200]
        raise InvalidKubeconfig(f"the kubeconfig cannot be loaded ({type(exc).__name__}: "
                                f"{detail}); fix its current context, cluster and user"
                                ) from None
    return config


def _secrets_of(config: Configuration) -> list[str]:
    """The credential values a configuration holds, to redact them from errors. Pure."""
    values = [str(v) for v in (config.api_key or {}).values()]
    values += [v.split(" ", 1)[-1] for v in values]
    if config.password:
        values.append(str(config.password))
    return values


_write_fence: Callable[[], bool] | None = None


def set_write_fence(allowed: Callable[[], bool] | None) -> None:
    """Make every write of every :class:`Kube` (hub and members) ask ``allowed()`` first
    and fail with :class:`NotLeading` when it says no: a replica that is not the leader
    writes nothing (twinhull.handlers.leader). Effects: module state."""
    global _write_fence
    _write_fence = allowed


WRITE_QUEUE_SECONDS = 30.0
"""How long a write waits for one of its cluster's write threads before it fails (its own
timeout starts once it has one): a round of thousands of writes finishes, and a slow
cluster fails a round's writes in bounded time."""

URGENT, TRAFFIC, STATE, RECORD, NOTICE = range(5)
"""Write priorities, highest first: a queued write takes the next free write thread before
every write of a lower priority, first come first served within one. ``URGENT``: what
other replicas and the fleet plan from (a ServingCluster's health); ``TRAFFIC``: the
HTTPRoutes' weights; ``STATE`` (the default): statuses, snapshots, member objects;
``RECORD``: the audit log; ``NOTICE``: Events. When a member is lost at 2,000
ModelDeployments one round queues ~10,000 hub writes; first come first served, a sixth of
the routes waited out :data:`WRITE_QUEUE_SECONDS` behind nothing but each other and moved
their traffic a round (30 s) late, while ServingCluster statuses waited behind Events."""


class WriteSlots:
    """A cluster's write threads handed out by priority (lower number first), first come
    first served within a priority; a waiter gives up after its queue time. Effects:
    memory (one event loop)."""

    def __init__(self, n: int) -> None:
        self._free = n
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._live = 0
        """Waiters neither handed a thread nor gone (given-up ones stay in the heap until
        popped)."""
        self._order = itertools.count()

    def waiting(self) -> int:
        """Writes waiting for a thread. Pure."""
        return self._live

    async def acquire(self, priority: int, queue_seconds: float) -> None:
        """Take a thread, waiting at most ``queue_seconds`` (then :class:`TimeoutError`)."""
        if self._free > 0 and not self._live:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), fut))
        self._live += 1
        try:
            await asyncio.wait_for(fut, queue_seconds)
        except BaseException:
            if fut.done() and not fut.cancelled():  # handed a thread as it gave up
                self.release()
            else:
                self._live -= 1
            raise

    def release(self) -> None:
        """Hand the thread to the first waiter of the highest priority, or free it."""
        while self._waiters:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                fut.set_result(None)
                self._live -= 1
                return
        self._free += 1


class _Resend(Retry):
    """urllib3's retries as a cluster's client has them. A request is sent again only when
    the API server did not act on it:

    * a 429 or 503 with ``Retry-After`` (API Priority and Fairness rejecting it, or
      "storage is (re)initializing" while an API server starts), any method, after the
      time it asks for, at most :data:`THROTTLED_RESENDS` times (client-go resends them too);
    * a read (GET, HEAD) whose connection broke before an answer (``ProtocolError``: the
      server closed a pooled connection as it was reused), once.

    urllib3's default (``Retry(3)``) also sent a request again after a refused or
    timed-out connection (448 "Retrying" warnings when a member's API server was killed)
    and a GET, PUT or DELETE after a read timeout, on the thread whose caller had already
    given the call up at its timeout (a probe's GET then held one of the two read threads
    for three more timeouts; a PUT may have been applied). Those fail once, and the loop
    that made the call decides (each is level-triggered). A throttled request's resend
    can still come after its caller gave up at its timeout (urllib3 cannot see it)."""

    def _is_read_error(self, err: Exception) -> bool:
        return isinstance(err, ProtocolError)  # a read timeout is not sent again

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        return bool(self.total and has_retry_after and status_code in (429, 503))


THROTTLED_RESENDS = 3
"""How often a request refused with 429 or 503 and ``Retry-After`` is sent again."""

RETRIES = _Resend(total=THROTTLED_RESENDS, connect=0, read=1, redirect=False,
                  status=THROTTLED_RESENDS, other=0, allowed_methods=frozenset({"GET", "HEAD"}),
                  raise_on_status=False)
"""Every cluster client's urllib3 retries (see :class:`_Resend`)."""


def _release_on(loop: asyncio.AbstractEventLoop, slots: WriteSlots
                ) -> Callable[[Future[Any]], None]:
    """A done-callback (run on the write thread) that frees the write thread in ``loop``:
    a write given up at its timeout or cancelled keeps its thread until the request ends,
    so the next write never waits in the pool's queue with its own timeout running."""
    def release(_: Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nothing waits there
            loop.call_soon_threadsafe(slots.release)
    return release


class NotLeading(ClusterUnavailable):
    """A write refused because this replica does not hold the leader Lease."""


class Kube:
    """One cluster's API: every call has a timeout and runs on this cluster's threads.

    Reads (probes, observations) and writes have separate threads, so a backlog of slow
    writes never delays a probe (which would count as a failure and make a healthy cluster
    Suspect). Every error message is redacted of the client's credentials. ``config``'s
    urllib3 retries are set to :data:`RETRIES`.
    """

    def __init__(self, name: str, config: Configuration, *, timeout: float = 2.0,
                 threads: int = 4, read_threads: int = 2) -> None:
        self.name = name
        self.timeout = timeout
        config.retries = RETRIES
        self.configuration = config
        """What this client was made from (another client for the same cluster)."""
        self._api = ApiClient(config)
        self._secrets = _secrets_of(config)
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads,
                                        thread_name_prefix=f"kube-{name}-write")
        self._write_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop,
                                                     WriteSlots] = weakref.WeakKeyDictionary()
        """Per event loop: the write threads free, so a queued write's timeout has not
        started."""
        self._streams: ApiClient | None = None
        self._read_pool = ThreadPoolExecutor(max_workers=read_threads,
                                             thread_name_prefix=f"kube-{name}-read")

    def close(self) -> None:
        """Release the threads once the calls already queued have ended (each at its
        timeout at the latest). Effects: threads."""
        self._pool.shutdown(wait=False)
        self._read_pool.shutdown(wait=False)
        if self._streams is not None:
            self._streams.close()  # type: ignore[no-untyped-call]

    def redact(self, text: str) -> str:
        """``text`` without this client's credentials (see :func:`redact`). Pure."""
        return redact(text, self._secrets)

    async def _run(self, fn: Callable[[], T], timeout: float, *, read: bool = False,
                   priority: int = STATE, queue_seconds: float = WRITE_QUEUE_SECONDS) -> T:
        """``fn`` on a thread, given up at ``timeout``: urllib3's own timeouts do not cover
        every stall (a TLS handshake behind a proxy whose upstream hangs waited a whole
        second more), and a probe's timeout is what its health counts on.

        A read's timeout counts from the call (a probe must end within it). A write's
        counts from when a thread takes it: a round that writes thousands of objects
        queues them, and counting the queue made all but the first few hundred fail at
        their timeout, round after round (2,000 ModelDeployments never converged). A
        write waits at most ``queue_seconds`` for a thread, behind the writes of a higher
        ``priority`` (:class:`WriteSlots`), and holds it until its request ends, even when
        given up earlier. A write whose :data:`WRITE_SCOPE` was abandoned before it took a
        thread is not sent (:class:`Abandoned`)."""
        loop = asyncio.get_running_loop()
        slots = None
        if not read:
            scope = WRITE_SCOPE.get()
            if scope is not None:
                scope.refuse(self.name)
            slots = self._write_slots.get(loop)
            if slots is None:
                slots = self._write_slots[loop] = WriteSlots(self._threads)
            try:
                await slots.acquire(priority, queue_seconds)
            except TimeoutError as exc:
                raise ClusterUnavailable(f"{self.name}: writes queued; none free for "
                                         f"{queue_seconds:g}s") from exc
            if scope is not None and scope.abandoned:  # replaced while it queued
                slots.release()
                scope.refuse(self.name)
        pool = self._read_pool if read else self._pool
        running: Future[T] | None = None
        try:
            running = pool.submit(fn)
            return await asyncio.wait_for(asyncio.wrap_future(running), timeout + 0.05)
        except TimeoutError as exc:
            raise ClusterUnavailable(f"{self.name}: no answer within {timeout:g}s") from exc
        finally:
            if slots is not None:
                if running is None or running.done():
                    slots.release()
                else:  # given up (timeout, cancelled): the thread still sends it
                    running.add_done_callback(_release_on(loop, slots))

    def _send(self, api: ApiClient, method: str, resource: str, *,
              query: Mapping[str, str] | None, body: Any, content_type: str | None,
              timeouts: tuple[float, float], label: str) -> Any:
        """One HTTP request through ``api``; its response, not read yet. Raises
        :class:`ClusterUnavailable` (message redacted) when it could not be sent."""
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        _, url, headers, _, _ = api.param_serialize(
            method=method, resource_path=resource, header_params=headers,
            auth_settings=["BearerToken"],
        )
        if query:
            url += "?" + urlencode(query)
        try:
            return api.rest_client.request(  # type: ignore[no-untyped-call]
                method, url, headers=headers, body=body, _request_timeout=timeouts)
        except ApiException as exc:
            raise ClusterUnavailable(self.redact(
                f"{self.name}: {label} {resource}: {exc.reason}")) from None
        except Exception as exc:  # urllib3 and socket errors: the cluster is unreachable
            # the type only: urllib3's messages repeat the URL (user info included); the
            # cause's, not MaxRetryError's (which every failure is, see RETRIES)
            cause = getattr(exc, "reason", None) if isinstance(exc, MaxRetryError) else None
            raise ClusterUnavailable(f"{self.name}: {label} {resource}: "
                                     f"{type(cause or exc).__name__}") from None

    def _request_sync(self, method: str, resource: str, *, query: Mapping[str, str] | None,
                      body: Any, content_type: str | None, timeout: float) -> Any:
        response = self._send(self._api, method, resource, query=query, body=body,
                              content_type=content_type,
                              timeouts=(min(timeout, 2.0), timeout), label=method)
        try:
            data = response.read() if hasattr(response, "read") else response.data
        except Exception as exc:  # the answer broke off
            raise ClusterUnavailable(f"{self.name}: {method} {resource}: "
                                     f"{type(exc).__name__}") from None
        status = response.status
        if status == 404:
            raise NotFound(f"{self.name}: {resource} not found")
        if status >= 400:
            message = _message(data)
            error = Conflict if status == 409 else ClusterUnavailable
            raise error(self.redact(
                f"{self.name}: {method} {resource}: HTTP {status}: {message}"))
        return json.loads(data) if data else None

    def _stream_api(self) -> ApiClient:
        """A client of its own for watches (each holds a connection while it is open), so
        they never take the connections of reads and writes. Effects: memory."""
        if self._streams is None:
            config = copy.deepcopy(self.configuration)
            config.connection_pool_maxsize = STREAMS
            self._streams = ApiClient(config)
        return self._streams

    def list_sync(self, api_version: str, kind: str, *, selector: str, page: int = 500,
                  timeout: float = 30.0) -> tuple[list[dict[str, Any]], str]:
        """Every object with the label ``selector``, read in pages (a consistent read: the
        version returned is where a watch resumes), and the list's resourceVersion. Blocks
        (an informer's thread). Effects: network."""
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            query = {"labelSelector": selector, "limit": str(page)}
            if cont:
                query["continue"] = cont
            data = self._request_sync("GET", path(api_version, kind), query=query, body=None,
                                      content_type=None, timeout=timeout) or {}
            items += data.get("items") or []
            meta = data.get("metadata") or {}
            cont = meta.get("continue") or ""
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    def watch_sync(self, api_version: str, kind: str, *, selector: str, resource_version: str,
                   seconds: int, opened: Callable[[Any], None] = lambda _: None
                   ) -> Iterator[tuple[str, dict[str, Any]]]:
        """The events of a watch from ``resource_version`` (with bookmarks) until the API
        server ends it after ``seconds``; ``opened`` gets the response (to shut it down
        from another thread). A read that waits 30 s past that fails. Blocks (an
        informer's thread). Raises :class:`ClusterUnavailable` (``Gone`` on HTTP 410).
        Effects: network."""
        resource = path(api_version, kind)
        query = {"watch": "true", "labelSelector": selector, "allowWatchBookmarks": "true",
                 "resourceVersion": resource_version, "timeoutSeconds": str(seconds)}
        response = self._send(self._stream_api(), "GET", resource, query=query, body=None,
                              content_type=None, label="watch",
                              timeouts=(min(self.timeout, 5.0), seconds + 30)).response
        opened(response)
        try:
            if response.status == 410:
                raise Gone(f"{self.name}: watch {resource}: version too old")
            if response.status >= 400:
                message = _message(response.data)
                error = Forbidden if response.status == 403 else ClusterUnavailable
                raise error(self.redact(
                    f"{self.name}: watch {resource}: HTTP {response.status}: {message}"))
            buffer = b""
            for chunk in response.stream(amt=None, decode_content=False):
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    event = parse_line(line) if line.strip() else None
                    if event is not None:
                        yield event
        except ClusterUnavailable:
            raise
        except Exception as exc:  # the stream broke (reset, read timeout, shut down)
            raise ClusterUnavailable(f"{self.name}: watch {resource}: "
                                     f"{type(exc).__name__}") from None
        finally:
            response.release_conn()

    async def request(self, method: str, resource: str, *, query: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str | None = None,
                      timeout: float | None = None, fenced: bool = True,
                      priority: int = STATE, queue_seconds: float = WRITE_QUEUE_SECONDS
                      ) -> Any:
        """One REST call: reads (GET) on the read threads, writes on the write threads
        (``priority`` and ``queue_seconds``: see :class:`WriteSlots`).
        A write is refused (:class:`NotLeading`) while the write fence says no, unless not
        ``fenced`` (the leader election's own writes). Raises :class:`ClusterUnavailable`
        (or :class:`NotFound`), its message redacted. Effects: network."""
        if fenced and method != "GET" and _write_fence is not None and not _write_fence():
            raise NotLeading(f"{self.name}: {method} {resource}: not the leader; nothing "
                             "is written")
        t = timeout or self.timeout
        return await self._run(
            lambda: self._request_sync(method, resource, query=query, body=body,
                                       content_type=content_type, timeout=t), t,
            read=method == "GET", priority=priority, queue_seconds=queue_seconds)

    async def list(self, api_version: str, kind: str, *, selector: str | None = None,
                   namespace: str | None = None, timeout: float | None = None
                   ) -> list[dict[str, Any]]:
        """List objects (from the API server's watch cache). Effects: network."""
        query = {"resourceVersion": "0"}
        if selector:
            query["labelSelector"] = selector
        data = await self.request("GET", path(api_version, kind, namespace=namespace),
                                  query=query, timeout=timeout)
        items: list[dict[str, Any]] = data.get("items") or []
        return items

    async def get(self, api_version: str, kind: str, name: str, *,
                  namespace: str | None = None) -> dict[str, Any]:
        """Read one object. Effects: network."""
        result: dict[str, Any] = await self.request(
            "GET", path(api_version, kind, namespace=namespace, name=name))
        return result

    async def apply(self, obj: Mapping[str, Any], *, priority: int = STATE,
                    queue_seconds: float = WRITE_QUEUE_SECONDS) -> dict[str, Any]:
        """Server-side apply with twinhull's field manager. Effects: writes."""
        meta = obj["metadata"]
        resource = path(obj["apiVersion"], obj["kind"], namespace=meta.get("namespace"),
                        name=meta["name"])
        result: dict[str, Any] = await self.request(
            "PATCH", resource, query={"fieldManager": FIELD_MANAGER, "force": "true"},
            body=json.dumps(obj), content_type="application/apply-patch+yaml",
            priority=priority, queue_seconds=queue_seconds)
        return result

    async def patch_status(self, api_version: str, kind: str, name: str, status: Any, *,
                           namespace: str | None = None, priority: int = STATE) -> None:
        """Merge-patch ``status`` through the status subresource. Effects: writes."""
        await self.request(
            "PATCH", path(api_version, kind, namespace=namespace, name=name,
                          subresource="status"),
            body={"status": status}, content_type="application/merge-patch+json",
            priority=priority)

    async def delete(self, api_version: str, kind: str, name: str, *,
                     namespace: str | None = None) -> None:
        """Delete one object; a missing one counts as deleted. Effects: writes."""
        with contextlib.suppress(NotFound):
            await self.request("DELETE", path(api_version, kind, namespace=namespace,
                                              name=name),
                               query={"propagationPolicy": "Background"})

    async def create(self, obj: Mapping[str, Any], *, priority: int = STATE,
                     queue_seconds: float = WRITE_QUEUE_SECONDS) -> dict[str, Any]:
        """Create an object (``priority`` and ``queue_seconds``: see :class:`WriteSlots`).
        Effects: writes."""
        meta = obj["metadata"]
        result: dict[str, Any] = await self.request(
            "POST", path(obj["apiVersion"], obj["kind"], namespace=meta.get("namespace")),
            body=dict(obj), content_type="application/json", priority=priority,
            queue_seconds=queue_seconds)
        return result


def _message(data: bytes | None) -> str:
    try:
        return str(json.loads(data or b"{}").get("message", ""))[:500]
    except ValueError:
        return ""
