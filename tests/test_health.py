"""The cluster health state machine: thresholds and hysteresis."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twinhull.plan.health import Health, next_health

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def run(outcomes: str, *, fail: int = 3, recover: int = 5, start: Health | None = None):
    """Feed probe outcomes ('+' good, '-' failed) and return the phases seen."""
    health = start or Health()
    phases = []
    for i, mark in enumerate(outcomes):
        health = next_health(health, ok=mark == "+", failure_threshold=fail,
                             recovery_threshold=recover, now=T0 + timedelta(seconds=2 * i))
        phases.append(health.phase)
    return phases, health


def test_failures_below_the_threshold_never_take_a_cluster_down():
    phases, health = run("+--+--+")
    assert "Down" not in phases
    assert phases == ["Healthy", "Suspect", "Suspect", "Healthy", "Suspect", "Suspect", "Healthy"]
    assert health.failures == 0


def test_threshold_failures_in_a_row_take_it_down_and_recovery_needs_its_own_threshold():
    phases, health = run("+---" + "+++++")
    assert phases[:4] == ["Healthy", "Suspect", "Suspect", "Down"]
    assert phases[4:] == ["Recovering"] * 4 + ["Healthy"]
    assert health.since == T0 + timedelta(seconds=16)


def test_a_failure_while_recovering_is_down_again_and_restarts_the_count():
    phases, _ = run("---" + "++-" + "+++++")
    assert phases[3:6] == ["Recovering", "Recovering", "Down"]
    assert phases[-1] == "Healthy" and phases[-2] == "Recovering"


def test_since_only_moves_when_the_phase_changes():
    _, health = run("+++")
    assert health.since == T0
    _, health = run("-", start=health)
    assert health.phase == "Suspect" and health.since == T0


def test_first_probe_failing_with_threshold_one_is_down():
    phases, _ = run("-+", fail=1, recover=1)
    assert phases == ["Down", "Healthy"]
