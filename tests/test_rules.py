"""The Prometheus rules generated from the tier policy (twinhull.metrics.rules) and the
operator's metric names (twinhull.metrics.names), tested like code: promtool checks the
generated rule file and runs the unit tests in tests/rules/ (firing and quiet cases for
every alert, over series named and labelled as the runtimes and the scrape write them)
against the committed policies/rules.yaml, which must be the generated one."""

from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from twinhull import rulescmd
from twinhull.generate import generated_files
from twinhull.metrics import names
from twinhull.metrics.presets import PRESETS
from twinhull.metrics.rules import (
    FAST,
    LATENCY_BUCKETS,
    SLOW,
    Options,
    alert_names,
    budget,
    burn_severities,
    latency_bucket,
    le_spellings,
    prometheus_rule,
    rule_file,
    rule_groups,
    rules_yaml,
    spent_percent,
)
from twinhull.policy import TierPolicy, load_file

ROOT = Path(__file__).resolve().parent.parent
RULE_TESTS = sorted((ROOT / "tests" / "rules").glob("*.test.yaml"))
GOLDEN = ROOT / "tests" / "golden"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool (Debian package prometheus) absent")


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


# -- promtool ---------------------------------------------------------------------------


@needs_promtool
def test_promtool_accepts_the_generated_rules(tmp_path: Path, policy: TierPolicy):
    (tmp_path / "rules.yaml").write_text(rules_yaml(rule_file(policy)))
    run = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    count = sum(len(g["rules"]) for g in rule_groups(policy))
    assert f"SUCCESS: {count} rules found" in run.stdout


@needs_promtool
def test_promtool_accepts_a_prometheusrule_groups_and_a_users_policy(tmp_path: Path):
    """A policy with a tier of its own (and a latency target beyond every bucket) still
    gives valid rules; the PrometheusRule's spec is a valid rule file."""
    text = (ROOT / "policies" / "tiers.yaml").read_text() + """---
apiVersion: serving.twinhull.io/v1alpha1
kind: ServingTier
metadata: {name: batch}
spec:
  availabilityTarget: "99"
  priority: 10
  verification: {maxLatencyP95Seconds: "3000"}
"""
    (tmp_path / "tiers.yaml").write_text(text)
    policy = load_file(tmp_path / "tiers.yaml")
    spec = prometheus_rule(policy, namespace="monitoring")["spec"]
    (tmp_path / "rules.yaml").write_text(rules_yaml(spec))
    run = _promtool("check", "rules", "rules.yaml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_committed_rule_files_are_the_generated_ones():
    files = generated_files()
    for rel in ("policies/rules.yaml", "charts/twinhull/files/prometheusrule-groups.yaml"):
        assert (ROOT / rel).read_text() == files[rel], f"{rel} is stale: run twinhull crds"
    assert yaml.safe_load(files["policies/rules.yaml"]) == rule_file(load_file())


@needs_promtool
@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path: Path):
    run = _promtool("test", "rules", path.name, cwd=path.parent)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-6000:]
    assert "SUCCESS" in run.stdout + run.stderr


def _cases() -> list[tuple[str, dict, dict]]:
    out = []
    for path in RULE_TESTS:
        doc = yaml.safe_load(path.read_text())
        assert doc["rule_files"] == ["../../policies/rules.yaml"], path.name
        for test in doc["tests"]:
            for case in test.get("alert_rule_test", []):
                out.append((path.name, test, case))
    return out


def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_one(policy: TierPolicy):
    """Each alert name has a case where it fires and one where promtool checks that it
    does not (an empty exp_alerts: before its ``for``, under a guard or a threshold); each
    rule without a tier (the operator's alerts) fires at each of its severities."""
    groups = rule_groups(policy)
    fired: set[str] = set()
    quiet: set[str] = set()
    fired_severity: set[tuple[str, str]] = set()
    for _, _, case in _cases():
        if case["exp_alerts"]:
            fired.add(case["alertname"])
            fired_severity |= {(case["alertname"], a["exp_labels"]["severity"])
                               for a in case["exp_alerts"]}
        else:
            quiet.add(case["alertname"])
    every = set(alert_names(groups))
    assert every - fired == set(), "alerts no unit test sees firing"
    untiered = {(r["alert"], r["labels"]["severity"]) for g in groups for r in g["rules"]
                if "alert" in r and "tier" not in r["labels"]}
    assert untiered - fired_severity == set()
    assert every - quiet == set(), "alerts no unit test checks quiet"


