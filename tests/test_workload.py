"""Trace generation from apps.yaml (e2e/workload.py): volumes, shapes, token sizes, seeds,
and the --trace points of a compressed replay. Pure, no cluster."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

import workload as w  # noqa: E402

APPS = ROOT / "e2e" / "workloads" / "apps.yaml"
DOC = {
    "apps": [
        {"name": "aiops-platform", "calls_30d": 3035, "tokens_per_call_mean": 12115,
         "tokens_per_call_max": 89420, "weekday_calls_per_day": 112,
         "weekend_calls_per_day": 28, "daily_volatility": 0.012,
         "peaks": [{"from": "09:30", "to": "11:30", "share": 0.34},
                   {"from": "14:00", "to": "16:00", "share": 0.28}]},
        {"name": "ide-assistant", "calls_30d": 5577, "tokens_per_call_mean": 3792,
         "tokens_per_call_max": 18200, "weekday_calls_per_day": 207,
         "weekend_calls_per_day": 52, "night_calls_per_day": 18, "daily_volatility": 0.021,
         "peaks_share_total": 0.78,
         "peaks": [{"from": "09:00", "to": "10:30"}, {"from": "12:30", "to": "13:30"},
                   {"from": "15:00", "to": "17:00"}]},
        {"name": "code-review", "calls_30d": 1693, "tokens_per_call_mean": 4962,
         "tokens_per_call_max": 28500, "weekday_calls_per_day": 56,
         "weekend_calls_per_day": 11, "daily_volatility": 0.034, "pattern": "batch-pulses",
         "peaks": [{"from": "10:00", "to": "12:00"}, {"from": "16:00", "to": "18:00"}]},
        {"name": "hybrid-reasoning", "calls_30d": 328, "tokens_per_call_mean": 16341,
         "tokens_per_call_max": 58900, "calls_per_day": 11,
         "peaks": [{"from": "10:00", "to": "12:00"}, {"from": "14:00", "to": "16:00"}]},
        {"name": "unit-test-agent", "calls_30d": 196, "tokens_per_call_mean": 10204,
         "tokens_per_call_max": 32800, "calls_per_day": 6.5, "daily_volatility": 0.187,
         "pattern": "event-spikes"},
    ]
}
APPS_BY_NAME = {a.name: a for a in w.parse_apps(DOC)}


def per_day(arrivals: list[tuple[float, float]], days: int) -> list[int]:
    out = [0] * days
    for t, _ in arrivals:
        out[min(int(t // w.DAY), days - 1)] += 1
    return out


def share_between(arrivals: list[tuple[float, float]], start: str, end: str,
                  days: range) -> float:
    a, b = w._clock(start), w._clock(end)
    inside = [t for t, _ in arrivals if int(t // w.DAY) in days]
    return sum(1 for t in inside if a <= t % w.DAY < b) / len(inside)


def test_the_real_file_parses_into_the_five_apps() -> None:
    names = [a.name for a in w.load_apps(APPS)]
    assert names == list(APPS_BY_NAME)


def test_daily_call_counts_follow_weekday_and_weekend_figures() -> None:
    app = APPS_BY_NAME["aiops-platform"]
    counts = per_day(w.generate(app, 7, seed=3, load_factor=10), 7)
    for day, n in enumerate(counts[:5]):
        assert n == pytest.approx(1120, rel=0.05), day
    for n in counts[5:]:
        assert n == pytest.approx(280, rel=0.05)


@pytest.mark.parametrize("name", list(APPS_BY_NAME))
def test_weekdays_are_busier_than_weekends(name: str) -> None:
    app = APPS_BY_NAME[name]
    assert app.weekday_calls > app.weekend_calls
    counts = per_day(w.generate(app, 14, seed=1, load_factor=20), 14)
    weekdays = [n for d, n in enumerate(counts) if d % 7 < 5]
    weekends = [n for d, n in enumerate(counts) if d % 7 >= 5]
    assert statistics.mean(weekdays) > statistics.mean(weekends)


def test_a_30_day_mean_is_split_with_the_other_apps_weekend_ratio() -> None:
    app = APPS_BY_NAME["hybrid-reasoning"]
    assert (5 * app.weekday_calls + 2 * app.weekend_calls) / 7 == pytest.approx(11)


def test_stated_peak_shares_hold_on_weekdays() -> None:
    arrivals = w.generate(APPS_BY_NAME["aiops-platform"], 5, seed=2, load_factor=50)
    assert share_between(arrivals, "09:30", "11:30", range(5)) == pytest.approx(0.34, abs=0.02)
    assert share_between(arrivals, "14:00", "16:00", range(5)) == pytest.approx(0.28, abs=0.02)


def test_a_total_peak_share_is_split_by_window_length_and_night_calls_kept() -> None:
    arrivals = w.generate(APPS_BY_NAME["ide-assistant"], 5, seed=2, load_factor=50)
    total, hours = 0.78, 4.5
    assert share_between(arrivals, "09:00", "10:30", range(5)) == pytest.approx(
        total * 1.5 / hours, abs=0.02)
    assert share_between(arrivals, "15:00", "17:00", range(5)) == pytest.approx(
        total * 2 / hours, abs=0.02)
    night = (share_between(arrivals, "22:00", "23:59", range(5))
             + share_between(arrivals, "00:00", "06:00", range(5)))
    assert night == pytest.approx(18 / 207, abs=0.015)


def test_unstated_peak_shares_default_and_weekends_are_flatter() -> None:
    arrivals = w.generate(APPS_BY_NAME["hybrid-reasoning"], 7, seed=2, load_factor=200)
    weekday = (share_between(arrivals, "10:00", "12:00", range(5))
               + share_between(arrivals, "14:00", "16:00", range(5)))
    weekend = (share_between(arrivals, "10:00", "12:00", range(5, 7))
               + share_between(arrivals, "14:00", "16:00", range(5, 7)))
    assert weekday == pytest.approx(w.DEFAULT_PEAK_SHARE, abs=0.03)
    assert weekend == pytest.approx(w.DEFAULT_PEAK_SHARE * w.WEEKEND_PEAK_FACTOR, abs=0.05)


def test_batch_pulses_are_burstier_than_the_same_volume_spread() -> None:
    app = APPS_BY_NAME["code-review"]
    arrivals = w.generate(app, 1, seed=1, load_factor=50)
    peak = w.rates(arrivals, start=10 * 3600, end=12 * 3600, step=60)
    assert max(peak) > 3 * statistics.mean(peak)


def test_event_spikes_are_one_burst_a_week() -> None:
    app = APPS_BY_NAME["unit-test-agent"]
    counts = per_day(w.generate(app, 14, seed=5, load_factor=10), 14)
    for week in (counts[:7], counts[7:]):
        busiest = max(week)
        assert busiest > 5 * sorted(week)[-2]
        assert week[5] == week[6] == 0
    assert sum(counts) / 14 == pytest.approx(6.5 * 10, rel=0.3)


@pytest.mark.parametrize("name", list(APPS_BY_NAME))
def test_token_sizes_keep_the_mean_and_the_maximum(name: str) -> None:
    app = APPS_BY_NAME[name]
    sizes = w.token_sizes(app)
    assert sizes.mean() == pytest.approx(app.tokens_mean, rel=1e-6)
    arrivals = w.generate(app, 7, seed=1, load_factor=100)
    tokens = [x for _, x in arrivals]
    assert max(tokens) <= app.tokens_max
    assert statistics.mean(tokens) == pytest.approx(app.tokens_mean, rel=0.04)


def test_generation_is_deterministic_by_seed_and_a_day_is_the_same_in_any_window() -> None:
    app = APPS_BY_NAME["ide-assistant"]
    a = w.generate(app, 3, seed=7, load_factor=5)
    assert a == w.generate(app, 3, seed=7, load_factor=5)
    assert a != w.generate(app, 3, seed=8, load_factor=5)
    day2 = w.generate(app, 1, seed=7, load_factor=5, first_day=2)
    assert day2 == [x for x in a if x[0] >= 2 * w.DAY]


def test_trace_points_replay_a_window_compressed_with_real_rates() -> None:
    arrivals = {"ns/a": [(100.0, 600.0), (130.0, 600.0), (200.0, 1200.0)],
                "ns/b": [(50.0, 60.0)]}
    points = w.trace_points(arrivals, start=60.0, hours=180 / 3600, compress=60.0, step=60.0)
    assert all(set(p) == {"at", "deployment", "tokensPerSecond"} for p in points)
    a = [(p["at"], p["tokensPerSecond"]) for p in points if p["deployment"] == "ns/a"]
    # 600 tokens in each of the first two minutes (one point, held), 1,200 in the third;
    # a minute is a second at x60; a last point ends the window
    assert a == [(0.0, 10.0), (2.0, 20.0), (3.0, 0.0)]
    b = [(p["at"], p["tokensPerSecond"]) for p in points if p["deployment"] == "ns/b"]
    assert b == [(0.0, 0.0), (3.0, 0.0)]  # before the window: not replayed
    assert points == sorted(points, key=lambda p: p["at"])


def test_replay_points_name_the_examples_deployments(tmp_path: Path) -> None:
    (tmp_path / "apps.yaml").write_text(__import__("yaml").safe_dump(DOC))
    points = w.replay_points(tmp_path / "apps.yaml", ROOT / "examples", day=0, start="09:00",
                             hours=1, compress=60, load_factor=10)
    names = {p["deployment"] for p in points}
    assert names == {f"ai-platform/{n}" for n in APPS_BY_NAME}
    assert max(p["at"] for p in points) == 60  # an hour at x60
