"""Leader election's rules (twinhull.handlers.leader) on an in-memory Lease store with the
API server's optimistic concurrency (a replace with a stale resourceVersion is refused).
The real API server is exercised by e2e/test_leader.py."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from twinhull.clusters.kube import (
    ClusterUnavailable,
    Conflict,
    NotFound,
    NotLeading,
    set_write_fence,
)
from twinhull.handlers.leader import Elector, LeaseSettings


class Store:
    """One Lease, as the API server keeps it: versioned, replace-if-unchanged."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.down = False
        self.latency = 0.0
        self.calls: list[str] = []

    async def request(self, method: str, resource: str, *, body: Any = None,
                      fenced: bool = True, **_: Any) -> Any:
        self.calls.append(method)
        await asyncio.sleep(self.latency)  # let concurrent callers interleave (a network)
        if self.down:
            raise ClusterUnavailable("hub: unreachable")
        if method == "GET":
            if self.lease is None:
                raise NotFound("no lease")
            return copy.deepcopy(self.lease)
        if method == "POST":
            if self.lease is not None:
                raise Conflict("HTTP 409: exists")
        elif method == "PUT":
            sent = body["metadata"].get("resourceVersion")
            if self.lease is None or sent != self.lease["metadata"]["resourceVersion"]:
                raise Conflict("HTTP 409: the object has been modified")
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def elector(store: Store, clock: Clock, identity: str) -> Elector:
    settings = LeaseSettings(namespace="twinhull-system", identity=identity,
                             lease_seconds=10, retry_seconds=2, margin_seconds=3)
    base = datetime(2026, 12, 1, tzinfo=UTC)
    return Elector(store, settings, clock=clock,  # type: ignore[arg-type]
                   wall=lambda: base + timedelta(seconds=clock.t))


def attempt(e: Elector) -> bool:
    return asyncio.run(e.try_acquire_or_renew())


def test_one_of_two_candidates_leads_and_the_other_waits_out_a_whole_lease():
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a) and a.leading()
    assert not attempt(b) and not b.leading() and b.holder == "a"
    for _ in range(20):  # a renews every 2 s: b never takes over
        clock.t += 2
        assert attempt(a) and not attempt(b)
    clock.t += 2  # a is killed now: its record stops changing
    for _ in range(4):
        assert not attempt(b), "b waits a whole lease after the last change it saw"
        clock.t += 2
    assert attempt(b) and b.leading()
    assert store.lease is not None and store.lease["spec"]["leaseTransitions"] == 1


def test_the_leader_stops_counting_itself_leader_before_another_may_take_over():
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a)
    assert not attempt(b)  # b sees a's record at t0
    store.down = True  # a cannot renew (a partition between a and the hub)
    clock.t += 6.9
    assert a.leading()
    clock.t += 0.2
    assert not a.leading(), "lease 10 - margin 3 after its last renew began"
    store.down = False
    clock.t += 2.9  # b's lease of 10 s since it saw a's record ends now: a stopped 3 s ago
    assert attempt(b) and b.leading()
    assert not attempt(a) and not a.leading()


def test_two_candidates_racing_for_an_expired_lease_cannot_both_win():
    store, clock = Store(), Clock()
    a, b, c = (elector(store, clock, n) for n in "abc")
    assert attempt(a)
    assert not attempt(b) and not attempt(c)
    clock.t += 11

    async def race() -> list[bool]:
        return list(await asyncio.gather(b.try_acquire_or_renew(), c.try_acquire_or_renew()))
    # both read the same version; the second replace is refused (409)
    puts = store.version
    assert sorted(asyncio.run(race())) == [False, True]
    assert store.version == puts + 1, "one replace went through, the other was refused"


def test_a_released_lease_is_taken_at_the_next_attempt():
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a) and not attempt(b)
    asyncio.run(a.release())
    assert not a.leading() and store.lease["spec"]["holderIdentity"] == ""
    assert attempt(b)


def test_writes_are_fenced_on_leadership():
    from twinhull.clusters.kube import Kube

    store, clock = Store(), Clock()
    a = elector(store, clock, "a")
    kube = Kube.__new__(Kube)
    kube.name = "hub"
    set_write_fence(a.leading)
    try:
        with pytest.raises(NotLeading):
            asyncio.run(kube.request("PATCH", "/api/v1/namespaces/x"))
    finally:
        set_write_fence(None)


