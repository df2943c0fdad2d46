"""The scaling recommendation: headroom, tolerance, rate limits, stabilization, queue
correction, pre-warm, and no scale-down without metrics. Pure, simulated time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twinhull.api.deployment import Scaling
from twinhull.plan.scaling import Load, Recommendation, prewarm_windows, recommend, spread
from twinhull.policy import load_file

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CRITICAL = load_file().resolve("critical")  # headroom 20 %, stabilization 600 s
TOKENS = Scaling(target_tokens_per_second_per_replica=2500, min_replicas_per_zone=1,
                 max_replicas_per_zone=8)


def run(load: Load, current: int, spec: Scaling = TOKENS, zones: int = 4, history=()):
    return recommend(spec, CRITICAL, load, current=current, zones=zones, history=history,
                     now=T0)


@pytest.mark.parametrize(
    ("load", "current", "want"),
    [
        (Load(tokens_per_second=10_000), 4, 5),     # 10k x 1.2 / 2.5k = 4.8 -> 5
        (Load(tokens_per_second=8_700), 5, 5),      # 4.2 -> 5: no change
        (Load(tokens_per_second=22_000), 10, 10),   # 10.56: within the 10 % tolerance
        (Load(tokens_per_second=24_000), 10, 12),   # 11.52 -> 12
        (Load(tokens_per_second=100_000), 4, 8),    # needs 32 (max 32): doubling only
        (Load(tokens_per_second=100_000), 1, 5),    # +4 beats doubling from 1
        (Load(tokens_per_second=0), 4, 4),          # below the minimum (1 per zone x 4)
        (Load(tokens_per_second=1_000_000), 30, 32),  # capped at 8 per zone x 4 zones
    ],
    ids=["up", "same", "within-tolerance", "step", "doubling", "plus-four", "floor",
         "ceiling"],
)
def test_token_demand_with_headroom_and_rate_limit(load, current, want):
    assert run(load, current).replicas == want


def test_changes_within_the_tolerance_band_are_ignored():
    assert run(Load(tokens_per_second=20_500), 10).replicas == 10  # 9.84
    assert run(Load(tokens_per_second=21_500), 10).replicas == 10  # 10.32, not 11
    assert run(Load(tokens_per_second=17_000), 10).replicas == 10  # 8.16: down, but waits


def test_missing_metrics_hold_the_last_decision():
    result = run(Load(tokens_per_second=None), 7)
    assert result.replicas == 7 and not result.metrics_available
    assert "never scaling down" in result.reason


def test_scale_down_waits_for_the_stabilization_window():
    peak = (Recommendation(T0 - timedelta(seconds=300), 8),)
    held = run(Load(tokens_per_second=2_000), 8, history=peak)
    assert held.replicas == 8, "a peak 5 minutes ago keeps the count for 10 minutes"
    later = recommend(TOKENS, CRITICAL, Load(tokens_per_second=2_000), current=8, zones=4,
                      history=held.history, now=T0 + timedelta(seconds=601))
    assert later.replicas == 4


def test_queued_requests_correct_upward():
    result = run(Load(tokens_per_second=5_000, waiting=40), 4)  # 4 replicas x 4 = 16 < 40
    assert result.replicas == 8   # 2.4 -> 3 by tokens; 24 excess / 4 = +6 -> 10, limited to 8


def test_queue_metric_and_custom_metric():
    queue = Scaling(metric="queue", target_queue_per_replica=4)
    assert run(Load(waiting=21), 4, spec=queue).replicas == 6   # 5.25 -> 6
    assert not run(Load(tokens_per_second=1e6), 4, spec=queue).metrics_available
    custom = Scaling(metric="custom", query="sum(x)", target_tokens_per_second_per_replica=100)
    assert run(Load(custom=500), 4, spec=custom).replicas == 6   # 500 x 1.2 / 100


def test_scale_down_needs_a_whole_window_of_recommendations():
    result = run(Load(tokens_per_second=2_000), 8)  # no history: a restart, or the first round
    assert result.replicas == 8 and "until the 600s stabilization window" in result.reason


def test_a_forecast_raises_the_floor_before_the_peak():
    quiet = Load(tokens_per_second=1_000)
    assert run(quiet, 4).replicas == 4
    ahead = run(Load(tokens_per_second=1_000, forecast_tokens_per_second=15_000), 4)
    assert ahead.replicas == 8
    assert ahead.reason.startswith("pre-warm: the same time on earlier days needed 7.2")
    assert ahead.inputs["forecastTokensPerSecond"] == 15_000
    busy = run(Load(tokens_per_second=20_000, forecast_tokens_per_second=15_000), 4)
    assert busy.reason.startswith("load needs 9.6"), "measured load sets it: not pre-warm"


def test_a_forecast_without_a_reading_now_still_holds():
    held = run(Load(forecast_tokens_per_second=15_000), 4)
    assert held.replicas == 4 and not held.metrics_available


def test_prewarm_windows_look_back_a_day_and_a_week_a_lead_ahead():
    assert prewarm_windows() == [(86_400, 85_800), (604_800, 604_200)]
    assert prewarm_windows(60, 15) == [(60, 45), (420, 405)]
    assert prewarm_windows(10, 15, days=(1,)) == [], "a lead longer than the period: none"


def test_spread_follows_weights_and_keeps_zone_bounds():
    cells = [("east", "east-a"), ("east", "east-b"), ("west", "west-a"), ("west", "west-b")]
    assert spread(8, cells, {"east": 50, "west": 50}, low=1, high=8) == dict.fromkeys(cells, 2)
    failed = spread(8, cells, {"east": 100, "west": 0}, low=0, high=8)
    assert failed == {("east", "east-a"): 4, ("east", "east-b"): 4, ("west", "west-a"): 0,
                      ("west", "west-b"): 0}
    assert spread(3, cells, {"east": 50, "west": 50}, low=1, high=1) == dict.fromkeys(cells, 1)

rates = st.one_of(st.none(), st.floats(min_value=0, max_value=1e7, allow_nan=False))


@given(tokens=rates, waiting=rates, current=st.integers(min_value=0, max_value=40),
       ages=st.lists(st.integers(min_value=0, max_value=2000), max_size=6),
       past=st.integers(min_value=0, max_value=40))
def test_safety_properties(tokens, waiting, current, ages, past):
    history = tuple(Recommendation(T0 - timedelta(seconds=a), past) for a in sorted(ages,
                                                                                 reverse=True))
    result = run(Load(tokens_per_second=tokens, waiting=waiting), current, history=history)
    low, high = 4, 32  # 1..8 a zone x 4 zones
    assert low <= result.replicas <= high, "every outcome within the spec's bounds"
    if tokens is None:
        assert result.replicas == min(max(current, low), high)
        assert not result.metrics_available
    if result.replicas > current:
        assert result.replicas <= max(2 * current, current + 4, low)
    if result.replicas < min(current, high):  # lower than the bound asks: load decided it
        assert result.metrics_available
        assert any((T0 - r.time).total_seconds() > 600 for r in history), "window covered"
        assert result.replicas >= 4


@pytest.mark.parametrize(
    ("tokens", "current", "want"),
    [
        (68_750, 34, 32),  # needs 33.0: within 10 % of 34, but 8 a zone x 4 zones is 32
        (6_250, 3, 4),     # needs 3.0: within 10 % of 3, but 1 a zone x 4 zones is 4
        (None, 40, 32),    # no reading holds the last decision, within the bounds
    ],
    ids=["tolerance-above-max", "tolerance-below-min", "no-metrics-above-max"],
)
def test_every_outcome_is_clamped_to_the_zone_bounds(tokens, current, want):
    result = run(Load(tokens_per_second=tokens), current)
    assert result.replicas == want
    assert "kept within minReplicasPerZone..maxReplicasPerZone" in result.reason
