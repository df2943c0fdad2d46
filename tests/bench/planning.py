"""Benchmark: one fleet round's planning when every deployment decides at once.

N best-effort ModelDeployments of 4 GPUs a replica, one in each of two zones of east and
of west; west is Down, so every one fails over into east (which has GPUs for all) and
decides in the same round, as when a member is lost. Each decision keeps the ledger it
found (``DeploymentPlan.basis``) for its audit record, so a record can be replayed alone.

Reports the time :func:`twinhull.plan.fleet.plan_fleet` takes, the peak of Python's
memory during it (tracemalloc, so the time is slower than in the operator), and the
bytes of the ledger bases as the audit records encode them (JSON, before gzip).

Run: .venv/bin/python tests/bench/planning.py [--deployments N] [--runs R]
Last line: deployments=N plan_s=<median> traced_peak_mib=<max> basis_bytes_per_record=<mean>
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import tracemalloc
from datetime import UTC, datetime

from pydantic import TypeAdapter

from twinhull.api import ModelDeployment
from twinhull.plan.fleet import ClusterView, DeploymentInput, LedgerState, plan_fleet
from twinhull.policy import load_file

NOW = datetime(2026, 12, 1, tzinfo=UTC)
LEDGER = TypeAdapter(LedgerState)


def fleet(count: int) -> list[DeploymentInput]:
    tiers = load_file()
    out = []
    for i in range(count):
        md = ModelDeployment.model_validate({
            "metadata": {"name": f"batch-{i:04}", "namespace": "bench"},
            "spec": {"slaTier": "best-effort",
                     "model": {"name": "m", "image": "i", "resources": {"gpus": 4}},
                     "placement": [{"cluster": c, "zones": {f"{c}-a": 1, f"{c}-b": 1}}
                                   for c in ("east", "west")]}})
        out.append(DeploymentInput(namespace="bench", name=md.metadata.name or "",
                                   spec=md.spec, tier=tiers.resolve("best-effort")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deployments", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    n = args.deployments
    deployments = fleet(n)
    clusters = {
        "east": ClusterView(name="east", phase="Healthy", gpus=16 * n,
                            zones_ready={"east-a": True, "east-b": True}),
        "west": ClusterView(name="west", phase="Down", gpus=16 * n,
                            zones_ready={"west-a": True, "west-b": True}),
    }
    times, peaks = [], []
    plans = {}
    for run in range(args.runs):
        tracemalloc.start()
        began = time.perf_counter()
        plans = plan_fleet(deployments, clusters, now=NOW)
        times.append(time.perf_counter() - began)
        peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()
        print(f"run {run + 1}: {times[-1]:.2f}s, traced peak {peaks[-1]:.1f} MiB", flush=True)
    bases = [p.basis for p in plans.values() if p.basis is not None]
    deciding = sum(1 for p in plans.values() if p.decisions)
    sizes = [len(json.dumps(LEDGER.dump_python(b, mode="json"))) for b in bases]
    print(f"{deciding} of {n} deployments decided; {len(bases)} ledger bases, "
          f"{sum(sizes) / 2**20:.1f} MiB of JSON in all, largest {max(sizes, default=0)} B")
    print(f"deployments={n} plan_s={statistics.median(times):.2f} "
          f"traced_peak_mib={max(peaks):.1f} "
          f"basis_bytes_per_record={statistics.fmean(sizes) if sizes else 0:.0f}")


if __name__ == "__main__":
    main()
