"""`twinhull validate`: examples pass, each invalid case fails with its message, exit codes,
JSON output, and no input makes it crash."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from twinhull.cli import main
from twinhull.policy.admission import TIER_RULES
from twinhull.validation import check_documents, parse_text, read_paths
from twinhull.validation.cel import evaluate

INVALID = sorted((Path(__file__).parent / "manifests" / "invalid").glob("*.yaml"))


def _expectations(path: Path) -> tuple[str, str]:
    text = path.read_text()
    message = re.search(r"^# expect: (.+)$", text, re.M)
    field = re.search(r"^# expect-path: (.+)$", text, re.M)
    assert message and field, f"{path} needs '# expect:' and '# expect-path:' lines"
    return message.group(1), field.group(1)


def test_examples_are_valid(root, capsys):
    assert main(["validate", str(root / "examples")]) == 0
    assert "valid; 8 twinhull object(s) checked, 1 other object(s) passed through" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize("case", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_case_fails_with_its_message(case, capsys):
    message, field = _expectations(case)
    assert main(["validate", str(case)]) == 1
    out = capsys.readouterr().out.splitlines()
    hits = [line for line in out if f": {field}: " in line and message in line]
    assert hits, f"expected '{field}: ...{message}...' in:\n" + "\n".join(out)
    assert re.match(rf"^{re.escape(str(case))}:\d+: \w+/[\w.-]+: ", hits[0])


def test_lines_point_at_the_field(root):
    case = root / "tests/manifests/invalid/negative-zone-replicas.yaml"
    report = check_documents(read_paths([case]), _policy())
    (problem,) = report.problems
    line = case.read_text().splitlines()[problem.line - 1]
    assert "west-a: -1" in line


def _policy():
    from twinhull.policy import load_file

    return load_file()


def test_json_output_for_machines(root, capsys):
    case = root / "tests/manifests/invalid/critical-single-cluster.yaml"
    assert main(["validate", "--output", "json", str(case)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["valid"] is False and data["checked"] == 1
    (problem,) = data["problems"]
    assert problem["kind"] == "ModelDeployment" and problem["name"] == "single"
    assert problem["path"] == "spec.placement" and problem["severity"] == "error"


def test_unreadable_input_and_bad_policy_exit_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\nb: c\n")
    assert main(["validate", str(broken)]) == 2
    assert f"{broken}:" in capsys.readouterr().err
    policy = tmp_path / "tiers.yaml"
    policy.write_text("kind: ServingTier\n")
    assert main(["validate", "--policy", str(policy), str(broken)]) == 2
    assert "invalid tier policy" in capsys.readouterr().err


def test_a_custom_policy_changes_the_verdict(root, tmp_path, capsys):
    policy = tmp_path / "tiers.yaml"
    policy.write_text(
        "apiVersion: serving.twinhull.io/v1alpha1\nkind: ServingTier\nmetadata: {name: critical}\n"
        "spec: {availabilityTarget: '99.99', priority: 1, minClusters: 1}\n"
    )
    case = root / "tests/manifests/invalid/critical-single-cluster.yaml"
    assert main(["validate", "--policy", str(policy), str(case)]) == 0


def test_other_kinds_pass_through(tmp_path, capsys):
    path = tmp_path / "mixed.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n"
                    "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: y}\nspec: {}\n")
    assert main(["validate", str(path)]) == 0
    assert "2 other object(s) passed through" in capsys.readouterr().err


def test_unknown_cluster_is_a_warning_when_clusters_are_given(root, tmp_path, capsys):
    md = (root / "examples/code-review.yaml").read_text().replace("cluster: west", "cluster: north")
    path = tmp_path / "both.yaml"
    path.write_text(md + "\n---\n" + (root / "examples/clusters.yaml").read_text())
    assert main(["validate", str(path)]) == 0
    assert "warning: no ServingCluster 'north' among the inputs" in capsys.readouterr().out


def test_admission_file_holds_the_rules_the_validator_evaluates(root):
    docs = list(yaml.safe_load_all((root / "policies/admission.yaml").read_text()))
    served = [v["expression"] for v in docs[0]["spec"]["validations"]]
    assert served == [r.expression for r in TIER_RULES]
    binding = docs[1]["spec"]
    assert binding["paramRef"]["parameterNotFoundAction"] == "Deny"


def test_committed_crd_rules_evaluate_as_the_validator_says(root):
    """The rule strings in crds/ (what the API server runs) judge a bad object the same."""
    crd = yaml.safe_load((root / "crds/serving.twinhull.io_modeldeployments.yaml").read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (unique,) = [v for v in spec_schema["x-kubernetes-validations"] if "exists_one" in v["rule"]]
    dup = {"placement": [{"cluster": "east", "zones": {}}, {"cluster": "east", "zones": {}}]}
    ok = {"placement": [{"cluster": "east", "zones": {}}, {"cluster": "west", "zones": {}}]}
    assert evaluate(unique["rule"], {"self": dup}) is False
    assert evaluate(unique["rule"], {"self": ok}) is True


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
twinhull_like = st.fixed_dictionaries(
    {
        "apiVersion": st.sampled_from(["serving.twinhull.io/v1alpha1", "serving.twinhull.io/v2",
                                       "v1"]),
        "kind": st.sampled_from(["ModelDeployment", "ServingCluster", "ServingTier",
                                 "ModelSnapshot", "FailoverDrill", "Other"]),
        "metadata": yaml_values,
        "spec": yaml_values,
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), yaml_values.map(yaml.safe_dump),
                 twinhull_like.map(yaml.safe_dump)))
def test_validate_never_raises_and_always_explains(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "input.yaml"
    path.write_text(text, encoding="utf-8")
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["validate", str(path)])
    assert code in (0, 1, 2)
    assert err.getvalue().strip() or out.getvalue().strip()
    if code == 1:
        assert re.search(r":\d+: ", out.getvalue())


def test_parse_text_keeps_lines():
    (doc,) = parse_text("a:\n  b:\n    - x\n    - y\n", file="f.yaml")
    assert doc.line_of(("a", "b", 1)) == 4
    assert doc.line_of(("a", "missing")) == 1


def test_strict_turns_warnings_into_failures(root, tmp_path, capsys):
    md = (root / "examples/code-review.yaml").read_text().replace("cluster: west", "cluster: north")
    path = tmp_path / "both.yaml"
    path.write_text(md + "\n---\n" + (root / "examples/clusters.yaml").read_text())
    assert main(["validate", "--strict", str(path)]) == 1
    assert "valid, 1 warning(s)" in capsys.readouterr().err


def test_declared_gpus_beyond_a_clusters_capacity_are_a_warning(root, tmp_path, capsys):
    clusters = (root / "examples/clusters.yaml").read_text().replace("gpus: 32", "gpus: 8")
    path = tmp_path / "small.yaml"
    path.write_text((root / "examples/ide-assistant.yaml").read_text() + "\n---\n" + clusters)
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    # ide-assistant: 2 primary replicas x 4 GPUs + 2 warm fallback replicas x 1 GPU per cluster
    assert "ServingCluster/east: spec.capacity.gpus: warning: the ModelDeployments given " \
           "declare 10 GPUs here" in out


def test_standard_input_is_read_with_a_dash(root, monkeypatch, capsys):
    import io

    text = (root / "tests/manifests/invalid/critical-single-cluster.yaml").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["validate", "-"]) == 1
    assert capsys.readouterr().out.startswith("<stdin>:")
