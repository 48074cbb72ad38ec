"""Command line: parses arguments into a config and calls the library. Nothing else lives here."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from cyclip.config import BAD_SAMPLE_POLICIES, PRECISIONS, TrainConfig, read_config_file

log = logging.getLogger("cyclip")

# (flags, options) for every `cyclip train` option; the destination is the TrainConfig field.
TRAIN_OPTIONS: list[tuple[tuple[str, ...], dict]] = [
    (("--train-data",), dict(help="CSV/TSV of image paths and captions to train on (paths relative to its folder)")),
    (("--val-data",), dict(help="CSV/TSV of held-out pairs; the validation loss is computed on it after each epoch")),
    (
        ("--zeroshot-data",),
        dict(help="labelled folder (labels.csv + classes.json): zero-shot accuracy after each epoch"),
    ),
    (("--csv-img-key",), dict(help="column holding the image paths (default: filepath)")),
    (("--csv-caption-key",), dict(help="column holding the captions (default: title)")),
    (("--csv-separator",), dict(help="column separator, e.g. ',' or '\\t' for TSV (default: ',')")),
    (
        ("--on-bad-sample",),
        dict(choices=BAD_SAMPLE_POLICIES, help="unreadable image or empty caption: skip and count it, or stop"),
    ),
    (
        ("--model",),
        dict(help="open_clip architecture (RN50, ViT-B-32, ...); for CPU: cyclip-rn-tiny (default), cyclip-vit-tiny"),
    ),
    (("--pretrained",), dict(help="local open_clip/OpenAI checkpoint or safetensors file to start from")),
    (
        ("--lambda-inmodal", "--cylambda1"),
        dict(type=float, help="weight of the in-modal cyclic regularizer (0 = CLIP; CyCLIP uses 0.25)"),
    ),
    (
        ("--lambda-crossmodal", "--cylambda2"),
        dict(type=float, help="weight of the cross-modal cyclic regularizer (0 = CLIP; CyCLIP uses 0.25)"),
    ),
    (("--epochs",), dict(type=int, help="number of passes over the training data (default: 10)")),
    (("--batch-size",), dict(type=int, help="pairs per step and per process (default: 64)")),
    (("--lr",), dict(type=float, help="peak learning rate of the cosine schedule (default: 5e-4)")),
    (("--wd",), dict(type=float, help="AdamW weight decay, not applied to gains, biases, logit scale (default: 0.1)")),
    (("--beta1",), dict(type=float, help="AdamW beta1 (default: 0.9)")),
    (("--beta2",), dict(type=float, help="AdamW beta2 (default: 0.98)")),
    (("--eps",), dict(type=float, help="AdamW epsilon (default: 1e-6)")),
    (("--warmup",), dict(type=int, help="linear warm-up steps before the cosine decay (default: 100)")),
    (
        ("--accum-freq",),
        dict(type=int, help="micro-batches per step; the contrastive batch is batch-size x accum-freq (default: 1)"),
    ),
    (("--grad-clip-norm",), dict(type=float, help="clip the global gradient norm to this value (default: off)")),
    (("--precision",), dict(choices=PRECISIONS, help="fp32, or autocast with bf16 / fp16 (default: fp32)")),
    (("--device",), dict(help="auto, cpu, cuda or cuda:N (default: auto = cuda when available)")),
    (("--workers",), dict(type=int, help="data-loading processes (default: 2)")),
    (("--seed",), dict(type=int, help="seed for initialisation, data order and augmentation (default: 0)")),
    (("--output",), dict(help="folder for checkpoints, metrics.jsonl, TensorBoard and config.yaml")),
    (("--resume",), dict(help="'latest' (OUTPUT/latest.pt) or a checkpoint path to continue from exactly")),
    (("--log-every",), dict(type=int, help="steps between metric logs (default: 10)")),
]


def _add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CLIP or CyCLIP on an image-caption CSV",
        description="Train CLIP (both lambdas 0) or CyCLIP (e.g. --lambda-inmodal 0.25 --lambda-crossmodal 0.25).",
    )
    parser.add_argument("--config", help="YAML file of options (e.g. a run's config.yaml); flags given override it")
    for flags, options in TRAIN_OPTIONS:
        parser.add_argument(*flags, default=None, **options)
    parser.set_defaults(handler=_run_train)


def _add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a checkpoint", description="Evaluate a trained checkpoint.")
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    zeroshot = tasks.add_parser(
        "zeroshot",
        help="zero-shot top-1/3/5/10 on a labelled folder",
        description="Zero-shot classification: class embeddings averaged over the folder's prompt templates.",
    )
    zeroshot.add_argument("--checkpoint", required=True, help="a cyclip checkpoint (e.g. OUTPUT/latest.pt)")
    zeroshot.add_argument("--data", required=True, help="folder with labels.csv (image,label) and classes.json")
    zeroshot.add_argument("--output", help="write the metrics to this JSON file")
    zeroshot.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    zeroshot.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    zeroshot.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2)")
    zeroshot.set_defaults(handler=_run_eval_zeroshot)


def _add_demo_parser(subparsers) -> None:
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
    parser.set_defaults(handler=_run_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cyclip", description="Train and evaluate CLIP and CyCLIP image-text models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_eval_parser(subparsers)
    _add_demo_parser(subparsers)
    return parser


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < --config file < flags given on the command line."""
    values = read_config_file(args.config) if args.config else {}
    for flags, _ in TRAIN_OPTIONS:
        name = flags[0].lstrip("-").replace("-", "_")
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if values.get("csv_separator") in ("\\t", "tab"):
        values["csv_separator"] = "\t"
    return TrainConfig(**values)


def _run_train(args: argparse.Namespace) -> None:
    from cyclip.train import train

    config = train_config_from_args(args)
    Path(config.output).mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(Path(config.output) / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("cyclip").addHandler(handler)
    result = train(config)
    print(f"checkpoint: {result.checkpoint}")


def _run_eval_zeroshot(args: argparse.Namespace) -> None:
    from cyclip.evaluation.zeroshot import zeroshot_classification
    from cyclip.models import load_checkpoint
    from cyclip.train import resolve_device

    device = resolve_device(args.device)
    model, preprocess, tokenizer = load_checkpoint(args.checkpoint, device=device)
    results = zeroshot_classification(
        model, preprocess, tokenizer, args.data, device=device, batch_size=args.batch_size, workers=args.workers
    )
    print(f"zero-shot on {args.data}: {results['num_images']} images, {results['num_classes']} classes")
    for key, value in results.items():
        if key.startswith("top"):
            print(f"  {key:>6}: {100 * value:6.2f}%")
    if args.output:
        Path(args.output).write_text(json.dumps({"task": "zeroshot", "data": str(args.data), **results}, indent=2))


def _run_demo(args: argparse.Namespace) -> None:
    from cyclip.demo import run_demo

    run_demo(
        Path(args.output),
        model=args.model,
        epochs=args.epochs,
        device=args.device,
        workers=args.workers,
        seed=args.seed,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("cyclip").setLevel(logging.INFO)  # ours at INFO; open_clip's chatter stays quiet
    args = build_parser().parse_args(argv)
    from cyclip.data import DataError
    from cyclip.train import NonFiniteLossError

    try:
        args.handler(args)
    except (DataError, ValueError, FileNotFoundError, NonFiniteLossError) as error:
        print(f"cyclip: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
