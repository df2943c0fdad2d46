"""``twinhull drill run`` and ``twinhull drill report``: start a FailoverDrill and follow
it live, and write its post-mortem report (Markdown, PNG timeline, JUnit XML).
Effects: reads and writes the hub, writes files, prints."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

GROUP, VERSION, PLURAL = "serving.twinhull.io", "v1alpha1", "failoverdrills"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
GOOD = ("Passed", "Go")
FINAL = ("Preflight", "Resolved", "Refused")


def add_parser(sub: Any) -> None:
    """The ``drill`` command and its subcommands. Pure."""
    drill = sub.add_parser("drill", help="run a failover drill and report on it")
    verbs = drill.add_subparsers(dest="verb", required=True, metavar="VERB")
    run = verbs.add_parser(
        "run", help="apply a FailoverDrill and follow it; exit with its verdict",
        description="Create the FailoverDrill in FILE and, with --follow, show its phase, "
        "the traffic weights and Ready replicas of each deployment in scope as they change, "
        "until it ends. Exit 0 when it passed (or a DryRun says Go), 1 otherwise.")
    run.add_argument("-f", "--filename", required=True, help="the FailoverDrill manifest")
    run.add_argument("--follow", action="store_true", help="follow it to the end")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to follow")
    run.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG)")
    run.set_defaults(func=cmd_run)
    report = verbs.add_parser(
        "report", help="write a drill's post-mortem report",
        description="Write NAME.md (a post-mortem: basic information, timeline, impact per "
        "deployment, what the operator did, verdict, action items) and NAME.png (weights and "
        "Ready replicas per cluster over time, the phases shaded) into --out, and JUnit XML "
        "with --junit. Exit 0 when the drill passed (or a DryRun says Go), 1 otherwise.")
    report.add_argument("target", metavar="NAMESPACE/NAME")
    report.add_argument("--out", default=".", help="directory for the Markdown and PNG")
    report.add_argument("--junit", help="also write JUnit XML to this file")
    report.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG)")
    report.set_defaults(func=cmd_report)


def _api(kubeconfig: str | None) -> Any:
    from kubernetes import config as kube_config
    from kubernetes.client import ApiClient, CustomObjectsApi

    kube_config.load_kube_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    return CustomObjectsApi(ApiClient())


def _progress(obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    parts = [f"{status.get('phase', 'Pending'):<18}"]
    for r in status.get("results") or []:
        sample = (r.get("samples") or [{}])[-1]
        weights = " ".join(f"{k}={v}" for k, v in sorted((sample.get("weights") or
                                                          r.get("expectedWeights") or {}).items()))
        ready = " ".join(f"{k}={v}" for k, v in sorted((sample.get("ready") or {}).items()))
        parts.append(f"{r.get('deployment')}: weights {weights or '-'}; Ready {ready or '-'}")
    return " | ".join(parts)


def _finished(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return status.get("phase") in FINAL or (status.get("phase") == "Aborted"
                                            and bool(status.get("completionTime")))


def cmd_run(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    try:
        manifest = yaml.safe_load(Path(args.filename).read_text())
    except (OSError, yaml.YAMLError) as exc:
        print(f"error: {args.filename}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(manifest, dict) or manifest.get("kind") != "FailoverDrill":
        print(f"error: {args.filename} is not a FailoverDrill manifest", file=sys.stderr)
        return EXIT_USAGE
    meta = manifest.get("metadata") or {}
    namespace, name = meta.get("namespace") or "default", meta.get("name")
    api = _api(args.kubeconfig)
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)
    except ApiException as exc:
        print(f"error: cannot create {namespace}/{name}: {exc.status} {exc.reason}: "
              f"{(exc.body or '')[:500]}", file=sys.stderr)
        return EXIT_FAILED
    print(f"failoverdrill {namespace}/{name} created")
    if not args.follow:
        return EXIT_OK
    start, last = time.monotonic(), ""
    while time.monotonic() - start < args.timeout:
        obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        line = _progress(obj)
        if line != last:
            print(f"{time.monotonic() - start:7.1f}s {line}", flush=True)
            last = line
        if _finished(obj):
            status = obj.get("status") or {}
            verdict = status.get("verdict") or status.get("phase")
            print(f"verdict: {verdict}" + "".join(f"\n  - {r}" for r in
                                                 status.get("reasons") or []))
            print(f"report: twinhull drill report {namespace}/{name} --out .")
            return EXIT_OK if verdict in GOOD else EXIT_FAILED
        time.sleep(1.0)
    print(f"error: still running after {args.timeout:g}s", file=sys.stderr)
    return EXIT_FAILED


def cmd_report(args: argparse.Namespace) -> int:
    from kubernetes.client.exceptions import ApiException

    namespace, _, name = args.target.partition("/")
    if not name:
        print("error: give NAMESPACE/NAME", file=sys.stderr)
        return EXIT_USAGE
    try:
        from twinhull.report import drill as report
    except ImportError as exc:
        print(f"error: {exc}; install the report extra: pip install 'twinhull[report]'",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        obj = _api(args.kubeconfig).get_namespaced_custom_object(GROUP, VERSION, namespace,
                                                                  PLURAL, name)
    except ApiException as exc:
        print(f"error: {namespace}/{name}: {exc.reason}", file=sys.stderr)
        return EXIT_FAILED
    try:
        markdown = report.markdown(obj)
        png = report.png(obj)
        junit = report.junit(obj) if args.junit else None
    except ValueError as exc:
        print(f"error: {namespace}/{name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(markdown)
    (out / f"{name}.png").write_bytes(png)
    written = [str(out / f"{name}.md"), str(out / f"{name}.png")]
    if junit is not None:
        Path(args.junit).write_text(junit)
        written.append(args.junit)
    print("wrote " + ", ".join(written))
    verdict = (obj.get("status") or {}).get("verdict")
    return EXIT_OK if verdict in GOOD else EXIT_FAILED
