"""`cyclip eval TASK`: evaluate a checkpoint and print (and optionally save) the metrics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers) -> None:
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
