"""`cyclip demo`: CLIP vs CyCLIP on the bundled handwritten digits."""

from __future__ import annotations

import argparse
from pathlib import Path

from cyclip.cli.options import add_config_flags, flag, given_flags
from cyclip.config import ConfigError, DemoConfig


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train CLIP and CyCLIP on handwritten digits and compare them",
        description="Builds an image-caption set from scikit-learn's handwritten digits, trains CLIP and CyCLIP "
        "from the same seed, and compares zero-shot accuracy and consistency on held-out data.",
    )
    add_config_flags(parser, DemoConfig)
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    try:
        config = DemoConfig(**given_flags(args, DemoConfig))
    except ConfigError as error:
        raise ValueError(f"{flag(error.key)}: {error.problem}") from None
    if config.shift:
        from cyclip.demo_shift import SEEDS, run_shift_demo

        run_shift_demo(
            Path(config.output),
            model=config.model,
            epochs=config.epochs,
            device=config.device,
            workers=config.workers,
            seeds=[config.seed + offset for offset in range(len(SEEDS))],
        )
        return
    from cyclip.demo import run_demo

    run_demo(
        Path(config.output),
        model=config.model,
        epochs=config.epochs,
        device=config.device,
        workers=config.workers,
        seed=config.seed,
    )
