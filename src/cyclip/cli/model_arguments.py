"""Flags shared by every command that runs a model: which model (any format cyclip reads), and how to run it."""

from __future__ import annotations

import argparse

CHECKPOINT_HELP = (
    "the model: a cyclip checkpoint (OUTPUT/latest.pt), a folder written by `cyclip export`, or an open_clip / "
    "OpenAI weights file (.pt, .bin, .safetensors) together with --model"
)
MODEL_HELP = (
    "the architecture of --checkpoint when the file does not record it: an open_clip name such as ViT-B-32 or "
    "RN50 (cyclip checkpoints and exported folders record theirs)"
)


def add_model_flag(parser: argparse.ArgumentParser) -> None:
    """--model, for weights files that do not name their architecture."""
    parser.add_argument("--model", help=MODEL_HELP)


def add_model_arguments(
    parser: argparse.ArgumentParser, required: bool = True, checkpoint_help: str = "", workers: bool = True
) -> None:
    """--checkpoint, --model, and how to run the model: --device, --batch-size and (where files are decoded in
    bulk) --workers."""
    parser.add_argument("--checkpoint", required=required, help=checkpoint_help or CHECKPOINT_HELP)
    add_model_flag(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=_positive, default=64, help="images per forward pass (default: 64)")
    if workers:
        parser.add_argument("--workers", type=int, default=2, help="image-decoding processes (default: 2)")


def load(checkpoint: str, model: str | None, device: str):
    """The `cyclip.models.LoadedModel` of --checkpoint/--model on --device."""
    from cyclip.models import load_model
    from cyclip.runtime import resolve_device

    return load_model(checkpoint, model, resolve_device(device))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
