"""`cyclip demo`: CLIP vs CyCLIP on the bundled handwritten digits."""

from __future__ import annotations

import argparse
from pathlib import Path

from cyclip.cli.options import add_config_flags, flag, given_flags
from cyclip.config import ConfigError, DemoConfig
from cyclip.files import require_writable_folder


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
    from cyclip.runtime import resolve_device

    try:
        config = DemoConfig(**given_flags(args, DemoConfig))
    except ConfigError as error:
        raise ValueError(f"{flag(error.key)}: {error.problem}") from None
    resolve_device(config.device)  # a device this machine lacks: one line now, not after the demo data is written
    require_writable_folder(config.output, "--output")
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
