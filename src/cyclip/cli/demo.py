"""`cyclip demo`: CLIP vs CyCLIP on the bundled handwritten digits."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train CLIP and CyCLIP on handwritten digits and compare them",
        description="Builds an image-caption set from scikit-learn's handwritten digits, trains CLIP and CyCLIP "
        "from the same seed, and compares zero-shot accuracy and consistency on held-out data.",
    )
    parser.add_argument("--output", default="cyclip-demo", help="folder for data, runs, JSON and plots")
    parser.add_argument(
        "--model", default="cyclip-rn-tiny", help="bundled or open_clip model (default: cyclip-rn-tiny)"
    )
    parser.add_argument("--epochs", type=int, default=8, help="epochs per model (default: 8)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading processes (default: 0)")
    parser.add_argument("--seed", type=int, default=0, help="seed shared by both runs (default: 0)")
    parser.add_argument(
        "--shift",
        action="store_true",
        help="robustness demo: train on handwritten digits with seeds SEED, SEED+1, SEED+2, test zero-shot on "
        "held-out handwritten and on typeset digits, report mean ± std",
    )
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    if args.shift:
        from cyclip.demo_shift import SEEDS, run_shift_demo

        seeds = [args.seed + offset for offset in range(len(SEEDS))]
        run_shift_demo(
            Path(args.output),
            model=args.model,
            epochs=args.epochs,
            device=args.device,
            workers=args.workers,
            seeds=seeds,
        )
        return
    from cyclip.demo import run_demo

    run_demo(
        Path(args.output),
        model=args.model,
        epochs=args.epochs,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
    )
