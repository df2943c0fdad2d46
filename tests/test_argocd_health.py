"""The GitOps view of twinhull's objects (issue 16) checked with the real tools: the Argo CD
health checks in ``argocd/resource_customizations/`` run under gopher-lua as Argo CD embeds
it (``luahealth``), and kstatus (``sigs.k8s.io/cli-utils``' ``status.Compute``, what Flux and
kpt report) on the same fixtures, both against one table: :data:`TABLE`, the README's.

The two binaries are built by ``make tools`` (``make unit`` builds them first). Without one
a test is skipped with the command to build it, unless ``CI`` is set: then it fails, so CI
never passes by not running them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CUSTOM = ROOT / "argocd" / "resource_customizations" / "serving.twinhull.io"
KINDS = ("ModelDeployment", "ServingCluster", "ModelSnapshot")


class Row(NamedTuple):
    kstatus: str
    argo: str


TABLE = {
    # fixture (testdata/<name>.yaml): kstatus verdict, Argo CD health
    "not-observed": Row("InProgress", "Progressing"),
    "rolling-out": Row("InProgress", "Progressing"),
    "replicas-not-ready": Row("InProgress", "Progressing"),
    "waiting-for-approval": Row("InProgress", "Suspended"),
    "serving": Row("Current", "Healthy"),
    "failed-over": Row("Current", "Degraded"),
    "no-serving-cluster": Row("InProgress", "Degraded"),
    "rolled-back": Row("Failed", "Degraded"),
    "rollout-failed": Row("Failed", "Degraded"),
    "invalid-spec": Row("Failed", "Degraded"),
    "deleting": Row("Terminating", "Progressing"),
}
"""ModelDeployment: the README's table (situation → kstatus → Argo CD health), one fixture
per row."""

SERVING_CLUSTER = {"healthy": "Healthy", "suspect": "Progressing", "recovering": "Progressing",
                   "down": "Degraded", "credentials-invalid": "Degraded",
                   "no-status": "Progressing"}
MODEL_SNAPSHOT = {"good": "Healthy", "pending": "Progressing", "no-status": "Progressing",
                  "bad": "Degraded"}
EXPECTED = {"ModelDeployment": {k: r.argo for k, r in TABLE.items()},
            "ServingCluster": SERVING_CLUSTER, "ModelSnapshot": MODEL_SNAPSHOT}


def tool(env: str, name: str) -> Path:
    """The binary ``make tools`` built, as the Makefile passes it in ``$env`` (its cache
    path is keyed by the tool's sources); skipped without it, failed in CI."""
    path = Path(os.environ.get(env) or "/nonexistent")
    if not path.is_file():
        why = (f"{name} is not built or {env} is not set: run `make unit` (or `make tools` "
               f"and set {env})")
        if os.environ.get("CI"):
            pytest.fail(f"{why}; CI must run this test")
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def luahealth() -> Path:
    return tool("TWINHULL_LUAHEALTH", "luahealth")


@pytest.fixture(scope="module")
def kstatus() -> Path:
    return tool("TWINHULL_KSTATUS", "kstatus")


def _tests(kind: str) -> dict[str, dict[str, str]]:
    """health_test.yaml of ``kind``: fixture name -> expected healthStatus."""
    raw = yaml.safe_load((CUSTOM / kind / "health_test.yaml").read_text())
    return {Path(t["inputPath"]).stem: t["healthStatus"] for t in raw["tests"]}


# -- Argo CD health under gopher-lua ---------------------------------------------------------

@pytest.mark.parametrize("open_libs", [False, True], ids=["argocd-cm", "built-in"])
@pytest.mark.parametrize("kind", KINDS)
def test_health_lua_passes_its_tests_under_gopher_lua(luahealth: Path, kind: str,
                                                      open_libs: bool) -> None:
    """Every case of health_test.yaml, as an argocd-cm customization runs (no string or
    math library) and as a built-in script runs (every library)."""
    args = [str(luahealth), *(["-open-libs"] if open_libs else []), str(CUSTOM / kind)]
    run = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"{run.stdout}{run.stderr}"
    assert f"PASS {CUSTOM / kind}" in run.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_health_test_yaml_follows_the_table(kind: str) -> None:
    """The expectations in health_test.yaml are the table's (a refreshed fixture or
    expectation cannot drift from it unseen), one fixture per row, each with a message."""
    tests = _tests(kind)
    assert {k: v["status"] for k, v in tests.items()} == EXPECTED[kind]
    fixtures = {p.stem for p in (CUSTOM / kind / "testdata").glob("*.yaml")}
    assert fixtures == set(EXPECTED[kind])
    assert all(v.get("message") for v in tests.values())


def test_luahealth_reports_a_failed_case_with_a_diff(luahealth: Path, tmp_path: Path) -> None:
    """The runner fails (exit 1) on a wrong expectation and on a fixture no test names,
    showing what was wanted and what the script returned."""
    kind = tmp_path / "ModelDeployment"
    shutil.copytree(CUSTOM / "ModelDeployment", kind)
    raw = yaml.safe_load((kind / "health_test.yaml").read_text())
    case = next(t for t in raw["tests"] if t["inputPath"] == "testdata/failed-over.yaml")
    case["healthStatus"]["status"] = "Healthy"
    (kind / "health_test.yaml").write_text(yaml.safe_dump(raw))
    shutil.copy(kind / "testdata" / "serving.yaml", kind / "testdata" / "unlisted.yaml")
    run = subprocess.run([str(luahealth), str(kind)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 1, run.stdout
    assert f"FAIL {kind}/testdata/failed-over.yaml" in run.stdout
    assert 'want {status: "Healthy", message: "serving degraded: west failed over"}' \
        in run.stdout
    assert 'got  {status: "Degraded", message: "serving degraded: west failed over"}' \
        in run.stdout
    assert f"FAIL {kind}/testdata/unlisted.yaml" in run.stdout


def test_luahealth_runs_scripts_without_the_string_library(luahealth: Path,
                                                          tmp_path: Path) -> None:
    """argocd-cm customizations run without Lua's string library unless useOpenLibs is set:
    a script that needs it fails here as it would in Argo CD, not only in production."""
    script = tmp_path / "health.lua"
    script.write_text('if string.find(obj.kind, "Model") then\n'
                      '  return {status = "Healthy", message = "x"}\nend\n')
    fixture = CUSTOM / "ModelDeployment" / "testdata" / "serving.yaml"
    strict = subprocess.run([str(luahealth), "-eval", str(script), str(fixture)],
                            capture_output=True, text=True, timeout=60)
    assert strict.returncode == 1
    assert "string" in strict.stderr
    opened = subprocess.run([str(luahealth), "-open-libs", "-eval", str(script),
                             str(fixture)], capture_output=True, text=True, timeout=60)
    assert opened.returncode == 0, opened.stderr
    assert json.loads(opened.stdout) == {"status": "Healthy", "message": "x"}


# -- kstatus (sigs.k8s.io/cli-utils) -------------------------------------------------------

@pytest.mark.parametrize("row", sorted(TABLE))
def test_kstatus_of_each_fixture_is_the_tables(kstatus: Path, row: str) -> None:
    """kstatus, the library Flux, kpt and cli-utils use, reads the same fixture as the Lua
    check and gives the table's verdict."""
    fixture = CUSTOM / "ModelDeployment" / "testdata" / f"{row}.yaml"
    run = subprocess.run([str(kstatus), str(fixture)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    verdict = json.loads(run.stdout)
    assert verdict["status"] == TABLE[row].kstatus, verdict
    if TABLE[row].kstatus in ("InProgress", "Failed"):  # the message says why
        assert verdict["message"]


def test_kstatus_reads_a_list_and_standard_input(kstatus: Path) -> None:
    """``kubectl get -o yaml`` of several objects prints a List: one line per item."""
    items = [yaml.safe_load((CUSTOM / "ModelDeployment" / "testdata" / f"{n}.yaml")
                            .read_text()) for n in ("serving", "rolled-back")]
    text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": items})
    run = subprocess.run([str(kstatus)], input=text, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert [json.loads(line)["status"] for line in run.stdout.splitlines()] == \
        ["Current", "Failed"]


# -- argocd-cm patch -----------------------------------------------------------------------

def _generate() -> ModuleType:
    spec = importlib.util.spec_from_file_location("argocd_generate",
                                                  ROOT / "argocd" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argocd_cm_patch_is_up_to_date() -> None:
    """argocd/argocd-cm-patch.yaml is what argocd/generate.py makes of the health.lua files
    (run `python argocd/generate.py` after editing one)."""
    generate = _generate()
    assert (ROOT / "argocd" / "argocd-cm-patch.yaml").read_text() == generate.render(), \
        "argocd/argocd-cm-patch.yaml is stale: run `python argocd/generate.py`"


def test_argocd_cm_patch_holds_each_script_verbatim() -> None:
    """Each key Argo CD reads holds its health.lua byte for byte once YAML is parsed."""
    patch = yaml.safe_load((ROOT / "argocd" / "argocd-cm-patch.yaml").read_text())
    assert patch["kind"] == "ConfigMap" and patch["metadata"]["name"] == "argocd-cm"
    assert patch["data"] == {
        f"resource.customizations.health.serving.twinhull.io_{kind}":
            (CUSTOM / kind / "health.lua").read_text() for kind in KINDS}


def test_generate_refuses_what_a_block_scalar_would_change() -> None:
    generate = _generate()
    with pytest.raises(ValueError, match="line 2: trailing white space"):
        generate.block("return {}\nlocal x = 1 \n")
    with pytest.raises(ValueError, match="exactly one newline"):
        generate.block("return {}")
    assert generate.block("a\n\n  b\n") == "    a\n\n      b\n"
