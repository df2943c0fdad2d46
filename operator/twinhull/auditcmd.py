"""``twinhull audit`` and ``twinhull explain``: read the durable audit record the operator
keeps in its namespace (:mod:`twinhull.handlers.audit`), and replay one decision on the
pure planner (:func:`twinhull.plan.record.explain`). Effects: hub reads, prints."""

from __future__ import annotations

import argparse
import base64
import json
import re
import sys
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

EXIT_OK, EXIT_DIFFERS, EXIT_USAGE, EXIT_MISSING = 0, 1, 2, 3
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub: Any) -> None:
    """The ``audit`` and ``explain`` commands on the subparsers ``sub``. Pure."""
    audit = sub.add_parser(
        "audit", help="list the automated decisions on a ModelDeployment",
        description="List the audit record of a ModelDeployment: every automated decision "
        "(failover, failback step, traffic shift, scale, capacity move, snapshot, rollout "
        "step, rollback), newest last, with who decided it, why, and the inputs measured. "
        "Read from the operator's namespace, where it outlives Events and operator restarts "
        "(the newest 200 per deployment). Exit 0, 2 on a usage error, 3 when there is no "
        "record.")
    audit.add_argument("target", metavar="NAMESPACE/NAME")
    audit.add_argument("--since", default="24h", metavar="DURATION",
                       help="how far back, e.g. 30m, 24h, 7d (default 24h)")
    _common(audit)
    audit.add_argument("--output", "-o", choices=("text", "json"), default="text")
    audit.set_defaults(func=_cmd_audit)

    explain = sub.add_parser(
        "explain", help="replay a recorded decision on the planner",
        description="Find a decision in the audit record and run the same pure planner on "
        "the inputs it was recorded with: says whether it reaches the same decision (same "
        "id, kind, reason and inputs), or what differs, and whether the planner that decided "
        "was another version. Exit 0 reproduced, 1 not reproduced, 2 usage, 3 not found.")
    explain.add_argument("decision", metavar="DECISION_ID")
    explain.add_argument("--deployment", metavar="NAMESPACE/NAME",
                         help="look only in this deployment's record (faster)")
    _common(explain)
    explain.set_defaults(func=_cmd_explain)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG)")
    parser.add_argument("--namespace", "-n", default="twinhull-system",
                        help="the operator's namespace (default twinhull-system)")


def parse_duration(text: str) -> timedelta | None:
    """``30m``, ``24h``, ``7d`` (None if not one). Pure."""
    match = _DURATION.match(text.strip())
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]]) if match else None


def records_in(cm: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any], bytes | None]]:
    """(key, summary, replay bytes) of every readable record in an audit ConfigMap, oldest
    first; unreadable entries are skipped with a warning on stderr. Pure (but stderr)."""
    data, binary = cm.get("data") or {}, cm.get("binaryData") or {}
    for name in sorted(data):
        if not name.endswith(".json"):
            continue
        key = name.removesuffix(".json")
        try:
            summary = json.loads(data[name])
            if not isinstance(summary, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            print(f"warning: {cm['metadata']['name']}: record {key} is damaged ({exc}); "
                  "skipped", file=sys.stderr)
            continue
        raw = binary.get(f"{key}.replay")
        yield key, summary, base64.b64decode(raw) if raw else None


def _core(args: argparse.Namespace) -> Any:
    from kubernetes import config as kube_config
    from kubernetes.client import ApiClient, CoreV1Api

    kube_config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    return CoreV1Api(ApiClient())


def _configmaps(args: argparse.Namespace, target: str | None) -> list[dict[str, Any]] | int:
    from kubernetes.client.exceptions import ApiException

    from twinhull.handlers.audit import LABEL, configmap_name

    api = _core(args)
    try:
        if target is not None:
            namespace, _, name = target.partition("/")
            raw = api.read_namespaced_config_map(configmap_name(namespace, name),
                                                 args.namespace, _preload_content=False)
            return [json.loads(raw.data)]
        raw = api.list_namespaced_config_map(args.namespace, label_selector=f"{LABEL}=true",
                                             _preload_content=False)
        return list(json.loads(raw.data).get("items") or [])
    except ApiException as exc:
        if exc.status == 404:
            print(f"error: no audit record of {target} in namespace {args.namespace} (no "
                  "decision yet, or another --namespace)", file=sys.stderr)
            return EXIT_MISSING
        print(f"error: cannot read the audit record in {args.namespace}: HTTP {exc.status} "
              f"{exc.reason}", file=sys.stderr)
        return EXIT_USAGE


def _cmd_audit(args: argparse.Namespace) -> int:
    if "/" not in args.target:
        print("error: give NAMESPACE/NAME", file=sys.stderr)
        return EXIT_USAGE
    since = parse_duration(args.since)
    if since is None:
        print(f"error: --since {args.since!r}: give a number and a unit, e.g. 30m, 24h, 7d",
              file=sys.stderr)
        return EXIT_USAGE
    found = _configmaps(args, args.target)
    if isinstance(found, int):
        return found
    cutoff = datetime.now(UTC) - since
    rows = []
    for _, summary, _ in records_in(found[0]):
        try:
            when = datetime.fromisoformat(str(summary.get("time")).replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is None or when >= cutoff:
            rows.append(summary)
    if args.output == "json":
        print(json.dumps(rows, indent=2, sort_keys=True))
        return EXIT_OK
    if not rows:
        print(f"no decision on {args.target} in the last {args.since}")
        return EXIT_OK
    for r in rows:
        print(f"{r.get('time')}  {r.get('kind'):<14} {r.get('id')}  by {r.get('by')}")
        print(f"    {r.get('reason')}")
        inputs = json.dumps(r.get("inputs"), sort_keys=True, default=str)
        print(f"    inputs: {inputs[:600]}{'…' if len(inputs) > 600 else ''}")
    return EXIT_OK


def _cmd_explain(args: argparse.Namespace) -> int:
    from twinhull import __version__
    from twinhull.plan.record import AuditRecord, RecordError, decode_replay, explain

    found = _configmaps(args, args.deployment)
    if isinstance(found, int):
        return found
    hit = next(((summary, replay) for cm in found for key, summary, replay in records_in(cm)
                if key.endswith(f".{args.decision}")), None)
    if hit is None:
        where = args.deployment or f"any ModelDeployment's record in {args.namespace}"
        print(f"error: no decision {args.decision} in {where}", file=sys.stderr)
        return EXIT_MISSING
    summary, raw = hit
    try:
        replay = decode_replay(raw) if raw is not None else None
    except RecordError as exc:
        print(f"error: decision {args.decision}: {exc}", file=sys.stderr)
        return EXIT_DIFFERS
    record = AuditRecord(
        id=str(summary["id"]), kind=str(summary["kind"]), reason=str(summary["reason"]),
        inputs=summary.get("inputs") or {}, object=str(summary.get("object")),
        time=str(summary.get("time")), by=str(summary.get("by")),
        version=str(summary.get("version")), applied=bool(summary.get("applied", True)),
        replay=replay)
    result = explain(record, __version__)
    print(f"{record.object}: {record.kind} {record.id} at {record.time} by {record.by}")
    print(f"  recorded: {record.reason}")
    if result.replayed is not None:
        print(f"  replayed: {result.replayed.reason}")
    print(result.verdict)
    for line in result.differences:
        print(f"  {line}")
    return EXIT_OK if result.reproduced else EXIT_DIFFERS
