"""Command line: parses arguments into a config and calls the library. Nothing else lives here.

Each command is a module of this package with an `add_parser(subparsers)` that registers it and sets
its `handler`; `COMMANDS` lists them in the order `cyclip --help` shows them. A user error, in the
arguments or found later, is one line on stderr and exit code 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from tqdm import tqdm

COMMANDS = ("train", "evaluate", "compare", "export", "predict", "index", "search", "demo")
USAGE_ERROR = 2  # argparse's own exit code for bad arguments; every user error uses it


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line pointing to --help, not the usage block."""

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(USAGE_ERROR, f"{self.prog}: error: {text} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="cyclip", description="Train and evaluate CLIP and CyCLIP image-text models.")
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the versions of cyclip, torch, open_clip and the git commit",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"cyclip.cli.{name}").add_parser(subparsers)
    for command in subparsers.choices.values():  # so that an unknown flag is reported by its command
        command.set_defaults(command_parser=command)
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
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    from cyclip.errors import DataError, NonFiniteLossError, OutputWriteError
    from cyclip.preemption import EXIT_INTERRUPTED, RunStopped

    try:
        args.handler(args)
    except (DataError, ValueError, FileNotFoundError, PermissionError, OutputWriteError, NonFiniteLossError) as error:
        with tqdm.external_write_mode(file=sys.stderr):  # on its own line, not after a progress bar cut short
            print(f"cyclip: error{_which_rank()}: {_one_line(error)}", file=sys.stderr)
        return USAGE_ERROR
    except RunStopped as stop:  # a signal: where the run stopped and how to continue, from rank 0
        if str(stop):
            print(f"cyclip: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:  # Ctrl-C outside training (or before it started): no traceback
        print("cyclip: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def _one_line(error: BaseException) -> str:
    """What to tell the user: an error raised in a DataLoader worker reaches the main process wrapped by torch
    ("Caught BadSampleError in DataLoader worker process 0." and the worker's traceback), so its own message is
    the traceback's last line; a bare PermissionError gets the path first."""
    text = str(error)
    if text.startswith("Caught ") and "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        _, found, message = last.partition(f"{type(error).__name__}: ")
        return message if found else last
    if isinstance(error, PermissionError) and error.filename:
        return f"{error.filename}: permission denied; check its permissions or choose another path"
    return " ".join(text.split()) if "\n" in text else text


def _which_rank() -> str:
    """' on rank R of W' under torchrun, so that the process that failed is named; empty otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    return f" on rank {os.environ.get('RANK', '?')} of {world_size}" if world_size > 1 else ""


if __name__ == "__main__":
    sys.exit(main())
