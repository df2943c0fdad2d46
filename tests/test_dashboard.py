"""The Grafana dashboard generated from the tier policy (twinhull.metrics.dashboard): a valid
JSON model (unique panel ids, grid positions that do not overlap, the variables, every
query on the data source variable), every query parsed by Prometheus' own parser
(promtool), every metric it reads one the operator exports, a recording rule of
twinhull.metrics.rules or a runtime's series, and the burn rates and phases computed as
described (promtool's engine). No cluster, no Grafana."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml

from twinhull import dashboardcmd
from twinhull.api.cluster import ClusterPhase
from twinhull.generate import generated_files
from twinhull.metrics import names
from twinhull.metrics.dashboard import (
    ANNOTATION_FIELDS,
    BURN_WINDOWS,
    LOOP_STALE_SECONDS,
    PHASE_CODES,
    UID,
    VARIABLES,
    burn_query,
    dashboard,
    dashboard_text,
    demand_query,
    panels,
    queries,
    resolve,
)
from twinhull.metrics.presets import PRESETS
from twinhull.metrics.rules import rule_groups
from twinhull.plan.slo import FAST, budget
from twinhull.policy import TierPolicy, load_file

ROOT = Path(__file__).resolve().parent.parent
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool (Debian package prometheus) absent")
SOURCE = {"type": "prometheus", "uid": "${datasource}"}


@pytest.fixture(scope="module")
def board(policy: TierPolicy) -> dict[str, Any]:
    return dashboard(policy)


def _queries_by_place(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target and annotation query."""
    for panel in panels(board):
        for target in panel.get("targets") or []:
            yield f"panel {panel['title']!r} (id {panel['id']}) target {target['refId']}", \
                target["expr"]
    for annotation in board["annotations"]["list"]:
        yield f"annotation {annotation['name']!r}", annotation["expr"]


# -- the JSON model -----------------------------------------------------------------------


def test_the_model_is_a_grafana_dashboard_with_unique_ids_and_grid_positions(board):
    assert board["uid"] == UID and board["title"] and board["schemaVersion"] >= 39
    assert json.loads(json.dumps(board)) == board, "plain JSON values only"
    every = list(panels(board))
    ids = [p["id"] for p in every]
    assert all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == len(ids), ids
    cells: dict[tuple[int, int], int] = {}
    for p in every:
        grid = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid), p["title"]
        assert grid["h"] > 0 and grid["w"] > 0 and grid["x"] >= 0 and grid["y"] >= 0
        assert grid["x"] + grid["w"] <= 24, f"{p['title']} is wider than the grid"
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = p["id"]
        assert p["type"] in ("row", "timeseries", "state-timeline"), p["type"]
        if p["type"] != "row":
            assert p["title"] and p.get("description"), p
            assert p["datasource"] == SOURCE, p["title"]
            assert p["targets"], f"{p['title']} has no query"


def test_rows_repeat_per_deployment_and_per_tier(board):
    rows = {p["title"]: p for p in board["panels"] if p["type"] == "row"}
    assert {r.get("repeat") for r in rows.values()} == {"deployment", "tier", None}
    for row in rows.values():
        assert row["collapsed"] is False and row["panels"] == [], "panels follow their row"
        if "repeat" in row:
            assert f"${row['repeat']}" in row["title"]


def test_the_variables_are_present_and_multi_select(board, policy: TierPolicy):
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert tuple(variables) == VARIABLES
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    for name in ("namespace", "deployment", "tier"):
        assert variables[name]["multi"] and variables[name]["includeAll"], name
        assert "allValue" not in variables[name], "All expands to the listed values"
    for name in ("namespace", "deployment"):
        assert variables[name]["type"] == "query" and variables[name]["datasource"] == SOURCE
        assert names.DEPLOYMENT_INFO.name in variables[name]["query"]
    assert 'tier=~"$tier"' in variables["deployment"]["query"], "the tier narrows deployments"
    assert [t.strip() for t in variables["tier"]["query"].split(",")] == policy.names()


