"""The ``twinhull`` command. Effects: reads and writes files, prints, exits.

Exit codes: 0 success, 1 the input is invalid (or generated files are stale), 2 usage
error or unreadable input.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from twinhull import __version__
from twinhull.errors import InstallError, ManifestError, PolicyError

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _cmd_crds(args: argparse.Namespace) -> int:
    from twinhull.generate import stale, write

    root = Path(args.root)
    if args.check:
        outdated = stale(root)
        for rel in outdated:
            print(f"stale: {rel}", file=sys.stderr)
        if outdated:
            print("generated files are stale; run `twinhull crds` (or `make crds`) and commit",
                  file=sys.stderr)
            return EXIT_INVALID
        print("generated files are up to date")
        return EXIT_OK
    for rel in write(root):
        print(f"wrote {rel}")
    return EXIT_OK


def _cmd_scrape_config(args: argparse.Namespace) -> int:
    import yaml

    from twinhull.metrics.scrape import federation_job, operator_job, pod_monitor, scrape_job

    if args.format == "operator":  # the hub's Prometheus: the operator's own metrics
        print(yaml.safe_dump({"scrape_configs": [operator_job(interval=args.interval)]},
                             sort_keys=False), end="")
        return EXIT_OK
    if args.format == "job":
        doc: dict[str, object] = {"scrape_configs": [scrape_job(
            interval=args.interval, kubeconfig_file=args.kubeconfig_file,
            namespaces=args.namespaces or None)]}
    elif args.format == "podmonitor":
        doc = pod_monitor(namespace=args.monitor_namespace, interval=args.interval)
    else:
        if not args.targets:
            print("--format federation needs --targets HOST:PORT[,HOST:PORT...]: the "
                  "per-member Prometheus servers", file=sys.stderr)
            return EXIT_USAGE
        doc = {"scrape_configs": [federation_job(args.targets.split(","),
                                                 interval=args.interval)]}
    print(yaml.safe_dump(doc, sort_keys=False), end="")
    return EXIT_OK


def _cmd_validate(args: argparse.Namespace) -> int:
    from twinhull.policy import load_file
    from twinhull.validation import check_documents, read_paths

    # A short batch building many small acyclic trees: the cycle collector would rescan
    # them over and over (half the run time on 1,000 manifests) and frees nothing.
    gc.disable()
    try:
        policy = load_file(Path(args.policy) if args.policy else None)
        documents = read_paths(Path(p) for p in args.paths)
    except (ManifestError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    report = check_documents(documents, policy)
    if args.output == "json":
        json.dump(
            {
                "valid": report.ok,
                "checked": report.checked,
                "passedThrough": report.passed_through,
                "problems": [p.as_dict() for p in report.problems],
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        for problem in report.problems:
            print(problem)
        errors = sum(p.severity == "error" for p in report.problems)
        warnings = len(report.problems) - errors
        verdict = "valid" if report.ok else f"invalid: {errors} error(s)"
        if warnings:
            verdict += f", {warnings} warning(s)"
        print(
            f"{verdict}; {report.checked} twinhull object(s) checked, "
            f"{report.passed_through} other object(s) passed through",
            file=sys.stderr,
        )
    passed = report.clean if args.strict else report.ok
    return EXIT_OK if passed else EXIT_INVALID


def _cmd_check(args: argparse.Namespace) -> int:
    import json
    from datetime import UTC, datetime

    from kubernetes import client
    from kubernetes import config as kube_config
    from kubernetes.client.exceptions import ApiException

    from twinhull.api.compat import crd_verdict
    from twinhull.handlers.leader import lease_health

    if args.kubeconfig or os.environ.get("KUBECONFIG"):
        kube_config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    else:
        kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    lease: dict[str, Any] | None
    try:
        raw = client.CoordinationV1Api().read_namespaced_lease(
            args.lease_name, args.namespace, _request_timeout=10, _preload_content=False)
        lease = json.loads(raw.data)  # type: ignore[attr-defined]  # _preload_content=False: the raw response
    except ApiException as exc:
        if exc.status != 404:
            print(f"error: cannot read lease {args.namespace}/{args.lease_name}: HTTP "
                  f"{exc.status} {exc.reason}", file=sys.stderr)
            return EXIT_INVALID
        lease = None
    ok, message = lease_health(lease, datetime.now(UTC))
    print(message if ok else f"error: {message}", file=sys.stdout if ok else sys.stderr)
    try:
        listed = client.ApiextensionsV1Api().list_custom_resource_definition(
            _request_timeout=10, _preload_content=False)
        crds = json.loads(listed.data)["items"]  # type: ignore[attr-defined]  # the raw response
    except ApiException as exc:
        print(f"error: cannot list the CRDs: HTTP {exc.status} {exc.reason}", file=sys.stderr)
        return EXIT_INVALID
    verdict = crd_verdict({c["metadata"]["name"]: c for c in crds})
    print(f"error: {verdict}" if verdict else "the CRDs are current",
          file=sys.stderr if verdict else sys.stdout)
    return EXIT_OK if ok and not verdict else EXIT_INVALID


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, or a message saying so."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more, or a message saying so."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def _duration(text: str) -> str:
    """An argparse type: a PromQL duration (``30s``, ``1m``, ``1m30s``) of at least 1 s."""
    from twinhull.metrics.presets import seconds

    try:
        ok = seconds(text) >= 1
    except ValueError:
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"{text!r} is not a PromQL duration of at least 1s "
                                         "such as 30s, 1m or 5m")
    return text


def _identity() -> str:
    """This replica's name in the Lease: the pod's name (HOSTNAME in a pod) and a random
    part, so a restarted process is a new candidate. Effects: reads the environment."""
    import secrets
    import socket

    return f"{os.environ.get('HOSTNAME') or socket.gethostname()}_{secrets.token_hex(4)}"


def _cmd_run(args: argparse.Namespace) -> int:
    from twinhull.handlers.leader import LeaseSettings
    from twinhull.handlers.run import run
    from twinhull.handlers.runtime import Settings

    namespace, _, name = args.gateway.partition("/")
    settings = Settings(namespace=args.namespace, gateway=(namespace, name or namespace),
                        resync_seconds=args.resync, prometheus_url=args.prometheus or None,
                        metrics_seconds=args.metrics_interval, rate_window=args.rate_window,
                        failure_metric=args.failure_metric or None,
                        prewarm_period_seconds=args.prewarm_period,
                        prewarm_lead_seconds=args.prewarm_lead,
                        heartbeat_seconds=args.heartbeat,
                        installation_id=args.installation_id or None,
                        allow_exec_plugins=args.allow_exec_plugins,
                        max_workers=args.max_workers)
    lease = None if args.no_leader_election else LeaseSettings(
        namespace=args.namespace, name=args.lease_name, identity=args.identity or _identity(),
        lease_seconds=args.lease_seconds, retry_seconds=args.lease_retry,
        margin_seconds=min(args.lease_seconds / 3, 3.0))
    try:
        run(kubeconfig=args.kubeconfig, policy=Path(args.policy) if args.policy else None,
            settings=settings, liveness=args.liveness, verbose=args.verbose, lease=lease,
            metrics=args.metrics_address or None)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


def _hub(args: argparse.Namespace) -> tuple[Any, str, str] | None:
    """A client of the hub's custom objects and the NAMESPACE/NAME target (None: usage
    error, printed). Effects: reads the kubeconfig."""
    from kubernetes import config as kube_config
    from kubernetes.client import ApiClient, CustomObjectsApi

    namespace, _, name = args.target.partition("/")
    if not name:
        print("error: give NAMESPACE/NAME", file=sys.stderr)
        return None
    kube_config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    return CustomObjectsApi(ApiClient()), namespace, name


def _deployment(api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    from kubernetes.client.exceptions import ApiException

    try:
        return cast(dict[str, Any], api.get_namespaced_custom_object(
            "serving.twinhull.io", "v1alpha1", namespace, "modeldeployments", name))
    except ApiException as exc:
        print(f"error: {namespace}/{name}: {exc.reason}", file=sys.stderr)
        return None


def _target(args: argparse.Namespace) -> tuple[Any, str, str, dict[str, Any]] | int:
    """The hub client, namespace, name and object of the NAMESPACE/NAME target, or the
    exit code (the error printed)."""
    hub = _hub(args)
    if hub is None:
        return EXIT_USAGE
    api, namespace, name = hub
    obj = _deployment(api, namespace, name)
    return EXIT_INVALID if obj is None else (api, namespace, name, obj)


def _cmd_status(args: argparse.Namespace) -> int:
    import yaml

    target = _target(args)
    if isinstance(target, int):
        return target
    _, namespace, name, obj = target
    status = obj.get("status") or {}
    print(f"{namespace}/{name}  tier={obj['spec']['slaTier']}  "
          f"traffic: {status.get('trafficSplit', '-')}  replicas: "
          f"{status.get('replicaSummary', '-')}")
    for c in status.get("conditions") or []:
        print(f"  {c['type']:<12} {c['status']:<6} {c['reason']}: {c.get('message', '')}")
    for c in status.get("clusters") or []:
        zones = " ".join(f"{z}={v['ready']}/{v['desired']}" for z, v in c["zones"].items())
        print(f"  cluster {c['name']:<8} {c['phase']:<10} weight={c['weight']:<3} {zones}")
    if args.decisions:
        print(yaml.safe_dump({"decisions": status.get("decisions") or []}, sort_keys=False))
    return EXIT_OK


def _age(created: str | None) -> str:
    from datetime import UTC, datetime

    if not created:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(created.replace("Z", "+00:00"))
               ).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _cmd_history(args: argparse.Namespace) -> int:
    target = _target(args)
    if isinstance(target, int):
        return target
    api, namespace, name, obj = target
    status = obj.get("status") or {}
    items = api.list_namespaced_custom_object(
        "serving.twinhull.io", "v1alpha1", namespace, "modelsnapshots",
        label_selector=f"serving.twinhull.io/deployment={name}")["items"]
    items.sort(key=lambda i: (i["metadata"].get("creationTimestamp") or "",
                              i["spec"].get("generation", 0)))
    rows = []
    for i in items:
        snap_status = i.get("status") or {}
        marks = [m for m, on in (("current", i["metadata"]["name"] == status.get(
            "currentSnapshot")), ("last-good", i["metadata"]["name"] == status.get(
                "lastGoodSnapshot")), ("held-back", i["spec"]["hash"] == status.get(
                    "heldBack"))) if on]
        rows.append({"name": i["metadata"]["name"], "generation": i["spec"].get("generation"),
                     "hash": i["spec"]["hash"], "reason": i["spec"].get("reason"),
                     "outcome": snap_status.get("outcome", "Pending"),
                     "why": snap_status.get("reason", ""),
                     "image": i["spec"]["deployment"]["model"]["image"],
                     "age": _age(i["metadata"].get("creationTimestamp")), "marks": marks})
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    print(f"{'SNAPSHOT':<40} {'GEN':>4} {'HASH':<16} {'OUTCOME':<8} {'AGE':>5}  IMAGE / NOTES")
    for r in rows:
        notes = " ".join(filter(None, [r["image"], r["why"], ",".join(r["marks"])]))
        print(f"{r['name']:<40} {r['generation']:>4} {r['hash']:<16} {r['outcome']:<8} "
              f"{r['age']:>5}  {notes}")
    return EXIT_OK


def _cmd_rollback(args: argparse.Namespace) -> int:
    import getpass
    import socket
    import time
    import uuid
    from datetime import UTC, datetime

    target = _target(args)
    if isinstance(target, int):
        return target
    api, namespace, name, _ = target
    request = {"id": uuid.uuid4().hex[:12], "to": args.to or "",
               "by": args.by or f"{getpass.getuser()}@{socket.gethostname()}",
               "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    api.patch_namespaced_custom_object(
        "serving.twinhull.io", "v1alpha1", namespace, "modeldeployments", name,
        {"metadata": {"annotations": {"serving.twinhull.io/rollback": json.dumps(request)}}})
    print(f"{namespace}/{name}: rollback to {args.to or 'the last Good snapshot'} requested "
          f"(id {request['id']})")
    if args.no_wait:
        return EXIT_OK
    start = time.monotonic()
    while time.monotonic() - start < args.timeout:
        status = (_deployment(api, namespace, name) or {}).get("status") or {}
        handled = status.get("rollbackRequest") or {}
        if handled.get("id") == request["id"]:
            if handled.get("result", "").startswith("no "):
                print(f"error: {handled['result']}", file=sys.stderr)
                return EXIT_INVALID
            if status.get("rollout") is None and status.get("currentSnapshot") == handled.get(
                    "to"):
                print(f"{namespace}/{name}: rolled back to {handled['to']} in "
                      f"{time.monotonic() - start:.1f}s; every cluster runs it, Ready. The "
                      "spec is held back until it changes: revert it in Git to match.")
                return EXIT_OK
        time.sleep(1.0)
    print(f"error: not rolled back within {args.timeout:g}s; see `twinhull status "
          f"{namespace}/{name}`", file=sys.stderr)
    return EXIT_INVALID


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``twinhull`` command. Pure."""
    top = argparse.ArgumentParser(
        prog="twinhull",
        description="Resilient active-active large-model serving on Kubernetes.",
    )
    top.add_argument("--version", action="version", version=f"twinhull {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    crds = sub.add_parser("crds", help="write the CRDs and policy files generated from the code")
    crds.add_argument("--root", default=".", help="repository root to write under (default: .)")
    crds.add_argument("--check", action="store_true",
                      help="write nothing; exit 1 when a generated file is missing or stale")
    crds.set_defaults(func=_cmd_crds)

    scrape = sub.add_parser(
        "scrape-config",
        help="print how a member's Prometheus scrapes the model servers twinhull renders",
        description="Print the scrape configuration twinhull's queries rely on: the pod "
        "labels of every model server mapped onto namespace, twinhull_deployment, cluster, "
        "zone, role and revision. job: a scrape_configs entry for a Prometheus in each "
        "member cluster (kubernetes_sd_configs); podmonitor: the same for "
        "prometheus-operator; federation: the job of a global Prometheus that federates "
        "the members' (point twinhull's --prometheus at the global view).")
    scrape.add_argument("--format", choices=("job", "podmonitor", "federation", "operator"),
                        default="job", help="what to print (default: job)")
    scrape.add_argument("--interval", default="15s", help="scrape interval (default: 15s)")
    scrape.add_argument("--kubeconfig-file", metavar="PATH",
                        help="job: discover pods through this kubeconfig (default: in-cluster)")
    scrape.add_argument("--namespaces", nargs="*", metavar="NS",
                        help="job: only these namespaces (default: all)")
    scrape.add_argument("--monitor-namespace", default="monitoring",
                        help="podmonitor: the PodMonitor's own namespace")
    scrape.add_argument("--targets", metavar="HOST:PORT,...",
                        help="federation: the per-member Prometheus servers")
    scrape.set_defaults(func=_cmd_scrape_config)

    validate = sub.add_parser(
        "validate",
        help="check manifests offline (schema, CEL rules, tier policy, references)",
        description="Check twinhull manifests offline, as the API server would, plus the tier "
        "policy and the references between ModelDeployments and ServingClusters given "
        "together. Other kinds pass through. Exit 0 valid, 1 invalid, 2 unreadable input.",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH",
                          help="YAML files or directories (searched recursively); - for stdin")
    validate.add_argument("--strict", action="store_true",
                          help="warnings fail too (exit 1), e.g. a placement naming a cluster "
                               "none of the inputs defines")
    validate.add_argument("--policy", metavar="FILE",
                          help="tier policy file (default: the packaged default tiers)")
    validate.add_argument("--output", choices=("text", "json"), default="text",
                          help="text: one line per problem; json: for machines")
    validate.set_defaults(func=_cmd_validate)

    run = sub.add_parser("run", help="run the operator against the hub cluster")
    run.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG, else in-cluster)")
    run.add_argument("--policy", metavar="FILE",
                     help="tier policy file (default: the packaged default tiers)")
    run.add_argument("--namespace", default="twinhull-system",
                     help="the operator's namespace; kubeconfig Secrets are read only here")
    run.add_argument("--gateway", default="twinhull-system/twinhull",
                     help="NAMESPACE/NAME of the Gateway the HTTPRoutes attach to")
    run.add_argument("--prometheus", metavar="URL",
                     default=os.environ.get("TWINHULL_PROMETHEUS_URL"),
                     help="Prometheus to read load from for scaling (default: "
                          "$TWINHULL_PROMETHEUS_URL); without it scaling holds its numbers")
    run.add_argument("--metrics-interval", type=float, default=10.0,
                     help="seconds between load reads from Prometheus")
    run.add_argument("--rate-window", type=_duration, default="1m",
                     help="PromQL range of rate() over token counters (>= 2 scrape intervals)")
    run.add_argument("--failure-metric", default="",
                     help="override: a Prometheus counter of failed requests (labelled "
                          "namespace, twinhull_deployment, e.g. the gateway's) to verify new "
                          "revisions' error rate with, instead of each runtime's own failure "
                          "counter (vLLM HTTP 5xx, TGI tgi_request_failure, SGLang aborts by "
                          "the server)")
    run.add_argument("--prewarm-period", type=float, default=86400.0,
                     help="seconds between recurring peaks that pre-warm looks back by "
                          "(yesterday and a week ago at 86400; 0: no pre-warm)")
    run.add_argument("--prewarm-lead", type=float, default=600.0,
                     help="seconds ahead pre-warm provisions for (about a replica's start-up)")
    run.add_argument("--heartbeat", type=_seconds, default=300.0,
                     help="seconds after which a ServingCluster's status is written again "
                          "when no probe changed it, to refresh status.lastProbeTime "
                          "(default 300, as kubelets report an unchanged Node; 0: only "
                          "changes are written)")
    run.add_argument("--resync", type=float, default=10.0,
                     help="seconds between full re-plans when nothing changes")
    run.add_argument("--max-workers", type=_positive_int, default=20,
                     help="objects of one kind handled at once (default 20): bounds the "
                          "requests in flight to the hub, so starting with thousands of "
                          "ModelDeployments does not flood it into 429s")
    run.add_argument("--installation-id", default=os.environ.get("TWINHULL_INSTALLATION_ID", ""),
                     help="this installation's identity, labelled on every member object so "
                          "hubs sharing a member never touch each other's objects (default: "
                          "$TWINHULL_INSTALLATION_ID, else the hub's kube-system Namespace UID)")
    run.add_argument("--allow-exec-plugins", action="store_true",
                     help="let member kubeconfigs run exec/auth-provider plugins (commands "
                          "taken from a Secret, run inside the operator); refused by default")
    run.add_argument("--lease-name", default="twinhull-leader",
                     help="the coordination.k8s.io Lease (in --namespace) replicas elect a "
                          "leader with; only the holder acts")
    run.add_argument("--lease-seconds", type=float, default=10.0,
                     help="how long a silent leader keeps the Lease: a killed leader is "
                          "replaced after this plus --lease-retry")
    run.add_argument("--lease-retry", type=float, default=2.0,
                     help="seconds between renewals (leader) and attempts (standby)")
    run.add_argument("--identity", default="",
                     help="this replica's name in the Lease (default: $HOSTNAME_<random>)")
    run.add_argument("--no-leader-election", action="store_true",
                     help="act without a Lease (one replica only; two would both write)")
    run.add_argument("--metrics-address", default="", metavar="HOST:PORT",
                     help="serve the operator's own metrics on http://HOST:PORT/metrics "
                          "(default: off; the chart uses 0.0.0.0:9102)")
    run.add_argument("--liveness", default="http://127.0.0.1:8080/healthz",
                     help="liveness endpoint URL (kopf's), empty to disable")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check", help="exit 0 when a replica of the operator leads (its Lease is fresh) and "
                      "the CRDs are current",
        description="Read the leader Lease and say whether a replica leads now, and whether "
        "the installed CRDs hold every field this version writes (helm upgrade never "
        "upgrades CRDs): what the chart's `helm test` runs. Exit 0 when both hold, 1 not.")
    check.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG, else "
                                            "in-cluster)")
    check.add_argument("--namespace", default="twinhull-system",
                       help="the operator's namespace (where the Lease is)")
    check.add_argument("--lease-name", default="twinhull-leader")
    check.set_defaults(func=_cmd_check)

    status = sub.add_parser("status", help="show a ModelDeployment's state")
    status.add_argument("target", metavar="NAMESPACE/NAME")
    status.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG)")
    status.add_argument("--decisions", action="store_true", help="also list recent decisions")
    status.set_defaults(func=_cmd_status)

    from twinhull import auditcmd, dashboardcmd, drillcmd, rulescmd

    auditcmd.add_parser(sub)
    drillcmd.add_parser(sub)
    rulescmd.add_parser(sub)
    dashboardcmd.add_parser(sub)

    history = sub.add_parser("history", help="list a ModelDeployment's snapshots")
    history.add_argument("target", metavar="NAMESPACE/NAME")
    history.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG)")
    history.add_argument("--output", "-o", choices=("text", "json"), default="text")
    history.set_defaults(func=_cmd_history)

    rollback = sub.add_parser(
        "rollback", help="roll a ModelDeployment back to a snapshot in every cluster",
        description="Asks the operator for a rollback through the annotation "
                    "serving.twinhull.io/rollback (the same works from kubectl or a pipeline), "
                    "then waits until every cluster runs the snapshot, Ready.")
    rollback.add_argument("target", metavar="NAMESPACE/NAME")
    rollback.add_argument("--to", help="snapshot name (`twinhull history`); default: the "
                                       "last Good one before the current")
    rollback.add_argument("--by", help="who asks (default: user@host)")
    rollback.add_argument("--kubeconfig", help="hub kubeconfig (default: $KUBECONFIG)")
    rollback.add_argument("--timeout", type=float, default=600.0,
                          help="seconds to wait for the result")
    rollback.add_argument("--no-wait", action="store_true", help="only make the request")
    rollback.set_defaults(func=_cmd_rollback)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``twinhull`` command. Effects: as the subcommand."""
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
