"""The Grafana dashboard of a twinhull fleet, built in code with grafana-foundation-sdk (its
builders for the Grafana 11.6 line; the JSON model imports into Grafana 11 and 12) from the
tier policy, the operator's metric names (:mod:`.names`), the recording rules
(:mod:`.rules`) and the runtimes' presets (:mod:`.presets`), so a renamed metric or a new
tier changes the dashboard with the rules. Pure: everything here builds objects, dicts and
strings; nothing is read or sent.

What it shows, top to bottom:

* one row per selected ModelDeployment (repeated over ``$deployment``): its traffic split
  by cluster, ``fallback`` included (``twinhull_traffic_weight``, stacked to 100 %); its
  replicas per cluster, zone and role, desired (dashed) and Ready; its demand in tokens/s
  from the runtimes' own token counters (the presets' fleet demand query of every runtime,
  summed) against the replicas the last scaling decision recommended and the Ready primary
  replicas (right axis);
* one row per selected tier (repeated over ``$tier``): the availability and latency burn
  rates, the recording rules ``twinhull:slo_error_ratio:rate<w>`` and
  ``twinhull:slo_latency_ratio:rate<w>`` over 5m, 1h and 6h divided by the tier's budget
  (``1 - availabilityTarget/100``; 5 % for latency), with the page thresholds of the
  burn alerts (14.4 and 6, :data:`.rules.FAST`) as lines;
* the member clusters: health phase over time, probe duration;
* the operator: loop iterations and errors per loop, loop freshness against the stale-loop
  alert's 5 minutes, which replica leads;
* annotations: the planner's decisions (kind and reason, from ``twinhull_decisions_total``)
  and passed failover drills (``twinhull_drill_last_passed_timestamp_seconds``).

Variables: ``datasource`` (a Prometheus: the global view the operator reads), ``namespace``,
``tier`` (the policy's tiers) and ``deployment`` (``twinhull_deployment``, from
``twinhull_deployment_info`` of the selected namespaces and tiers), all but the data source
multi-select with "All". "All" expands to the listed values (no catch-all regex), so the
tier selection also narrows the deployment-scoped panels, which carry no tier label.

The operator's series are exported only by the replica holding the Lease; a replica that
just lost it can still be scraped once, so panels read them with ``max by`` (as the rules
do) and never double a weight or a replica count.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, statetimeline, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from twinhull.api.deployment import Runtime
from twinhull.metrics import names
from twinhull.metrics.presets import FLEET, PRESETS, Preset, fleet_demand_tokens
from twinhull.metrics.rules import ERROR_RATIO, LATENCY_OBJECTIVE, LATENCY_RATIO
from twinhull.plan.slo import FAST, budget
from twinhull.policy.tiers import TierPolicy

UID = "twinhull-fleet"
"""The dashboard's uid: stable, so a provisioned copy is replaced, never duplicated."""
TITLE = "twinhull fleet"

DATASOURCE = "datasource"
"""Name of the data source variable every query, variable and annotation refers to."""
VARIABLES = (DATASOURCE, "namespace", "tier", "deployment")
"""The dashboard's variables, in the order Grafana shows (and resolves) them."""

RATE = "$__rate_interval"
"""The rate window of range panels: Grafana's, at least four scrape intervals."""
ANNOTATION_STEP = "1m"
"""Step of the annotation queries, and the window of the decisions' ``increase``."""

BURN_WINDOWS = ("5m", "1h", "6h")
"""The windows of the burn-rate panels: the short and long windows of the page alerts."""
LATENCY_BUDGET = Decimal(1) - LATENCY_OBJECTIVE
"""Share of requests allowed above the tier's latency target (5 %), every tier."""

LOOP_STALE_SECONDS = 300
"""Age of a loop's last beat at which ``TwinhullLoopStale`` fires (:func:`.rules.operator_group`):
the freshness panel's threshold."""

