"""Leader election on a ``coordination.k8s.io`` Lease, so that several replicas of the
operator can run and exactly one acts. Effects: hub reads and writes of one Lease.

The rules are client-go's (``leaderelection``), in asyncio on twinhull's own client:

* a candidate takes the Lease when it does not exist, when it is released (no holder), or
  when its record (holder, renew time, transitions) has not changed for a whole lease
  duration *as measured on the candidate's own monotonic clock* since the candidate first
  saw that record, so clock skew between replicas does not matter;
* every write of the Lease is a replace with the ``resourceVersion`` read (or last
  written), so two candidates racing for it cannot both win (the API server refuses the
  second with 409);
* the leader renews every ``retry`` seconds, from the start of one attempt to the start of
  the next, with one request while nobody else writes the Lease (a slow hub that takes
  1.5 s a request once made a read and a write plus the pause 5 s, and the term ran out);
  it counts itself leader only until
  ``lease - margin`` seconds after the start of its last successful renew, which ends
  before any other replica may take over (``lease`` after it saw that renew). Past that
  it stops acting at once: every write twinhull makes is fenced on :meth:`Elector.leading`
  (:func:`twinhull.clusters.kube.set_write_fence`) and the process exits, to start again as
  a candidate;
* a leader that stops on SIGTERM releases the Lease, so a rolling update hands over in one
  retry instead of a lease duration.

A killed leader (SIGKILL, no release) is replaced within ``lease + retry`` seconds plus
the new leader's start-up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twinhull.clusters.kube import ClusterUnavailable, Conflict, Kube, NotFound

log = logging.getLogger(__name__)

API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class LeaseSettings:
    """Where the Lease is and how long it lasts."""

    namespace: str
    name: str = "twinhull-leader"
    identity: str = ""
    lease_seconds: float = 10.0
    retry_seconds: float = 2.0
    margin_seconds: float = 3.0
    """The leader stops counting itself leader this long before a candidate may take over
    (a renew that started earlier than it was written)."""


def _micro(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_body(settings: LeaseSettings, *, holder: str, acquired: datetime, renewed: datetime,
               transitions: int, resource_version: str | None = None) -> dict[str, Any]:
    """The Lease object as this replica writes it. Pure."""
    metadata: dict[str, Any] = {"name": settings.name, "namespace": settings.namespace}
    if resource_version is not None:
        metadata["resourceVersion"] = resource_version
    return {"apiVersion": API, "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": holder,
                     "leaseDurationSeconds": max(1, round(settings.lease_seconds)),
                     "acquireTime": _micro(acquired), "renewTime": _micro(renewed),
                     "leaseTransitions": transitions}}


def record_of(lease: dict[str, Any]) -> tuple[str, str, int]:
    """What changes when the holder renews or another takes over. Pure."""
    spec = lease.get("spec") or {}
    return (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""),
            int(spec.get("leaseTransitions") or 0))


def lease_health(lease: dict[str, Any] | None, now: datetime, *, slack: float = 5.0
                 ) -> tuple[bool, str]:
    """Whether a replica leads: the Lease exists, has a holder, and was renewed within its
    duration (plus ``slack`` for clock skew between the checker and the leader), with a
    message saying so or what is wrong. Pure."""
    if lease is None:
        return False, ("no leader Lease: no replica has started leading (is the operator "
                       "running, and may it create leases in its namespace?)")
    spec = lease.get("spec") or {}
    holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
    if not holder:
        return False, "the leader Lease is released: no replica leads (stopping or starting?)"
    try:
        age = (now - datetime.fromisoformat(str(renewed).replace("Z", "+00:00"))
               ).total_seconds()
    except ValueError:
        return False, f"the leader Lease has no valid renewTime ({renewed!r})"
    duration = float(spec.get("leaseDurationSeconds") or 0)
    if age > duration + slack:
        return False, (f"{holder} last renewed the leader Lease {age:.0f}s ago (lease "
                       f"{duration:.0f}s): it has stopped, and no standby has taken over")
    return True, f"{holder} leads (renewed {max(age, 0.0):.0f}s ago, lease {duration:.0f}s)"


class Elector:
    """One replica's view of the Lease."""

    def __init__(self, hub: Kube, settings: LeaseSettings, *,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.hub, self.settings, self.clock, self.wall = hub, settings, clock, wall
        self.leading_until = 0.0
        self.holder = ""
        """The holder last seen (this replica's identity while it leads)."""
        self._observed: tuple[str, str, int] | None = None
        self._observed_at = 0.0
        self._acquired: datetime | None = None
        self._last: dict[str, Any] | None = None
        """The Lease as this replica last wrote it (the API server's answer)."""
        self.stepping_down = False
        """Set on a clean stop, before the Lease is released."""

    def leading(self) -> bool:
        """True while this replica may act. Effects: reads the clock."""
        return self.clock() < self.leading_until

    def _path(self) -> str:
        s = self.settings
        return f"/apis/{API}/namespaces/{s.namespace}/leases/{s.name}"

    async def try_acquire_or_renew(self) -> bool:
        """One attempt: create, renew or take over the Lease. True when this replica
        holds it now. Raises nothing: an unreachable hub or a lost race is False.

        The leader renews with one request: a replace of the Lease it last wrote, with
        that answer's ``resourceVersion`` (client-go's fast path too). Only a 409 (someone
        wrote the Lease since, or an earlier renewal that timed out went through after
        all) makes it read the Lease and decide as a candidate does. Every request is given
        up when the term would be over before its answer."""
        s, started = self.settings, self.clock()
        try:
            if self._last is not None and self.holder == s.identity:
                try:
                    return await self._replace(started, self._last, mine=True)
                except Conflict:
                    self._last = None
            try:
                lease = await self.hub.request("GET", self._path(), timeout=self._budget())
            except NotFound:
                at = self.wall()
                self._last = await self.hub.request(
                    "POST", self._path().rsplit("/", 1)[0], content_type="application/json",
                    body=lease_body(s, holder=s.identity, acquired=at, renewed=at,
                                    transitions=0), fenced=False, timeout=self._budget())
                return self._won(started, at)
            record = record_of(lease)
            if record != self._observed:
                self._observed, self._observed_at = record, started
            holder = record[0]
            self.holder = holder
            mine = holder == s.identity
            expired = self.clock() >= self._observed_at + s.lease_seconds
            if not mine and holder and not expired:
                return False
            won = await self._replace(started, lease, mine=mine)
            if not mine:
                log.info("took the lease %s/%s from %r", s.namespace, s.name,
                         holder or "(released)")
            return won
        except ClusterUnavailable as exc:  # 409 (another replica won), or the hub is down
            log.debug("lease %s/%s: %s", s.namespace, s.name, exc)
            return False

    def _budget(self) -> float | None:
        """A request's timeout: what is left of the term while leading (an answer after
        it is of no use: the replica has stopped), else the client's own."""
        if not self.leading():
            return None
        return max(0.5, self.leading_until - self.clock())

    async def _replace(self, started: float, lease: dict[str, Any], *, mine: bool) -> bool:
        """Write this replica's record over ``lease`` (the version last read or written).
        Raises :class:`Conflict` when that is not the Lease's version any more."""
        s = self.settings
        at = self.wall()
        acquired = self._acquired if mine and self._acquired else at
        body = lease_body(s, holder=s.identity, acquired=acquired, renewed=at,
                          transitions=record_of(lease)[2] + (0 if mine else 1),
                          resource_version=(lease.get("metadata") or {}).get(
                              "resourceVersion"))
        self._last = await self.hub.request("PUT", self._path(), body=body,
                                            content_type="application/json", fenced=False,
                                            timeout=self._budget())
        return self._won(started, acquired)

    def _won(self, started: float, acquired: datetime) -> bool:
        s = self.settings
        self.leading_until = started + s.lease_seconds - s.margin_seconds
        self.holder, self._acquired = s.identity, acquired
        return True

    async def acquire(self) -> None:
        """Wait until this replica holds the Lease. Effects: hub reads and writes."""
        said = ""
        while not await self.try_acquire_or_renew():
            if self.holder != said:
                said = self.holder
                log.info("standing by: lease %s/%s is held by %r", self.settings.namespace,
                         self.settings.name, said)
            await asyncio.sleep(self.settings.retry_seconds)
        log.info("leading: lease %s/%s held by %s", self.settings.namespace,
                 self.settings.name, self.settings.identity)

    async def keep(self, lost: Callable[[], None]) -> None:
        """Renew every retry until the Lease is lost, then call ``lost`` (once) and
        return; return when stepping down. Effects: hub writes."""
        began = self.clock()
        while not self.stepping_down:
            # a fixed cadence: an attempt starts ``retry`` after the last one started (at
            # once when that one took longer), so a slow hub's answers do not stretch the
            # gaps between renewals on top of their own time
            await asyncio.sleep(max(0.0, began + self.settings.retry_seconds - self.clock()))
            if self.stepping_down:
                return
            began = self.clock()
            if not await self.try_acquire_or_renew() and not self.leading():
                log.error("lost the lease %s/%s (holder now %r): stopping at once",
                          self.settings.namespace, self.settings.name, self.holder)
                lost()
                return

    def keep_in_thread(self, lost: Callable[[], None]) -> threading.Thread:
        """:meth:`keep` on a thread of its own with its own event loop: the renewals never
        wait behind the operator's work (thousands of handlers at start, a backlog of
        writes), which would let the term run out on a busy but healthy leader. The hub
        client given to this Elector should be its own too (its own threads). Effects: a
        thread."""
        thread = threading.Thread(target=lambda: asyncio.run(self.keep(lost)),
                                  name="lease-renewal", daemon=True)
        thread.start()
        return thread

    async def release(self) -> None:
        """Give the Lease up (on a clean stop) so another replica takes it in one retry.
        Effects: one hub write."""
        self.stepping_down = True
        if not self.leading():
            return
        self.leading_until = 0.0
        try:
            lease = await self.hub.request("GET", self._path())
            if record_of(lease)[0] != self.settings.identity:
                return
            at = self.wall()
            body = lease_body(self.settings, holder="", acquired=at, renewed=at,
                              transitions=record_of(lease)[2],
                              resource_version=lease["metadata"].get("resourceVersion"))
            body["spec"]["leaseDurationSeconds"] = 1
            await self.hub.request("PUT", self._path(), body=body,
                                   content_type="application/json", fenced=False)
            log.info("released the lease %s/%s", self.settings.namespace, self.settings.name)
        except ClusterUnavailable as exc:
            log.warning("could not release the lease: %s", exc)
