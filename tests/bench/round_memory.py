"""Benchmark: the memory a fleet round over N ModelDeployments keeps and passes through.

The scale benchmark (e2e/bench/scale.py) measures the operator's RSS at 2,000
ModelDeployments on the lab; this one isolates the hub-side round
(:func:`twinhull.handlers.fleet.reconcile`) in one process without clusters, to see what
the round itself holds. N deployments (the examples ide-assistant, code-review and
aiops-platform in turn) on two Healthy members with GPUs for all; the hub's answers are
the objects sent (every write succeeds, nothing is kept), so the HTTP clients, kopf, the
informers and the member objects are not in these figures.

Three rounds (the first records every snapshot and audit record, the next ones are
steady), then the same three again under tracemalloc:

* ``rss_mib``: the process's RSS with the deployments' bodies (and the imports);
  ``history_mib`` what the earlier revisions of ``--history`` hold (traced); and
  ``rss_growth_mib`` the RSS the three rounds add;
* ``retained_mib``: Python memory the rounds left (traced, after the third round);
* ``peak_mib``: the highest traced during a round above what was there before it (what
  it keeps included);
* the five twinhull lines holding the most of ``retained_mib``, each allocation counted
  at the innermost twinhull line that made it (pydantic's and json's lines say nothing).

With ``--history K`` each deployment also has K earlier revisions (ModelSnapshots, another
image each) in memory before the rounds, as a fleet that has rolled out K times has
(the tiers keep 10 by default).

``--down-holders`` instead: what the round after a member loss holds when it sends its
first hub write, above the steady state, by twinhull line, and that round's traced peak.

Run: .venv/bin/python tests/bench/round_memory.py [--deployments N] [--history K]
Last line: deployments=N history=K rss_mib=… history_mib=… rss_growth_mib=… retained_mib=…
peak_mib=… round_s=… loop_stall_s=… down_round_s=… down_loop_stall_s=…

``loop_stall_s``: the longest a task sleeping 10 ms at a time waited past its 10 ms during
the untraced rounds, i.e. how long a round held the event loop in one piece (the member
probes share it). ``down_round_s`` and ``down_loop_stall_s``: the same for one more round
after west went Down (every deployment placed there fails over: its decisions, Events,
audit records, status and route).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import time
import tracemalloc
from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from twinhull.handlers import fleet, revisions
from twinhull.handlers.runtime import Runtime, Settings, now
from twinhull.plan.fleet import ClusterView
from twinhull.policy import load_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ("ide-assistant", "code-review", "aiops-platform")


class Accepting:
    """A hub that accepts every write and answers with what was sent (nothing kept).
    ``on_call``, when set, runs before each call (``--down-holders`` snapshots there)."""

    on_call: Any = None

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.on_call is not None:
                self.on_call()
            body = kwargs.get("body")
            if body is None:
                body = next((a for a in args if isinstance(a, dict)), None)
            return body if body is not None else {}
        return call


def runtime(count: int) -> Runtime:
    specs = [next(yaml.safe_load_all((ROOT / "examples" / f"{n}.yaml").read_text()))["spec"]
             for n in EXAMPLES]
    rt = Runtime(hub=Accepting(), policy=load_file(), settings=Settings())  # type: ignore[arg-type]
    rt.started = now() - timedelta(hours=1)
    for name in ("east", "west"):
        rt.views[name] = ClusterView(name=name, phase="Healthy", gpus=1_000_000,
                                     zones_ready={f"{name}-a": True, f"{name}-b": True})
        rt.view_times[name] = now()
    for i in range(count):
        name = f"d{i:04}"
        rt.deployments[("bench", name)] = {
            "apiVersion": "serving.twinhull.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": name, "namespace": "bench", "generation": 1,
                         "uid": f"uid-{name}", "creationTimestamp": "2026-11-01T00:00:00Z"},
            "spec": dict(specs[i % len(specs)]), "status": {}}
    return rt


def add_history(rt: Runtime, history: int) -> None:
    """``history`` earlier revisions of every deployment: its spec with another image."""
    for (namespace, name), body in list(rt.deployments.items()):
        for k in range(history):
            old = copy.deepcopy(body["spec"])
            old["model"]["image"] = f"{old['model']['image']}-r{k}"
            revisions.remember(rt, {
                "metadata": {"name": f"{name}-r{k}", "namespace": namespace,
                             "creationTimestamp": "2026-11-01T00:00:00Z"},
                "spec": {"deploymentRef": {"name": name}, "hash": f"{k:016x}",
                         "generation": 1, "reason": "NewRevision", "deployment": old},
                "status": {"outcome": "Good"}})


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _watched(rt: Runtime) -> float:
    """One round beside a task that sleeps 10 ms at a time, as the member probes and the
    watch handlers share the loop with the round; the longest the task waited past its
    10 ms (how long the round held the loop in one piece)."""
    stalls = [0.0]
    done = False

    async def ticker() -> None:
        while not done:
            t = time.monotonic()
            await asyncio.sleep(0.01)
            stalls.append(time.monotonic() - t - 0.01)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)  # the ticker runs before the round takes the loop
    try:
        await fleet.reconcile(rt)
    finally:
        done = True
        await task
    return max(stalls)


def rounds(rt: Runtime, count: int) -> tuple[float, float]:
    """Run ``count`` rounds; the slowest one's seconds and the longest the event loop was
    held in one piece during them."""
    slowest = stall = 0.0
    for _ in range(count):
        for key in list(rt.views):
            rt.view_times[key] = now()
        start = time.monotonic()
        stall = max(stall, asyncio.run(_watched(rt)))
        slowest = max(slowest, time.monotonic() - start - 0.05)
    return slowest, stall


def holders_of(traces: Iterable[tuple[Any, int, int]], top: int
               ) -> list[tuple[str, int, int]]:
    """The ``top`` (0: all) twinhull lines holding the most of ``traces`` ((traceback,
    size, blocks)), each allocation counted at the innermost twinhull line that made it
    (pydantic's and json's lines say nothing)."""
    held: dict[str, list[int]] = {}
    for traceback, size, blocks in traces:
        mine = [f for f in traceback if "/twinhull/" in f.filename]
        if mine and size > 0:
            where = f"{mine[-1].filename.split('/twinhull/', 1)[-1]}:{mine[-1].lineno}"
            sums = held.setdefault(where, [0, 0])
            sums[0] += size
            sums[1] += blocks
    ranked = sorted(held.items(), key=lambda h: -h[1][0])[:top or None]
    return [(where, size, blocks) for where, (size, blocks) in ranked]


def down_holders(n: int, top: int = 8) -> None:
    """What the round after a member loss holds when it sends its first hub write (its
    plans, renders, routes and statuses are built by then), above the steady state, by
    twinhull line, and its traced peak. Prints them."""
    rt = runtime(n)
    rounds(rt, 3)
    gc.collect()
    tracemalloc.start(8)
    base = tracemalloc.take_snapshot()
    at = tracemalloc.get_traced_memory()[0]
    seen: list[Any] = []

    def first_write() -> None:
        if not seen:
            seen.append((tracemalloc.take_snapshot(), tracemalloc.get_traced_memory()[0]))

    rt.views["west"] = replace(rt.views["west"], phase="Down")
    rt.hub.on_call = first_write  # type: ignore[attr-defined]
    tracemalloc.reset_peak()
    rounds(rt, 1)
    peak = tracemalloc.get_traced_memory()[1] - at
    tracemalloc.stop()
    snap, size = seen[0]
    grown = [(d.traceback, d.size_diff, d.count_diff)
             for d in snap.compare_to(base, "traceback")]
    mib = 2**20
    every = holders_of(grown, 0)
    print(f"down round, traced: +{(size - at) / mib:.1f} MiB at its first hub write, peak "
          f"+{peak / mib:.1f} MiB; {sum(h[1] for h in every) / mib:.1f} MiB of what it added "
          f"then by {len(every)} twinhull lines, those holding most:")
    for where, held, blocks in every[:top]:
        print(f"  {held / mib:6.1f} MiB  {blocks:7d} blocks  {where}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deployments", type=int, default=2000)
    ap.add_argument("--history", type=int, default=0,
                    help="earlier revisions (ModelSnapshots) of each deployment, kept in memory")
    ap.add_argument("--down-holders", action="store_true",
                    help="only: what the round after a member loss holds at its first hub "
                         "write, by twinhull line (traced), and its peak")
    args = ap.parse_args()
    n, k = args.deployments, args.history
    if args.down_holders:
        down_holders(n)
        return

    rt = runtime(n)
    gc.collect()
    start = rss_mib()
    add_history(rt, k)
    gc.collect()
    before = rss_mib()
    round_s, stall_s = rounds(rt, 3)
    gc.collect()
    growth = rss_mib() - before
    rt.views["west"] = replace(rt.views["west"], phase="Down")  # a member lost
    down_s, down_stall_s = rounds(rt, 1)

    rt = runtime(n)
    gc.collect()
    tracemalloc.start(8)
    add_history(rt, k)
    gc.collect()
    history = tracemalloc.get_traced_memory()[0]
    peak = 0.0
    for _ in range(3):
        at, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        rounds(rt, 1)
        peak = max(peak, tracemalloc.get_traced_memory()[1] - at)
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - history
    holders = holders_of(((t.traceback, t.size, 1) for t in tracemalloc.take_snapshot().traces),
                         5)
    tracemalloc.stop()
    mib = 2**20
    print(f"{n} deployments: RSS {start:.0f} MiB; {k} earlier revisions each +{before - start:.0f}"
          f" MiB ({history / mib:.1f} traced); 3 rounds +{growth:.0f} MiB, the slowest "
          f"{round_s:.1f} s (untraced), holding the event loop {stall_s:.2f} s at most")
    print(f"traced: the rounds kept {retained / mib:.1f} MiB, a round's peak "
          f"+{peak / mib:.1f} MiB; the twinhull lines holding most (revisions included):")
    for where, size, blocks in holders:
        print(f"  {size / mib:6.1f} MiB  {blocks:7d} blocks  {where}")
    print(f"deployments={n} history={k} rss_mib={start:.0f} history_mib={history / mib:.1f} "
          f"rss_growth_mib={growth:.0f} retained_mib={retained / mib:.1f} "
          f"peak_mib={peak / mib:.1f} round_s={round_s:.2f} loop_stall_s={stall_s:.2f} "
          f"down_round_s={down_s:.2f} down_loop_stall_s={down_stall_s:.2f}")


if __name__ == "__main__":
    main()