PHASE_CODES: dict[str, tuple[int, str]] = {
    "Healthy": (0, "green"), "Recovering": (1, "blue"), "Suspect": (2, "orange"),
    "Down": (3, "red"),
}
"""Each ServingCluster phase as a number for the state timeline (worse is higher, so two
replicas' disagreeing series show the worse) and its colour."""

SCOPE = (("namespace", "=~", "$namespace"), ("twinhull_deployment", "=~", "$deployment"))
"""Label matchers narrowing a deployment's series to the selected namespaces and
deployments."""
_BY_DEPLOYMENT = ", ".join(FLEET)

_SOURCE = model.DataSourceRef(type_val="prometheus", uid=f"${{{DATASOURCE}}}")


# -- PromQL ------------------------------------------------------------------------------


def _sel(name: str, *matchers: tuple[str, str, str]) -> str:
    """``name{label op "value", ...}``: one selector (values are Grafana variables or fixed
    names, never user text)."""
    inner = ", ".join(f'{label}{op}"{value}"' for label, op, value in matchers)
    return f"{name}{{{inner}}}" if inner else name


def _scoped(name: str, *matchers: tuple[str, str, str]) -> str:
    return _sel(name, *SCOPE, *matchers)


def _runtimes() -> list[tuple[Runtime, Preset]]:
    """Each distinct preset once, under its first runtime name (``generic`` is vLLM's)."""
    out: list[tuple[Runtime, Preset]] = []
    for runtime, preset in PRESETS.items():
        if all(preset != p for _, p in out):
            out.append((runtime, preset))
    return out


_FLEET_MATCHER = 'twinhull_deployment!=""'
"""How :func:`.presets.fleet_demand_tokens` writes its fleet matcher in every selector."""


def demand_query(window: str = RATE) -> str:
    """Tokens per second (prompt and generated) per ModelDeployment of the selected
    namespaces and deployments, summed over every runtime: the presets' fleet demand query
    of each runtime (:func:`.presets.fleet_demand_tokens`, which keeps a deployment whose
    second counter does not exist yet), narrowed in each of its selectors to the
    dashboard's variables, each labelled with its runtime so that a deployment served by
    two runtimes (a fallback model on another server) sums instead of one hiding the other
    in ``or``. Pure."""
    parts = []
    for runtime, _ in _runtimes():
        query = fleet_demand_tokens(runtime, window, FLEET)
        selectors = query.count("{__name__=")
        if selectors == 0 or query.count(_FLEET_MATCHER) != selectors:
            raise ValueError(f"presets.fleet_demand_tokens({runtime!r}) no longer writes "
                             f"{_FLEET_MATCHER} in each selector: update dashboard.demand_query")
        scope = ", ".join(f'{label}{op}"{value}"' for label, op, value in SCOPE)
        query = query.replace(_FLEET_MATCHER, f"{_FLEET_MATCHER}, {scope}")
        parts.append(f'label_replace(\n    {query},\n    "runtime", "{runtime}", "", "")')
    return f"sum by ({_BY_DEPLOYMENT}) (\n  " + "\n  or ".join(parts) + "\n)"


def _budgets(policy: TierPolicy) -> str:
    """One series per tier (label ``tier``) whose value is its error budget; tiers with a
    100 % target have none (no burn rate: any failure is infinitely many budgets)."""
    terms = [f'label_replace(vector({budget(spec.availability_target):f}), "tier", "{tier}", '
             '"", "")'
             for tier, spec in ((t, policy.tiers[t]) for t in policy.names())
             if budget(spec.availability_target) > 0]
    return "(\n  " + "\n  or ".join(terms) + "\n)"


def burn_query(policy: TierPolicy, sli: str, window: str) -> str:
    """The burn rate of the selected deployments of the selected tier over ``window``: the
    recorded bad ratio (:data:`.rules.ERROR_RATIO` for ``availability``,
    :data:`.rules.LATENCY_RATIO` for ``latency``) over the tier's budget. Pure."""
    if sli == "availability":
        ratio = _scoped(ERROR_RATIO.format(w=window), ("tier", "=~", "$tier"))
        return f"{ratio}\n/ on (tier) group_left ()\n{_budgets(policy)}"
    if sli == "latency":
        ratio = _scoped(LATENCY_RATIO.format(w=window), ("tier", "=~", "$tier"))
        return f"{ratio}\n/ {LATENCY_BUDGET:f}"
    raise ValueError(f"unknown SLI {sli!r}: availability or latency")


