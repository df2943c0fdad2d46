"""The planner's newer inputs: adaptive headroom from the recent peak rate, pre-warm's
check of its own forecast error, and the token floor of ``metric: queue``. Pure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twinhull.api.deployment import Scaling
from twinhull.plan.scaling import (
    ADAPTIVE_MAX_FACTOR,
    FORECAST_RATIO_MAX,
    Load,
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
