"""A cluster's write threads are handed out by priority, first come first served within
one, and a write that gives up waiting never keeps or loses a thread."""

from __future__ import annotations

import asyncio

import pytest

from twinhull.clusters.kube import NOTICE, RECORD, STATE, TRAFFIC, URGENT, WriteSlots


async def _order_served(queued: list[tuple[str, int]], threads: int = 1) -> list[str]:
    slots = WriteSlots(threads)
    for _ in range(threads):
        await slots.acquire(STATE, 1.0)  # every thread busy
    served: list[str] = []

    async def write(name: str, priority: int) -> None:
        await slots.acquire(priority, 5.0)
        served.append(name)
        await asyncio.sleep(0)
        slots.release()

    tasks = [asyncio.create_task(write(n, p)) for n, p in queued]
    await asyncio.sleep(0)  # all queued
    assert slots.waiting() == len(queued)
    for _ in range(threads):
        slots.release()
    await asyncio.gather(*tasks)
    assert slots.waiting() == 0
    return served


def test_higher_priorities_go_first_and_each_in_arrival_order():
    queued = [("event-1", NOTICE), ("status-1", STATE), ("route-1", TRAFFIC),
              ("audit-1", RECORD), ("route-2", TRAFFIC), ("cluster-1", URGENT),
              ("status-2", STATE), ("event-2", NOTICE)]
    assert asyncio.run(_order_served(queued)) == [
        "cluster-1", "route-1", "route-2", "status-1", "status-2", "audit-1", "event-1",
        "event-2"]


def test_a_free_thread_is_taken_at_once():
    async def go() -> int:
        slots = WriteSlots(2)
        await slots.acquire(NOTICE, 0.01)
        await slots.acquire(NOTICE, 0.01)
        return slots.waiting()

    assert asyncio.run(go()) == 0


def test_a_write_that_gives_up_neither_keeps_nor_loses_a_thread():
    async def go() -> list[str]:
        slots = WriteSlots(1)
        await slots.acquire(STATE, 1.0)
        with pytest.raises(TimeoutError):
            await slots.acquire(URGENT, 0.01)  # gave up while the thread was busy
        assert slots.waiting() == 0
        late = asyncio.create_task(slots.acquire(NOTICE, 1.0))
        await asyncio.sleep(0)
        slots.release()  # skips the write that gave up, hands the thread on
        await asyncio.wait_for(late, 0.5)
        slots.release()
        # the single thread is free again: exactly one write takes it at once
        await slots.acquire(STATE, 0.01)
        with pytest.raises(TimeoutError):
            await slots.acquire(STATE, 0.01)
        return ["ok"]

    assert asyncio.run(go()) == ["ok"]


def test_a_cancelled_write_leaves_the_thread_to_the_next():
    async def go() -> None:
        slots = WriteSlots(1)
        await slots.acquire(STATE, 1.0)
        doomed = asyncio.create_task(slots.acquire(URGENT, 5.0))
        nxt = asyncio.create_task(slots.acquire(NOTICE, 5.0))
        await asyncio.sleep(0)
        doomed.cancel()
        await asyncio.sleep(0)
        slots.release()
        await asyncio.wait_for(nxt, 0.5)
        assert slots.waiting() == 0

    asyncio.run(go())