def test_every_query_reads_the_data_source_variable(board):
    for panel in panels(board):
        refs = [t["refId"] for t in panel.get("targets") or []]
        assert len(set(refs)) == len(refs), panel["title"]
        for target in panel.get("targets") or []:
            assert target["datasource"] == SOURCE, (panel["title"], target["refId"])
            assert target["expr"].strip() and target["range"] is True
    for annotation in board["annotations"]["list"]:
        assert annotation["datasource"] == SOURCE and annotation["enable"] is True
        assert annotation["expr"].strip()
    assert {a["name"] for a in board["annotations"]["list"]} == set(ANNOTATION_FIELDS)


def test_queries_lists_every_target_in_order(board):
    listed = queries(board)
    assert listed == [e for w, e in _queries_by_place(board) if w.startswith("panel")]
    assert len(listed) == 19
    collapsed = {"panels": [{"type": "row", "id": 1, "panels": [
        {"id": 2, "targets": [{"refId": "A", "expr": "up"}]}]}]}
    assert queries(collapsed) == ["up"], "panels inside a collapsed row count too"


def test_every_variable_a_query_uses_exists(board):
    for where, expr in _queries_by_place(board):
        resolved = resolve(expr)
        assert "$" not in resolved, where
    with pytest.raises(ValueError, match=r"\$cluster"):
        resolve('up{cluster=~"$cluster"}')
    assert resolve('rate(x{tier=~"$tier"}[$__rate_interval])', {"tier": "critical"}, "2m") \
        == 'rate(x{tier=~"critical"}[2m])'


# -- promtool ---------------------------------------------------------------------------


