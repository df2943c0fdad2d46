"""twinhull's objects of one kind in one member, kept current by a LIST and then a WATCH
from the list's resourceVersion, on a thread of its own (an informer).

Observing by listing everything on every probe costs the API server and the operator in
proportion to the fleet, every probe: at 2,000 ModelDeployments on three members the
lists (6,000 objects each) took longer than the probe's timeout, observations failed and
replicas were never seen Ready. A watch costs in proportion to what changes.

The informer keeps only what twinhull compares of each object (a :class:`~.member.Seen`),
never whole objects. When the watch ends it resumes from the last resourceVersion (the
API server ends watches after ``timeoutSeconds``; bookmarks keep the version fresh); when
the version is too old (410 Gone) or the cluster fails, it lists again, retrying with
backoff. Until its first list and after any failure it is not synced, and the member's
observation fails instead of reporting what may be stale. An identity that may list but
not watch (a member role from before the watch verb) gets a list every
:data:`POLL_SECONDS` instead, the cost of observing before informers. Effects: network
I/O, a thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from twinhull.clusters.kube import ClusterUnavailable, Forbidden, Gone

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
"""How long the API server is asked to keep one watch open (it ends it then; the informer
resumes from the last version it saw)."""
BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
"""Seconds between failed attempts to list or watch, growing up to the last."""
POLL_SECONDS = 2.0
"""How often the objects are listed instead when watching them is forbidden (a member
whose RBAC predates the watch verb): as often as a default probe, as before informers."""
RETRY_WATCH = 6
"""While polling, every this many lists the watch is tried again (RBAC granted since)."""

Key = tuple[str, str, str, str]
Event = tuple[str, Mapping[str, Any]]


class Source(Protocol):
    """What an informer needs of a cluster's client (:class:`~.kube.Kube`)."""

    name: str

    def list_sync(self, api_version: str, kind: str, *, selector: str
                  ) -> tuple[list[dict[str, Any]], str]: ...

    def watch_sync(self, api_version: str, kind: str, *, selector: str, resource_version: str,
                   seconds: int, opened: Callable[[Any], None]) -> Iterator[Event]: ...


class Informer:
    """The objects of one kind with twinhull's label, as ``key -> transform(object)``.

    Thread-safe: the watch thread writes, :meth:`snapshot` reads under a lock.
    """

    def __init__(self, source: Source, api_version: str, kind: str, selector: str,
                 transform: Callable[[Mapping[str, Any]], Any],
                 key: Callable[[Mapping[str, Any]], Key]) -> None:
        self.source = source
        self.api_version, self.kind, self.selector = api_version, kind, selector
        self._transform, self._key = transform, key
        self._items: dict[Key, Any] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._response: Any = None
        self.synced = False
        """True from the first complete list until a failure (then False until the next)."""
        self.error = "not listed yet"
        """Why it is not synced ("" when it is)."""
        self.lists = 0
        """Complete lists so far (1 plus one per resync after a failure)."""
        self.events = 0
        """Watch events applied so far."""
        self.polling = ""
        """Why it lists every :data:`POLL_SECONDS` instead of watching ("" when it
        watches): the identity may list but not watch."""

    def start(self) -> None:
        """Start the thread (once). Effects: a thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, daemon=True,
                name=f"watch-{self.source.name}-{self.kind}")
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread: the open watch is shut down at once. Effects: threads."""
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception:  # already closed; the thread ends at its next read
                log.debug("shutting down the %s watch", self.kind, exc_info=True)

    def snapshot(self) -> dict[Key, Any] | None:
        """A copy of the objects, or None while not synced. Pure (reads memory)."""
        with self._lock:
            return dict(self._items) if self.synced else None

    def _run(self) -> None:
        failures = polls = 0
        version = ""
        while not self._stop.is_set():
            try:
                if not version:
                    version = self._list()
                if self.polling and polls % RETRY_WATCH:
                    polls += 1
                    version = ""
                    self._stop.wait(POLL_SECONDS)
                    continue
                try:
                    version = self._watch(version)  # every RETRY_WATCH polls: granted since?
                except Forbidden as exc:  # may list, may not watch: list on a period instead
                    if not self.polling and not polls:
                        log.warning("cluster %s: %s; listing them every %gs instead (grant "
                                    "watch on it: policies/member-rbac.yaml)",
                                    self.source.name, exc, POLL_SECONDS)
                    self.polling = str(exc)
                    polls += 1
                    version = ""
                    continue
                failures = 0
                self.polling = ""
            except Gone:
                version = ""  # too old: list again at once
            except Exception as exc:  # the cluster failed; list again after a backoff
                version = ""
                with self._lock:
                    self.synced = False
                self.error = str(exc) if isinstance(exc, ClusterUnavailable) else \
                    f"{type(exc).__name__}: {exc}"
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                log.debug("cluster %s: watching %s failed (retry in %gs): %s",
                          self.source.name, self.kind, delay, self.error)
                self._stop.wait(delay)

    def _list(self) -> str:
        items, version = self.source.list_sync(self.api_version, self.kind,
                                               selector=self.selector)
        fresh = {}
        for item in items:
            item = {**item, "apiVersion": self.api_version, "kind": self.kind}
            fresh[self._key(item)] = self._transform(item)
        with self._lock:
            self._items = fresh
            self.synced = True
        self.error = ""
        self.lists += 1
        return version

    def _opened(self, response: Any) -> None:
        self._response = response
        if self._stop.is_set():
            self.stop()

    def _watch(self, version: str) -> str:
        """Apply one watch's events; return the last resourceVersion seen. Raises
        :class:`Gone` when the version is too old."""
        for kind, obj in self.source.watch_sync(
                self.api_version, self.kind, selector=self.selector,
                resource_version=version, seconds=WATCH_SECONDS, opened=self._opened):
            if self._stop.is_set():
                break
            if kind == "ERROR":
                if obj.get("code") == 410:
                    raise Gone(f"{self.source.name}: {self.kind} watch: version too old")
                raise ClusterUnavailable(f"{self.source.name}: {self.kind} watch: "
                                         f"{str(obj.get('message', ''))[:300]}")
            meta = obj.get("metadata")
            if not isinstance(meta, Mapping):
                continue
            version = str(meta.get("resourceVersion") or version)
            if kind == "BOOKMARK":
                continue
            item = {**obj, "apiVersion": self.api_version, "kind": self.kind}
            key = self._key(item)
            with self._lock:
                if kind == "DELETED":
                    self._items.pop(key, None)
                elif kind in ("ADDED", "MODIFIED"):
                    self._items[key] = self._transform(item)
            self.events += 1
        self._response = None
        return version

