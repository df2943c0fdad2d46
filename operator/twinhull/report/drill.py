"""The report of a FailoverDrill: a post-mortem in Markdown, a timeline chart and JUnit XML.

Pure: each function takes the drill as the plain dict read from the Kubernetes API
(``metadata``, ``spec``, ``status``; camelCase fields), validates it with
:class:`~twinhull.api.drill.FailoverDrill` and returns text or bytes. Nothing is read or
written. :func:`png` needs matplotlib (the ``report`` extra) and imports it only when
called; it draws on its own Agg canvas and touches no pyplot state.

The checks, decided once here and shared by the three renderings, per deployment:

* **shift within RTO**: the target's weight reached 0 within the tier's ``rtoSeconds``.
* **survivors at capacity**: the survivors had every planned replica Ready within it.
* **failback verified**: the target's share came fully back through the tier's steps.
* **error rate within guardrail**: the highest error rate stayed within
  ``spec.guardrails.maxErrorPercent``.
* **latency within target**: the 95th-percentile latency stayed within the tier's target.
* **not degraded**: every replica found GPUs while the target was out.

A check with no value to judge (``None``, NaN, a dry run, an aborted drill) is skipped,
never passed; but once the fault has ended (not by an abort), a shift or capacity never
measured was never reached, and fails; so does a failback once the drill is over.

The timeline events the report knows (others are shown as written): the incident states
``Detecting``, ``Investigating``, ``Mitigating``, ``Monitoring``, ``Resolved``, and the
operator's steps in :data:`STEPS`.
"""

from __future__ import annotations

import io
import math
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from twinhull.api.drill import DrillResult, FailoverDrill, FailoverDrillStatus

if TYPE_CHECKING:
    from matplotlib.axes import Axes

DASH = "—"
"""How a missing value prints."""

INCIDENT_STATES: dict[str, str] = {
    "Detecting": "检测中",
    "Investigating": "调查中",
    "Mitigating": "修复中",
    "Monitoring": "监控中",
    "Resolved": "已解决",
}
"""The incident states of the incident process, with their names there."""

RESPONSE_TIMES: dict[str, str] = {"P0": "30 min", "P1": "1 h", "P2": "4 h", "P3": "24 h"}
"""How soon the incident process responds to each severity."""

STEPS: dict[str, str] = {
    "Preflight": "checked that the survivors could take over (preflight)",
    "WaitingForApproval": "waited for approval of the Outage",
    "Approved": "received the approval",
    "FaultInjected": "took the target out of service",
    "TrafficShifted": "shifted traffic off the target",
    "ScaledUp": "scaled the survivors up",
    "CapacityReady": "saw the survivors at planned capacity",
    "GuardrailTripped": "stopped the drill on a guardrail",
    "FaultEnded": "brought the target back and began failback",
    "FailbackStep": "verified a failback step",
    "FailbackComplete": "completed failback",
    "Aborted": "aborted the drill and returned traffic without a ramp",
    "Refused": "refused to run the drill",
    "Started": "started a scheduled run",
    "Skipped": "skipped a scheduled run",
}
"""Timeline events of the operator's own steps, in words."""

MODES: dict[str, str] = {
    "DryRun": "checks whether the survivors could take over; changes nothing",
    "Drain": "traffic only: the target's replicas kept running",
    "Outage": "traffic and replicas: the target's replicas of the scope scaled to 0",
}

FAILING_VERDICTS = frozenset({"Failed", "Aborted", "Refused", "NoGo"})
"""Drill verdicts that fail the ``drill`` testcase."""

MAX_CHART_ROWS = 8
"""Deployments drawn in the chart; the rest are named as omitted."""

CHECKS = ("shift within RTO", "survivors at capacity", "failback verified",
          "error rate within guardrail", "latency within target", "not degraded")
"""The per-deployment checks, in report order."""

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Check:
    """One check of one deployment."""

    deployment: str
    name: str
    outcome: Outcome
    detail: str
    """Why it passed, failed or was skipped, in words."""
    seconds: float = 0.0
    """The time it measured (shift, capacity, failback), else 0."""
    action: str = ""
    """For a failure: the action item it gives."""


