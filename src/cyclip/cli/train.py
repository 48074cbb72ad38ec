"""`cyclip train`: flags (and an optional YAML file) into a TrainConfig, then `cyclip.train.train`."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from cyclip.config import (
    BAD_SAMPLE_POLICIES,
    DATASET_TYPES,
    IMAGE_AUGMENTATIONS,
    PRECISIONS,
    TrainConfig,
    read_config_file,
)
from cyclip.data.images import DEFAULT_MAX_IMAGE_PIXELS

# (flags, options) for every `cyclip train` option; the destination is the TrainConfig field.
TRAIN_OPTIONS: list[tuple[tuple[str, ...], dict]] = [
    (
        ("--train-data",),
        dict(
            help="CSV/TSV of image paths and captions (paths relative to its folder), "
            "or WebDataset shards such as 'data/{00000..00127}.tar' (several lists joined by '::')"
        ),
    ),
    (
        ("--val-data",),
        dict(help="held-out pairs (CSV/TSV or shards); the validation loss is computed on them after each epoch"),
    ),
    (
        ("--dataset-type",),
        dict(choices=DATASET_TYPES, help="auto (default: shards when the path names .tar files), csv or webdataset"),
    ),
    (
        ("--train-num-samples",),
        dict(
            type=int,
            help="WebDataset: samples per epoch (default: read from img2dataset's *_stats.json or a sizes.json)",
        ),
    ),
    (
        ("--dataset-resampled",),
        dict(
            action=argparse.BooleanOptionalAction,
            help="WebDataset: draw shards with replacement, each rank on its own stream (for many nodes)",
        ),
    ),
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
    (
        ("--pretrained",),
        dict(
            help="weights to start from: a local open_clip/OpenAI checkpoint, state dict, safetensors file "
            "or exported model folder"
        ),
    ),
    (
        ("--lambda-inmodal", "--cylambda1"),
        dict(type=float, help="weight of the in-modal cyclic regularizer (0 = CLIP; CyCLIP uses 0.25)"),
    ),
    (
        ("--lambda-crossmodal", "--cylambda2"),
        dict(type=float, help="weight of the cross-modal cyclic regularizer (0 = CLIP; CyCLIP uses 0.25)"),
    ),
    (
        ("--inmodal",),
        dict(
            action=argparse.BooleanOptionalAction,
            help="the paper's in-modal mode: add image-augmented image and text-augmented text contrastive terms",
        ),
    ),
    (
        ("--inmodal-image-augmentation",),
        dict(choices=IMAGE_AUGMENTATIONS, help="--inmodal: image augmentation policy (default: autoaugment)"),
    ),
    (("--epochs",), dict(type=int, help="number of passes over the training data (default: 10)")),
    (
        ("--batch-size",),
        dict(
            type=int, help="pairs per step and per process; global batch = this x processes x accum-freq (default: 64)"
        ),
    ),
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
    (
        ("--grad-checkpointing",),
        dict(
            action=argparse.BooleanOptionalAction,
            help="recompute activations in the backward pass: less memory, larger batches, one more forward pass",
        ),
    ),
    (("--precision",), dict(choices=PRECISIONS, help="fp32, or autocast with bf16 / fp16 (default: fp32)")),
    (("--device",), dict(help="auto, cpu, cuda or cuda:N (default: auto = cuda when available)")),
    (("--workers",), dict(type=int, help="data-loading processes (default: 2)")),
    (("--seed",), dict(type=int, help="seed for initialisation, data order and augmentation (default: 0)")),
    (("--output",), dict(help="folder for checkpoints, metrics.jsonl, TensorBoard and config.yaml")),
    (("--resume",), dict(help="'latest' (OUTPUT/latest.pt) or a checkpoint path to continue from exactly")),
    (("--log-every",), dict(type=int, help="steps between metric logs (default: 10)")),
    (
        ("--max-image-pixels",),
        dict(
            type=int,
            help=f"images with more pixels are bad samples, never decoded (default: {DEFAULT_MAX_IMAGE_PIXELS})",
        ),
    ),
]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CLIP or CyCLIP on an image-caption CSV",
        description="Train CLIP (both lambdas 0) or CyCLIP (e.g. --lambda-inmodal 0.25 --lambda-crossmodal 0.25).",
    )
    parser.add_argument("--config", help="YAML file of options (e.g. a run's config.yaml); flags given override it")
    for flags, options in TRAIN_OPTIONS:
        parser.add_argument(*flags, default=None, **options)
    parser.set_defaults(handler=_run_train)


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
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone writes the log
        handler = logging.FileHandler(Path(config.output) / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("cyclip").addHandler(handler)
    result = train(config)
    print(f"checkpoint: {result.checkpoint}")
