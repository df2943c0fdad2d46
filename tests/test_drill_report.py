"""The FailoverDrill report: Markdown post-mortem (golden file), timeline chart, JUnit XML.

Pure: the drills are dicts as read from the API; no cluster. Regenerate the golden file
with ``TWINHULL_UPDATE_GOLDEN=1``.
"""

from __future__ import annotations

import copy
import os
import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from twinhull.report import drill as report

GOLDEN = Path(__file__).resolve().parent / "golden" / "drill-report.md"
SECTIONS = ("## Basic information", "## Timeline", "## Impact per deployment",
            "## Failback steps verified", "## What the operator did",
            "## Root cause and lessons", "## Action items")


def at(seconds: int) -> str:
    """The RFC 3339 time ``seconds`` after 2026-03-01T03:00:00Z."""
    return f"2026-03-01T03:{seconds // 60:02d}:{seconds % 60:02d}Z"


def failback(t: float, restore: int, steps: list[int], share: int) -> int | None:
    """The target's weight at ``t`` during a failback with steps verified at ``steps``."""
    if t < restore:
        return None
    done = [p for p, s in zip((5, 25, 50, 100), steps, strict=True) if s <= t]
    return round(share * done[-1] / 100) if done else 0


def chat_sample(t: float) -> dict[str, Any]:
    """ml/chat: west out at 20 s, shifted by 28 s, east at 8/8 at 62 s, back by 415 s."""
    west = failback(t, 320, [335, 365, 385, 415], 50)
    if west is None:
        west = 50 if t < 28 else 0
    return {"t": t, "weights": {"west": west, "east": 100 - west, "fallback": 0},
            "ready": {"west": 4, "east": 8 if t >= 62 else 4}}


def ide_sample(t: float) -> dict[str, Any]:
    """ml/ide: shifted by 29 s, fallback 30 until east had its 6 placeable replicas at 95 s
    (2 found no GPUs), back by 420 s."""
    west = failback(t, 320, [340, 370, 390, 420], 50)
    fallback = 0
    if west is None:
        west = 50 if t < 29 else 0
        fallback = 30 if 29 <= t < 95 else 0
    east = 4 if t < 45 else 5 if t < 75 else 6
    return {"t": t, "weights": {"west": west, "east": 100 - west - fallback,
                                "fallback": fallback},
            "ready": {"west": 4, "east": east}}


