"""`cyclip compare`: several runs' evaluation results side by side, with figures."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="compare the evaluation results of several runs (table and figures)",
        description="Print the `cyclip eval suite` results of several runs side by side (with the difference when "
        "there are two) and, with --output, write comparison.md and PNG figures: accuracy bars with the "
        "difference annotated, consistency@k and neighbour agreement@k lines, few-shot curves.",
    )
    parser.add_argument(
        "runs", nargs="+", help="results JSON files, or run folders holding one (eval.json or eval-SUITE.json)"
    )
    parser.add_argument("--names", nargs="+", help="a display name per run (default: the folder or file names)")
    parser.add_argument("--output", help="folder for comparison.md and the figures")
    parser.set_defaults(handler=_run_compare)


def _run_compare(args: argparse.Namespace) -> None:
    from cyclip.evaluation.report import compare_runs

    written = compare_runs(args.runs, args.names, Path(args.output) if args.output else None)
    print(written["text"])
    for path in [*written.get("files", []), *written["figures"]]:
        print(f"wrote {path}")