@dataclass(frozen=True)
class _Drill:
    """A validated drill with what every rendering needs."""

    model: FailoverDrill
    status: FailoverDrillStatus
    key: str
    """NAMESPACE/NAME."""
    start: datetime | None

    @property
    def live(self) -> bool:
        return self.model.spec.mode != "DryRun"

    @property
    def target(self) -> str:
        t = self.model.spec.target
        return f"zone {t.zone} of cluster {t.cluster}" if t.zone else f"cluster {t.cluster}"

    def offset(self, time: str | None) -> float | None:
        """Seconds from the drill's start to ``time``; None if either is unknown."""
        at = _time(time)
        if at is None or self.start is None:
            return None
        return (at - self.start).total_seconds()


# ---------------------------------------------------------------------------------------
# Public functions


def markdown(drill: Mapping[str, Any]) -> str:
    """The post-mortem of a drill in Markdown (English). Pure.

    Raises ValueError naming the field when ``drill`` is not a valid FailoverDrill or has
    no status yet.
    """
    d = _parse(drill)
    checks = _checks(d)
    s = d.status
    out: list[str] = [f"# Failover drill {d.key}: {_verdict(d)}", ""]
    out += _basic_information(d)
    out += ["## Timeline", ""]
    if s.timeline:
        out += ["| Time | +s | Event | Message |", "|---|---:|---|---|"]
        out += [f"| {_cell(e.time)} | {_num(d.offset(e.time))} | {_cell(e.event)} "
                f"| {_cell(e.message)} |" for e in s.timeline]
    else:
        out.append("No events recorded.")
    out.append("")
    if not d.live:
        out += _preflight(d)
    out += _impact(d)
    out += _failback(d)
    out += _operator_steps(d)
    out += _lessons(d, checks)
    out += ["## Action items", ""]
    actions = _actions(d, checks)
    out += [f"- {a}" for a in actions] or ["None: the drill passed every check."]
    out.append("")
    return "\n".join(out)


