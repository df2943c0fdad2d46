"""Supervision of the lab's background processes.

Each process runs in its own session, so it leads a process group that can be
signalled as a whole. Its pid and kernel start time go to a pid file (the start
time guards against a recycled pid), its output to a log file.
"""

from __future__ import annotations

import contextlib
import enum
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .layout import LabError


class State(enum.Enum):
    """What a supervised process is doing."""

    RUNNING = "running"
    FROZEN = "frozen"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Process:
    """One supervised process: its command line, pid file and log file."""

    argv: tuple[str, ...]
    pidfile: Path
    logfile: Path

    def pid(self) -> int | None:
        """The pid if the recorded process is still alive (not a zombie), else None."""
        try:
            pid_text, start_text = self.pidfile.read_text().split()
        except (FileNotFoundError, ValueError):
            return None
        stat = _stat(int(pid_text))
        if stat is None or stat.start != start_text or stat.state in "ZX":
            return None
        return int(pid_text)

    def state(self) -> State:
        """Running, frozen (SIGSTOPped) or stopped."""
        pid = self.pid()
        if pid is None:
            return State.STOPPED
        stat = _stat(pid)
        return State.FROZEN if stat is not None and stat.state in "Tt" else State.RUNNING

    def start(self) -> int:
        """Start the process in a new session, appending to its log; return its pid."""
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        with open(self.logfile, "ab") as log:
            log.write(
                f"\n==> {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(self.argv)}\n".encode()
            )
            log.flush()
            child = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.pidfile.parent,
            )
        stat = _stat(child.pid)
        self.pidfile.write_text(f"{child.pid} {stat.start if stat else 0}\n")
        return child.pid

    def signal(self, sig: signal.Signals) -> bool:
        """Send `sig` to the process group; False if the process is not alive."""
        pid = self.pid()
        if pid is None:
            return False
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, grace: float = 10.0) -> None:
        """Stop the process group: SIGTERM (and SIGCONT if frozen), SIGKILL after `grace` s."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return
        _signal_group(pid, signal.SIGTERM)
        _signal_group(pid, signal.SIGCONT)
        if not _wait_group_gone(pid, grace):
            _signal_group(pid, signal.SIGKILL)
            if not _wait_group_gone(pid, 5.0):
                raise LabError(f"process group {pid} ({self.argv[0]}) survived SIGKILL")
        self.pidfile.unlink(missing_ok=True)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


@dataclass(frozen=True)
class _Stat:
    state: str
    pgrp: int
    start: str


def _stat(pid: int) -> _Stat | None:
    """State, process group and start time of `pid` from /proc, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()  # fields[0] is field 3 of proc(5)
    return _Stat(state=fields[0], pgrp=int(fields[2]), start=fields[19])


def _live_pids() -> Iterator[int]:
    """Pids of all live (non-zombie) processes."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat.state not in "ZX":
                yield int(entry.name)


def _group_alive(pgid: int) -> bool:
    """True while any live process is in process group `pgid`."""
    return any((stat := _stat(pid)) is not None and stat.pgrp == pgid for pid in _live_pids())


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _wait_group_gone(pgid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def strays(marker: str, programs: set[str]) -> list[tuple[int, str]]:
    """Live processes (pid, command line) running one of `programs` with `marker` in an argument."""
    found = []
    for pid in _live_pids():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if Path(argv[0]).name in programs and any(marker in arg for arg in argv[1:]):
            found.append((pid, " ".join(argv).strip()))
    return found


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """SIGKILL one process and wait until it is gone or a zombie."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while (stat := _stat(pid)) is not None and stat.state not in "ZX":
        if time.monotonic() > deadline:
            raise LabError(f"pid {pid} survived SIGKILL")
        time.sleep(0.1)
