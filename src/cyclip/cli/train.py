"""`cyclip train`: flags (and an optional YAML file) into a TrainConfig, then `cyclip.train.train`."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from cyclip.cli.options import add_config_flags, flag, given_flags
from cyclip.config import ConfigError, TrainConfig, read_config_file
from cyclip.files import require_writable_folder

TAB_SPELLINGS = ("\\t", "tab")  # --csv-separator '\t' arrives as backslash-t from most shells


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CLIP or CyCLIP on an image-caption CSV",
        description="Train CLIP (both lambdas 0) or CyCLIP (e.g. --lambda-inmodal 0.25 --lambda-crossmodal 0.25).",
    )
    parser.add_argument("--config", help="YAML file of options (e.g. a run's config.yaml); flags given override it")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved plan (data counts, global batch, steps, schedule, model size) and exit without "
        "training or writing anything; under torchrun it counts the launched processes",
    )
    add_config_flags(parser, TrainConfig)
    parser.set_defaults(handler=_run_train)


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < --config file < flags given on the command line; a bad value is one line naming its flag
    or its file and key. With --resume latest or auto and no --config, the run's own OUTPUT/config.yaml
    (when there is one) is the file: a requeued job or a user continues a run by naming its folder."""
    from_flags = given_flags(args, TrainConfig)
    config_file = args.config or _run_config(from_flags)
    from_file = read_config_file(config_file) if config_file else {}
    values = {**from_file, **from_flags}
    if values.get("csv_separator") in TAB_SPELLINGS:
        values["csv_separator"] = "\t"
    try:
        return TrainConfig(**values)
    except ConfigError as error:
        where = flag(error.key) if error.key in from_flags else f"{config_file}: {error.key}"
        raise ValueError(f"{where}: {error.problem}") from None


def _run_config(from_flags: dict) -> Path | None:
    """OUTPUT/config.yaml of the run that --resume latest / auto continues, if it exists."""
    if from_flags.get("resume") not in ("latest", "auto"):
        return None
    path = Path(from_flags.get("output", TrainConfig.output)) / "config.yaml"
    return path if path.is_file() else None


def _run_train(args: argparse.Namespace) -> None:
    from cyclip.train import train

    config = train_config_from_args(args)
    if args.dry_run:
        from cyclip.plan import format_plan, training_plan

        if os.environ.get("RANK", "0") == "0":
            print(format_plan(training_plan(config)))
        return
    require_writable_folder(config.output, "--output")  # before the log file below is opened there
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone writes the log
        handler = logging.FileHandler(Path(config.output) / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("cyclip").addHandler(handler)
    result = train(config)
    print(f"checkpoint: {result.checkpoint}")
