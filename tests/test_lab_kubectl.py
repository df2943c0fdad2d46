"""The lab's kubectl wrapper: an apply that kubectl gave up waiting on is tried again, any
other failure is not (a script stands in for the kubectl binary)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from labkit.kube import Kubectl  # noqa: E402
from labkit.layout import LabError  # noqa: E402


def _kubectl(tmp_path: Path, failures: int, message: str) -> tuple[Kubectl, Path]:
    """A kubectl that fails ``failures`` times with ``message``, then succeeds; each call
    is counted in a file."""
    calls = tmp_path / "calls"
    script = tmp_path / "kubectl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo x >> "{calls}"\n'
        f'n=$(wc -l < "{calls}")\n'
        f'if [ "$n" -le {failures} ]; then echo "{message}" >&2; exit 1; fi\n'
        "cat > /dev/null\n"
    )
    script.chmod(0o755)
    return Kubectl(script, tmp_path / "kubeconfig", "south"), calls


def _count(calls: Path) -> int:
    return len(calls.read_text().splitlines()) if calls.exists() else 0


def test_an_apply_that_timed_out_is_tried_again(tmp_path: Path) -> None:
    kubectl, calls = _kubectl(
        tmp_path, 2,
        'error: error validating "STDIN": Get "https://127.0.0.1:1/openapi/v2?timeout=20s":'
        " context deadline exceeded (Client.Timeout exceeded while awaiting headers)")
    kubectl.apply_objects([{"apiVersion": "v1", "kind": "Namespace",
                            "metadata": {"name": "x"}}])
    assert _count(calls) == 3


def test_an_apply_that_keeps_timing_out_fails_after_three_tries(tmp_path: Path) -> None:
    kubectl, calls = _kubectl(tmp_path, 5, "Unable to connect: i/o timeout")
    with pytest.raises(LabError, match="i/o timeout"):
        kubectl.apply_objects([])
    assert _count(calls) == 3


def test_an_apply_the_server_refused_is_not_tried_again(tmp_path: Path) -> None:
    kubectl, calls = _kubectl(tmp_path, 1, 'The Namespace "X" is invalid')
    with pytest.raises(LabError, match="is invalid"):
        kubectl.apply_files([tmp_path / "ns.yaml"])
    assert _count(calls) == 1
