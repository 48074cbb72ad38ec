"""`cyclip search`: the images of an index most similar to a caption or to an image."""

from __future__ import annotations

import argparse
from pathlib import Path

from cyclip.cli.model_arguments import add_model_arguments, load


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find the images of an index that best match a caption or an image",
        description="Rank the images of an index written by `cyclip index` by cosine similarity to each query "
        "(captions, or --image files) and print the top-k paths with their scores. The query is embedded by the "
        "model that built the index; another model is refused, since its embeddings are not comparable.",
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="captions to search for, e.g. 'a red car'")
    parser.add_argument("--index", required=True, help="an index written by `cyclip index`")
    parser.add_argument(
        "--image", action="append", default=[], help="an image file to search with (image to images); repeatable"
    )
    parser.add_argument("--top-k", type=int, default=10, help="results per query (default: 10)")
    add_model_arguments(
        parser,
        required=False,
        checkpoint_help="the model (default: the one recorded in the index); any format `cyclip predict` takes",
        workers=False,
    )
    parser.set_defaults(handler=_run_search)


def _run_search(args: argparse.Namespace) -> None:
    import torch

    from cyclip.inference import embed_images, embed_texts
    from cyclip.search import check_same_model, load_index, search

    if not args.texts and not args.image:
        raise ValueError("no query: give a caption (cyclip search --index I 'a red car') or --image FILE")
    if args.top_k < 1:
        raise ValueError(f"--top-k {args.top_k}: must be at least 1")
    index = load_index(args.index)
    checkpoint = args.checkpoint or index.model_source
    if not args.checkpoint and not Path(checkpoint).exists():
        raise FileNotFoundError(
            f"{args.index}: its model {checkpoint} is not there any more; pass the same model with --checkpoint"
        )
    loaded = load(checkpoint, args.model or (None if args.checkpoint else index.model_name), args.device)
    check_same_model(index, loaded, args.index)
    queries = [repr(text) for text in args.texts] + list(args.image)
    embeddings = [embed_texts(loaded.model, loaded.tokenizer, args.texts)] if args.texts else []
    if args.image:
        embeddings.append(embed_images(loaded.model, args.image, loaded.preprocess, args.batch_size))
    for query, results in zip(queries, search(index, torch.cat(embeddings), args.top_k), strict=True):
        print(f"{query}:")
        for rank, (path, score) in enumerate(results, start=1):
            print(f"  {rank:>3}  {score:.4f}  {path}")