def _phase_query() -> str:
    phase = names.CLUSTER_PHASE.name
    terms = [f'({_sel(phase, ("phase", "=", p))} == 1) * {code}'
             for p, (code, _) in sorted(PHASE_CODES.items(), key=lambda kv: kv[1][0])]
    return "max by (cluster) (\n  " + "\n  or ".join(terms) + "\n)"


def decisions_query(window: str = ANNOTATION_STEP) -> str:
    """Decisions per kind and reason made within ``window``: the counter's increase, or a
    (kind, reason) that appeared since (its first decision after an operator start: the
    counter is born at 1, which ``increase`` cannot see). Pure."""
    total = names.DECISIONS_TOTAL.name
    return (f"sum by (kind, reason) (increase({total}[{window}])) > 0\n"
            f"or\n(sum by (kind, reason) ({total})"
            f" unless sum by (kind, reason) ({total} offset {window}))")


def drills_query() -> str:
    """The end of the last passed drill of each selected deployment, in milliseconds (the
    annotation uses the value as the event's time). Pure."""
    last = _scoped(names.DRILL_LAST_PASSED_TIMESTAMP_SECONDS.name)
    return f"max by ({_BY_DEPLOYMENT}) ({last}) * 1000"


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def resolve(expr: str, values: Mapping[str, str] | None = None, interval: str = "1m") -> str:
    """``expr`` as Grafana would send it: Grafana's interval variables (``$__rate_interval``,
    ``$__interval``, ``$__range``) replaced by ``interval``, and each dashboard variable by
    its entry in ``values`` (default ``.*``, the regex of "All"). Raises ValueError naming a
    variable the dashboard does not have. Pure."""
    given = dict(values or {})

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in ("__rate_interval", "__interval", "__range"):
            return interval
        if name in VARIABLES:
            return given.get(name, ".*")
        raise ValueError(f"{match.group(0)} in {expr!r} is no variable of the dashboard")

    return _VARIABLE.sub(one, expr)


# -- panels ------------------------------------------------------------------------------


def _target(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).range()
            .datasource(_SOURCE))


def _thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=v, color=c) for v, c in steps]))


def _legend() -> common_builders.VizLegendOptions:
    return (common_builders.VizLegendOptions().show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM))


_DASHED = model.DynamicConfigValue("custom.lineStyle", {"fill": "dash", "dash": [10, 10]})


def _right_axis(unit: str, label: str) -> list[model.DynamicConfigValue]:
    return [model.DynamicConfigValue("custom.axisPlacement", "right"),
            model.DynamicConfigValue("unit", unit),
            model.DynamicConfigValue("custom.axisLabel", label)]


def _series(title: str, description: str, width: int) -> timeseries.Panel:
    return (timeseries.Panel().title(title).description(description).datasource(_SOURCE)
            .height(8).span(width).legend(_legend()))


def _traffic() -> timeseries.Panel:
    weight = names.TRAFFIC_WEIGHT.name
    return (_series("Traffic split", "Share of the deployment's traffic each cluster takes "
                    f"({weight}, the HTTPRoute weights), fallback model included; the "
                    "weights add up to 100 %.", 8)
            .unit("percent").min(0).max(100).fill_opacity(60).line_width(1)
            .stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
            .with_target(_target(f"max by ({_BY_DEPLOYMENT}, cluster) ({_scoped(weight)})",
                                 "{{cluster}}", "A")))


