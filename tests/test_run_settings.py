"""`twinhull run`'s settings from the command line (pure: nothing runs)."""

from __future__ import annotations

import pytest

from twinhull.cli import parser


def test_max_workers_defaults_to_a_bound_and_takes_a_positive_whole_number() -> None:
    assert parser().parse_args(["run"]).max_workers == 20
    assert parser().parse_args(["run", "--max-workers", "5"]).max_workers == 5


@pytest.mark.parametrize("value", ["0", "-3", "ten", "2.5"])
def test_a_max_workers_that_is_not_a_positive_whole_number_is_refused(
        value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parser().parse_args(["run", "--max-workers", value])
    assert raised.value.code == 2
    assert "--max-workers" in capsys.readouterr().err


def test_heartbeat_defaults_to_five_minutes_and_zero_turns_it_off() -> None:
    assert parser().parse_args(["run"]).heartbeat == 300.0
    assert parser().parse_args(["run", "--heartbeat", "0"]).heartbeat == 0.0
    assert parser().parse_args(["run", "--heartbeat=45.5"]).heartbeat == 45.5


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_a_heartbeat_that_is_not_a_number_of_seconds_is_refused(
        value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parser().parse_args(["run", f"--heartbeat={value}"])
    assert raised.value.code == 2
    assert "--heartbeat" in capsys.readouterr().err


def test_the_rate_window_defaults_to_a_minute_and_takes_a_promql_duration() -> None:
    assert parser().parse_args(["run"]).rate_window == "1m"
    assert parser().parse_args(["run", "--rate-window", "1m30s"]).rate_window == "1m30s"


@pytest.mark.parametrize("value", ["5", "0s", "1 m", "5m;drop", "five"])
def test_a_rate_window_that_is_not_a_promql_duration_is_refused(
        value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        parser().parse_args(["run", "--rate-window", value])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "--rate-window" in err and "PromQL duration" in err