def drain_drill() -> dict[str, Any]:
    """A Drain drill of cluster west: ml/chat passed, ml/ide missed its RTO and degraded."""
    ts = [15.0 * i for i in range(30)]
    return {
        "apiVersion": "serving.twinhull.io/v1alpha1",
        "kind": "FailoverDrill",
        "metadata": {"name": "west-drain-q1", "namespace": "ml", "generation": 1},
        "spec": {"target": {"cluster": "west"}, "mode": "Drain", "durationSeconds": 300,
                 "selector": {"matchLabels": {"drill": "quarterly"}}},
        "status": {
            "observedGeneration": 1, "phase": "Resolved", "verdict": "Failed",
            "severity": "P1",
            "reasons": ["ml/ide: RTO 75.0 s > target 60 s",
                        "ml/ide: degraded: 2 of 8 replicas in east found no GPUs"],
            "startTime": at(0), "faultTime": at(20), "restoreTime": at(320),
            "completionTime": at(450),
            "deployments": ["ml/chat", "ml/ide"],
            "timeline": [
                {"time": at(0), "event": "Preflight",
                 "message": "east can take 100 % of ml/chat and ml/ide"},
                {"time": at(20), "event": "FaultInjected",
                 "message": "west marked Down for 2 deployments (Drain)"},
                {"time": at(20), "event": "Detecting", "message": "west out of service"},
                {"time": at(28), "event": "TrafficShifted",
                 "message": "ml/chat: west weight 0 after 8.0 s"},
                {"time": at(29), "event": "TrafficShifted",
                 "message": "ml/ide: west weight 0 after 9.0 s, fallback 30"},
                {"time": at(29), "event": "Investigating",
                 "message": "traffic off west; survivors short of capacity"},
                {"time": at(35), "event": "ScaledUp",
                 "message": "east: ml/chat 4 -> 8, ml/ide 4 -> 8"},
                {"time": at(35), "event": "Mitigating", "message": "east scaling up"},
                {"time": at(62), "event": "CapacityReady",
                 "message": "ml/chat: east 8/8 Ready after 42.0 s"},
                {"time": at(95), "event": "CapacityReady",
                 "message": "ml/ide: east 6/6 placeable Ready after 75.0 s (2 without GPUs)"},
                {"time": at(95), "event": "Monitoring",
                 "message": "all deployments served by east"},
                {"time": at(320), "event": "FaultEnded", "message": "west back in service"},
                {"time": at(415), "event": "FailbackComplete",
                 "message": "ml/chat: west back to 50"},
                {"time": at(420), "event": "FailbackComplete",
                 "message": "ml/ide: west back to 50"},
                {"time": at(450), "event": "Resolved",
                 "message": "verdict Failed: 1 of 2 deployments failed"},
            ],
            "results": [
                {"deployment": "ml/chat", "tier": "critical", "shiftSeconds": 8.0,
                 "capacitySeconds": 42.0, "rtoSeconds": 42.0, "rtoTargetSeconds": 60,
                 "failbackSeconds": 95.0,
                 "failbackSteps": ["5% at 15.0s (4/4 Ready)", "25% at 45.0s (4/4 Ready)",
                                   "50% at 65.0s (4/4 Ready)", "100% at 95.0s (4/4 Ready)"],
                 "requestsServed": 48210.0, "requestsFailed": 37.0, "fallbackRequests": 0.0,
                 "maxErrorPercent": 0.41, "maxLatencyP95Seconds": 2.1, "withinTarget": True,
                 "expectedWeights": {"east": 100, "fallback": 0}, "verdict": "Passed",
                 "samples": [chat_sample(t) for t in ts]},
                {"deployment": "ml/ide", "tier": "critical", "shiftSeconds": 9.0,
                 "capacitySeconds": 75.0, "rtoSeconds": 75.0, "rtoTargetSeconds": 60,
                 "failbackSeconds": 100.0,
                 "failbackSteps": ["5% at 20.0s (4/4 Ready)", "25% at 50.0s (4/4 Ready)",
                                   "50% at 70.0s (4/4 Ready)", "100% at 100.0s (4/4 Ready)"],
                 "requestsServed": 21544.0, "requestsFailed": 212.0,
                 "fallbackRequests": 6120.0, "maxErrorPercent": 3.8,
                 "maxLatencyP95Seconds": 2.9, "withinTarget": True, "degraded": True,
                 "expectedWeights": {"east": 100, "fallback": 0}, "verdict": "Failed",
                 "message": "2 of 8 replicas in east found no GPUs (Insufficient "
                            "nvidia.com/gpu); fallback served 30 % until the 6 placed "
                            "replicas were Ready",
                 "samples": [ide_sample(t) for t in ts]},
            ],
        },
    }


def dry_run_drill() -> dict[str, Any]:
    """A DryRun of zone east-b of cluster east: ml/ide would be degraded, so NoGo."""
    return {
        "apiVersion": "serving.twinhull.io/v1alpha1",
        "kind": "FailoverDrill",
        "metadata": {"name": "east-b-preflight", "namespace": "ml"},
        "spec": {"target": {"cluster": "east", "zone": "east-b"}, "mode": "DryRun"},
        "status": {
            "phase": "Resolved", "verdict": "NoGo", "severity": "P2",
            "reasons": ["ml/ide: west lacks 4 GPUs: 2 of 4 replicas would stay Pending"],
            "startTime": at(0), "completionTime": at(2),
            "deployments": ["ml/chat", "ml/ide"],
            "timeline": [{"time": at(0), "event": "Preflight",
                          "message": "checking 2 deployments"},
                         {"time": at(2), "event": "Resolved", "message": "NoGo"}],
            "results": [
                {"deployment": "ml/chat", "tier": "critical",
                 "expectedWeights": {"east": 25, "west": 75, "fallback": 0}, "verdict": "Go"},
                {"deployment": "ml/ide", "tier": "standard", "degraded": True,
                 "expectedWeights": {"east": 25, "west": 55, "fallback": 20},
                 "verdict": "NoGo",
                 "message": "west lacks 4 GPUs: 2 of 4 replicas would stay Pending"},
            ],
        },
    }


