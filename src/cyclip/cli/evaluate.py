"""`cyclip eval TASK`: evaluate a checkpoint (or an embeddings file), print the metrics, optionally save them.

One subcommand per row of the task registry (`cyclip.evaluation.tasks.TASKS`), plus `embed` and `suite`.
The --device/--batch-size/--workers flags come from `EvalConfig`; a flag given on the command line wins
over the suite file, which wins over EvalConfig's defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from cyclip.cli.model_arguments import CHECKPOINT_HELP, add_model_flag
from cyclip.evaluation.clip_benchmark_format import CLIP_BENCHMARK_TASKS
from cyclip.evaluation.settings import EVAL_FIELDS, EvalConfig
from cyclip.evaluation.tasks import TASKS, TaskSpec

DATA_HELP = (
    "a dataset name (cifar10, imagenet, imagenet-a, ...; with --root), a labelled folder (labels.csv + "
    "classes.json, optionally with a caption column), an ImageFolder tree, or for retrieval a Karpathy JSON or "
    "an image,caption CSV"
)
_SEED_DEFAULT = next(item.default for item in dataclasses.fields(TaskSpec) if item.name == "seed")
# The flags of the options some tasks take (a task lists them in its registry row).
OPTION_ARGUMENTS: dict[str, dict[str, Any]] = {
    "train_data": {"help": "when --data is a folder: the labelled folder of the training split"},
    "train_embeddings": {"help": "with --embeddings: the training split's .npz (the test split's is --embeddings)"},
    "mean_per_class": {
        "action": argparse.BooleanOptionalAction,
        "default": None,
        "help": "score by mean per-class accuracy (default: the dataset's convention)",
    },
    "seed": {
        "type": int,
        "default": _SEED_DEFAULT,
        "help": "seed of the random draws: the linear probe's validation split; few-shot's k-shot samples, drawn "
        f"with seeds S, S+1, S+2 (default: {_SEED_DEFAULT})",
    },
    "superclasses": {"help": 'JSON file {"class name": "superclass", ...}'},
}
_SPEC_KEYS = ("data", "root", "split", "image_root", "embeddings", *OPTION_ARGUMENTS)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint: zero-shot, probes, retrieval, consistency, ...",
        description="Evaluate a trained checkpoint, or embeddings saved by `cyclip eval embed`.",
    )
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    for name, task in TASKS.items():
        command = tasks.add_parser(name, help=task.help, description=task.help[0].upper() + task.help[1:] + ".")
        _add_source_arguments(command)
        _add_data_arguments(command)
        for option in task.options:
            command.add_argument(
                "--" + option.replace("_", "-"), required=option in task.required, **OPTION_ARGUMENTS[option]
            )
        command.add_argument("--output", help="write the metrics to this JSON file")
        if name in CLIP_BENCHMARK_TASKS:
            command.add_argument(
                "--format",
                choices=("cyclip", "clip_benchmark"),
                default="cyclip",
                help="layout of --output: cyclip's, or clip_benchmark's result JSON (default: cyclip)",
            )
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
        "cifar10, root: /data/cifar10}) for one checkpoint; embeddings are shared between tasks. The file may "
        f"also set {', '.join(EVAL_FIELDS)}; flags given here override it.",
    )
    suite.add_argument(
        "--config", required=True, help="YAML file: 'tasks: [...]' and optionally 'checkpoint:' and 'model:'"
    )
    _add_source_arguments(suite, embeddings=False, required=False)
    suite.add_argument("--output", help="JSON file to write (default: eval.json beside the checkpoint); also .md")
    suite.set_defaults(handler=_run_suite)


def _add_source_arguments(parser: argparse.ArgumentParser, embeddings: bool = True, required: bool = True) -> None:
    """--checkpoint (or, where `embeddings`, --embeddings instead), --model, and how to run the model (EvalConfig)."""
    checkpoint_help = CHECKPOINT_HELP
    if embeddings:
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--checkpoint", help=checkpoint_help)
        source.add_argument("--embeddings", help="an .npz written by `cyclip eval embed`, instead of a checkpoint")
    else:
        parser.add_argument("--checkpoint", required=required, help=checkpoint_help)
    add_model_flag(parser)
    for item in dataclasses.fields(EvalConfig):
        parser.add_argument(  # default None: a flag left out does not override the suite file
            "--" + item.name.replace("_", "-"),
            type=type(item.default),
            help=f"{item.metadata['help']} (default: {item.default})",
        )


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", help=DATA_HELP)
    parser.add_argument("--root", help="the local copy of a named dataset (nothing is downloaded)")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test; probes also read train)")
    parser.add_argument("--image-root", help="retrieval: folder the image paths are relative to")


def _settings(args: argparse.Namespace, file_values: dict[str, Any] | None = None) -> EvalConfig:
    """EvalConfig's defaults, then the suite file's values, then the flags given on the command line."""
    return EvalConfig().updated(file_values or {}).updated({name: getattr(args, name) for name in EVAL_FIELDS})


def _encoder(checkpoint: str, model: str | None, settings: EvalConfig):
    """The Encoder of any model `cyclip.models.load_model` reads, and the model's name."""
    from cyclip.cli.model_arguments import load
    from cyclip.evaluation.encoder import Encoder

    loaded = load(checkpoint, model, settings.device)
    encoder = Encoder(
        loaded.model, loaded.preprocess, loaded.tokenizer, loaded.device, settings.batch_size, settings.workers
    )
    return encoder, loaded.name