def _replicas() -> timeseries.Panel:
    replicas = names.REPLICAS.name
    by = f"max by ({_BY_DEPLOYMENT}, cluster, zone, role)"
    return (_series("Replicas per cluster and zone", "Replicas the plan asks for (desired, "
                    "dashed) and those the member reports Ready, per cluster, zone and role "
                    f"({replicas}).", 8)
            .unit("short").min(0).decimals(0)
            .with_target(_target(f'{by} ({_scoped(replicas, ("state", "=", "desired"))})',
                                 "{{cluster}}/{{zone}} {{role}} desired", "A"))
            .with_target(_target(f'{by} ({_scoped(replicas, ("state", "=", "ready"))})',
                                 "{{cluster}}/{{zone}} {{role}} ready", "B"))
            .override_by_query("A", [_DASHED]))


def _demand() -> timeseries.Panel:
    recommended = names.SCALING_RECOMMENDED_REPLICAS.name
    ready = _scoped(names.REPLICAS.name, ("role", "=", "primary"), ("state", "=", "ready"))
    return (_series("Demand and capacity", "Tokens per second (prompt and generated) the "
                    "runtimes counted for the deployment, every runtime summed (left axis), "
                    "against the primary replicas the last scaling decision recommended "
                    f"({recommended}, dashed; before approval in Suggest mode) and the Ready "
                    "primary replicas (right axis).", 8)
            .unit("short").min(0).axis_label("tokens/s")
            .with_target(_target(demand_query(), "tokens/s", "A"))
            .with_target(_target(f"max by ({_BY_DEPLOYMENT}) ({_scoped(recommended)})",
                                 "recommended replicas", "B"))
            .with_target(_target(
                f"sum by ({_BY_DEPLOYMENT}) (\n  max by ({_BY_DEPLOYMENT}, cluster, zone) "
                f"({ready})\n)", "ready primary replicas", "C"))
            .override_by_query("B", [*_right_axis("short", "replicas"), _DASHED])
            .override_by_query("C", _right_axis("short", "replicas")))


def _burn(policy: TierPolicy, sli: str) -> timeseries.Panel:
    factors = sorted(FAST, key=lambda pair: Decimal(pair.factor))
    colors = ("orange", "red")
    thresholds = [(None, "green"), *((float(p.factor), c) for p, c in zip(factors, colors,
                                                                          strict=True))]
    lines = " and ".join(f"{p.factor} ({p.long}/{p.short} page)" for p in FAST)
    if sli == "availability":
        title, what = "Availability burn rate", ("failed requests over the tier's error "
                                                 "budget (1 - availabilityTarget/100)")
    else:
        title, what = "Latency burn rate", (
            "requests slower than the tier's latency target over its budget "
            f"({(LATENCY_BUDGET * 100).normalize():f} %)")
    panel = (_series(f"{title}: $tier", f"Bad ratio over {', '.join(BURN_WINDOWS)}: {what}. "
                     f"1 spends the 30-day budget in 30 days; lines at {lines}.", 12)
             .unit("none").min(0).axis_soft_max(float(factors[-1].factor) * 1.2)
             .axis_label("budgets").thresholds(_thresholds(*thresholds))
             .thresholds_style(common_builders.GraphThresholdsStyleConfig()
                               .mode(common.GraphThresholdsStyleMode.LINE)))
    for ref, window in zip("ABC", BURN_WINDOWS, strict=True):
        panel = panel.with_target(_target(
            burn_query(policy, sli, window),
            f"{{{{namespace}}}}/{{{{twinhull_deployment}}}} {window}", ref))
    return panel


def _timeline(title: str, description: str, width: int) -> statetimeline.Panel:
    return (statetimeline.Panel().title(title).description(description).datasource(_SOURCE)
            .height(8).span(width).legend(_legend()).show_value(common.VisibilityMode.NEVER))


def _phases() -> statetimeline.Panel:
    mapping = model.ValueMap({str(code): model.ValueMappingResult(text=phase, color=color)
                              for phase, (code, color) in PHASE_CODES.items()})
    return (_timeline("Cluster health", "Health phase of each ServingCluster "
                      f"({names.CLUSTER_PHASE.name}): Healthy, Recovering, Suspect (probes "
                      "failing, below the threshold) or Down (failed over).", 12)
            .mappings([mapping])
            .with_target(_target(_phase_query(), "{{cluster}}", "A")))


