"""kopf's per-object workers as twinhull configures them, run by kopf's own queueing (its
watcher, scheduler and workers; only the watch stream is replaced by a list of events):
how fast objects pass its bounded pool. No cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import kopf
import pytest
from kopf._cogs.clients import watching
from kopf._cogs.structs import references
from kopf._core.reactor import queueing

from twinhull.handlers.operator import WORKER_IDLE_SECONDS, configure

RESOURCE = references.Resource(group="serving.twinhull.io", version="v1alpha1",
                               plural="modeldeployments")


def _event(type_: str, uid: str, version: int) -> dict[str, Any]:
    return {"type": type_, "object": {"metadata": {
        "uid": uid, "name": uid, "namespace": "ns", "resourceVersion": str(version)}}}


async def _pass(objects: int, max_workers: int, *, echoes: int = 1, gap: float = 0.0
                ) -> tuple[float, dict[str, set[int]]]:
    """Seconds until kopf's workers have handled the last event of every one of
    ``objects`` (each listed, then ``echoes`` MODIFIED events each, as a status write's
    echo brings, ``gap`` seconds apart), and which tasks (workers) handled each."""
    settings = kopf.OperatorSettings()
    configure(settings, max_workers)
    last = {f"u{i}": str(1 + echoes) for i in range(objects)}
    done: set[str] = set()
    finished = asyncio.Event()
    workers: dict[str, set[int]] = {}

    async def stream(**_: Any) -> AsyncIterator[Any]:
        for i in range(objects):
            yield _event("ADDED", f"u{i}", 1)
        for e in range(1, echoes + 1):
            await asyncio.sleep(gap)
            for i in range(objects):
                yield _event("MODIFIED", f"u{i}", 1 + e)
        await asyncio.Event().wait()  # the watch stays open

    async def processor(*, raw_event: Any, **_: Any) -> None:
        meta = raw_event["object"]["metadata"]
        workers.setdefault(meta["uid"], set()).add(id(asyncio.current_task()))
        await asyncio.sleep(0.005)  # the handlers: a little work, no requests
        if meta["resourceVersion"] == last[meta["uid"]]:
            done.add(meta["uid"])
            if len(done) == objects:
                finished.set()

    mp = pytest.MonkeyPatch()
    mp.setattr(watching, "infinite_watch", stream)
    task = asyncio.create_task(queueing.watcher(
        namespace=None, settings=settings, resource=RESOURCE, processor=processor))
    start = time.monotonic()
    try:
        await asyncio.wait_for(finished.wait(), timeout=20)
        return time.monotonic() - start, workers
    finally:
        mp.undo()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_objects_pass_the_bounded_worker_pool_at_the_pace_of_their_handlers() -> None:
    # 200 objects, 20 workers: with kopf's default 5 s idle a worker keeps its slot 5 s
    # after its object's last event, 10 turns of 5 s = 50 s; at WORKER_IDLE_SECONDS
    # 10 turns of ~0.6 s
    took, _ = asyncio.run(_pass(200, 20))
    assert took < 10 * (WORKER_IDLE_SECONDS + 0.5), took


def test_an_objects_echoes_soon_after_go_to_its_worker_still_waiting() -> None:
    # a patch's echo comes a fraction of a second later: the worker that made it is still
    # there to take it, one worker per object, not one started per event
    _, workers = asyncio.run(_pass(10, 20, echoes=3, gap=WORKER_IDLE_SECONDS / 3))
    assert all(len(tasks) == 1 for tasks in workers.values()), workers
