"""Run ``twinhull`` with tracemalloc on, and write where its Python memory is on SIGUSR1.

For the scale benchmark's ``--heap FILE``: each SIGUSR1 appends to FILE the traced total,
the process's RSS and the 40 source lines holding the most memory (one frame each, which
keeps tracemalloc's own cost low; the operator still runs slower, so time figures from
such a run are not comparable). Memory held outside Python's allocator (OpenSSL, the
allocator's free lists) is the difference between RSS and the traced total.

With ``HEAPDUMP_FRAMES=0`` there is no tracemalloc (the operator runs at its own speed):
each SIGUSR1 appends RSS, Python's object allocator's arenas and blocks
(``sys._debugmallocstats``), the 25 types of tracked objects taking the most bytes and the
coroutines by function.

With ``HEAPDUMP_FRAMES=N`` (N > 1) each allocation keeps N frames and the memory is also
grouped by its two innermost frames in twinhull's or kopf's own code: the line of JSON's
decoder says nothing, the twinhull line that asked for the decoding (and its caller) says
which object it is (N = 12 reaches past the HTTP client and the decoder).

Run: python e2e/bench/heapdump.py FILE run --kubeconfig … (the arguments of twinhull).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _pymalloc() -> list[str]:
    """Python's object allocator as ``sys._debugmallocstats`` reports it (which writes to
    file descriptor 2): its arenas now and at their high-water mark, the bytes in blocks
    in use and free, and its unused pools. RSS well above the blocks in use is memory the
    allocator holds after a peak (an arena is returned only when all of it is free)."""
    import tempfile
    keep = ("arenas", "bytes in", "unused pools", "bytes lost to")
    with tempfile.TemporaryFile("w+") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        lines = tmp.read().splitlines()
    return [" ".join(line.split()) for line in lines if any(k in line for k in keep)
            and "arena map" not in line]


def _by_owner(snapshot: tracemalloc.Snapshot) -> list[tuple[str, tuple[int, int]]]:
    """Traced memory summed by the two innermost frames in twinhull's or kopf's code
    ("-" where no frame is), largest first."""
    sums: dict[str, list[int]] = {}
    for stat in snapshot.statistics("traceback"):
        own = [f"{Path(fr.filename).parent.name}/{Path(fr.filename).name}:{fr.lineno}"
               for fr in reversed(stat.traceback)  # oldest first: innermost last
               if "/twinhull/" in fr.filename or "/kopf/" in fr.filename][:2]
        entry = sums.setdefault(" < ".join(own) or "-", [0, 0])
        entry[0] += stat.size
        entry[1] += stat.count
    return sorted(((k, (v[0], v[1])) for k, v in sums.items()), key=lambda kv: -kv[1][0])


def _census() -> list[tuple[str, int, int]]:
    """(type, objects, their shallow bytes) of every object the garbage collector tracks,
    most bytes first (strings, bytes and numbers are not tracked: their holders are);
    coroutines by their function (a task's and every one it awaits: kopf's pending
    workers, a round's writes), the 10 most numerous."""
    import gc
    from collections import Counter
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    coros: Counter[str] = Counter()
    for o in gc.get_objects():
        name = type(o).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(o)
        if name == "coroutine":
            coros[f"coroutine {o.__qualname__}"] += 1
    return ([(name, counts[name], size) for name, size in sizes.most_common(25)]
            + [(name, n, 0) for name, n in coros.most_common(10)])


def main() -> int:
    out = Path(sys.argv[1])
    frames = int(os.environ.get("HEAPDUMP_FRAMES", "1"))
    if frames > 0:
        tracemalloc.start(frames)

    def dump(signum: int, frame: Any) -> None:
        with out.open("a") as f:
            if frames <= 0:  # no tracemalloc: what the allocator holds and a census
                f.write(f"== {time.strftime('%H:%M:%S')} RSS {_rss_mib():.1f} MiB\n")
                f.write("-- pymalloc: " + "; ".join(_pymalloc()) + "\n")
                for name, n, size in _census():
                    f.write(f"{size / 2**20:8.1f} MiB {n:9d}  {name}\n")
                return
            snapshot = tracemalloc.take_snapshot()
            stats = snapshot.statistics("lineno")
            traced = sum(s.size for s in stats)
            f.write(f"== {time.strftime('%H:%M:%S')} traced {traced / 2**20:.1f} MiB, "
                    f"RSS {_rss_mib():.1f} MiB, traced peak "
                    f"{tracemalloc.get_traced_memory()[1] / 2**20:.1f} MiB, tracemalloc's own "
                    f"{tracemalloc.get_tracemalloc_memory() / 2**20:.1f} MiB\n")
            f.write("-- pymalloc: " + "; ".join(_pymalloc()) + "\n")
            for s in stats[:40]:
                f.write(f"{s.size / 2**20:8.1f} MiB {s.count:9d}  {s.traceback[0]}\n")
            if frames > 1:
                f.write("-- by the innermost twinhull/kopf frames\n")
                for where, (size, count) in _by_owner(snapshot)[:40]:
                    f.write(f"{size / 2**20:8.1f} MiB {count:9d}  {where}\n")

    signal.signal(signal.SIGUSR1, dump)
    from twinhull.cli import main as twinhull

    return twinhull(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
