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
from cyclip.evaluation.linear_probe import DEFAULT_SHOTS
from cyclip.evaluation.settings import EVAL_FIELDS, EvalConfig
from cyclip.evaluation.tasks import CLASSIFICATION, RETRIEVAL, TASKS, TaskSpec, parse_shots

DATA_HELP = (
    "a dataset name (cifar10, imagenet, imagenet-a, ...; with --root), a labelled folder (labels.csv + "
    "classes.json, optionally with a caption column), an ImageFolder tree, or for retrieval a Karpathy JSON or "
    "an image,caption CSV"
)
RETRIEVAL_DATA_HELP = "a Karpathy split JSON (Flickr30K, MSCOCO) or an image,caption CSV"
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
    "shots": {
        "help": "examples per class, comma-separated; a k that some class has too few training examples for is "
        f"skipped with a warning (default: {','.join(map(str, DEFAULT_SHOTS))})"
    },
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
        _add_data_arguments(command, task.dataset, probe=task.train_split)
        for option in task.options:
            command.add_argument(
                "--" + option.replace("_", "-"), required=option in task.required, **OPTION_ARGUMENTS[option]
            )
        command.add_argument("--output", help="the JSON file to write the metrics to (a file, not a folder)")
        command.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
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
    embed.add_argument("--output", required=True, help="the .npz file to write (a file, not a folder)")
    embed.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
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
    suite.add_argument(
        "--output",
        help="the JSON file to write, and the Markdown table beside it (.md) (default: eval-SUITE.json beside the "
        "checkpoint, SUITE being the --config file's name)",
    )
    suite.add_argument("--overwrite", action="store_true", help="replace existing results files")
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


def _add_data_arguments(parser: argparse.ArgumentParser, dataset: str | None = None, probe: bool = False) -> None:
    """--data and --split, and what the kind of dataset needs: --root (classification sets) and --image-root
    (retrieval files); both when `dataset` is None (`eval embed` takes either kind)."""
    parser.add_argument("--data", help=RETRIEVAL_DATA_HELP if dataset == RETRIEVAL else DATA_HELP)
    if dataset in (None, CLASSIFICATION):
        parser.add_argument("--root", help="the local copy of a named dataset (nothing is downloaded)")
    also = "; the probe trains on the train split" if probe else ""
    parser.add_argument("--split", default="test", help=f"split to evaluate (default: test{also})")
    if dataset in (None, RETRIEVAL):
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
    if "shots" in values:
        values["shots"] = parse_shots(values["shots"], "--shots")
    return TaskSpec(task=args.task, **values)


def _run_task(args: argparse.Namespace) -> None:
    from cyclip.evaluation.report import UNITS, check_results_target, format_metrics
    from cyclip.evaluation.tasks import run_task
    from cyclip.files import write_text_atomically
    from cyclip.provenance import provenance

    spec = _spec(args)
    if args.output:
        check_results_target(args.output, args.overwrite, table=False)
    if getattr(args, "format", "cyclip") == "clip_benchmark" and not args.output:
        raise ValueError("--format clip_benchmark: give --output FILE, the JSON file to write in that layout")
    encoder, model_name = _encoder(args.checkpoint, args.model, _settings(args)) if args.checkpoint else (None, None)
    metrics = run_task(spec, encoder)
    print(f"{spec.label} ({UNITS[0].lower() + UNITS[1:].rstrip('.')}):")
    print(format_metrics(metrics))
    if args.output:
        record = {
            "task": spec.task,
            "data": spec.data or spec.embeddings,
            "metrics": metrics,
            "provenance": provenance(),
        }
        if getattr(args, "format", "cyclip") == "clip_benchmark":
            from cyclip.evaluation.clip_benchmark_format import clip_benchmark_record

            source = args.checkpoint or args.embeddings
            dataset = spec.data or spec.embeddings or ""
            record = clip_benchmark_record(spec.task, metrics, dataset, model_name or "", source)
        write_text_atomically(args.output, json.dumps(record, indent=2) + "\n")


def _run_embed(args: argparse.Namespace) -> None:
    from cyclip.evaluation.embeddings_file import save_embeddings
    from cyclip.evaluation.report import check_results_target
    from cyclip.evaluation.tasks import embeddings_for

    if not args.data:
        raise ValueError("--data is required: the dataset to embed")
    check_results_target(args.output, args.overwrite, table=False)
    encoder, _ = _encoder(args.checkpoint, args.model, _settings(args))
    task = "retrieval" if _is_retrieval_file(args.data) else "zeroshot"
    spec = TaskSpec(task=task, data=args.data, root=args.root, split=args.split, image_root=args.image_root)
    embeddings, _ = embeddings_for(spec, encoder)
    path = save_embeddings(args.output, **{key: value for key, value in vars(embeddings).items() if value is not None})
    print(f"embeddings of {args.data} ({len(embeddings.image_embeddings)} images) written to {path}")


def _run_suite(args: argparse.Namespace) -> None:
    from cyclip.evaluation.report import check_results_target, markdown_table, write_results
    from cyclip.evaluation.tasks import run_suite

    config = _read_suite_config(Path(args.config))
    checkpoint = args.checkpoint or config.get("checkpoint")
    if not checkpoint:
        raise ValueError(f"{args.config}: no checkpoint; add 'checkpoint: PATH' or pass --checkpoint")
    specs = [TaskSpec.from_dict(task, f"{args.config}: tasks[{i}]") for i, task in enumerate(config["tasks"])]
    try:
        settings = _settings(args, {name: config[name] for name in EVAL_FIELDS if name in config})
    except ValueError as error:
        raise ValueError(f"{args.config}: {error}") from None
    output = Path(args.output) if args.output else suite_results_path(Path(checkpoint), Path(args.config))
    check_results_target(output, args.overwrite)  # before minutes of evaluation, not after
    encoder, model_name = _encoder(checkpoint, args.model or config.get("model"), settings)
    results = run_suite(specs, encoder, checkpoint, model_name)
    output, table = write_results(results, output, overwrite=args.overwrite)
    print(markdown_table(results))
    if encoder.images_embedded:
        rate = encoder.images_embedded / max(encoder.seconds_embedding, 1e-9)
        print(f"\nembedded {encoder.images_embedded} images at {rate:.0f} images/s")
    print(f"results: {output} and {table}")


def suite_results_path(checkpoint: Path, suite: Path) -> Path:
    """Where a suite's results go without --output: beside the checkpoint, named after the suite file
    (runs/cyclip/latest.pt + imagenet.yaml -> runs/cyclip/eval-imagenet.json); beside an exported folder, named
    after the folder too (exported/b32 -> exported/b32-eval-imagenet.json)."""
    name = f"eval-{suite.stem}.json"
    return checkpoint.parent / (f"{checkpoint.name}-{name}" if checkpoint.is_dir() else name)


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
