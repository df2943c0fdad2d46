"""The lab's session lock: one e2e session or benchmark on a lab at a time (a second
one shared the first's Lease and namespaces, and both failed as if twinhull had)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "e2e"))

from labkit import layout, session  # noqa: E402


def _layout(tmp_path: Path) -> layout.Layout:
    return layout.Layout.from_env({"TWINHULL_LAB_RUN": str(tmp_path / "run")})


def _holder(tmp_path: Path) -> subprocess.Popen[str]:
    """Another process holding the lock until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT / 'e2e')!r})
        from labkit import layout, session
        lab = layout.Layout.from_env({{"TWINHULL_LAB_RUN": {str(tmp_path / 'run')!r}}})
        held = session.claim(lab, "the other session", wait=0)
        print("held", flush=True)
        sys.stdin.read()
    """)
    other = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert other.stdout is not None and other.stdout.readline() == "held\n"
    return other


def test_a_second_session_waits_then_fails_naming_the_holder(tmp_path: Path) -> None:
    other = _holder(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(session.LabBusy) as busy:
            session.claim(_layout(tmp_path), "this session", wait=0.5, poll=0.1)
        assert time.monotonic() - started >= 0.5
        message = str(busy.value)
        assert "in use by the other session" in message and f"pid {other.pid}" in message
        assert "TWINHULL_LAB_RUN" in message  # the fix: a lab of its own
    finally:
        other.stdin.close()  # type: ignore[union-attr]
        other.wait(timeout=10)


def test_the_lock_passes_on_when_the_holder_ends_even_killed(tmp_path: Path) -> None:
    other = _holder(tmp_path)
    other.kill()  # no clean release: the kernel drops the lock with the process
    other.wait(timeout=10)
    held = session.claim(_layout(tmp_path), "this session", wait=5, poll=0.1)
    try:
        assert "this session" in session.lock_path(_layout(tmp_path)).read_text()
    finally:
        held.close()
    session.claim(_layout(tmp_path), "the next one", wait=0).close()  # released on close


def test_the_lock_lives_beside_the_run_directory_which_a_purge_deletes(tmp_path: Path) -> None:
    path = session.lock_path(_layout(tmp_path))
    assert path.parent == tmp_path and not path.is_relative_to(tmp_path / "run")
