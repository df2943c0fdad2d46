"""Command line of `e2e/lab`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from . import faults
from .lab import Lab
from .layout import Cluster, LabError, Layout, cluster, member_zone

DESCRIPTION = """\
twinhull's local lab: a hub cluster and two member clusters (east: zones east-a,
east-b; west: zones west-a, west-b) made of real etcd, kube-apiserver,
kube-controller-manager and kube-scheduler processes, KWOK nodes with GPUs, and
Prometheus. Everything listens on 127.0.0.1.

Environment:
  TWINHULL_LAB_CACHE      built binaries (default ~/.cache/twinhull/lab)
  TWINHULL_LAB_RUN        pki, kubeconfigs, etcd data, logs (default $TWINHULL_LAB_CACHE/run)
  TWINHULL_LAB_PORT_BASE  first port (default 17400): API servers hub 17400, east 17410,
                          west 17420; Prometheus 17490; toxiproxy 17495, its proxies to
                          east 17496 and west 17497 (twinhull reaches members through them)
  TWINHULL_LAB_MEMBERS    2 (default) or 3: a third member, south (zones south-a, south-b;
                          API server 17430, proxy 17498), for the scale benchmark
  TWINHULL_LAB_AUDIT      writes (default: the hub logs writes by ServiceAccounts) or
                          requests (every API server logs every ServiceAccount request)
  TWINHULL_LAB_NODES_PER_ZONE  KWOK nodes per zone, 110 pods each (default 2, up to 20)
"""

EPILOG = """\
examples:
  e2e/lab up && eval "$(e2e/lab env)"
  e2e/lab kill west; e2e/lab revive west
  e2e/lab zone-down east east-a; e2e/lab zone-up east east-a
  e2e/lab partition west; e2e/lab heal west
  e2e/lab member-down west; e2e/lab member-up west
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e2e/lab",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    verbs.add_parser("up", help="build if needed, start everything, wait until ready (idempotent)")
    down = verbs.add_parser("down", help="stop every lab process")
    down.add_argument(
        "--purge", action="store_true", help="also delete the run directory (etcd data, pki, logs)"
    )
    verbs.add_parser(
        "status", help="show each process; exit 0 all up, 3 nothing running, 1 otherwise"
    )
    verbs.add_parser("env", help="print shell export lines (kubeconfigs, Prometheus URL, bin dir)")
    for verb, text in (
        ("kill", "SIGKILL a cluster's kube-apiserver (etcd keeps the objects)"),
        ("freeze", "SIGSTOP a cluster's kube-apiserver: calls hang"),
        ("revive", "restart a killed kube-apiserver or thaw a frozen one"),
    ):
        verbs.add_parser(verb, help=text).add_argument(
            "cluster", metavar="CLUSTER", help="hub, east or west"
        )
    for verb, text in (
        ("partition", "black-hole the network between twinhull and a member's API server"),
        ("heal", "remove a partition or a slow link to a member"),
        ("member-down", "lose a whole member: API server, Prometheus and model servers"),
        ("member-up", "bring a lost member back"),
    ):
        verbs.add_parser(verb, help=text).add_argument(
            "cluster", metavar="CLUSTER", help="east or west")
    slow = verbs.add_parser("slow", help="delay every answer of a member's API server to twinhull")
    slow.add_argument("cluster", metavar="CLUSTER", help="east or west")
    slow.add_argument("milliseconds", type=int, metavar="MS")
    for verb, text in (
        ("zone-down", "make a zone's nodes NotReady and its pods unready"),
        ("zone-up", "bring a zone's nodes and pods back to Ready"),
    ):
        zone = verbs.add_parser(verb, help=text)
        zone.add_argument("cluster", metavar="CLUSTER", help="east or west")
        zone.add_argument("zone", metavar="ZONE", help="e.g. east-a")
    verbs.add_parser("prometheus-stop", help="stop Prometheus only")
    verbs.add_parser("prometheus-start", help="start Prometheus again")
    verbs.add_parser("prometheus-reload",
                     help="make Prometheus read its rule files again (TWINHULL_PROMETHEUS_RULES)")
    return parser


def member(name: str) -> Cluster:
    """The member cluster called `name` (LabError for the hub or an unknown name)."""
    found = cluster(name)
    if not found.is_member:
        raise LabError(f"{name} is not a member cluster; choose east or west")
    return found


def _run(args: argparse.Namespace, lab: Lab) -> int:
    verbs: dict[str, Callable[[], int | None]] = {
        "up": lab.up,
        "down": lambda: lab.down(purge=args.purge),
        "status": lab.status,
        "env": lambda: print(lab.env(), end=""),
        "kill": lambda: faults.kill(lab, cluster(args.cluster)),
        "freeze": lambda: faults.freeze(lab, cluster(args.cluster)),
        "revive": lambda: faults.revive(lab, cluster(args.cluster)),
        "partition": lambda: faults.partition(lab, member(args.cluster)),
        "heal": lambda: faults.heal(lab, member(args.cluster)),
        "slow": lambda: faults.slow(lab, member(args.cluster), args.milliseconds),
        "member-down": lambda: faults.member_down(lab, member(args.cluster)),
        "member-up": lambda: faults.member_up(lab, member(args.cluster)),
        "zone-down": lambda: faults.zone_down(lab, member_zone(args.cluster, args.zone), args.zone),
        "zone-up": lambda: faults.zone_up(lab, member_zone(args.cluster, args.zone), args.zone),
        "prometheus-stop": lambda: faults.prometheus_stop(lab),
        "prometheus-start": lambda: faults.prometheus_start(lab),
        "prometheus-reload": lambda: faults.prometheus_reload(lab),
    }
    return verbs[args.verb]() or 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one verb, turn LabError into a message and exit code 1."""
    args = _parser().parse_args(argv)
    try:
        return _run(args, Lab(Layout.from_env()))
    except LabError as err:
        print(f"e2e/lab {args.verb}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `e2e/lab status | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