def aborted_drill() -> dict[str, Any]:
    """An Outage of west aborted by the error-rate guardrail after 52 s."""
    return {
        "apiVersion": "serving.twinhull.io/v1alpha1",
        "kind": "FailoverDrill",
        "metadata": {"name": "west-outage", "namespace": "ml"},
        "spec": {"target": {"cluster": "west"}, "mode": "Outage", "durationSeconds": 600,
                 "guardrails": {"maxErrorPercent": "5"}},
        "status": {
            "phase": "Aborted", "verdict": "Aborted", "severity": "P0",
            "reasons": ["ml/chat: error rate 7.90 % > guardrail 5 % at +52 s"],
            "startTime": at(0), "faultTime": at(10), "restoreTime": at(52),
            "completionTime": at(80), "deployments": ["ml/chat"],
            "timeline": [
                {"time": at(0), "event": "Approved", "message": "approval a1b2c3"},
                {"time": at(10), "event": "FaultInjected",
                 "message": "west replicas of ml/chat scaled to 0"},
                {"time": at(10), "event": "Detecting"},
                {"time": at(16), "event": "Investigating"},
                {"time": at(52), "event": "GuardrailTripped",
                 "message": "ml/chat error rate 7.90 % > 5 %"},
                {"time": at(52), "event": "Aborted", "message": "west restored at once"},
            ],
            "results": [
                {"deployment": "ml/chat", "tier": "critical", "shiftSeconds": 6.0,
                 "rtoTargetSeconds": 60, "requestsServed": 9120.0, "requestsFailed": 720.0,
                 "maxErrorPercent": 7.9, "maxLatencyP95Seconds": 4.1, "withinTarget": False,
                 "verdict": "Failed",
                 "samples": [{"t": 0.0, "weights": {"west": 50, "east": 50},
                              "ready": {"west": 4, "east": 4}},
                             {"t": 16.0, "weights": {"west": 0, "east": 100},
                              "ready": {"west": 0, "east": 4}},
                             {"t": 52.0, "weights": {"west": 50, "east": 50},
                              "ready": {"west": 0, "east": 6}}]},
            ],
        },
    }


def passed_drill() -> dict[str, Any]:
    """The Drain drill with ml/ide at capacity in time and every replica placed."""
    d = drain_drill()
    ide = d["status"]["results"][1]
    ide.update(capacitySeconds=50.0, rtoSeconds=50.0, degraded=False, verdict="Passed",
               message="")
    d["status"].update(verdict="Passed", reasons=[])
    return d


def action_items(text: str) -> list[str]:
    section = text.split("## Action items\n\n", 1)[1]
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


# ---------------------------------------------------------------------------------------
# Markdown


def test_markdown_matches_the_golden_file():
    text = report.markdown(drain_drill())
    if os.environ.get("TWINHULL_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8"), (
        "the report differs from tests/golden/drill-report.md; if the change is intended, "
        "regenerate it with TWINHULL_UPDATE_GOLDEN=1 and review the diff")