def test_the_unit_tests_cover_the_cases_the_issue_asks_for():
    names_ = {test["name"] for _, test, _ in _cases()}
    assert {
        "sustained 10 % errors on a critical deployment page",
        "a short spike only the 5m window sees does not page",
        "no page under the low-traffic guard",
        "a ticket-level burn fires the ticket only",
        "tokens hour over hour",
        "a cluster Down fires after its for",
        "a stale loop fires",
    } <= names_


def test_unit_test_series_are_the_runtimes_and_the_operators():
    """Input series use names the runtimes write (their golden pages) or the operator
    exports (names.ALL), with the scrape's labels on the runtimes' series."""
    golden = {m for p in GOLDEN.glob("*.prom")
              for m in re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", p.read_text(), re.M)}
    ours = {m.name + s for m in names.ALL
            for s in (("_bucket", "_sum", "_count") if m.kind == "histogram" else ("",))}
    scrape = {"namespace", "twinhull_deployment", "cluster", "zone", "role", "revision", "pod"}
    for path in RULE_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for s in test["input_series"]:
                name = s["series"].split("{")[0]
                labels = set(re.findall(r'(\w+)="', s["series"]))
                assert name in golden | ours, f"{path.name}: {name} is neither"
                if name in golden:
                    assert scrape <= labels, f"{path.name}: {s['series']}"


# -- the rules in Python ------------------------------------------------------------------


def _golden_buckets(page: str, histogram: str) -> list[str]:
    return [le for le in re.findall(rf'^{re.escape(histogram)}_bucket{{.*?le="([^"]+)"',
                                    page, re.M) if le != "+Inf"]


@pytest.mark.parametrize("runtime", ["vllm", "tgi", "sglang"])
def test_bucket_boundaries_are_the_runtimes(runtime: str):
    page = (GOLDEN / f"{runtime}.prom").read_text()
    assert list(LATENCY_BUCKETS[runtime]) == _golden_buckets(page, PRESETS[runtime].latency.name)


@pytest.mark.parametrize(("runtime", "target", "bound"), [
    ("vllm", "3", "5.0"), ("vllm", "5", "5.0"), ("vllm", "10", "10.0"),
    ("generic", "3", "5.0"), ("vllm", "0.0005", "0.001"), ("vllm", "3000", None),
    ("tgi", "3", "3.787675244106352"), ("tgi", "5", "5.681512866159528"),
    ("tgi", "10", "12.783403948858936"), ("tgi", "146", None),
    ("sglang", "3", "4.0"), ("sglang", "5", "6.0"), ("sglang", "10", "10.0"),
])
def test_the_latency_bucket_is_at_or_just_above_the_target(runtime, target, bound):
    assert latency_bucket(runtime, target) == bound


def test_le_matches_both_spellings_of_a_whole_number():
    assert le_spellings("5.0") == r"5|5\.0"
    assert le_spellings("0.25") == r"0\.25"
    assert re.fullmatch(le_spellings("3.787675244106352"), "3.787675244106352")


def test_budgets_and_burn_windows_are_the_workbooks():
    assert [budget(t) for t in ("99.99", "99.9", "99.5", "100")] == [
        budget("99.99"), budget("99.9"), budget("99.5"), 0]
    assert str(budget("99.99")) == "0.0001" and str(budget("99.5")) == "0.005"
    assert [spent_percent(p) for p in (*FAST, *SLOW)] == ["2", "5", "10", "10"]


def test_severities_follow_the_tier(policy: TierPolicy):
    assert {t: burn_severities(policy.tiers[t]) for t in policy.names()} == {
        "critical": ("P1", "P2"), "standard": ("P2", "P3"), "best-effort": ("P3", "P3")}
    for group in rule_groups(policy):
        for rule in group["rules"]:
            if "alert" in rule:
                labels = rule["labels"]
                assert labels["severity"] in ("P0", "P1", "P2", "P3")
                assert labels["notify"] == ("page" if labels["severity"] in ("P0", "P1")
                                            else "ticket")
                assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}


def test_each_tier_gets_its_thresholds_and_guard(policy: TierPolicy):
    rules = {(r["alert"], r["labels"].get("tier")): r["expr"]
             for g in rule_groups(policy, Options(min_requests=50)) for r in g["rules"]
             if "alert" in r}
    fast = rules[("TwinhullAvailabilityBurnFast", "critical")]
    assert '(14.4 * 0.0001)' in fast and '(6 * 0.0001)' in fast
    assert "* 3600 >= 50" in fast and "* 21600 >= 50" in fast
    slow = rules[("TwinhullAvailabilityBurnSlow", "best-effort")]
    assert "(3 * 0.005)" in slow and "(1 * 0.005)" in slow and ">= 50" not in slow
    assert "(14.4 * 0.05)" in rules[("TwinhullLatencyBurnFast", "standard")]


