"""``twinhull rules``: the Prometheus recording and alerting rules of a tier policy
(:mod:`twinhull.metrics.rules`), as a plain rule file or a prometheus-operator
``PrometheusRule``. Effects: reads the policy file, prints or writes YAML."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_USAGE = 0, 2


def add_parser(sub: Any) -> None:
    """The ``rules`` command on the subparsers ``sub``. Pure."""
    from twinhull.metrics.rules import Options

    defaults = Options()
    rules = sub.add_parser(
        "rules", help="print the Prometheus alerting and recording rules of the tier policy",
        description="Print the recording rules (error and latency ratios per window, tokens) "
        "and the alerts (multi-window burn rates per tier, token anomaly, idle deployments, "
        "overdue drills, the operator's own health) generated from the tier policy, as a "
        "Prometheus rule file (rule_files) or a PrometheusRule (monitoring.coreos.com/v1). "
        "Exit 0, or 2 when the policy cannot be read.")
    rules.add_argument("--policy", metavar="FILE",
                       help="tier policy file (default: the packaged tiers)")
    rules.add_argument("--format", choices=("file", "prometheusrule"), default="file",
                       help="a plain rule file (default) or a PrometheusRule")
    rules.add_argument("--output", "-o", metavar="PATH", help="write here instead of stdout")
    rules.add_argument("--name", default="twinhull", help="the PrometheusRule's name")
    rules.add_argument("--namespace", help="the PrometheusRule's namespace (default: none)")
    rules.add_argument("--min-requests", type=int, default=defaults.min_requests,
                       metavar="N", help="no burn page below N requests in the long window "
                       f"(default {defaults.min_requests})")
    rules.add_argument("--min-tokens", type=int, default=defaults.min_tokens, metavar="N",
                       help="no token anomaly unless the hour before had N tokens "
                       f"(default {defaults.min_tokens})")
    rules.add_argument("--runbooks", default=defaults.runbooks, metavar="URL",
                       help="base URL of the runbook_url annotations")
    rules.set_defaults(func=cmd_rules)


def cmd_rules(args: argparse.Namespace) -> int:
    """Print or write the rules. Effects: reads the policy, writes stdout or a file."""
    from twinhull.errors import PolicyError
    from twinhull.metrics.rules import Options, prometheus_rule, rule_file, rules_yaml
    from twinhull.policy import load_file

    if args.min_requests < 0 or args.min_tokens < 0:
        print("error: --min-requests and --min-tokens must be 0 or more", file=sys.stderr)
        return EXIT_USAGE
    try:
        policy = load_file(Path(args.policy) if args.policy else None)
    except PolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    options = Options(min_requests=args.min_requests, min_tokens=args.min_tokens,
                      runbooks=args.runbooks)
    if args.format == "prometheusrule":
        doc = prometheus_rule(policy, options, name=args.name, namespace=args.namespace)
    else:
        doc = rule_file(policy, options)
    text = rules_yaml(doc)
    return write_output(text, args.output)


def write_output(text: str, output: str | None) -> int:
    """Write ``text`` to ``output`` (stdout when None): the exit code, an unwritable path
    reported. Effects: writes a file or prints."""
    if output:
        try:
            Path(output).write_text(text, encoding="utf-8")
        except OSError as exc:
            print(f"error: {output}: cannot write: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
    else:
        sys.stdout.write(text)
    return EXIT_OK
