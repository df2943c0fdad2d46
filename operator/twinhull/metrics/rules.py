"""Prometheus recording and alerting rules generated from the tier policy: per tier,
multi-window multi-burn-rate alerts on availability and on latency, a token-usage
anomaly, idle deployments, overdue drills, and alerts on the operator's own metrics
(:mod:`.names`). Pure: everything here builds dicts and strings; :func:`rules_yaml` only
formats them.

**Error budgets.** Each tier's availability target (``"99.99"``) leaves a budget of
failed requests, ``1 - target`` (0.0001), over a 30-day SLO period; the latency objective
is that :data:`LATENCY_OBJECTIVE` (95 %) of requests stay within the tier's
``verification.maxLatencyP95Seconds``, the same target the rollout verifies as a p95,
so 5 % of requests may be slower. The burn rate is the observed bad ratio over the budget.
As in the Google SRE workbook (chapter 5, "Alerting on SLOs"), an alert needs a long and
a short window both above a factor of the budget (the long one says it matters, the short
one that it still happens, so the alert ends minutes after the problem):

========  ====================  =============================================
alert     long and short window factor (share of the 30-day budget spent)
========  ====================  =============================================
``Fast``  1 h and 5 m           14.4 (2 % in one hour)
``Fast``  6 h and 30 m          6 (5 % in six hours)
``Slow``  1 d and 2 h           3 (10 % in one day)
``Slow``  3 d and 6 h           1 (10 % in three days)
========  ====================  =============================================

**Where the ratios come from.** Failed and served requests are each runtime's
:attr:`~.presets.Preset.failure` and :attr:`~.presets.Preset.success` counters, summed per
``namespace`` and ``twinhull_deployment`` (the labels the scrape adds) over every runtime,
so a fallback model on another runtime counts too; a counter that does not exist yet
counts as zero while the other exists (TGI creates each series at its first use), as in
:func:`.presets.fleet_error_percent`. Slow requests are those of the runtime's latency
histogram (:attr:`~.presets.Preset.latency`) above the bucket at or just above the tier's
target (:func:`latency_bucket`, from the runtimes' bucket boundaries in
:data:`LATENCY_BUCKETS`): the alert measures "slower than that bucket", never stricter than
the target. No runtime series carries the tier: the ratios are joined with the operator's
``twinhull_deployment_info{tier}`` (:data:`.names.DEPLOYMENT_INFO`), read over the last
hour so that SLO alerting outlives an operator restart or a short outage of the operator.

**Severities** are the incident process's priorities (P0 system unavailable for all
users, 30 min; P1 core function down or most users, 1 h; P2 partial, 4 h; P3 minor,
24 h) in the label ``severity``; ``notify`` is ``page`` for P0 and P1 and ``ticket`` for P2
and P3, for Alertmanager's routes. See :func:`burn_severities` and :func:`operator_group`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import yaml

from twinhull.api.deployment import Runtime
from twinhull.api.tier import ServingTierSpec
from twinhull.metrics import names
from twinhull.metrics.presets import PRESETS, Preset, Series, fleet_demand_tokens, selector
from twinhull.plan.drill import CRITICAL_TARGET, DRILL_MAX_AGE_DAYS
from twinhull.plan.slo import FAST, MIN_REQUESTS, SLOW, BurnWindow, budget
from twinhull.policy.tiers import TierPolicy

STANDARD_TARGET = 99.9
"""A tier whose availability target is at least this (and below
:data:`~twinhull.plan.drill.CRITICAL_TARGET`) counts as standard, as in the drills'
severity."""

LATENCY_OBJECTIVE = Decimal("0.95")
"""Share of requests that must be within the tier's latency target: the target is a p95
(``maxLatencyP95Seconds``), so 95 % within it is the same promise over a whole window."""

SLO_PERIOD = "30d"
"""The SLO period the burn factors assume (the workbook's)."""

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
"""Every rate window a burn alert reads; one recording rule per window and ratio."""

SECONDS = {"5m": 300, "30m": 1800, "1h": 3600, "2h": 7200, "6h": 21600, "1d": 86400,
           "3d": 259200}




LATENCY_BUCKETS: dict[Runtime, tuple[str, ...]] = {
    # vLLM 0.11 vllm:time_to_first_token_seconds (vllm/v1/metrics/loggers.py), written by
    # prometheus_client: every boundary as a float ("5.0").
    "vllm": ("0.001", "0.005", "0.01", "0.02", "0.04", "0.06", "0.08", "0.1", "0.25", "0.5",
             "0.75", "1.0", "2.5", "5.0", "7.5", "10.0", "20.0", "40.0", "80.0", "160.0",
             "640.0", "2560.0"),
    # TGI 3.3 tgi_request_queue_duration: metrics-rs exponential buckets 0.0001 x 1.5^n,
    # n = 1..35, written in Rust's shortest float form.
    "tgi": ("0.00015000000000000001", "0.00022500000000000002", "0.0003375", "0.00050625",
            "0.000759375", "0.0011390624999999999", "0.0017085937499999998",
            "0.0025628906249999996", "0.0038443359374999994", "0.00576650390625",
            "0.008649755859375", "0.0129746337890625", "0.01946195068359375",
            "0.029192926025390625", "0.043789389038085935", "0.0656840835571289",
            "0.09852612533569335", "0.14778918800354002", "0.22168378200531003",
            "0.33252567300796504", "0.49878850951194753", "0.7481827642679213",
            "1.122274146401882", "1.683411219602823", "2.5251168294042348",
            "3.787675244106352", "5.681512866159528", "8.52226929923929",
            "12.783403948858936", "19.175105923288406", "28.76265888493261",
            "43.143988327398915", "64.71598249109837", "97.07397373664756",
            "145.61096060497135"),
    # SGLang 0.5 sglang:time_to_first_token_seconds (sglang/srt/metrics/collector.py),
    # prometheus_client.
    "sglang": ("0.1", "0.2", "0.4", "0.6", "0.8", "1.0", "2.0", "4.0", "6.0", "8.0", "10.0",
               "20.0", "40.0", "60.0", "80.0", "100.0", "200.0", "400.0"),
}
"""The finite ``le`` boundaries of each runtime's latency histogram, exactly as its
server writes them (tests/golden/*.prom; tests/test_rules.py checks they agree)."""

RUNBOOKS = "https://github.com/twinhull/twinhull/blob/main/README.md"
"""Where ``runbook_url`` annotations point by default: the README section on the subject."""

INFO_LOOKBACK = "1h"
"""How long a deployment keeps its last known tier when the operator stops exporting
``twinhull_deployment_info`` (an operator restart or outage must not silence SLO alerts;
the operator's own alerts say it is gone)."""

TIER_OF = ("topk by (namespace, twinhull_deployment) "
           f"(1, last_over_time({names.DEPLOYMENT_INFO.name}[{INFO_LOOKBACK}]))")
"""One series per ModelDeployment carrying its tier. ``topk`` keeps exactly one even when
two tiers overlap within the lookback (a tier change, two replicas disagreeing), where a
``group_left`` join would otherwise fail the whole rule with a many-to-many error."""

BY = "namespace, twinhull_deployment"
_FLEET = (("twinhull_deployment", "!=", ""),)


@dataclass(frozen=True)
class Options:
    """Parameters of the generated rules that are not in the tier policy."""

    min_requests: int = MIN_REQUESTS
    """Low-traffic guard: no page (``…BurnFast``) unless the deployment ended at least this
    many requests (failed or served; for latency, observed in the histogram) in the alert's
    long window (1 h or 6 h). With fewer than 20, one request is more than 5 % of the
    window: a ratio too coarse to wake anyone for. 20 is about half the peak hour of the
    busiest example app (ide-assistant, ~36 calls an hour at its peaks), so the fast page
    still engages at the apps' real volume; raise it for busier fleets. A guard cannot fix
    what a 99.99 % target means at low volume: its page threshold (0.144 %) is finer than
    one request below 695 requests an hour, so any failure the guard lets through pages.
    Ticket-level alerts have no guard: a low-traffic deployment's budget burn still opens
    one."""
    token_growth: str = "2"
    """The token anomaly fires when a deployment's tokens over the last hour exceed this
    many times those of the hour before (``2``: above 200 %)."""
    min_tokens: int = 100_000
    """… and the hour before had at least this many tokens, so that a quiet app's first
    calls do not page: one call of the largest size in the usage report (89,420 tokens)
    cannot double an hour of 100,000."""
    idle_days: int = 7
    """A ModelDeployment older than this with no token at all in as many days is idle."""
    runbooks: str = RUNBOOKS
    """Base URL of the ``runbook_url`` annotations (``#section`` anchors are added)."""


# -- severities ------------------------------------------------------------------------


def burn_severities(spec: ServingTierSpec) -> tuple[str, str]:
    """The incident priorities (fast, slow) of a tier's burn alerts, from its availability
    target. Pure.

    * critical (at least 99.99): fast P1, slow P2. P1, not P0: a fast burn starts at
      0.144 % failed requests, most users still served; P1's one-hour response fits the
      one-hour window (14.4x spends 2 % of the month's budget an hour). P0 is kept for a
      critical deployment serving nothing (``TwinhullDeploymentUnavailable``) and for every
      cluster Down, as the drills rate a loss (:func:`twinhull.plan.drill.severity`).
    * standard (at least 99.9): fast P2, slow P3 (partial, within 4 hours).
    * lower tiers: P3 for both.
    """
    target = float(spec.availability_target)
    if target >= CRITICAL_TARGET:
        return "P1", "P2"
    if target >= STANDARD_TARGET:
        return "P2", "P3"
    return "P3", "P3"


def notify(severity: str) -> str:
    """``page`` for P0 and P1 (30 min and 1 h responses), ``ticket`` otherwise. Pure."""
    return "page" if severity in ("P0", "P1") else "ticket"


def spent_percent(pair: BurnWindow) -> str:
    """Percent of the 30-day error budget a burn at the pair's factor spends over its long
    window (14.4 over 1 h: 2). Pure."""
    share = Decimal(pair.factor) * SECONDS[pair.long] / (30 * 86400) * 100
    return f"{share.normalize():f}"


def _labels(severity: str, **extra: str) -> dict[str, str]:
    return {"severity": severity, "notify": notify(severity), **extra}


# -- building blocks -------------------------------------------------------------------


def _runtimes() -> list[tuple[Runtime, Preset]]:
    """Each distinct preset once, under its first runtime name (``generic`` is vLLM's)."""
    out: list[tuple[Runtime, Preset]] = []
    for runtime, preset in PRESETS.items():
        if all(preset != p for _, p in out):
            out.append((runtime, preset))
    return out


def _sel(series: Series, suffix: str = "", *extra: tuple[str, str, str]) -> str:
    return selector(series.name + suffix, (*series.matchers, *_FLEET, *extra))


def _sum_rate(series: Series, window: str, suffix: str = "",
              *extra: tuple[str, str, str]) -> str:
    return f"sum by ({BY}) (rate({_sel(series, suffix, *extra)}[{window}]))"


def le_spellings(boundary: str) -> str:
    """A regular expression matching the ``le`` label of a bucket boundary however it is
    written: as the runtime writes it, and for a whole number also ``5`` and ``5.0`` (Rust
    servers write the first, Python ones and Prometheus 3's normalisation the second).
    Pure."""
    value = float(boundary)
    forms = {boundary, repr(value)}
    if value.is_integer():
        forms |= {f"{int(value)}", f"{int(value)}.0"}
    return "|".join(re.escape(f) for f in sorted(forms))


def latency_bucket(runtime: Runtime, target_seconds: str) -> str | None:
    """The runtime's bucket boundary at or just above ``target_seconds`` (as written), or
    None when the target is above every finite bucket (the runtime cannot tell slower
    requests apart: no latency rule). Pure."""
    target = Decimal(target_seconds)
    bounds = LATENCY_BUCKETS["vllm" if runtime == "generic" else runtime]
    return next((b for b in bounds if Decimal(b) >= target), None)


def _critical(policy: TierPolicy) -> str:
    """A regular expression of the tiers counted as critical (empty when there are none)."""
    return "|".join(re.escape(t) for t in policy.names()
                    if float(policy.tiers[t].availability_target) >= CRITICAL_TARGET)


def _tiered(expr: str) -> str:
    """``expr`` (labelled by deployment) with the deployment's ``tier`` label added."""
    return f"(\n  {_indent(expr)}\n)\n* on ({BY}) group_left (tier)\n  {TIER_OF}"


def _indent(text: str, by: str = "  ") -> str:
    return text.replace("\n", "\n" + by)


def _record(name: str, expr: str, **labels: str) -> dict[str, Any]:
    rule: dict[str, Any] = {"record": name, "expr": expr}
    if labels:
        rule["labels"] = labels
    return rule


def _alert(name: str, expr: str, labels: dict[str, str], summary: str, description: str,
           runbook: str, for_: str | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = labels
    rule["annotations"] = {"summary": summary, "description": description,
                           "runbook_url": runbook}
    return rule


# -- SLO recording rules ---------------------------------------------------------------

FAILED = "twinhull:requests_failed:rate{w}"
"""Failed requests per second per deployment and runtime (label ``runtime``)."""
ENDED = "twinhull:requests:rate{w}"
"""Requests ended (failed or served) per second per deployment and runtime."""
OBSERVED = "twinhull:latency_requests:rate{w}"
"""Requests observed by the latency histogram per second per deployment and runtime."""
SLOW_REQUESTS = "twinhull:latency_slow:rate{w}"
"""Requests above the tier's latency bucket per second, per deployment, runtime and tier
(only for deployments of that tier)."""
ERROR_RATIO = "twinhull:slo_error_ratio:rate{w}"
"""Failed over ended requests per deployment, labelled with its tier."""
LATENCY_RATIO = "twinhull:slo_latency_ratio:rate{w}"
"""Slow over observed requests per deployment, labelled with its tier."""
TOKENS = "twinhull:tokens:rate1h"
"""Tokens (prompt and generated) per second over the last hour per deployment and
runtime."""


def _runtime_records(window: str, runtime: Runtime, preset: Preset,
                     policy: TierPolicy) -> list[dict[str, Any]]:
    fail = _sum_rate(preset.failure, window)
    ok = _sum_rate(preset.success, window)
    fail0, ok0 = f"({fail}\nor 0 * {ok})", f"({ok}\nor 0 * {fail})"
    observed = _sum_rate(preset.latency, window, "_count")
    out = [
        _record(FAILED.format(w=window), fail0, runtime=runtime),
        _record(ENDED.format(w=window), f"{fail0}\n+\n{ok0}", runtime=runtime),
        _record(OBSERVED.format(w=window), observed, runtime=runtime),
    ]
    for tier in policy.names():
        bound = latency_bucket(runtime, policy.tiers[tier].verification.max_latency_p95_seconds)
        if bound is None:
            continue
        within = _sum_rate(preset.latency, window, "_bucket", ("le", "=~", le_spellings(bound)))
        info = selector(names.DEPLOYMENT_INFO.name, (("tier", "=", tier),))
        out.append(_record(
            SLOW_REQUESTS.format(w=window),
            f"(\n  {_indent(observed)}\n  -\n  {_indent(within)}\n)\n"
            f"and on ({BY})\n  last_over_time({info}[{INFO_LOOKBACK}])",
            runtime=runtime, tier=tier, latency_le=bound))
    return out


def _ratio_records(window: str) -> list[dict[str, Any]]:
    failed, ended = FAILED.format(w=window), ENDED.format(w=window)
    slow, observed = SLOW_REQUESTS.format(w=window), OBSERVED.format(w=window)
    errors = _tiered(f"sum by ({BY}) ({failed})\n/\n(sum by ({BY}) ({ended}) > 0)")
    latency = (f"sum by ({BY}, tier) ({slow})\n/ on ({BY}) group_left ()\n"
               f"(sum by ({BY}) ({observed}) > 0)\n"
               f"and on ({BY}, tier)\n  {TIER_OF}")
    return [_record(ERROR_RATIO.format(w=window), errors),
            _record(LATENCY_RATIO.format(w=window), latency)]


# -- SLO alerts ------------------------------------------------------------------------

_SLI = {
    "availability": (ERROR_RATIO, ENDED, "of requests failed", "Availability"),
    "latency": (LATENCY_RATIO, OBSERVED, "of requests were slower than the tier's latency "
                "target", "Latency"),
}


def _burn_expr(ratio: str, volume: str | None, tier: str, allowed: Decimal,
               pairs: tuple[BurnWindow, ...], min_requests: int) -> str:
    branches = []
    for p in pairs:
        threshold = f"({p.factor} * {allowed:f})"
        lines = [f'{ratio.format(w=p.long)}{{tier="{tier}"}} > {threshold}',
                 f"and on ({BY})",
                 f'{ratio.format(w=p.short)}{{tier="{tier}"}} > {threshold}']
        if volume is not None:
            lines += [f"and on ({BY})",
                      f"sum by ({BY}) ({volume.format(w=p.long)}) * {SECONDS[p.long]}"
                      f" >= {min_requests}"]
        branches.append("(\n  " + "\n  ".join(lines) + "\n)")
    return "\nor\n".join(branches)


def _slo_alerts(tier: str, spec: ServingTierSpec, options: Options) -> list[dict[str, Any]]:
    fast_severity, slow_severity = burn_severities(spec)
    who = "{{ $labels.namespace }}/{{ $labels.twinhull_deployment }}"
    out = []
    for sli, (ratio, volume, bad, title) in _SLI.items():
        if sli == "availability":
            allowed = budget(spec.availability_target)
            objective = f"{spec.availability_target}% of requests served"
        else:
            allowed = Decimal(1) - LATENCY_OBJECTIVE
            target = spec.verification.max_latency_p95_seconds
            objective = (f"{(LATENCY_OBJECTIVE * 100).normalize():f}% of requests within "
                         f"{target}s (counted at the runtime's histogram bucket at or just "
                         f"above {target}s)")
        for speed, pairs, severity, guarded in (("Fast", FAST, fast_severity, True),
                                                ("Slow", SLOW, slow_severity, False)):
            windows = " or ".join(f"{p.factor}x over {p.long} and {p.short}" for p in pairs)
            spent = " or ".join(f"{spent_percent(p)}% of it in {p.long}" for p in pairs)
            guard = (f" It fires only with at least {options.min_requests} requests in "
                     "the long window (low-traffic guard)." if guarded else "")
            out.append(_alert(
                f"Twinhull{title}Burn{speed}",
                _burn_expr(ratio, volume if guarded else None, tier, allowed, pairs,
                           options.min_requests),
                _labels(severity, tier=tier, slo=sli),
                f"{who} (tier {tier}): {{{{ $value | humanizePercentage }}}} {bad} "
                f"over {pairs[0].long} or {pairs[1].long}",
                f"Objective: {objective} over {SLO_PERIOD}. {who} burns its {sli} error "
                f"budget at {windows}: {spent}.{guard} See `twinhull status {who} "
                "--decisions` and the model servers' logs; roll a new revision back with "
                f"`twinhull rollback {who}`.",
                f"{options.runbooks}#metrics-what-twinhull-reads-and-how-it-gets-there"))
    return out


def slo_group(policy: TierPolicy, options: Options) -> dict[str, Any]:
    """The recording rules of every ratio and window, then the burn alerts of every tier.
    One group: Prometheus evaluates a group's rules in order, so the alerts read the
    ratios of the same evaluation. Pure."""
    rules: list[dict[str, Any]] = []
    for window in WINDOWS:
        for runtime, preset in _runtimes():
            rules += _runtime_records(window, runtime, preset, policy)
        rules += _ratio_records(window)
    for tier in policy.names():
        rules += _slo_alerts(tier, policy.tiers[tier], options)
    return {"name": "twinhull-slo", "rules": rules}


# -- tokens ----------------------------------------------------------------------------


def usage_group(options: Options) -> dict[str, Any]:
    """Tokens per deployment over the last hour, and the hour-over-hour anomaly. Pure."""
    rules = [_record(TOKENS, fleet_demand_tokens(runtime, "1h"), runtime=runtime)
             for runtime, _ in _runtimes()]
    now = f"sum by ({BY}) ({TOKENS})"
    before = f"sum by ({BY}) ({TOKENS} offset 1h)"
    expr = _tiered(f"{now}\n> {options.token_growth} * {before}\n"
                   f"and on ({BY})\n{before} * 3600 >= {options.min_tokens}")
    who = "{{ $labels.namespace }}/{{ $labels.twinhull_deployment }}"
    rules.append(_alert(
        "TwinhullTokenUsageAnomaly", expr, _labels("P3"),
        f"{who} used {{{{ $value | humanize }}}} tokens/s over the last hour, more than "
        f"{options.token_growth} times the hour before",
        f"Tokens of {who} (prompt and generated, every runtime) over the last hour are above "
        f"{float(options.token_growth) * 100:g}% of the hour before, which had at least "
        f"{options.min_tokens} tokens. A runaway client (an agent in a loop, a batch job) "
        "costs GPUs and can starve lower tiers; find the caller in the gateway's logs.",
        f"{options.runbooks}#scaling-from-load", for_="10m"))
    return {"name": "twinhull-usage", "rules": rules}


# -- hygiene: idle deployments, drills ---------------------------------------------------


def hygiene_group(policy: TierPolicy, options: Options) -> dict[str, Any]:
    """Idle deployments and critical ones with an overdue drill, evaluated hourly (a week's
    token counters are a heavy read). Pure."""
    days = options.idle_days
    created = names.DEPLOYMENT_CREATED_TIMESTAMP_SECONDS.name
    idle = f"time() - max by ({BY}) ({created}) > {days * 86400}"
    for runtime, _ in _runtimes():
        idle += f"\nunless on ({BY})\n(({fleet_demand_tokens(runtime, f'{days}d')}) > 0)"
    who = "{{ $labels.namespace }}/{{ $labels.twinhull_deployment }}"
    rules = [_alert(
        "TwinhullDeploymentIdle", _tiered(idle), _labels("P3"),
        f"{who} served no token in {days} days",
        f"{who} exists for {{{{ $value | humanizeDuration }}}} and no runtime of it counted "
        f"a prompt or generated token in the last {days} days, while it holds GPUs in every "
        "placed cluster. Ask its owners; scale it down or delete it.",
        f"{options.runbooks}#scaling-from-load")]
    condition = names.DEPLOYMENT_CONDITION.name
    overdue = (f'max by ({BY}) ({condition}{{type="DrillOverdue", status="True"}}) == 1')
    critical = _critical(policy)
    if critical:
        last = names.DRILL_LAST_PASSED_TIMESTAMP_SECONDS.name
        info = selector(names.DEPLOYMENT_INFO.name, (("tier", "=~", critical),))
        overdue += (f"\nor\n(\n  time() - max by ({BY}) ({last}) > {DRILL_MAX_AGE_DAYS * 86400}"
                    f"\n  and on ({BY})\n  {info}\n)")
    rules.append(_alert(
        "TwinhullDrillOverdue", _tiered(overdue), _labels("P3"),
        f"{who} has passed no failover drill in {DRILL_MAX_AGE_DAYS} days",
        f"{who} is critical and its last passed Drain or Outage FailoverDrill (or its "
        f"creation) is more than {DRILL_MAX_AGE_DAYS} days old. Run a Drain drill on one of "
        "its clusters: `twinhull drill run -f drill.yaml --follow`.",
        f"{options.runbooks}#failover-drills-for-sres"))
    return {"name": "twinhull-hygiene", "interval": "1h", "rules": rules}


# -- the operator's own alerts -----------------------------------------------------------


def operator_group(policy: TierPolicy, options: Options) -> dict[str, Any]:
    """Alerts on the operator's own metrics (:mod:`.names`). Pure.

    ==================================  ========  =========================================
    alert                               severity  why
    ==================================  ========  =========================================
    TwinhullAllClustersDown             P0        nothing serves any model
    TwinhullDeploymentUnavailable       P0 / P1   a critical deployment serves nothing (all
                                                  its users) / any other does
    TwinhullClusterDown                 P1        its deployments run without redundancy;
                                                  one more failure is an outage
    TwinhullLoopStale (not ``loads``)   P1        no failover: the loops that see and act
                                                  on member failures are stuck
    TwinhullNoLeader                    P1        no replica acts on the fleet at all
    TwinhullLoopStale (``loads``)       P2        scaling holds on old load
    TwinhullDeploymentFailedOver        P2        a cluster stays out for 15 minutes
    TwinhullDeploymentDegraded          P2        replicas without capacity or a zone down
    TwinhullDeploymentMetricsMissing    P2        scaling, verification and SLO alerts blind
    TwinhullAuditWritesFailing          P3        decisions wait unrecorded in memory
    TwinhullRollback                    P3        handled automatically; find out why
    ==================================  ========  =========================================
    """
    runbook = options.runbooks
    phase = names.CLUSTER_PHASE.name
    condition = names.DEPLOYMENT_CONDITION.name
    beat = names.LOOP_LAST_BEAT_TIMESTAMP_SECONDS.name
    rollbacks = names.ROLLBACKS_TOTAL.name
    audit = names.AUDIT_RECORDS_TOTAL.name
    created = names.DEPLOYMENT_CREATED_TIMESTAMP_SECONDS.name
    who = "{{ $labels.namespace }}/{{ $labels.twinhull_deployment }}"
    failover = f"{runbook}#active-active-failover-and-failback"
    loops = f"{runbook}#one-bad-object-one-dead-loop-or-one-odd-input-never-stops-the-fleet"

    def cond(type_: str, status: str) -> str:
        return (f'max by ({BY}) ({condition}{{type="{type_}", status="{status}"}}) == 1')

    unavailable = (f"{cond('Available', 'False')}\nand on ({BY})\n"
                   f"time() - max by ({BY}) ({created}) > 3600")
    rules = [
        _alert("TwinhullAllClustersDown",
               f'count(max by (cluster) ({phase}{{phase="Down"}}) == 1)\n'
               f"== count(max by (cluster) ({phase}))",
               _labels("P0"),
               "Every ServingCluster is Down",
               "The operator sees every member cluster Down: no model is served anywhere. "
               "Check the members' API servers and nodes (`kubectl get servingclusters`); "
               "a network partition of the hub looks the same.",
               failover, for_="1m"),
        _alert("TwinhullClusterDown",
               f'max by (cluster) ({phase}{{phase="Down"}}) == 1',
               _labels("P1"),
               "ServingCluster {{ $labels.cluster }} is Down",
               "The operator's probes call {{ $labels.cluster }} Down: its deployments' "
               "traffic went to their other clusters, which now run without redundancy. "
               "See `kubectl get servingcluster {{ $labels.cluster }} -o yaml` and the "
               "member's API server.",
               failover, for_="1m"),
    ]
    critical = _critical(policy)
    scopes = [("P0", "=~"), ("P1", "!~")] if critical else [("P1", "")]
    for severity, match in scopes:
        scoped = unavailable
        if match:
            info = selector(names.DEPLOYMENT_INFO.name, (("tier", match, critical),))
            scoped += f"\nand on ({BY})\n{info}"
        rules.append(_alert(
            "TwinhullDeploymentUnavailable", _tiered(scoped),
            _labels(severity),
            f"{who} (tier {{{{ $labels.tier }}}}) serves no request",
            f"{who} has Available=False: no Ready replica of it takes traffic in any "
            f"cluster, fallback included. See `twinhull status {who} --decisions`.",
            failover, for_="5m"))
    rules += [
        _alert("TwinhullDeploymentFailedOver", _tiered(cond("FailedOver", "True")),
               _labels("P2"),
               f"{who} has been failed over for 15 minutes",
               f"{who} has FailedOver=True: at least one placed cluster takes none or only "
               "part (failing back) of its share. See `twinhull status "
               f"{who} --decisions` and the cluster's phase.",
               failover, for_="15m"),
        _alert("TwinhullDeploymentDegraded", _tiered(cond("Degraded", "True")),
               _labels("P2"),
               f"{who} has been Degraded for 15 minutes",
               f"{who} has Degraded=True: replicas without GPU capacity in the serving "
               "zones (traffic on the fallback model) or a zone without a Ready node. See "
               f"`twinhull status {who}`.",
               failover, for_="15m"),
        _alert("TwinhullDeploymentMetricsMissing", _tiered(cond("MetricsAvailable", "False")),
               _labels("P2"),
               f"The operator cannot read the metrics of {who}",
               f"{who} has MetricsAvailable=False for 10 minutes: scaling holds, revisions "
               "are not verified on errors and latency, and its SLO alerts are blind. Check "
               "the scrape of its pods (`twinhull scrape-config`) and the operator's "
               "--prometheus.",
               f"{runbook}#metrics-what-twinhull-reads-and-how-it-gets-there", for_="10m"),
        _alert("TwinhullLoopStale",
               f'time() - max by (loop) ({beat}{{loop!="loads"}}) > 300',
               _labels("P1"),
               "Operator loop {{ $labels.loop }} last beat {{ $value | humanizeDuration }} ago",
               "The operator's {{ $labels.loop }} loop has not completed an iteration for "
               "over 5 minutes: member failures are neither seen nor acted on, so failover "
               "does not happen. The liveness probe should have restarted the pod; see the "
               "operator's logs and `twinhull check`.",
               loops),
        _alert("TwinhullLoopStale",
               f'time() - max by (loop) ({beat}{{loop="loads"}}) > 300',
               _labels("P2"),
               "Operator loop {{ $labels.loop }} last beat {{ $value | humanizeDuration }} ago",
               "The operator's load reader has not completed an iteration for over 5 "
               "minutes: scaling holds on old load. See the operator's logs and the "
               "Prometheus it reads (--prometheus).",
               loops),
        _alert("TwinhullNoLeader",
               f"absent({names.LEADER.name} == 1)",
               _labels("P1"),
               "No twinhull operator replica holds the leader Lease",
               "For 5 minutes no replica of the operator has exported twinhull_leader 1: "
               "nothing fails over, scales or rolls back. See `twinhull check` and the "
               "operator's pods.",
               loops, for_="5m"),
        _alert("TwinhullAuditWritesFailing",
               f'sum(increase({audit}{{result=~"failed|dropped"}}[15m])) > 0',
               _labels("P3"),
               "The operator cannot write its audit records",
               "Writes of decisions to the durable audit record (ConfigMaps in the "
               "operator's namespace) have failed for 15 minutes: the records wait in the "
               "replica's memory and are retried (at most 100 deployments a round), past "
               "200 a deployment the oldest are dropped (result=\"dropped\"), and those "
               "waiting are lost if the replica stops. Check the hub API server's load and "
               "the operator's RBAC on ConfigMaps; `twinhull audit` shows what was written.",
               f"{runbook}#observability-and-alerting", for_="15m"),
        _alert("TwinhullRollback",
               _tiered(f"sum by ({BY}, reason) (increase({rollbacks}[15m])) > 0\nor\n"
                       f"sum by ({BY}, reason) ({rollbacks} unless {rollbacks} offset 15m)"
                       " > 0"),
               _labels("P3"),
               f"{who} was rolled back ({{{{ $labels.reason }}}})",
               f"{who} returned to an earlier snapshot ({{{{ $labels.reason }}}}); the spec's "
               f"revision is held back until the spec changes. See `twinhull history {who}` "
               "and the RolledBack condition, then fix the revision.",
               f"{runbook}#revisions-rollback-and-gitops"),
    ]
    return {"name": "twinhull-operator", "rules": rules}


# -- documents ---------------------------------------------------------------------------


def rule_groups(policy: TierPolicy, options: Options | None = None) -> list[dict[str, Any]]:
    """Every rule group, in Prometheus' rule file shape. Pure."""
    o = options or Options()
    return [slo_group(policy, o), usage_group(o), hygiene_group(policy, o),
            operator_group(policy, o)]


def rule_file(policy: TierPolicy, options: Options | None = None) -> dict[str, Any]:
    """A Prometheus rule file (``rule_files``): ``{"groups": [...]}``. Pure."""
    return {"groups": rule_groups(policy, options)}


def prometheus_rule(policy: TierPolicy, options: Options | None = None, *,
                    name: str = "twinhull", namespace: str | None = None) -> dict[str, Any]:
    """The same groups as a prometheus-operator ``PrometheusRule`` (monitoring.coreos.com/v1).
    Pure."""
    metadata: dict[str, Any] = {"name": name,
                                "labels": {"app.kubernetes.io/part-of": "twinhull"}}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": metadata, "spec": {"groups": rule_groups(policy, options)}}


def alert_names(groups: Iterable[dict[str, Any]]) -> list[str]:
    """The distinct alert names of rule groups, in order. Pure."""
    seen: dict[str, None] = {}
    for group in groups:
        for rule in group["rules"]:
            if "alert" in rule:
                seen.setdefault(rule["alert"], None)
    return list(seen)


class _Dumper(yaml.SafeDumper):
    """Block scalars (``|``) for multi-line strings: expressions stay readable."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def rules_yaml(document: Any) -> str:
    """A rule file or PrometheusRule as YAML, multi-line expressions as block scalars.
    Pure."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     width=4096, allow_unicode=True)