@needs_promtool
def test_promtool_parses_every_query(board, tmp_path: Path):
    """One recording rule per query (Grafana's variables resolved as "All" would send
    them); a query that does not parse fails naming its panel."""
    places = list(_queries_by_place(board))
    rules = [{"record": f"dashboard:q{i}", "expr": resolve(expr)}
             for i, (_, expr) in enumerate(places)]
    (tmp_path / "dashboard.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert PROMTOOL is not None
    run = subprocess.run([PROMTOOL, "check", "rules", "dashboard.yaml"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    failed = [places[int(i)][0] for i in re.findall(r'"dashboard:q(\d+)"', output)]
    assert run.returncode == 0 and not failed, (
        f"queries that do not parse: {failed}\n{output}")
    assert f"SUCCESS: {len(rules)} rules found" in output


def _promtool_test(tmp_path: Path, series: list[dict[str, str]],
                   tests: list[dict[str, Any]]) -> None:
    (tmp_path / "rules.yml").write_text("groups: []\n")
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series, "promql_expr_test": tests}]}
    (tmp_path / "test.json").write_text(json.dumps(spec))
    assert PROMTOOL is not None
    run = subprocess.run([PROMTOOL, "test", "rules", "test.json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]


@needs_promtool
def test_burn_rates_are_ratios_over_each_tiers_budget(policy: TierPolicy, tmp_path: Path):
    """0.144 % failed is 14.4 budgets for a 99.99 % tier and 1.44 for a 99.9 % one; 10 %
    slow is 2 budgets of 5 %. A tier not selected shows nothing."""
    who = 'namespace="ai", twinhull_deployment="{}", tier="{}"'
    series = [
        {"series": f"twinhull:slo_error_ratio:rate1h{{{who.format('chat', 'critical')}}}",
         "values": "0.00144x5"},
        {"series": f"twinhull:slo_error_ratio:rate1h{{{who.format('batch', 'standard')}}}",
         "values": "0.00144x5"},
        {"series": f"twinhull:slo_latency_ratio:rate5m{{{who.format('chat', 'critical')}}}",
         "values": "0.1x5"},
    ]
    errors = burn_query(policy, "availability", "1h")
    tests = [
        {"expr": f"round({resolve(errors)}, 0.001)", "eval_time": "2m", "exp_samples": [
            {"labels": f"{{{who.format('chat', 'critical')}}}", "value": 14.4},
            {"labels": f"{{{who.format('batch', 'standard')}}}", "value": 1.44}]},
        {"expr": f"round({resolve(errors, {'tier': 'critical'})}, 0.001)", "eval_time": "2m",
         "exp_samples": [{"labels": f"{{{who.format('chat', 'critical')}}}", "value": 14.4}]},
        {"expr": f"round({resolve(burn_query(policy, 'latency', '5m'))}, 0.001)",
         "eval_time": "2m",
         "exp_samples": [{"labels": f"{{{who.format('chat', 'critical')}}}", "value": 2}]},
    ]
    _promtool_test(tmp_path, series, tests)


@needs_promtool
def test_demand_sums_every_runtime_of_a_deployment(tmp_path: Path):
    """A deployment whose primary runs on vLLM and fallback on TGI: both runtimes' tokens
    add up; another namespace is left out when not selected."""
    scraped = 'namespace="ai", twinhull_deployment="chat", cluster="east", zone="east-a"'
    series = [
        {"series": f'vllm:prompt_tokens_total{{{scraped}, role="primary"}}',
         "values": "0+600x5"},
        {"series": f'vllm:generation_tokens_total{{{scraped}, role="primary"}}',
         "values": "0+1200x5"},
        {"series": f'tgi_request_input_length_sum{{{scraped}, role="fallback"}}',
         "values": "0+60x5"},
        {"series": 'vllm:prompt_tokens_total{namespace="other", twinhull_deployment="chat", '
                   'cluster="east", zone="east-a"}', "values": "0+6000x5"},
    ]
    query = resolve(demand_query(), {"namespace": "ai", "deployment": "chat"}, "2m")
    _promtool_test(tmp_path, series, [{
        "expr": f"round({query}, 0.001)", "eval_time": "4m",
        "exp_samples": [{"labels": '{namespace="ai", twinhull_deployment="chat"}',
                         "value": 31}]}])  # (600 + 1200 + 60) / 60


@needs_promtool
def test_the_cluster_phase_panel_shows_the_current_phase(board, tmp_path: Path):
    phase_query = next(t["expr"] for p in panels(board) if p["title"] == "Cluster health"
                       for t in p["targets"])
    series = [{"series": f'{names.CLUSTER_PHASE.name}{{cluster="{c}", phase="{p}"}}',
               "values": ("1x5" if p == current else "0x5")}
              for c, current in (("east", "Healthy"), ("west", "Down"))
              for p in PHASE_CODES]
    _promtool_test(tmp_path, series, [{"expr": phase_query, "eval_time": "2m", "exp_samples": [
        {"labels": '{cluster="east"}', "value": PHASE_CODES["Healthy"][0]},
        {"labels": '{cluster="west"}', "value": PHASE_CODES["Down"][0]}]}])


def test_every_phase_has_a_code_and_a_mapping(board):
    assert set(PHASE_CODES) == set(get_args(ClusterPhase))
    (panel,) = [p for p in panels(board) if p["title"] == "Cluster health"]
    shown = panel["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert {v["text"] for v in shown.values()} == set(PHASE_CODES)


# -- metric names -----------------------------------------------------------------------

_NOT_NAMES = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset",
              "bool", "and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: ``__name__`` matchers and bare
    selector names (not functions, keywords, label lists, strings or durations)."""
    found = set(re.findall(r'__name__="([^"]+)"', expr))
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # strings
    text = re.sub(r"\{[^{}]*\}", " ", text)                     # matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)                     # ranges, subqueries
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                  text)
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        if not match.group(2) and match.group(1).lower() not in _NOT_NAMES:
            found.add(match.group(1))
    return found


def test_the_name_reader_finds_names_and_nothing_else():
    assert metric_names('sum by (cluster, le) (rate(a_bucket{x="y{z}"}[5m])) / on (le) '
                        'group_left () b offset 1h > bool 0 or time() - c') == {
        "a_bucket", "b", "c"}
    assert metric_names('label_replace(vector(1), "tier", "a b", "", "")') == set()
    assert metric_names('{__name__="vllm:x_total", a!=""}') == {"vllm:x_total"}


def _known(policy: TierPolicy) -> set[str]:
    ours = {m.name + s for m in names.ALL
            for s in (("_bucket", "_sum", "_count") if m.kind == "histogram" else ("",))}
    records = {r["record"] for g in rule_groups(policy) for r in g["rules"] if "record" in r}
    runtimes = {s.name + suffix for p in PRESETS.values()
                for s in (p.prompt_tokens, p.generation_tokens, p.running, p.waiting,
                          p.success, p.failure) for suffix in ("",)}
    runtimes |= {p.latency.name + s for p in PRESETS.values()
                 for s in ("_bucket", "_sum", "_count")}
    return ours | records | runtimes


def test_every_metric_is_the_operators_a_recording_rule_or_a_runtimes(board, policy):
    known = _known(policy)
    used: set[str] = set()
    for where, expr in _queries_by_place(board):
        found = metric_names(expr)
        assert found, f"{where}: no metric found in {expr!r}"
        assert found <= known, f"{where} reads unknown metrics {found - known}"
        used |= found
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            assert metric_names(variable["query"].removeprefix("label_values(")) & known
    expected = {m.name for m in (
        names.TRAFFIC_WEIGHT, names.REPLICAS, names.SCALING_RECOMMENDED_REPLICAS,
        names.CLUSTER_PHASE, names.RECONCILE_TOTAL, names.RECONCILE_ERRORS_TOTAL,
        names.LOOP_LAST_BEAT_TIMESTAMP_SECONDS, names.LEADER, names.DECISIONS_TOTAL,
        names.DRILL_LAST_PASSED_TIMESTAMP_SECONDS)}
    expected.add(f"{names.CLUSTER_PROBE_DURATION_SECONDS.name}_bucket")
    expected |= {f"twinhull:slo_{r}_ratio:rate{w}" for r in ("error", "latency")
                 for w in BURN_WINDOWS}
    expected |= {PRESETS[r].prompt_tokens.name for r in ("vllm", "tgi", "sglang")}
    assert expected <= used, expected - used


def test_a_renamed_metric_would_fail(policy: TierPolicy):
    known = _known(policy)
    assert not metric_names("rate(twinhull_decision_total[1m])") <= known
    assert not metric_names('{__name__="vllm:prompt_tokens"}') <= known


# -- what the panels say ----------------------------------------------------------------


def test_burn_panels_divide_by_each_tiers_budget_with_the_page_thresholds(board, policy):
    burns = [p for p in panels(board) if "burn rate" in p["title"]]
    assert len(burns) == 2
    for panel in burns:
        assert [t["expr"].split("{")[0].rsplit(":", 1)[1] for t in panel["targets"]] == [
            f"rate{w}" for w in BURN_WINDOWS]
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert sorted(s["value"] for s in steps if s["value"] is not None) == sorted(
            float(p.factor) for p in FAST) == [6.0, 14.4]
        assert panel["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] == "line"
        for target in panel["targets"]:
            assert 'tier=~"$tier"' in target["expr"]
    availability = burn_query(policy, "availability", "1h")
    for tier in policy.names():
        assert (f'label_replace(vector({budget(policy.tiers[tier].availability_target):f}), '
                f'"tier", "{tier}", "", "")') in availability
    assert burn_query(policy, "latency", "1h").endswith("/ 0.05")
    with pytest.raises(ValueError, match="unknown SLI"):
        burn_query(policy, "cost", "1h")


def test_demand_reads_each_runtimes_token_counters_in_the_selection():
    query = demand_query()
    for runtime in ("vllm", "tgi", "sglang"):
        p = PRESETS[runtime]
        for series in (p.prompt_tokens, p.generation_tokens):
            assert f'{{__name__="{series.name}"' in query
        assert f'"runtime", "{runtime}", "", "")' in query
    selectors = re.findall(r"\{__name__=[^}]*\}", query)
    assert selectors and all('namespace=~"$namespace"' in s
                             and 'twinhull_deployment=~"$deployment"' in s for s in selectors)


def test_deployment_panels_read_only_the_selection(board):
    row = next(p for p in board["panels"] if p.get("repeat") == "deployment")
    after = [p for p in board["panels"] if p["gridPos"]["y"] > row["gridPos"]["y"]]
    deployment_panels = [p for p in after if p["gridPos"]["y"] < next(
        r["gridPos"]["y"] for r in after if r["type"] == "row")]
    assert {p["title"] for p in deployment_panels} == {
        "Traffic split", "Replicas per cluster and zone", "Demand and capacity"}
    for panel in deployment_panels:
        for target in panel["targets"]:
            assert 'twinhull_deployment=~"$deployment"' in target["expr"], panel["title"]
    (traffic,) = [p for p in deployment_panels if p["title"] == "Traffic split"]
    assert traffic["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"


def test_loop_freshness_shows_the_stale_loop_alerts_threshold(board, policy: TierPolicy):
    stale = [r["expr"] for g in rule_groups(policy) for r in g["rules"]
             if r.get("alert") == "TwinhullLoopStale"]
    assert stale and all(e.endswith(f"> {LOOP_STALE_SECONDS}") for e in stale), stale
    (panel,) = [p for p in panels(board) if p["title"] == "Loop freshness"]
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps] == [None, LOOP_STALE_SECONDS]


def test_annotations_mark_decisions_and_passed_drills(board):
    by_name = {a["name"]: a for a in board["annotations"]["list"]}
    decisions, drills = by_name["Decisions"], by_name["Drills passed"]
    assert "increase(twinhull_decisions_total[1m])) > 0" in decisions["expr"]
    assert decisions["titleFormat"] == "{{kind}}" and decisions["useValueForTime"] is False
    assert names.DRILL_LAST_PASSED_TIMESTAMP_SECONDS.name in drills["expr"]
    assert drills["expr"].endswith("* 1000") and drills["useValueForTime"] is True


# -- the generated file and the command ---------------------------------------------------


def test_the_chart_ships_the_generated_dashboard(policy: TierPolicy):
    rel = "charts/twinhull/files/dashboard.json"
    text = generated_files()[rel]
    assert text == dashboard_text(load_file())
    assert (ROOT / rel).read_text() == text, f"{rel} is stale: run twinhull crds"
    assert json.loads(text) == dashboard(policy)


def _run(argv: list[str]) -> tuple[int, str]:
    top = argparse.ArgumentParser(prog="twinhull")
    dashboardcmd.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(argv)
    out = io.StringIO()
    with redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()


def test_the_dashboard_command_prints_or_writes_the_json(tmp_path: Path, capsys,
                                                         policy: TierPolicy):
    code, text = _run(["dashboard"])
    assert code == 0 and json.loads(text) == dashboard(policy) and text.endswith("}\n")
    out = tmp_path / "dashboard.json"
    code, text = _run(["dashboard", "--output", str(out)])
    assert code == 0 and text == "" and json.loads(out.read_text()) == dashboard(policy)
    code, _ = _run(["dashboard", "--policy", str(tmp_path / "missing.yaml")])
    assert code == 2 and "cannot read the tier policy" in capsys.readouterr().err
    code, _ = _run(["dashboard", "--output", str(tmp_path / "no" / "such" / "dir.json")])
    assert code == 2 and "cannot write" in capsys.readouterr().err


def test_a_users_tier_gets_its_budget_and_a_full_target_none(tmp_path: Path):
    (tmp_path / "tiers.yaml").write_text((ROOT / "policies" / "tiers.yaml").read_text() + """---
apiVersion: serving.twinhull.io/v1alpha1
kind: ServingTier
metadata: {name: batch}
spec:
  availabilityTarget: "99"
  priority: 10
  verification: {maxLatencyP95Seconds: "30"}
---
apiVersion: serving.twinhull.io/v1alpha1
kind: ServingTier
metadata: {name: perfect}
spec:
  availabilityTarget: "100"
  priority: 5
  verification: {maxLatencyP95Seconds: "30"}
""")
    policy = load_file(tmp_path / "tiers.yaml")
    query = burn_query(policy, "availability", "5m")
    assert 'label_replace(vector(0.01), "tier", "batch", "", "")' in query
    assert '"perfect"' not in query, "no budget, no burn rate"
    tiers = next(v for v in dashboard(policy)["templating"]["list"] if v["name"] == "tier")
    assert "batch" in tiers["query"] and "perfect" in tiers["query"]