def _probes() -> timeseries.Panel:
    buckets = f"{names.CLUSTER_PROBE_DURATION_SECONDS.name}_bucket"
    by = f"sum by (cluster, le) (rate({buckets}[{RATE}]))"
    return (_series("Probe duration", "Duration of the health probes of each member's API "
                    "server, failed probes included (a timeout counts as the timeout).", 12)
            .unit("s").min(0)
            .with_target(_target(f"histogram_quantile(0.95, {by})", "{{cluster}} p95", "A"))
            .with_target(_target(f"histogram_quantile(0.5, {by})", "{{cluster}} p50", "B"))
            .override_by_query("B", [_DASHED]))


def _iterations() -> timeseries.Panel:
    total = names.RECONCILE_TOTAL.name
    return (_series("Loop iterations", "Iterations per second of each operator loop, by "
                    f"result ({total}).", 6)
            .unit("short").min(0).axis_label("/s")
            .with_target(_target(f"sum by (loop, result) (rate({total}[{RATE}]))",
                                 "{{loop}} {{result}}", "A")))


def _errors() -> timeseries.Panel:
    errors = names.RECONCILE_ERRORS_TOTAL.name
    return (_series("Loop errors", "Iterations per second of each operator loop that ended "
                    f"in an error ({errors}); the loop is restarted with backoff.", 6)
            .unit("short").min(0).axis_label("/s")
            .with_target(_target(f"sum by (loop) (rate({errors}[{RATE}]))", "{{loop}}", "A")))


def _freshness() -> timeseries.Panel:
    beat = names.LOOP_LAST_BEAT_TIMESTAMP_SECONDS.name
    return (_series("Loop freshness", "Seconds since each supervised loop last completed "
                    f"an iteration; TwinhullLoopStale fires above {LOOP_STALE_SECONDS} s.", 6)
            .unit("s").min(0).axis_soft_max(LOOP_STALE_SECONDS * 1.2)
            .thresholds(_thresholds((None, "green"), (LOOP_STALE_SECONDS, "red")))
            .thresholds_style(common_builders.GraphThresholdsStyleConfig()
                              .mode(common.GraphThresholdsStyleMode.LINE))
            .with_target(_target(f"time() - max by (loop) ({beat})", "{{loop}}", "A")))


def _leader() -> statetimeline.Panel:
    mapping = model.ValueMap({"1": model.ValueMappingResult(text="leader", color="green"),
                              "0": model.ValueMappingResult(text="standby", color="gray")})
    return (_timeline("Leader", "Which operator replica holds the leader Lease "
                      f"({names.LEADER.name}); only the leader acts on the fleet and exports "
                      "its state.", 6)
            .mappings([mapping])
            .with_target(_target(f"max by (identity) ({names.LEADER.name})", "{{identity}}",
                                 "A")))


# -- variables and annotations -----------------------------------------------------------

_ALL = model.VariableOption(selected=True, text=["All"], value=["$__all"])


def _variables(policy: TierPolicy) -> list[Builder[model.VariableModel]]:
    info = names.DEPLOYMENT_INFO.name
    namespaces = (dash.QueryVariable("namespace").label("Namespace").datasource(_SOURCE)
                  .query(f"label_values({info}, namespace)")
                  .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                  .sort(model.VariableSort.ALPHABETICAL_ASC)
                  .multi(True).include_all(True).current(_ALL))
    tiers = (dash.CustomVariable("tier").label("Tier").values(", ".join(policy.names()))
             .multi(True).include_all(True).current(_ALL))
    deployments = (dash.QueryVariable("deployment").label("Deployment").datasource(_SOURCE)
                   .query(f'label_values({info}{{namespace=~"$namespace", tier=~"$tier"}}, '
                          "twinhull_deployment)")
                   .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                   .sort(model.VariableSort.ALPHABETICAL_ASC)
                   .multi(True).include_all(True).current(_ALL))
    source = dash.DatasourceVariable(DATASOURCE).label("Prometheus").type("prometheus")
    return [source, namespaces, tiers, deployments]


