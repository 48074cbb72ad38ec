"""Command line: parses arguments into a config and calls the library. Nothing else lives here.

Each command is a module of this package with an `add_parser(subparsers)` that registers it and sets
its `handler`; `COMMANDS` lists them in the order `cyclip --help` shows them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

COMMANDS = ("train", "evaluate", "compare", "export", "predict", "index", "search", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclip", description="Train and evaluate CLIP and CyCLIP image-text models.")
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions of cyclip, torch, open_clip and the git commit",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"cyclip.cli.{name}").add_parser(subparsers)
    return parser


class _VersionAction(argparse.Action):
    """--version: the provenance recorded with every result, printed on demand (git is asked only then)."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from cyclip.provenance import provenance

        record = provenance()
        commit = f" (git {record['git_commit']})" if record["git_commit"] else ""
        print(f"cyclip {record['cyclip']}{commit}, torch {record['torch']}, open_clip {record['open_clip']}")
        parser.exit()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("cyclip").setLevel(logging.INFO)  # ours at INFO; open_clip's chatter stays quiet
    args = build_parser().parse_args(argv)
    from cyclip.checkpoint_folder import CheckpointWriteError
    from cyclip.errors import DataError, NonFiniteLossError
    from cyclip.preemption import EXIT_INTERRUPTED, RunStopped

    try:
        args.handler(args)
    except (DataError, ValueError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"cyclip: error{_which_rank()}: {error}", file=sys.stderr)
        return 2
    except CheckpointWriteError as error:  # not the user's input: the disk or the folder failed
        print(f"cyclip: error{_which_rank()}: {error}", file=sys.stderr)
        return 1
    except RunStopped as stop:  # a signal: where the run stopped and how to continue, from rank 0
        if str(stop):
            print(f"cyclip: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside training (or before it started): no traceback
        print("cyclip: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _which_rank() -> str:
    """' on rank R of W' under torchrun, so that the process that failed is named; empty otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return f" on rank {os.environ.get('RANK', '?')} of {world_size}" if world_size > 1 else ""


if __name__ == "__main__":
    sys.exit(main())
