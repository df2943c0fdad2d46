"""kubectl, run against one lab cluster with timeouts on every call."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .layout import LabError

FIELD_MANAGER = "twinhull-lab"

TIMEOUTS = (
    "context deadline exceeded",
    "Client.Timeout exceeded",
    "timed out after",
    "TLS handshake timeout",
    "i/o timeout",
)
"""What kubectl says (or :meth:`Kubectl.run` says of it) when it gave up waiting."""


class Kubectl:
    """The lab's kubectl bound to one cluster's kubeconfig."""

    def __init__(self, binary: Path, kubeconfig: Path, cluster: str) -> None:
        self._base = [str(binary), f"--kubeconfig={kubeconfig}", "--request-timeout=20s"]
        self.cluster = cluster

    def run(self, *args: str, stdin: str | None = None, timeout: float = 60.0) -> str:
        """Run kubectl and return its stdout; raise LabError with its stderr on failure."""
        try:
            result = subprocess.run(
                [*self._base, *args],
                input=stdin,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise LabError(
                f"{self.cluster}: kubectl {' '.join(args[:3])} timed out after {timeout:.0f}s"
            ) from err
        if result.returncode != 0:
            raise LabError(
                f"{self.cluster}: kubectl {' '.join(args[:3])} failed: {result.stderr.strip()}"
            )
        return result.stdout

    def apply_files(self, paths: Iterable[Path]) -> None:
        """Server-side apply manifest files in the given order."""
        args = [arg for path in paths for arg in ("-f", str(path))]
        if args:
            self._apply(*args)

    def apply_objects(self, objects: list[dict[str, Any]]) -> None:
        """Server-side apply objects passed on stdin (so generated Secrets never touch the disk)."""
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        self._apply("-f", "-", stdin=manifest)

    def _apply(self, *args: str, stdin: str | None = None) -> None:
        """Server-side apply, tried again (up to 3 times) when kubectl gave up waiting:
        an API server revived under thousands of objects has answered OpenAPI (which
        kubectl reads to validate) after kubectl's 20 s, and the apply is idempotent.
        Any other failure is raised at once."""
        for attempt in range(3):
            try:
                self.run(
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    f"--field-manager={FIELD_MANAGER}",
                    *args,
                    stdin=stdin,
                )
                return
            except LabError as err:
                if attempt == 2 or not any(s in str(err) for s in TIMEOUTS):
                    raise

    def get(self, *args: str) -> dict[str, Any]:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.run("get", *args, "-o", "json"))