ANNOTATION_FIELDS: dict[str, dict[str, Any]] = {
    "Decisions": {"titleFormat": "{{kind}}", "textFormat": "{{reason}}",
                  "tagKeys": "kind,reason", "step": ANNOTATION_STEP,
                  "useValueForTime": False},
    "Drills passed": {"titleFormat": "Drill passed",
                      "textFormat": "{{namespace}}/{{twinhull_deployment}}",
                      "tagKeys": "namespace,twinhull_deployment", "step": ANNOTATION_STEP,
                      "useValueForTime": True},
}
"""Fields of Grafana's Prometheus annotation queries the SDK's ``AnnotationQuery`` model
does not have, added to the built JSON by name. ``useValueForTime``: the drills' value is
the drill's end in milliseconds, so the event sits at that time, once per drill."""


def _annotations() -> list[dash.AnnotationQuery]:
    return [
        dash.AnnotationQuery().name("Decisions").datasource(_SOURCE).enable(True)
        .icon_color("blue").expr(decisions_query()),
        dash.AnnotationQuery().name("Drills passed").datasource(_SOURCE).enable(True)
        .icon_color("green").expr(drills_query()),
    ]


# -- the dashboard -----------------------------------------------------------------------


def _builder(policy: TierPolicy) -> dash.Dashboard:
    ids = iter(range(1, 1000))
    board = (dash.Dashboard(TITLE).uid(UID).tags(["twinhull"]).editable().refresh("30s")
             .time("now-6h", "now").timezone("browser")
             .tooltip(model.DashboardCursorSync.CROSSHAIR)
             .description("Traffic, replicas, demand and SLO burn of twinhull's "
                          "ModelDeployments, the member clusters' health and the operator's "
                          "loops. Generated by `twinhull dashboard`; do not edit by hand."))
    for variable in _variables(policy):
        board = board.with_variable(variable)
    for annotation in _annotations():
        board = board.annotation(annotation)

    def section(title: str, repeat: str | None = None) -> None:
        row = dash.Row(title).id(next(ids))
        if repeat:
            row = row.repeat(repeat)
        board.with_row(row)

    def add(*items: timeseries.Panel | statetimeline.Panel) -> None:
        for panel in items:
            board.with_panel(panel.id(next(ids)))

    section("Deployment $deployment", repeat="deployment")
    add(_traffic(), _replicas(), _demand())
    section("SLO burn: tier $tier", repeat="tier")
    add(_burn(policy, "availability"), _burn(policy, "latency"))
    section("Member clusters")
    add(_phases(), _probes())
    section("Operator")
    add(_iterations(), _errors(), _freshness(), _leader())
    return board


def dashboard(policy: TierPolicy) -> dict[str, Any]:
    """The dashboard's JSON model (what Grafana's "Import dashboard" and file provisioning
    take) for the tiers of ``policy``. Pure."""
    model_json: dict[str, Any] = json.loads(json.dumps(_builder(policy).build(),
                                                       cls=JSONEncoder))
    for annotation in model_json["annotations"]["list"]:
        annotation.update(ANNOTATION_FIELDS.get(annotation["name"], {}))
    return model_json


def dashboard_text(policy: TierPolicy) -> str:
    """:func:`dashboard` as indented JSON with a final newline: what ``twinhull dashboard``
    prints and the chart ships. Pure."""
    return json.dumps(dashboard(policy), indent=2, ensure_ascii=False) + "\n"


def panels(dashboard_json: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel of a dashboard JSON model, rows included, and the panels inside collapsed
    rows after their row. Pure."""
    for panel in dashboard_json.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def queries(dashboard_json: Mapping[str, Any]) -> list[str]:
    """The ``expr`` of every panel target, in panel and target order. Pure."""
    return [target["expr"] for panel in panels(dashboard_json)
            for target in panel.get("targets") or [] if "expr" in target]
