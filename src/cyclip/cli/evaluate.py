"""`cyclip eval TASK`: evaluate a checkpoint (or an embeddings file), print the metrics, optionally save them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

TASK_HELP = {
    "zeroshot": "zero-shot top-1/3/5/10 accuracy (prompt-ensembled class embeddings)",
    "linear-probe": "logistic regression on frozen image features, L2 strength chosen on a validation split",
    "few-shot": "linear probes from k = 1, 2, 4, 8, 16 examples per class, mean and std over seeds",
    "retrieval": "image-to-text and text-to-image Recall@1/5/10 and their mean",
    "consistency": "in-modal / cross-modal gaps, regularizers, neighbour agreement@k, consistency@k",
    "geometry": "alignment and uniformity of images against their class embeddings (and of image-caption pairs)",
    "granularity": "fine (within the true superclass) vs coarse (superclass of the best class) zero-shot accuracy",
}
DATA_HELP = (
    "a dataset name (cifar10, imagenet, imagenet-a, ...; with --root), a labelled folder (labels.csv + "
    "classes.json, optionally with a caption column), an ImageFolder tree, or for retrieval a Karpathy JSON or "
    "an image,caption CSV"
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: zero-shot, probes, retrieval, consistency, ...",
        description="Evaluate a trained checkpoint, or embeddings saved by `cyclip eval embed`.",
    )
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for task, help_text in TASK_HELP.items():
        command = tasks.add_parser(task, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        _add_source_arguments(command)
        _add_data_arguments(command)
        if task in ("linear-probe", "few-shot"):
            command.add_argument(
                "--train-data", help="when --data is a folder: the labelled folder of the training split"
            )
            command.add_argument(
                "--train-embeddings",
                help="with --embeddings: the training split's .npz (the test split's is --embeddings)",
            )
            command.add_argument(
                "--mean-per-class",
                action=argparse.BooleanOptionalAction,
                default=None,
                help="score by mean per-class accuracy (default: the dataset's convention)",
            )
            command.add_argument("--seed", type=int, default=0, help="seed of the validation split (default: 0)")
        if task == "granularity":
            command.add_argument("--superclasses", required=True, help='JSON file {"class name": "superclass", ...}')
        command.add_argument("--output", help="write the metrics to this JSON file")
        command.set_defaults(handler=_run_task)

    embed = tasks.add_parser(
        "embed",
        help="save a dataset's embeddings (.npz) so that every task can run without the model",
        description="Embed a dataset once and save image/text/class embeddings, labels and captions as .npz.",
    )
    _add_source_arguments(embed, embeddings=False)
    _add_data_arguments(embed)
    embed.add_argument("--output", required=True, help="the .npz file to write")
    embed.set_defaults(handler=_run_embed)

    suite = tasks.add_parser(
        "suite",
        help="run a list of tasks from a YAML file into one JSON and one Markdown table",
        description="Run the tasks listed in a YAML file (keys as the task flags, e.g. {task: zeroshot, data: "
        "cifar10, root: /data/cifar10}) for one checkpoint; embeddings are shared between tasks.",
    )
    suite.add_argument("--config", required=True, help="YAML file: 'tasks: [...]' and optionally 'checkpoint:'")
    _add_source_arguments(suite, embeddings=False, required=False)
    suite.add_argument("--output", help="JSON file to write (default: eval.json beside the checkpoint); also .md")
    suite.set_defaults(handler=_run_suite)


def _add_source_arguments(parser: argparse.ArgumentParser, embeddings: bool = True, required: bool = True) -> None:
    """--checkpoint (or, where `embeddings`, --embeddings instead) and how to run the model."""
    checkpoint_help = "a cyclip checkpoint (OUTPUT/latest.pt)"
    if embeddings:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--checkpoint", help=checkpoint_help)
        source.add_argument("--embeddings", help="an .npz written by `cyclip eval embed`, instead of a checkpoint")
    else:
        parser.add_argument("--checkpoint", required=required, help=checkpoint_help)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: 256)")
    parser.add_argument("--workers", type=int, default=2, help="data-loading processes (default: 2)")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--root", help="the local copy of a named dataset (nothing is downloaded)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test; probes also read train)")
    parser.add_argument("--image-root", help="retrieval: folder the image paths are relative to")


def _encoder(checkpoint: str, device: str, batch_size: int, workers: int):
    from cyclip.checkpoints import read_checkpoint
    from cyclip.evaluation.tasks import Encoder
    from cyclip.models import model_from_checkpoint
    from cyclip.train import resolve_device

    device = resolve_device(device)
    payload = read_checkpoint(checkpoint)
    model, _, preprocess, tokenizer = model_from_checkpoint(payload, source=str(checkpoint), device=device)
    return Encoder(model, preprocess, tokenizer, device, batch_size, workers), payload.get("model_name")


def _spec(args: argparse.Namespace):
    from cyclip.evaluation.tasks import TaskSpec

    keys = (
        "data",
        "root",
        "train_data",
        "split",
        "image_root",
        "superclasses",
        "embeddings",
        "train_embeddings",
        "mean_per_class",
    )
    values = {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}
    return TaskSpec(task=args.task, seed=getattr(args, "seed", 0), **values)


def _run_task(args: argparse.Namespace) -> None:
    from cyclip.evaluation.report import flatten_metrics
    from cyclip.evaluation.tasks import run_task

    spec = _spec(args)
    encoder = _encoder(args.checkpoint, args.device, args.batch_size, args.workers)[0] if args.checkpoint else None
    metrics = run_task(spec, encoder)
    print(f"{spec.label}:")
    for key, value in flatten_metrics(metrics).items():
        print(f"  {key:>28}: {value:.6g}")
    if args.output:
        record = {"task": spec.task, "data": spec.data or spec.embeddings, "metrics": metrics}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(record, indent=2) + "\n")


def _run_embed(args: argparse.Namespace) -> None:
    from cyclip.evaluation.embeddings_file import save_embeddings
    from cyclip.evaluation.tasks import TaskSpec, embeddings_for

    if not args.data:
        raise ValueError("--data is required: the dataset to embed")
    encoder, _ = _encoder(args.checkpoint, args.device, args.batch_size, args.workers)
    task = "retrieval" if _is_retrieval_file(args.data) else "zeroshot"
    spec = TaskSpec(task=task, data=args.data, root=args.root, split=args.split, image_root=args.image_root)
    embeddings, _ = embeddings_for(spec, encoder)
    path = save_embeddings(args.output, **{key: value for key, value in vars(embeddings).items() if value is not None})
    print(f"embeddings of {args.data} ({len(embeddings.image_embeddings)} images) written to {path}")


def _run_suite(args: argparse.Namespace) -> None:
    from cyclip.evaluation.report import markdown_table
    from cyclip.evaluation.tasks import TaskSpec, run_suite

    config = _read_suite_config(Path(args.config))
    checkpoint = args.checkpoint or config.get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{args.config}: no checkpoint; add 'checkpoint: PATH' or pass --checkpoint")
    specs = [TaskSpec.from_dict(task, f"{args.config}: tasks[{i}]") for i, task in enumerate(config["tasks"])]
    encoder, model_name = _encoder(
        checkpoint,
        config.get("device", args.device),
        config.get("batch_size", args.batch_size),
        config.get("workers", args.workers),
    )
    results = {"checkpoint": str(checkpoint), "model": model_name, "tasks": run_suite(specs, encoder)}
    output = Path(args.output) if args.output else Path(checkpoint).parent / "eval.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    output.with_suffix(".md").write_text(table + "\n")
    print(table)
    if encoder.images_embedded:
        rate = encoder.images_embedded / max(encoder.seconds_embedding, 1e-9)
        print(f"\nembedded {encoder.images_embedded} images at {rate:.0f} images/s")
    print(f"results: {output} and {output.with_suffix('.md')}")


def _read_suite_config(path: Path) -> dict[str, Any]:
    from cyclip.config import read_yaml_mapping

    config = read_yaml_mapping(path, "suite config")
    allowed = {"checkpoint", "device", "batch_size", "workers", "tasks"}
    if not isinstance(config.get("tasks"), list) or set(config) - allowed:
        raise ValueError(f"{path}: expected a mapping with a 'tasks' list (keys allowed: {', '.join(sorted(allowed))})")
    if not all(isinstance(task, dict) for task in config["tasks"]):
        raise ValueError(f"{path}: every entry of 'tasks' must be a mapping such as {{task: zeroshot, data: DIR}}")
    return config


def _is_retrieval_file(data: str) -> bool:
    return Path(data).suffix.lower() in (".json", ".csv", ".tsv") and Path(data).is_file()
