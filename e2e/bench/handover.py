"""Benchmark: how fast a standby replica replaces a SIGKILLed leader, and that nothing is
done twice or left behind, over many trials (the e2e test runs a few).

Two operator replicas run as the chart's ServiceAccount, each with its own token, electing
a leader on a Lease (10 s lease, 2 s retry). Each trial SIGKILLs the leader at a random
moment of an operation and starts a replacement replica, as a Deployment would:
``--rollouts`` image changes (killed 0-8 s in) and ``--failovers`` cycles of killing west
(the leader killed 0-15 s into the failover) and reviving it (0-10 s into the failback).
Per trial: handover (SIGKILL to the other replica holding the Lease), acting (SIGKILL to
the new leader's first write, from the hub's audit log), converged (the operation's start
to the undisturbed end state). At the end: snapshots and decisions are unique, no member
object is orphaned, and the replicas' write periods never overlap.

Run: e2e/lab up && .venv/bin/python e2e/bench/handover.py [--rollouts 16] [--failovers 2]
Last line: handover_p50_s=… handover_p95_s=… acting_p50_s=… acting_p95_s=…
converged_p50_s=… trials=… writers=… two_writers=0
"""

from __future__ import annotations

import argparse
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

E2E = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(E2E))

from conftest import LAB_SCRIPT, Lab, install_chart_rbac, new_operator  # noqa: E402
from fleet import kubectl  # noqa: E402
from handover import NS, Trials, never_two_writers  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank). Pure."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--failovers", type=int, default=2,
                        help="failover-and-failback cycles (two trials each)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if subprocess.run([str(LAB_SCRIPT), "status"], capture_output=True).returncode != 0:
        sys.exit("the lab is not up: run `e2e/lab up` first")
    env = dict(shlex.split(line)[1].split("=", 1) for line in subprocess.run(
        [str(LAB_SCRIPT), "env"], capture_output=True, text=True, check=True
    ).stdout.splitlines() if line)
    lab = Lab(env)
    work = Path(tempfile.mkdtemp(prefix="twinhull-handover-"))
    operator = new_operator(lab, install_chart_rbac(lab, work), work)
    since = time.time()
    trials = Trials(lab, operator, "bench-handover", random.Random(args.seed))
    try:
        operator.start_replica()
        operator.leader()
        operator.start_replica()
        trials.setup()
        for i in range(args.rollouts):
            trials.rollout()
            print(f"{i + 1}. {trials.done[-1].line()}", flush=True)
        for i in range(args.failovers):
            trials.failover_and_back()
            for t in trials.done[-2:]:
                print(f"{i + 1}. {t.line()}", flush=True)
        trials.check_invariants()
        periods = never_two_writers(lab, since, lambda: operator.credentials)
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", "bench-handover", "-n", NS,
                "--wait=true", "--timeout=90s", check=False)
        problems = operator.stop()
        for problem in problems:
            print(problem, file=sys.stderr)
    handovers = [t.handover for t in trials.done]
    acting = [t.acting for t in trials.done if t.acting is not None]
    converged = [t.converged for t in trials.done]
    print(f"handover_p50_s={statistics.median(handovers):.1f} "
          f"handover_p95_s={percentile(handovers, 95):.1f} "
          f"acting_p50_s={statistics.median(acting):.1f} "
          f"acting_p95_s={percentile(acting, 95):.1f} "
          f"converged_p50_s={statistics.median(converged):.1f} "
          f"trials={len(trials.done)} writers={len(periods)} two_writers=0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