@pytest.mark.parametrize(("lease", "ok", "says"), [
    (None, False, "no leader Lease"),
    ({"spec": {"holderIdentity": "", "renewTime": "2026-12-01T00:00:00.000000Z",
               "leaseDurationSeconds": 10}}, False, "released"),
    ({"spec": {"holderIdentity": "a", "renewTime": "2026-12-01T00:00:08.000000Z",
               "leaseDurationSeconds": 10}}, True, "a leads (renewed 2s ago"),
    ({"spec": {"holderIdentity": "a", "renewTime": "2026-12-01T00:00:00.000000Z",
               "leaseDurationSeconds": 1}}, False, "it has stopped"),
    ({"spec": {"holderIdentity": "a", "renewTime": "yesterday",
               "leaseDurationSeconds": 10}}, False, "no valid renewTime"),
])
def test_the_install_check_reads_the_lease(lease, ok, says):
    from twinhull.handlers.leader import lease_health

    got, message = lease_health(lease, datetime(2026, 12, 1, 0, 0, 10, tzinfo=UTC))
    assert got is ok and says in message


def test_the_leader_renews_while_its_event_loop_is_busy():
    """Renewals run on a thread and loop of their own: thousands of handlers at start (a
    loop busy for longer than the lease) must not end a healthy leader's term."""
    import time

    store = Store()
    settings = LeaseSettings(namespace="twinhull-system", identity="a", lease_seconds=1.0,
                             retry_seconds=0.1, margin_seconds=0.3)
    a = Elector(store, settings)  # type: ignore[arg-type]
    assert attempt(a)
    lost: list[bool] = []
    renewing = a.keep_in_thread(lambda: lost.append(True))

    async def busy_loop() -> None:
        time.sleep(2.5)  # the operator's loop blocked for 2.5 leases
        await asyncio.sleep(0)

    renewed = store.version
    asyncio.run(busy_loop())
    assert not lost and a.leading(), "the term ran out while the loop was busy"
    assert store.version >= renewed + 10, "renewed every retry meanwhile"
    a.stepping_down = True
    renewing.join(timeout=2)
    assert not renewing.is_alive(), "the renewals stop when stepping down"
    after = store.version
    time.sleep(0.3)
    assert store.version == after


def test_a_renewal_is_one_request_while_nobody_else_writes_the_lease():
    store, clock = Store(), Clock()
    a = elector(store, clock, "a")
    assert attempt(a)
    for _ in range(5):
        clock.t += 2
        store.calls.clear()
        assert attempt(a) and a.leading()
        assert store.calls == ["PUT"], "the leader replaces the Lease it last wrote"


def test_a_lease_written_by_another_is_read_again_before_renewing():
    """The fast path's replace carries the version the leader wrote: when another replica
    took the Lease meanwhile (the leader was cut off for a whole lease), the API server
    refuses it and the leader reads, sees the new holder and does not lead."""
    store, clock = Store(), Clock()
    a, b = elector(store, clock, "a"), elector(store, clock, "b")
    assert attempt(a) and not attempt(b)
    store.down = True
    clock.t += 11
    store.down = False
    assert attempt(b)
    store.calls.clear()
    assert not attempt(a) and not a.leading() and a.holder == "b"
    assert store.calls == ["PUT", "GET"], "refused (409), then read"


def test_a_renewal_that_timed_out_but_went_through_is_recovered_from():
    """A replace whose answer never came may still have been written: the next one's
    version is then old (409), so the leader reads the Lease, finds itself holding it and
    renews in the same attempt."""
    store, clock = Store(), Clock()
    a = elector(store, clock, "a")
    assert attempt(a)
    written = copy.deepcopy(a._last)
    clock.t += 2
    assert attempt(a)
    a._last = written  # as if the second replace's answer had been lost
    clock.t += 2
    store.calls.clear()
    assert attempt(a) and a.leading()
    assert store.calls == ["PUT", "GET", "PUT"]
    assert store.lease["spec"]["leaseTransitions"] == 0, "still the same term's holder"


def test_renewals_start_at_a_fixed_cadence_on_a_slow_hub():
    """Each request takes most of the retry period: the next attempt starts ``retry``
    after the last one started, not ``retry`` after it ended."""
    import time

    store = Store()
    settings = LeaseSettings(namespace="twinhull-system", identity="a", lease_seconds=1.0,
                             retry_seconds=0.1, margin_seconds=0.3)
    a = Elector(store, settings)  # type: ignore[arg-type]
    assert attempt(a)
    store.latency = 0.08
    store.calls.clear()
    renewing = a.keep_in_thread(lambda: None)
    time.sleep(1.2)
    a.stepping_down = True
    renewing.join(timeout=2)
    # a pause after each answer would make it ~1.2 / 0.18 = 6 or 7 attempts
    assert store.calls.count("PUT") >= 10, store.calls
