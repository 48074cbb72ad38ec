"""`cyclip index`: embed a collection of images once into an index file for `cyclip search`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cyclip.cli.model_arguments import add_model_arguments, load


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="embed a folder of images into a search index (.npz) for `cyclip search`",
        description="Embed images once and save their embeddings, their paths and the model's identity in an "
        ".npz embeddings file; `cyclip search` then ranks them by a caption or an image without re-embedding. "
        "Unreadable images are reported and skipped.",
    )
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    add_model_arguments(parser)
    parser.add_argument("--output", required=True, help="the index file to write (.npz)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.set_defaults(handler=_run_index)


def _run_index(args: argparse.Namespace) -> None:
    from cyclip.inference import embed_image_files, find_images, report_skipped
    from cyclip.search import ImageIndex, save_index

    output = Path(args.output)
    if output.exists() and not args.overwrite:
        raise ValueError(f"--output {output}: exists; pass --overwrite to replace it, or pick another file")
    paths = find_images(args.images)
    loaded = load(args.checkpoint, args.model, args.device)
    embedded = embed_image_files(loaded.model, loaded.preprocess, paths, args.batch_size, args.workers)
    report_skipped(embedded.skipped, len(paths))
    save_index(ImageIndex.of(embedded.embeddings, embedded.paths, loaded), output)
    print(f"indexed {len(embedded.paths)} images with {loaded.name} (weights {loaded.fingerprint}) into {output}")