def junit(drill: Mapping[str, Any]) -> str:
    """The drill's checks as JUnit XML: one ``<testsuite>`` with a ``<testcase>`` per
    deployment per check and one ``drill`` testcase for the verdict. Pure.

    Raises ValueError like :func:`markdown`.
    """
    d = _parse(drill)
    cases: list[ET.Element] = []
    for c in _checks(d):
        case = ET.Element("testcase", classname=c.deployment, name=c.name,
                          time=_seconds(c.seconds))
        _outcome(case, c.outcome, c.detail, c.name)
        cases.append(case)
    duration = _duration(d)
    verdict = d.status.verdict
    case = ET.Element("testcase", classname=d.key, name="drill", time=_seconds(duration))
    reasons = "; ".join(d.status.reasons) or "no reason given"
    if verdict is None:
        _outcome(case, "skipped", f"no verdict yet (phase {d.status.phase})", "drill")
    elif verdict in FAILING_VERDICTS:
        _outcome(case, "failed", f"{verdict}: {reasons}", "drill")
    else:
        ET.SubElement(case, "system-out").text = f"{verdict}: {reasons}"
    cases.append(case)

    failures = sum(c.find("failure") is not None for c in cases)
    skipped = sum(c.find("skipped") is not None for c in cases)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0",
              "skipped": str(skipped), "time": _seconds(duration)}
    root = ET.Element("testsuites", {"name": f"failoverdrill {d.key}", **counts})
    suite = ET.SubElement(root, "testsuite", {"name": f"failoverdrill {d.key}", **counts})
    if d.start is not None:
        suite.set("timestamp", d.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    props = ET.SubElement(suite, "properties")
    spec = d.model.spec
    for name, value in (("mode", spec.mode), ("target", d.target),
                        ("durationSeconds", str(spec.duration_seconds)),
                        ("verdict", verdict or ""), ("severity", d.status.severity or "")):
        ET.SubElement(props, "property", name=name, value=value)
    suite.extend(cases)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def png(drill: Mapping[str, Any]) -> bytes:
    """A timeline chart of the drill as PNG bytes. Pure (draws on a private Agg canvas).

    Per deployment in scope (at most :data:`MAX_CHART_ROWS`): the published traffic weight
    per cluster and fallback as step lines, and below it the Ready primary replicas per
    cluster, over seconds since the start; the fault shaded as "target out" and the
    incident states as labelled vertical lines. The PNG carries no software version, so the
    same drill gives the same bytes with the same matplotlib and fonts.

    Raises ValueError like :func:`markdown`; ImportError without matplotlib.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    d = _parse(drill)
    results = {r.deployment: r for r in d.status.results}
    names = _in_scope(d)
    shown, omitted = names[:MAX_CHART_ROWS], names[MAX_CHART_ROWS:]
    colors = _colors(d)
    fault, restore = d.offset(d.status.fault_time), d.offset(d.status.restore_time)
    times = [d.offset(e.time) for e in d.status.timeline]
    times += [d.offset(d.status.restore_time), d.offset(d.status.completion_time)]
    end = max([0.0, *[x.t for r in d.status.results for x in r.samples],
               *[t for t in times if t is not None]])
    states = [(t, e.event) for e in d.status.timeline
              if e.event in INCIDENT_STATES and (t := d.offset(e.time)) is not None]

    rows = max(1, len(shown))
    fig = Figure(figsize=(10, 1.2 + 3.2 * rows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(2 * rows, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": [3, 1.3] * rows})
    axes: list[Axes] = [a for row in grid for a in row]
    spec = d.model.spec
    fig.suptitle(f"Failover drill {d.key}: {_verdict(d)} ({spec.mode} of {d.target})")
    note = f"   ({len(omitted)} more omitted: {', '.join(omitted)})" if omitted else ""
    fig.supxlabel(f"t (seconds since the drill started){note}", fontsize=9)

    for i in range(rows):
        weights_ax, ready_ax = axes[2 * i], axes[2 * i + 1]
        name = shown[i] if shown else ""
        result = results.get(name)
        samples = sorted(result.samples, key=lambda x: x.t) if result else []
        weights_ax.set_title(name or "no deployments in scope", loc="left", fontsize=10)
        weights_ax.set_ylabel("weight")
        ready_ax.set_ylabel("Ready")
        for ax in (weights_ax, ready_ax):
            if fault is not None:
                ax.axvspan(fault, restore if restore is not None else end, color="#d62728",
                           alpha=0.08, label="target out" if ax is weights_ax else None)
            for t, _ in states:
                ax.axvline(t, color="#555555", linewidth=0.8, linestyle=":")
            ax.grid(True, alpha=0.3)
        for t, event in states:
            weights_ax.text(t, 0.98, f" {event}", transform=weights_ax.get_xaxis_transform(),
                            rotation=90, va="top", ha="right", fontsize=7, color="#333333")
        if not samples:
            empty = "no samples recorded"
            if result is not None and result.expected_weights:
                empty += (f"\nexpected weights with the target out: "
                          f"{_weights(result.expected_weights)}")
            weights_ax.text(0.5, 0.5, empty, transform=weights_ax.transAxes, ha="center",
                            va="center", color="#555555")
        ts = [x.t for x in samples]
        for key in _keys(x.weights for x in samples):
            weights_ax.step(*_held(ts, [x.weights.get(key, 0) for x in samples], end),
                            where="post", color=colors.get(key, "#7f7f7f"),
                            linestyle="--" if key == "fallback" else "-", label=key)
        for key in _keys(x.ready for x in samples):
            ready_ax.step(*_held(ts, [x.ready.get(key, 0) for x in samples], end),
                          where="post", color=colors.get(key, "#7f7f7f"), label=key)
        weights_ax.set_ylim(bottom=0)
        ready_ax.set_ylim(bottom=0)
        ready_ax.yaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
        if weights_ax.get_legend_handles_labels()[0]:
            weights_ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    axes[-1].set_xlim(0, max(end, 1.0))

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# Validation and formatting


def _parse(drill: Mapping[str, Any]) -> _Drill:
    """Validate ``drill``; ValueError with each bad field's path (camelCase) otherwise."""
    try:
        model = FailoverDrill.model_validate(drill)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(object)'}: {err['msg']}"
            for err in e.errors())
        raise ValueError(f"not a valid FailoverDrill: {problems}") from None
    meta = model.metadata
    if not meta.name or not meta.namespace:
        raise ValueError("not a valid FailoverDrill: metadata.name and metadata.namespace "
                         "are required")
    key = f"{meta.namespace}/{meta.name}"
    if model.status is None:
        raise ValueError(f"FailoverDrill {key} has no status: the drill has not started, "
                         "there is nothing to report")
    status = model.status
    start = _time(status.start_time)
    if start is None and status.timeline:
        start = _time(status.timeline[0].time)
    return _Drill(model=model, status=status, key=key, start=start)


