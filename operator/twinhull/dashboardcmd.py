"""``twinhull dashboard``: the Grafana dashboard of the fleet
(:mod:`twinhull.metrics.dashboard`) as its JSON model, for Grafana's "Import dashboard" or
file provisioning. Effects: reads the policy file, prints or writes JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twinhull.rulescmd import write_output

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(sub: Any) -> None:
    """The ``dashboard`` command on the subparsers ``sub``. Pure."""
    board = sub.add_parser(
        "dashboard", help="print the Grafana dashboard of the fleet (JSON model)",
        description="Print the Grafana dashboard (JSON model, Grafana 11 and 12) of "
        "twinhull's ModelDeployments: traffic split, replicas per cluster and zone, demand "
        "against the scaling recommendation, SLO burn rates per tier (budgets from the tier "
        "policy), member cluster health and the operator's loops, with decisions and passed "
        "drills as annotations. Its queries read the global Prometheus view and the "
        "recording rules of `twinhull rules`. Exit 0, or 2 when the policy cannot be read or "
        "the output cannot be written.")
    board.add_argument("--policy", metavar="FILE",
                       help="tier policy file (default: the packaged tiers)")
    board.add_argument("--output", "-o", metavar="PATH", help="write here instead of stdout")
    board.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Print or write the dashboard. Effects: reads the policy, writes stdout or a file."""
    from twinhull.errors import PolicyError
    from twinhull.metrics.dashboard import dashboard_text
    from twinhull.policy import load_file

    try:
        policy = load_file(Path(args.policy) if args.policy else None)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    text = dashboard_text(policy)
    return write_output(text, args.output)
