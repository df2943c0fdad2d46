"""kubectl, run against one lab cluster with timeouts on every call."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .layout import LabError

FIELD_MANAGER = "twinhull-lab"


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
            self.run(
                "apply",
                "--server-side",
                "--force-conflicts",
                f"--field-manager={FIELD_MANAGER}",
                *args,
            )

    def apply_objects(self, objects: list[dict[str, Any]]) -> None:
        """Server-side apply objects passed on stdin (so generated Secrets never touch the disk)."""
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        self.run(
            "apply",
            "--server-side",
            "--force-conflicts",
            f"--field-manager={FIELD_MANAGER}",
            "-f",
            "-",
            stdin=manifest,
        )

    def get(self, *args: str) -> dict[str, Any]:
        """`kubectl get ... -o json`, parsed."""
        return json.loads(self.run("get", *args, "-o", "json"))