def _time(value: str | None) -> datetime | None:
    """An RFC 3339 time, or None when absent or unreadable."""
    if not value:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _num(value: float | None, digits: int = 1) -> str:
    v = _finite(value)
    return DASH if v is None else f"{v:.{digits}f}"


def _count(value: float | None) -> str:
    v = _finite(value)
    return DASH if v is None else f"{v:,.0f}"


def _flag(value: bool | None) -> str:
    return DASH if value is None else ("yes" if value else "no")


def _seconds(value: float | None) -> str:
    v = _finite(value)
    return f"{max(v, 0.0) if v is not None else 0.0:.3f}"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|") or DASH


def _verdict(d: _Drill) -> str:
    return d.status.verdict or f"no verdict yet ({d.status.phase})"


def _duration(d: _Drill) -> float | None:
    """Seconds from the start to the completion (or the last known moment)."""
    s = d.status
    for end in (s.completion_time, s.restore_time, s.timeline[-1].time if s.timeline else None):
        offset = d.offset(end)
        if offset is not None:
            return offset
    return None


def _weights(weights: Mapping[str, int]) -> str:
    keys = sorted(weights, key=lambda k: (k == "fallback", k))
    return ", ".join(f"{k} {weights[k]}" for k in keys) or DASH


def _keys(maps: Iterable[Mapping[str, Any]]) -> list[str]:
    """The keys of several maps, clusters sorted and ``fallback`` last."""
    keys: set[str] = set()
    for m in maps:
        keys.update(m)
    return sorted(keys, key=lambda k: (k == "fallback", k))


def _in_scope(d: _Drill) -> list[str]:
    """The deployments in scope, then any result not listed there."""
    names = list(d.status.deployments)
    names += [r.deployment for r in d.status.results if r.deployment not in names]
    return names


def _survivors(d: _Drill, r: DrillResult) -> str:
    """The clusters that took the target's share of ``r``, in words."""
    target = d.model.spec.target
    clusters = set(r.expected_weights)
    for x in r.samples:
        clusters.update(x.weights, x.ready)
    clusters.discard("fallback")
    clusters.discard(target.cluster)
    names = sorted(clusters)
    if target.zone is not None:
        names.insert(0, f"the other zones of {target.cluster}")
    return " and ".join(names) or "the surviving clusters"


def _held(ts: list[float], values: list[int], end: float) -> tuple[list[float], list[float]]:
    """Step-line data: each value holds until the next sample, the last one until ``end``."""
    ys = [float(v) for v in values]
    if ts and ts[-1] < end:
        return [*ts, end], [*ys, ys[-1]]
    return ts, ys


def _colors(d: _Drill) -> dict[str, str]:
    palette = ("#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
               "#bcbd22", "#d62728")
    clusters = _keys(m for r in d.status.results for x in r.samples for m in (x.weights,
                                                                              x.ready))
    colors = {c: palette[i % len(palette)] for i, c in
              enumerate(c for c in clusters if c != "fallback")}
    colors["fallback"] = "#7f7f7f"
    return colors


def _outcome(case: ET.Element, outcome: Outcome, detail: str, kind: str) -> None:
    if outcome == "failed":
        ET.SubElement(case, "failure", message=detail, type=kind).text = detail
    elif outcome == "skipped":
        ET.SubElement(case, "skipped", message=detail)
    else:
        ET.SubElement(case, "system-out").text = detail


# ---------------------------------------------------------------------------------------
# Checks


def _checks(d: _Drill) -> list[Check]:
    """Every check of every deployment with a result, in report order."""
    return [c for r in d.status.results for c in _result_checks(d, r)]