def test_a_latency_target_beyond_every_bucket_gets_no_slow_rule(tmp_path: Path):
    (tmp_path / "tiers.yaml").write_text("""
apiVersion: serving.twinhull.io/v1alpha1
kind: ServingTier
metadata: {name: batch}
spec:
  availabilityTarget: "99"
  priority: 10
  verification: {maxLatencyP95Seconds: "200"}
""")
    slow = [r["labels"] for g in rule_groups(load_file(tmp_path / "tiers.yaml"))
            for r in g["rules"] if r.get("record") == "twinhull:latency_slow:rate5m"]
    # vLLM's buckets go to 2560 s, SGLang's to 400 s, TGI's stop at 145.6 s
    assert sorted(r["runtime"] for r in slow) == ["sglang", "vllm"]
    assert {r["latency_le"] for r in slow} == {"640.0", "200.0"}


def test_every_operator_metric_a_rule_reads_is_named(policy: TierPolicy):
    known = {m.name + s for m in names.ALL
             for s in (("_bucket", "_sum", "_count") if m.kind == "histogram" else ("",))}
    exprs = " ".join(r["expr"] for g in rule_groups(policy) for r in g["rules"])
    used = set(re.findall(r"\btwinhull_[a-z_]+\b", exprs)) - {"twinhull_deployment"}
    assert used and used <= known, used - known


def test_metric_names_follow_the_conventions():
    seen = set()
    for m in names.ALL:
        assert re.fullmatch(r"twinhull_[a-z][a-z_]*[a-z]", m.name), m.name
        assert m.name not in seen
        seen.add(m.name)
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert m.name.endswith("_info") == (m.kind == "info"), m.name
        if m.kind == "histogram":
            assert m.name.endswith("_seconds"), m.name
        if "timestamp" in m.name:
            assert m.name.endswith("_timestamp_seconds") and m.kind == "gauge", m.name
        assert len(set(m.labels)) == len(m.labels) and m.help.endswith("."), m.name
        if "twinhull_deployment" in m.labels:
            assert m.labels[:2] == names.DEPLOYMENT, m.name


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


def test_runbook_links_point_at_readme_sections(policy: TierPolicy):
    anchors = {_slug(h) for h in re.findall(r"^#{2,3} (.+)$",
                                            (ROOT / "README.md").read_text(), re.M)}
    for group in rule_groups(policy):
        for rule in group["rules"]:
            if "alert" in rule:
                url = rule["annotations"]["runbook_url"]
                assert url.split("#")[1] in anchors, url


# -- twinhull rules ---------------------------------------------------------------------


def _run(argv: list[str]) -> tuple[int, str]:
    top = argparse.ArgumentParser(prog="twinhull")
    rulescmd.add_parser(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(argv)
    out = io.StringIO()
    with redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()


def test_the_rules_command_prints_a_rule_file_or_a_prometheusrule(policy: TierPolicy):
    code, text = _run(["rules"])
    assert code == 0 and yaml.safe_load(text) == rule_file(policy)
    code, text = _run(["rules", "--format", "prometheusrule", "--namespace", "monitoring"])
    doc = yaml.safe_load(text)
    assert code == 0 and doc["kind"] == "PrometheusRule"
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    assert doc["metadata"]["namespace"] == "monitoring"
    assert doc["spec"]["groups"] == rule_groups(policy)


def test_the_rules_command_takes_a_policy_parameters_and_an_output(tmp_path: Path,
                                                                     capsys):
    (tmp_path / "tiers.yaml").write_text((ROOT / "policies" / "tiers.yaml").read_text())
    out = tmp_path / "rules.yaml"
    code, text = _run(["rules", "--policy", str(tmp_path / "tiers.yaml"), "--min-requests",
                       "7", "--min-tokens", "5000", "--output", str(out)])
    assert code == 0 and text == ""
    doc = yaml.safe_load(out.read_text())
    assert doc == rule_file(load_file(), Options(min_requests=7, min_tokens=5000))
    code, _ = _run(["rules", "--policy", str(tmp_path / "missing.yaml")])
    assert code == 2 and "cannot read the tier policy" in capsys.readouterr().err
