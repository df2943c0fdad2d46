"""Benchmark: `twinhull validate` on 1,000 manifests (goal: under 2 s on the dev machine).

Writes 1,000 ModelDeployments and ServingClusters, built from the examples with distinct
names, into 100 files of a temporary directory, then times the whole command (process
start included) over several runs and reports the median.

Run: .venv/bin/python tests/bench/validate.py [--runs N]
Last line: manifests=1000 validate_s=<median seconds> (plus min/max).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ["ide-assistant", "aiops-platform", "code-review", "hybrid-reasoning",
             "unit-test-agent"]


def write_corpus(directory: Path, count: int) -> None:
    """Write ``count`` manifests (9 ModelDeployments : 1 ServingCluster pair) in 100 files."""
    templates = [(ROOT / "examples" / f"{t}.yaml").read_text() for t in TEMPLATES]
    clusters = (ROOT / "examples" / "clusters.yaml").read_text()
    per_file = count // 100
    written = 0
    for f in range(100):
        docs = [clusters]
        written += 2
        while written < (f + 1) * per_file:
            text = templates[written % len(templates)]
            docs.append(text.replace("name: ", f"name: n{written}-", 1))
            written += 1
        (directory / f"batch-{f:03}.yaml").write_text("\n---\n".join(docs))
    assert written == count, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_corpus(Path(tmp), args.count)
        cmd = [sys.executable, "-m", "twinhull.cli", "validate", tmp]
        times = []
        for run in range(args.runs):
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True)
            times.append(time.perf_counter() - start)
            if result.returncode != 0:
                sys.exit(f"validate failed (exit {result.returncode}):\n{result.stdout}"
                         f"{result.stderr}")
            print(f"run {run + 1}: {times[-1]:.3f}s  {result.stderr.strip()}")
    print(f"manifests={args.count} validate_s={statistics.median(times):.3f} "
          f"min_s={min(times):.3f} max_s={max(times):.3f} runs={args.runs}")


if __name__ == "__main__":
    main()