def _result_checks(d: _Drill, r: DrillResult) -> list[Check]:
    dep, target, survivors = r.deployment, d.target, _survivors(d, r)
    if not d.live:
        skip = "dry run: nothing was failed over or measured"
        checks = [Check(dep, name, "skipped", skip) for name in CHECKS[:-1]]
        if r.degraded:
            checks.append(Check(
                dep, "not degraded", "failed",
                f"degraded: {r.message or 'some replicas would find no GPUs'}",
                action=f"add GPUs in {survivors} for {dep}: {survivors} would lack GPUs "
                       f"for it if {target} were out ({r.message or 'see its message'})"))
        else:
            checks.append(Check(dep, "not degraded", "passed",
                                "every replica would find GPUs"))
        return checks

    goal = r.rto_target_seconds
    rto = _finite(r.rto_seconds)
    shift, capacity = _finite(r.shift_seconds), _finite(r.capacity_seconds)
    if rto is None and shift is not None and capacity is not None:
        rto = max(shift, capacity)
    # Once the fault has ended (and not by an abort), a time never measured was never reached.
    ended = d.status.restore_time is not None and d.status.verdict != "Aborted"
    out = f"while {target} was out ({d.model.spec.duration_seconds} s)"
    checks = []

    if shift is None and ended:
        checks.append(Check(
            dep, CHECKS[0], "failed", f"traffic never left {target} {out}",
            action=f"find why traffic of {dep} never left {target} {out}"))
    elif shift is None or goal is None:
        checks.append(Check(dep, CHECKS[0], "skipped",
                            "no RTO target" if goal is None else "no shift measured"))
    elif shift > goal:
        checks.append(Check(
            dep, CHECKS[0], "failed", f"shift {shift:.1f} s > RTO target {goal} s", shift,
            f"speed up the traffic shift for {dep}: the weight of {target} reached 0 "
            f"after {shift:.1f} s > target {goal} s"))
    else:
        checks.append(Check(dep, CHECKS[0], "passed",
                            f"shift {shift:.1f} s <= RTO target {goal} s", shift))

    if capacity is None and ended:
        checks.append(Check(
            dep, CHECKS[1], "failed", f"the survivors never had every planned replica Ready "
            f"{out}",
            action=f"raise warm capacity in {survivors} for {dep}: the survivors never had "
                   f"every planned replica Ready {out}"))
    elif capacity is None or goal is None:
        checks.append(Check(dep, CHECKS[1], "skipped",
                            "no RTO target" if goal is None else "no capacity time measured"))
    elif capacity > goal:
        checks.append(Check(
            dep, CHECKS[1], "failed",
            f"survivors at capacity after {capacity:.1f} s > RTO target {goal} s", capacity,
            f"raise warm capacity in {survivors} for {dep}: RTO {_num(rto)} s > target "
            f"{goal} s (survivors at capacity after {capacity:.1f} s)"))
    else:
        checks.append(Check(dep, CHECKS[1], "passed",
                            f"survivors at capacity after {capacity:.1f} s <= RTO target "
                            f"{goal} s", capacity))

    checks.append(_failback_check(d, r))

    error, limit = _finite(r.max_error_percent), float(d.model.spec.guardrails.max_error_percent)
    if error is None:
        checks.append(Check(dep, CHECKS[3], "skipped", "no error rate measured"))
    elif error > limit:
        checks.append(Check(
            dep, CHECKS[3], "failed", f"max error {error:.2f} % > guardrail {limit:g} %",
            action=f"cut failed requests of {dep} during failover: the error rate peaked at "
                   f"{error:.2f} % > guardrail {limit:g} % ({_count(r.requests_failed)} of "
                   f"{_count(r.requests_served)} requests failed)"))
    else:
        checks.append(Check(dep, CHECKS[3], "passed",
                            f"max error {error:.2f} % <= guardrail {limit:g} %"))

    p95 = _num(r.max_latency_p95_seconds, 2)
    if r.within_target is None:
        checks.append(Check(dep, CHECKS[4], "skipped", "no latency measured"))
    elif not r.within_target:
        checks.append(Check(
            dep, CHECKS[4], "failed", f"p95 latency out of the tier's target (max {p95} s)",
            action=f"bring the p95 latency of {dep} within its tier's target while {target} "
                   f"is out: it reached {p95} s in {survivors}"))
    else:
        checks.append(Check(dep, CHECKS[4], "passed",
                            f"p95 latency within the tier's target (max {p95} s)"))

    if r.degraded:
        checks.append(Check(
            dep, CHECKS[5], "failed",
            f"degraded: {r.message or 'some replicas found no GPUs'}",
            action=f"add GPUs in {survivors} for {dep}: {survivors} lacked GPUs for it while "
                   f"{target} was out ({r.message or 'see its message'})"))
    else:
        checks.append(Check(dep, CHECKS[5], "passed", "every replica found GPUs"))
    return checks


