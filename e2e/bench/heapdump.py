"""Run ``twinhull`` with tracemalloc on, and write where its Python memory is on SIGUSR1.

For the scale benchmark's ``--heap FILE``: each SIGUSR1 appends to FILE the traced total,
the process's RSS and the 40 source lines holding the most memory (one frame each, which
keeps tracemalloc's own cost low; the operator still runs slower, so time figures from
such a run are not comparable). Memory held outside Python's allocator (OpenSSL, the
allocator's free lists) is the difference between RSS and the traced total.

Run: python e2e/bench/heapdump.py FILE run --kubeconfig … (the arguments of twinhull).
"""

from __future__ import annotations

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


def main() -> int:
    out = Path(sys.argv[1])
    tracemalloc.start(1)

    def dump(signum: int, frame: Any) -> None:
        snapshot = tracemalloc.take_snapshot()
        stats = snapshot.statistics("lineno")
        traced = sum(s.size for s in stats)
        with out.open("a") as f:
            f.write(f"== {time.strftime('%H:%M:%S')} traced {traced / 2**20:.1f} MiB, "
                    f"RSS {_rss_mib():.1f} MiB\n")
            for s in stats[:40]:
                f.write(f"{s.size / 2**20:8.1f} MiB {s.count:9d}  {s.traceback[0]}\n")

    signal.signal(signal.SIGUSR1, dump)
    from twinhull.cli import main as twinhull

    return twinhull(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
