"""The planner's newer inputs: adaptive headroom from the recent peak rate, pre-warm's
check of its own forecast error, and the token floor of ``metric: queue``. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from twinhull.api.deployment import Scaling
from twinhull.plan.scaling import (
    ADAPTIVE_MAX_FACTOR,
    FORECAST_MISS_CONFIRM_SECONDS,
    FORECAST_MISS_HOLD_SECONDS,
    FORECAST_RATIO_MAX,
    Load,
    forecast_missed,
    forecast_ratio,
    headroom_percent,
    recommend,
)
from twinhull.policy import load_file

T0 = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
CRITICAL = load_file().resolve("critical")  # headroom 20 %, stabilization 600 s
TOKENS = Scaling(target_tokens_per_second_per_replica=1000, min_replicas_per_zone=1,
                 max_replicas_per_zone=20)
QUEUE = Scaling(metric="queue", target_queue_per_replica=4,
                target_tokens_per_second_per_replica=1000, min_replicas_per_zone=1,
                max_replicas_per_zone=20)


def run(load: Load, current: int, spec: Scaling = TOKENS) -> int:
    return recommend(spec, CRITICAL, load, current=current, zones=1, history=(),
                     now=T0).replicas


def test_steady_demand_keeps_the_tiers_headroom() -> None:
    steady = Load(tokens_per_second=10_000, tokens_per_second_peak=10_100)
    assert headroom_percent(CRITICAL, steady) == CRITICAL.headroom_percent
    assert run(steady, 10) == 12  # 10k x 1.2 / 1k
    assert run(Load(tokens_per_second=10_000), 10) == 12  # no reading: the same


def test_bursty_demand_keeps_more_headroom_up_to_twice_the_tiers() -> None:
    some = Load(tokens_per_second=10_000, tokens_per_second_peak=13_000)
    assert headroom_percent(CRITICAL, some) == pytest.approx(30.0)
    assert run(some, 10) == 13
    wild = Load(tokens_per_second=10_000, tokens_per_second_peak=30_000)
    assert headroom_percent(CRITICAL, wild) == ADAPTIVE_MAX_FACTOR * CRITICAL.headroom_percent
    assert run(wild, 10) == 14  # 1.4 x 10k, not the 30k peak


def test_a_queue_behind_full_replicas_asks_for_them_all() -> None:
    # 6 replicas run 96 requests (their caches are full) and 24 wait: 7.5 replicas
    load = Load(tokens_per_second=4_000, running=96, waiting=24)
    assert run(load, 6) == 8
    # without the running count: 4.8 by tokens, the queue within 4 a replica: holds 6
    assert run(Load(tokens_per_second=4_000, waiting=24), 6) == 6


def test_a_forecast_that_was_too_high_is_scaled_down() -> None:
    # a holiday: the windows said 20k tokens/s for the last 10 minutes, 2k came
    load = Load(tokens_per_second=2_000, forecast_tokens_per_second=20_000,
                forecast_said_tokens_per_second=20_000)
    assert forecast_ratio(TOKENS, load) == pytest.approx((2_000 + 100) / (20_000 + 100))
    assert run(load, 3) == 3  # 24 replicas without the check
    assert run(Load(tokens_per_second=2_000, forecast_tokens_per_second=20_000), 3) == 7


def test_a_forecast_that_was_too_low_is_raised_within_a_bound() -> None:
    growth = Load(tokens_per_second=15_000, tokens_per_second_peak=15_000,
                  forecast_tokens_per_second=10_000, forecast_said_tokens_per_second=10_000)
    ratio = forecast_ratio(TOKENS, growth)
    assert 1.4 < ratio < 1.5
    surge = Load(tokens_per_second=50_000, forecast_tokens_per_second=10_000,
                 forecast_said_tokens_per_second=1_000)
    assert forecast_ratio(TOKENS, surge) == FORECAST_RATIO_MAX
    assert forecast_ratio(TOKENS, Load(forecast_tokens_per_second=5.0)) == 1.0


def test_queue_metric_keeps_the_token_floor_when_the_queue_empties() -> None:
    # between CI pulses the queue is empty while the batch still serves 8k tokens/s
    assert run(Load(waiting=0, tokens_per_second=8_000), 10, spec=QUEUE) == 10
    assert run(Load(waiting=0), 10, spec=QUEUE) == 10  # no window yet: holds
    result = recommend(QUEUE, CRITICAL, Load(waiting=0, tokens_per_second=8_000),
                       current=10, zones=1, history=(), now=T0)
    assert result.inputs["needed"] == pytest.approx(8_000 * 1.2 / 1000)
    empty = recommend(QUEUE, CRITICAL, Load(waiting=0), current=10, zones=1, history=(),
                      now=T0)
    assert empty.inputs["needed"] == 0
    assert run(Load(waiting=40, tokens_per_second=1_000), 4, spec=QUEUE) == 8  # 10 -> +4


def test_a_peak_missing_for_five_minutes_stands_pre_warm_down_for_the_hold() -> None:
    # 09:00: the windows said 20k tokens/s for the last 10 minutes, 2k came (a moved peak)
    missing = Load(tokens_per_second=2_000, tokens_per_second_peak=2_200,
                   forecast_tokens_per_second=20_000, forecast_said_tokens_per_second=20_000)
    assert forecast_missed(TOKENS, missing)
    first = recommend(TOKENS, CRITICAL, missing, current=3, zones=1, history=(), now=T0)
    assert first.forecast_missed_at == T0 and first.inputs["preWarmStoodDown"] is False
    assert first.inputs["forecastMissedAt"] == T0.isoformat()
    assert first.replicas == 3  # the check's ratio already scales this forecast down
    # five minutes on, still missing: pre-warm stands down until 21:00
    confirmed = recommend(TOKENS, CRITICAL, missing, current=3, zones=1, history=(),
                          now=T0 + timedelta(seconds=FORECAST_MISS_CONFIRM_SECONDS),
                          forecast_missed_at=T0)
    assert confirmed.forecast_missed_at == T0 and confirmed.inputs["preWarmStoodDown"]
    # 10:00: the windows forecast the next peak and were right so far: not pre-warmed
    ahead = Load(tokens_per_second=2_000, tokens_per_second_peak=2_100,
                 forecast_tokens_per_second=20_000, forecast_said_tokens_per_second=2_000)
    assert not forecast_missed(TOKENS, ahead)
    later = T0 + timedelta(hours=1)
    held = recommend(TOKENS, CRITICAL, ahead, current=3, zones=1, history=(), now=later,
                     forecast_missed_at=T0)
    assert held.replicas == 3 and held.forecast_missed_at == T0
    trusted = recommend(TOKENS, CRITICAL, ahead, current=3, zones=1, history=(), now=later)
    assert trusted.replicas == 7 and trusted.forecast_missed_at is None  # without the miss
    assert "pre-warm" in trusted.reason
    # the next day: trusted again
    after = T0 + timedelta(seconds=FORECAST_MISS_HOLD_SECONDS)
    again = recommend(TOKENS, CRITICAL, ahead, current=3, zones=1, history=(), now=after,
                      forecast_missed_at=T0)
    assert again.replicas == 7 and again.forecast_missed_at is None


def test_a_peak_that_comes_a_few_minutes_late_is_not_a_miss() -> None:
    # 09:30: the windows saw the onset of the earlier days' peak at 09:29; today's starts
    # at 09:31 (the false misses of e2e/bench/scaling's base days without confirmation)
    onset = Load(tokens_per_second=4_000, tokens_per_second_peak=4_500,
                 forecast_tokens_per_second=20_000, forecast_said_tokens_per_second=9_500)
    first = recommend(TOKENS, CRITICAL, onset, current=3, zones=1, history=(), now=T0)
    assert first.forecast_missed_at == T0 and not first.inputs["preWarmStoodDown"]
    came = Load(tokens_per_second=18_000, tokens_per_second_peak=18_000,
                forecast_tokens_per_second=20_000, forecast_said_tokens_per_second=20_000)
    cleared = recommend(TOKENS, CRITICAL, came, current=20, zones=1, history=(),
                        now=T0 + timedelta(minutes=2), forecast_missed_at=T0)
    assert cleared.forecast_missed_at is None and "forecastMissedAt" not in cleared.inputs
    # the next peak is pre-warmed as before
    ahead = Load(tokens_per_second=2_000, forecast_tokens_per_second=20_000,
                 forecast_said_tokens_per_second=2_000)
    assert recommend(TOKENS, CRITICAL, ahead, current=3, zones=1, history=(),
                     now=T0 + timedelta(hours=4),
                     forecast_missed_at=cleared.forecast_missed_at).replicas == 7


def test_a_stood_down_pre_warm_says_so_when_the_count_changes() -> None:
    load = Load(tokens_per_second=9_000, tokens_per_second_peak=9_000,
                forecast_tokens_per_second=30_000, forecast_said_tokens_per_second=9_000)
    result = recommend(TOKENS, CRITICAL, load, current=4, zones=1, history=(),
                       now=T0 + timedelta(hours=2), forecast_missed_at=T0)
    assert result.replicas == 8  # the measured 9k (x 1.2, limited to double), not 30k
    assert "pre-warm stands down: the earlier days' peak has been missing since 09:00 UTC" \
        in result.reason


@pytest.mark.parametrize(("said", "seen"), [
    (20_000, 12_000),  # ratio 0.6: a smaller peak than the earlier days', not a miss
    (1_500, 100),      # quiet hours: 1.4k short, under two replicas' targets
])
def test_a_smaller_peak_or_a_quiet_hour_is_not_a_miss(said: float, seen: float) -> None:
    load = Load(tokens_per_second=seen, tokens_per_second_peak=seen,
                forecast_tokens_per_second=said, forecast_said_tokens_per_second=said)
    assert not forecast_missed(TOKENS, load)
    assert recommend(TOKENS, CRITICAL, load, current=2, zones=1, history=(),
                     now=T0).forecast_missed_at is None


def test_a_miss_time_from_the_future_or_without_a_forecast_check_stands_nothing_down() -> None:
    ahead = Load(tokens_per_second=2_000, forecast_tokens_per_second=20_000)
    assert not forecast_missed(TOKENS, ahead)  # nothing said for the last minutes
    result = recommend(TOKENS, CRITICAL, ahead, current=3, zones=1, history=(), now=T0,
                       forecast_missed_at=T0 + timedelta(hours=1))  # a clock ahead
    assert result.replicas == 7 and result.forecast_missed_at is None