def _failback_check(d: _Drill, r: DrillResult) -> Check:
    dep, steps = r.deployment, r.failback_steps
    back = _finite(r.failback_seconds)
    last = f"last verified step: {steps[-1]}" if steps else "no step verified"
    if back is not None:
        return Check(dep, CHECKS[2], "passed",
                     f"back in full after {back:.1f} s ({len(steps)} steps verified)", back)
    if d.status.verdict == "Aborted":
        return Check(dep, CHECKS[2], "skipped", "aborted: traffic returned without a ramp")
    if d.status.completion_time is None and d.status.phase != "Resolved":
        return Check(dep, CHECKS[2], "skipped", "the drill is not over yet")
    return Check(dep, CHECKS[2], "failed", f"failback not verified ({last})",
                 action=f"find why the failback of {dep} never verified: the share of "
                        f"{d.target} never came fully back ({last})")


def _actions(d: _Drill, checks: Sequence[Check]) -> list[str]:
    """One action item per failure: checks first, then the drill's own reasons."""
    failed = [c for c in checks if c.outcome == "failed"]
    actions = [c.action for c in failed]
    verdict, reasons = d.status.verdict, d.status.reasons
    if verdict == "Aborted":
        return actions + [f"find the cause of the guardrail abort before the next drill: {r}"
                          for r in reasons]
    # A reason about a deployment whose failed checks gave action items says nothing new.
    covered = {c.deployment for c in failed}
    reasons = [r for r in reasons if not any(r.startswith((f"{dep}:", f"{dep} ("))
                                             for dep in covered)]
    if verdict in ("Refused", "NoGo"):
        actions += [f"resolve before a live drill: {r}" for r in reasons]
    elif verdict == "Failed":
        actions += [f"resolve: {r}" for r in reasons]
    return actions


# ---------------------------------------------------------------------------------------
# Sections


def _basic_information(d: _Drill) -> list[str]:
    s, spec = d.status, d.model.spec
    fault, restore = s.fault_time, s.restore_time
    fault_at, restore_at = _time(fault), _time(restore)
    actual = (restore_at - fault_at).total_seconds() if fault_at and restore_at else None
    duration = f"planned {spec.duration_seconds} s; actual "
    duration += DASH if actual is None else f"{actual:.1f} s"
    if fault:
        duration += f" (fault {fault} → restore {restore or 'not restored'})"
    severity = DASH
    if s.severity:
        severity = (f"{s.severity} (response within {RESPONSE_TIMES[s.severity]}): the "
                    "severity the same outage would have had without failover")
    lines = [
        "## Basic information", "",
        "| Item | Value |", "|---|---|",
        f"| Target | {_cell(d.target)} |",
        f"| Mode | {spec.mode} ({MODES[spec.mode]}) |",
        f"| Duration | {_cell(duration)} |",
        f"| Started | {_cell(s.start_time or '')} |",
        f"| Ended | {_cell(s.completion_time or '')} |",
        f"| Phase | {s.phase} |",
        f"| Severity | {severity} |",
        f"| Deployments in scope | {_cell(', '.join(_in_scope(d)))} |",
        f"| Verdict | {_verdict(d)} |",
        "",
    ]
    if s.report:
        lines += [f"Summary: {' '.join(s.report.split())}", ""]
    lines += ["Reasons:", ""]
    lines += [f"- {' '.join(r.split())}" for r in s.reasons] or ["- none given"]
    lines.append("")
    return lines


def _preflight(d: _Drill) -> list[str]:
    lines = ["## Preflight", ""]
    if not d.status.results:
        return [*lines, "No deployment was checked.", ""]
    lines += ["| Deployment | Expected weights with the target out | Degraded | Verdict "
              "| Message |", "|---|---|---|---|---|"]
    lines += [f"| {_cell(r.deployment)} | {_weights(r.expected_weights)} | {_flag(r.degraded)} "
              f"| {r.verdict or DASH} | {_cell(r.message)} |" for r in d.status.results]
    return [*lines, ""]


