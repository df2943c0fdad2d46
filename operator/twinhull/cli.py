"""The ``twinhull`` command. Effects: reads and writes files, prints, exits.

Exit codes: 0 success, 1 the input is invalid (or generated files are stale), 2 usage
error or unreadable input.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from twinhull import __version__
from twinhull.errors import ManifestError, PolicyError

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
        verdict = "valid" if report.ok else f"invalid: {errors} error(s)"
        print(
            f"{verdict}; {report.checked} twinhull object(s) checked, "
            f"{report.passed_through} other object(s) passed through",
            file=sys.stderr,
        )
    return EXIT_OK if report.ok else EXIT_INVALID


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

    validate = sub.add_parser(
        "validate",
        help="check manifests offline (schema, CEL rules, tier policy, references)",
        description="Check twinhull manifests offline, as the API server would, plus the tier "
        "policy and the references between ModelDeployments and ServingClusters given "
        "together. Other kinds pass through. Exit 0 valid, 1 invalid, 2 unreadable input.",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH",
                          help="YAML files or directories (searched recursively)")
    validate.add_argument("--policy", metavar="FILE",
                          help="tier policy file (default: the packaged default tiers)")
    validate.add_argument("--output", choices=("text", "json"), default="text",
                          help="text: one line per problem; json: for machines")
    validate.set_defaults(func=_cmd_validate)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``twinhull`` command. Effects: as the subcommand."""
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