@pytest.mark.parametrize("make", [drain_drill, dry_run_drill, aborted_drill, passed_drill])
def test_every_section_and_no_missing_value_words(make):
    text = report.markdown(make())
    positions = [text.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    assert not re.search(r"\bnan\b", text, re.IGNORECASE)
    assert text.replace("None: the drill passed every check.", "").count("None") == 0


def test_markdown_has_the_figures_of_the_drain_drill():
    text = report.markdown(drain_drill())
    assert text.startswith("# Failover drill ml/west-drain-q1: Failed\n")
    assert "| Target | cluster west |" in text
    assert "planned 300 s; actual 300.0 s (fault 2026-03-01T03:00:20Z → restore " \
           "2026-03-01T03:05:20Z)" in text
    assert "P1 (response within 1 h): the severity the same outage would have had without " \
           "failover" in text
    assert "| ml/ide | critical | 9.0 | 75.0 | 75.0 (60) | 100.0 | 21,544 | 212 | 6,120 " \
           "| 3.80 | 2.90 | yes | yes | Failed |" in text
    assert "| 2026-03-01T03:01:35Z | 95.0 | Monitoring | all deployments served by east |" \
        in text
    assert "3. +20.0 s: entered the incident state Detecting (检测中): west out of service\n" \
        in text
    assert "15. +450.0 s: entered the incident state Resolved (已解决): verdict Failed" in text
    assert text.count("检测中") == 1


def test_a_time_never_reached_after_the_fault_ended_fails():
    d = drain_drill()
    d["status"]["results"][1].update(capacitySeconds=None, rtoSeconds=None)
    text = report.markdown(d)
    assert ("raise warm capacity in east for ml/ide: the survivors never had every planned "
            "replica Ready while cluster west was out (300 s)") in action_items(text)
    suite = suite_of(report.junit(d))
    capacity = next(c for c in suite.findall("testcase")
                    if c.get("classname") == "ml/ide" and c.get("name") == "survivors at capacity")
    assert capacity.find("failure") is not None


def test_a_drill_in_progress_skips_what_is_not_measured_yet():
    d = drain_drill()
    s = d["status"]
    s.update(phase="Mitigating", verdict=None, reasons=[], restoreTime=None,
             completionTime=None, timeline=s["timeline"][:8])
    for r in s["results"]:
        r.update(failbackSeconds=None, failbackSteps=[], capacitySeconds=None,
                 rtoSeconds=None, verdict="", samples=r["samples"][:3])
    text = report.markdown(d)
    assert text.startswith("# Failover drill ml/west-drain-q1: no verdict yet (Mitigating)\n")
    assert "None" not in text
    suite = suite_of(report.junit(d))
    assert suite.get("failures") == "1"  # ml/ide is degraded already
    assert png_size(report.png(d))[0] == 1000


def test_action_items_name_the_deployment_and_the_figures():
    items = action_items(report.markdown(drain_drill()))
    assert items[0] == ("raise warm capacity in east for ml/ide: RTO 75.0 s > target 60 s "
                        "(survivors at capacity after 75.0 s)")
    assert items[1].startswith("add GPUs in east for ml/ide: east lacked GPUs for it while "
                               "cluster west was out (2 of 8 replicas in east found no GPUs")
    assert len(items) == 2


def test_a_passed_drill_has_no_action_item():
    text = report.markdown(passed_drill())
    assert action_items(text) == []
    assert "## Action items\n\nNone: the drill passed every check.\n" in text
    assert "- ml/ide: every measured check passed" in text


def test_latency_error_rate_and_an_unverified_failback_give_action_items():
    d = drain_drill()
    chat = d["status"]["results"][0]
    chat.update(withinTarget=False, maxLatencyP95Seconds=4.25, maxErrorPercent=6.5,
                failbackSeconds=None, failbackSteps=chat["failbackSteps"][:2])
    items = action_items(report.markdown(d))
    assert ("find why the failback of ml/chat never verified: the share of cluster west "
            "never came fully back (last verified step: 25% at 45.0s (4/4 Ready))") in items
    assert ("cut failed requests of ml/chat during failover: the error rate peaked at "
            "6.50 % > guardrail 5 % (37 of 48,210 requests failed)") in items
    assert ("bring the p95 latency of ml/chat within its tier's target while cluster west "
            "is out: it reached 4.25 s in east") in items


def test_missing_and_non_finite_values_print_as_a_dash():
    d = drain_drill()
    d["status"]["results"][0].update(requestsServed=None, maxErrorPercent=float("nan"),
                                     rtoSeconds=None, withinTarget=None)
    text = report.markdown(d)
    assert "| ml/chat | critical | 8.0 | 42.0 | — (60) | 95.0 | — | 37 | 0 | — | 2.10 | — " \
           "| no | Passed |" in text
    assert not re.search(r"\bnan\b", text, re.IGNORECASE) and "None" not in text


def test_dry_run_shows_the_preflight_and_the_reasons():
    text = report.markdown(dry_run_drill())
    assert text.startswith("# Failover drill ml/east-b-preflight: NoGo\n")
    assert "## Preflight" in text
    assert "| ml/ide | east 25, west 55, fallback 20 | yes | NoGo | west lacks 4 GPUs: 2 of " \
           "4 replicas would stay Pending |" in text
    assert "| ml/chat | east 25, west 75, fallback 0 | no | Go | — |" in text
    assert "- ml/ide: west lacks 4 GPUs: 2 of 4 replicas would stay Pending" in text
    assert action_items(text) == [
        "add GPUs in the other zones of east and west for ml/ide: the other zones of east and "
        "west would lack GPUs for it if zone east-b of cluster east were out (west lacks 4 "
        "GPUs: 2 of 4 replicas would stay Pending)"]


def test_a_reason_no_check_covers_is_an_action_item():
    d = dry_run_drill()
    d["status"]["reasons"].append("ml/chat: no fallback configured")
    assert action_items(report.markdown(d))[-1] == ("resolve before a live drill: ml/chat: no "
                                                    "fallback configured")


def test_aborted_drill_names_the_guardrail():
    text = report.markdown(aborted_drill())
    assert "The drill was aborted: ml/chat: error rate 7.90 % > guardrail 5 % at +52 s." \
        in text
    assert ("find the cause of the guardrail abort before the next drill: ml/chat: error "
            "rate 7.90 % > guardrail 5 % at +52 s") in action_items(text)
    assert "1. +0.0 s: received the approval: approval a1b2c3" in text


# ---------------------------------------------------------------------------------------
# Validation


def test_an_invalid_drill_is_a_value_error_naming_the_field():
    d = drain_drill()
    d["status"]["results"][0]["shiftSeconds"] = "fast"
    with pytest.raises(ValueError, match=r"status\.results\.0\.shiftSeconds"):
        report.markdown(d)
    d = drain_drill()
    d["spec"]["durationSecond"] = 300
    with pytest.raises(ValueError, match=r"spec\.durationSecond: Extra inputs"):
        report.junit(d)


def test_a_drill_without_status_is_a_value_error():
    d = drain_drill()
    del d["status"]
    for render in (report.markdown, report.junit, report.png):
        with pytest.raises(ValueError, match="ml/west-drain-q1 has no status"):
            render(d)


# ---------------------------------------------------------------------------------------
# PNG


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_png_is_a_plausible_chart_and_deterministic():
    data = report.png(drain_drill())
    width, height = png_size(data)
    assert (width, height) == (1000, 760)
    assert 20_000 < len(data) < 2_000_000
    assert b"matplotlib" not in data  # no Software chunk: no version in the bytes
    assert report.png(drain_drill()) == data


def test_png_of_many_deployments_draws_eight_rows_and_of_a_dry_run_draws_no_samples():
    d = drain_drill()
    chat = d["status"]["results"][0]
    d["status"]["results"] = [dict(chat, deployment=f"ml/chat-{i}") for i in range(11)]
    d["status"]["deployments"] = [r["deployment"] for r in d["status"]["results"]]
    assert png_size(report.png(d))[1] == round(100 * (1.2 + 3.2 * 8))
    assert png_size(report.png(dry_run_drill()))[0] == 1000


# ---------------------------------------------------------------------------------------
# JUnit


def suite_of(text: str) -> ET.Element:
    root = ET.fromstring(text)
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


@pytest.mark.parametrize("make", [drain_drill, dry_run_drill, aborted_drill, passed_drill])
def test_junit_parses_and_its_counts_match_its_testcases(make):
    suite = suite_of(report.junit(make()))
    cases = suite.findall("testcase")
    assert int(suite.get("tests", "")) == len(cases) == 6 * len(make()["status"]["results"]) + 1
    assert int(suite.get("failures", "")) == sum(c.find("failure") is not None for c in cases)
    assert int(suite.get("skipped", "")) == sum(c.find("skipped") is not None for c in cases)
    assert suite.get("errors") == "0"
    for case in [suite, *cases]:
        float(case.get("time", ""))


def test_junit_of_the_drain_drill():
    text = report.junit(drain_drill())
    assert text.startswith("<?xml version='1.0' encoding='utf-8'?>\n<testsuites")
    suite = suite_of(text)
    assert suite.get("name") == "failoverdrill ml/west-drain-q1"
    assert suite.get("timestamp") == "2026-03-01T03:00:00"
    assert suite.get("time") == "450.000"
    failed = {(c.get("classname"), c.get("name")): c.find("failure")
              for c in suite.findall("testcase") if c.find("failure") is not None}
    assert set(failed) == {("ml/ide", "survivors at capacity"), ("ml/ide", "not degraded"),
                           ("ml/west-drain-q1", "drill")}
    capacity = failed["ml/ide", "survivors at capacity"]
    assert capacity is not None
    assert capacity.get("message") == ("survivors at capacity after 75.0 s > RTO target "
                                       "60 s")
    shift = next(c for c in suite.findall("testcase")
                 if c.get("classname") == "ml/ide" and c.get("name") == "shift within RTO")
    assert shift.get("time") == "9.000"


def test_junit_of_the_aborted_drill_fails_the_drill_with_the_abort_reason():
    suite = suite_of(report.junit(aborted_drill()))
    drill = next(c for c in suite.findall("testcase") if c.get("name") == "drill")
    failure = drill.find("failure")
    assert failure is not None
    assert failure.get("message") == ("Aborted: ml/chat: error rate 7.90 % > guardrail 5 % "
                                      "at +52 s")
    outcomes = {c.get("name"): ("failed" if c.find("failure") is not None else
                                "skipped" if c.find("skipped") is not None else "passed")
                for c in suite.findall("testcase") if c.get("classname") == "ml/chat"}
    assert outcomes == {"shift within RTO": "passed", "survivors at capacity": "skipped",
                        "failback verified": "skipped", "error rate within guardrail": "failed",
                        "latency within target": "failed", "not degraded": "passed"}


def test_junit_of_a_dry_run_skips_what_it_did_not_measure():
    suite = suite_of(report.junit(dry_run_drill()))
    skipped = [c for c in suite.findall("testcase") if c.find("skipped") is not None]
    assert len(skipped) == 10
    assert suite.get("failures") == "2"  # ml/ide degraded, and the NoGo drill


def test_rendering_does_not_change_the_input():
    d = drain_drill()
    before = copy.deepcopy(d)
    report.markdown(d)
    report.junit(d)
    assert d == before