def _spec(args: argparse.Namespace) -> TaskSpec:
    values = {key: getattr(args, key) for key in _SPEC_KEYS if getattr(args, key, None) is not None}
    return TaskSpec(task=args.task, **values)


def _run_task(args: argparse.Namespace) -> None:
    from cyclip.evaluation.report import flatten_metrics
    from cyclip.evaluation.tasks import run_task
    from cyclip.files import require_writable_file, write_text_atomically

    spec = _spec(args)
    if getattr(args, "format", "cyclip") == "clip_benchmark" and not args.output:
        raise ValueError("--format clip_benchmark: give --output FILE, the JSON file to write in that layout")
    if args.output:
        require_writable_file(args.output)
    encoder, model_name = _encoder(args.checkpoint, args.model, _settings(args)) if args.checkpoint else (None, None)
    metrics = run_task(spec, encoder)
    print(f"{spec.label}:")
    for key, value in flatten_metrics(metrics).items():
        print(f"  {key:>28}: {value:.6g}")
    if args.output:
        record = {"task": spec.task, "data": spec.data or spec.embeddings, "metrics": metrics}
        if getattr(args, "format", "cyclip") == "clip_benchmark":
            from cyclip.evaluation.clip_benchmark_format import clip_benchmark_record

            source = args.checkpoint or args.embeddings
            dataset = spec.data or spec.embeddings or ""
            record = clip_benchmark_record(spec.task, metrics, dataset, model_name or "", source)
        write_text_atomically(args.output, json.dumps(record, indent=2) + "\n")


def _run_embed(args: argparse.Namespace) -> None:
    from cyclip.evaluation.embeddings_file import save_embeddings
    from cyclip.evaluation.tasks import embeddings_for
    from cyclip.files import require_writable_file

    if not args.data:
        raise ValueError("--data is required: the dataset to embed")
    require_writable_file(args.output)
    encoder, _ = _encoder(args.checkpoint, args.model, _settings(args))
    task = "retrieval" if _is_retrieval_file(args.data) else "zeroshot"
    spec = TaskSpec(task=task, data=args.data, root=args.root, split=args.split, image_root=args.image_root)
    embeddings, _ = embeddings_for(spec, encoder)
    path = save_embeddings(args.output, **{key: value for key, value in vars(embeddings).items() if value is not None})
    print(f"embeddings of {args.data} ({len(embeddings.image_embeddings)} images) written to {path}")


def _run_suite(args: argparse.Namespace) -> None:
    from cyclip.evaluation.report import markdown_table, write_results
    from cyclip.evaluation.tasks import run_suite
    from cyclip.files import require_writable_file

    config = _read_suite_config(Path(args.config))
    checkpoint = args.checkpoint or config.get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{args.config}: no checkpoint; add 'checkpoint: PATH' or pass --checkpoint")
    specs = [TaskSpec.from_dict(task, f"{args.config}: tasks[{i}]") for i, task in enumerate(config["tasks"])]
    try:
        settings = _settings(args, {name: config[name] for name in EVAL_FIELDS if name in config})
    except ValueError as error:
        raise ValueError(f"{args.config}: {error}") from None
    output = require_writable_file(args.output or Path(checkpoint).parent / "eval.json")
    encoder, model_name = _encoder(checkpoint, args.model or config.get("model"), settings)
    results = run_suite(specs, encoder, checkpoint, model_name)
    output, table = write_results(results, output)
    print(markdown_table(results))
    if encoder.images_embedded:
        rate = encoder.images_embedded / max(encoder.seconds_embedding, 1e-9)
        print(f"\nembedded {encoder.images_embedded} images at {rate:.0f} images/s")
    print(f"results: {output} and {table}")


def _read_suite_config(path: Path) -> dict[str, Any]:
    from cyclip.files import read_yaml_mapping

    config = read_yaml_mapping(path, "suite config")
    allowed = {"checkpoint", "model", "tasks", *EVAL_FIELDS}
    if not isinstance(config.get("tasks"), list) or set(config) - allowed:
        raise ValueError(f"{path}: expected a mapping with a 'tasks' list (keys allowed: {', '.join(sorted(allowed))})")
    if not all(isinstance(task, dict) for task in config["tasks"]):
        raise ValueError(f"{path}: every entry of 'tasks' must be a mapping such as {{task: zeroshot, data: DIR}}")
    return config


def _is_retrieval_file(data: str) -> bool:
    return Path(data).suffix.lower() in (".json", ".csv", ".tsv") and Path(data).is_file()