def _impact(d: _Drill) -> list[str]:
    lines = ["## Impact per deployment", ""]
    if not d.live:
        return [*lines, "A dry run changes nothing: nothing was measured (see the preflight).",
                ""]
    if not d.status.results:
        return [*lines, "No results recorded.", ""]
    lines += ["| Deployment | Tier | Shift s | Capacity s | RTO s (target) | Failback s "
              "| Served | Failed | Fallback | Max error % | p95 max s | p95 within target "
              "| Degraded | Verdict |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for r in d.status.results:
        goal = DASH if r.rto_target_seconds is None else str(r.rto_target_seconds)
        lines.append(
            f"| {_cell(r.deployment)} | {_cell(r.tier)} | {_num(r.shift_seconds)} "
            f"| {_num(r.capacity_seconds)} | {_num(r.rto_seconds)} ({goal}) "
            f"| {_num(r.failback_seconds)} | {_count(r.requests_served)} "
            f"| {_count(r.requests_failed)} | {_count(r.fallback_requests)} "
            f"| {_num(r.max_error_percent, 2)} | {_num(r.max_latency_p95_seconds, 2)} "
            f"| {_flag(r.within_target)} | {_flag(r.degraded)} | {r.verdict or DASH} |")
    lines.append("")
    for r in d.status.results:
        if r.message:
            lines.append(f"- {r.deployment}: {' '.join(r.message.split())}")
    return [*lines, ""] if lines[-1] != "" else lines


def _failback(d: _Drill) -> list[str]:
    lines = ["## Failback steps verified", ""]
    if not d.live:
        return [*lines, "A dry run fails nothing back.", ""]
    if not d.status.results:
        return [*lines, "No results recorded.", ""]
    if d.status.verdict == "Aborted":
        lines += ["The drill was aborted: traffic returned without a ramp.", ""]
    for r in d.status.results:
        back = _finite(r.failback_seconds)
        head = f"back in full after {back:.1f} s" if back is not None else "not back in full"
        lines.append(f"- {r.deployment} ({head}):")
        lines += [f"  - {step}" for step in r.failback_steps] or ["  - no step verified"]
    return [*lines, ""]


def _operator_steps(d: _Drill) -> list[str]:
    lines = ["## What the operator did", ""]
    named: set[str] = set()
    for i, e in enumerate(d.status.timeline, 1):
        if e.event in INCIDENT_STATES:
            chinese = "" if e.event in named else f" ({INCIDENT_STATES[e.event]})"
            named.add(e.event)
            what = f"entered the incident state {e.event}{chinese}"
        else:
            what = STEPS.get(e.event, e.event)
        message = f": {' '.join(e.message.split())}" if e.message else ""
        lines.append(f"{i}. +{_num(d.offset(e.time))} s: {what}{message}")
    if not d.status.timeline:
        lines.append("Nothing recorded.")
    return [*lines, ""]


def _lessons(d: _Drill, checks: Sequence[Check]) -> list[str]:
    spec, s = d.model.spec, d.status
    article = "an" if spec.mode == "Outage" else "a"
    planned = (f"Planned fault: {article} {spec.mode} drill took {d.target} out of service "
               f"for {spec.duration_seconds} s ({MODES[spec.mode]}).")
    if not d.live:
        planned = (f"Planned fault: a dry run of taking {d.target} out of service for "
                   f"{spec.duration_seconds} s; nothing was changed.")
    lines = ["## Root cause and lessons", "", planned, ""]
    if s.verdict in ("Aborted", "Refused"):
        lines += [f"The drill was {s.verdict.lower()}: "
                  + ("; ".join(s.reasons) or "no reason given") + ".", ""]
    failed = [c for c in checks if c.outcome == "failed"]
    lines += ["What went wrong:", ""]
    lines += [f"- {c.deployment}: {c.detail}" for c in failed] or ["- nothing"]
    lines.append("")
    good = [r.deployment for r in s.results
            if not any(c.deployment == r.deployment for c in failed)
            and any(c.deployment == r.deployment and c.outcome == "passed" for c in checks)]
    lines += ["What went well:", ""]
    lines += [f"- {dep}: every measured check passed" for dep in good] or ["- nothing"]
    return [*lines, ""]
