"""Two replicas and a Lease, as the chart runs the operator: the leader is SIGKILLed at
random moments of rollouts, a failover and a failback; every run ends where an undisturbed
one does, with no snapshot or decision twice, no orphaned member object, and never two
writers (the hub's audit log, by token). TWINHULL_LEADER_TRIALS rollouts (default 4) plus
one failover and failback; e2e/bench/handover.py runs many more and prints the figures."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from fleet import clusters_healthy, kubectl, wait_for
from handover import NS, Trials, never_two_writers, writes

pytestmark = pytest.mark.e2e


@pytest.fixture(autouse=True)
def healthy_lab(lab) -> None:
    wait_for(lambda: clusters_healthy(lab), timeout=60, what="every cluster Healthy")


def test_a_killed_leader_is_replaced_and_nothing_is_done_twice(lab, operator):
    since = time.time()
    trials = Trials(lab, operator, "le-trials", random.Random(int(since)))
    try:
        trials.setup()
        for _ in range(int(os.environ.get("TWINHULL_LEADER_TRIALS", "4"))):
            trials.rollout()
        trials.failover_and_back()
        trials.check_invariants()
        periods = never_two_writers(lab, since, lambda: operator.credentials)
        assert len(periods) >= 2, f"the writes came from {len(periods)} replica(s)"
    finally:
        kubectl(lab, "hub", "delete", "modeldeployment", "le-trials", "-n", NS,
                "--wait=true", "--timeout=90s", check=False)
    for trial in trials.done:
        assert trial.handover <= 15, f"handover took {trial.handover:.1f}s: {trial}"
    print("\n".join(t.line() for t in trials.done))


def test_a_frozen_leader_that_wakes_up_after_losing_the_lease_writes_nothing(lab, operator):
    """SIGSTOP the leader past its lease: the standby takes over; on SIGCONT the old
    leader's fence refuses its writes and it exits (to restart as a candidate)."""
    leader = operator.leader()
    other = next(r for r in operator.replicas if r is not leader)
    leader.process.send_signal(signal.SIGSTOP)
    frozen = time.time()
    try:
        wait_for(lambda: operator.holder() == other.identity, timeout=20,
                 what="the standby took the Lease")
        kubectl(lab, "hub", "annotate", "namespace", "default", "--overwrite",
                f"lab.twinhull.io/poke={time.time()}")  # something to do for both
        time.sleep(2)
    finally:
        leader.process.send_signal(signal.SIGCONT)
    code = leader.process.wait(timeout=20)
    assert code == 3, f"the old leader exits when it finds the Lease lost, not {code}"
    time.sleep(2)  # the audit log is written in batches
    mine = [w for w in writes(lab, frozen) if operator.credentials.get(w[1]) ==
            leader.identity]
    assert not mine, f"the old leader wrote after losing the Lease: {mine[:5]}"
    operator.replicas.remove(leader)
    operator.start_replica()  # as its Deployment would
