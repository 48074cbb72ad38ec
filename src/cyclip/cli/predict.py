"""`cyclip predict`: zero-shot classification of image files, printed as a table and optionally saved."""

from __future__ import annotations

import argparse
from pathlib import Path

from cyclip.cli.model_arguments import add_model_arguments, load

OUTPUT_SUFFIXES = (".csv", ".json")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="zero-shot classify images among class names you give",
        description="Classify images zero-shot: each class is the mean embedding of its prompts (the templates "
        "filled with its name); an image's class probabilities are the softmax of its scaled cosine similarities. "
        "Prints the top-k classes per image; unreadable images are reported and skipped.",
    )
    parser.add_argument("images", nargs="+", help="image files, folders (searched recursively) or glob patterns")
    add_model_arguments(parser)
    labels = parser.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help="comma-separated class names, e.g. 'cat,dog,red car'")
    labels.add_argument(
        "--classes",
        help='JSON file {"classes": [...], "templates": [...]} (templates optional) or a list of class names',
    )
    parser.add_argument(
        "--templates",
        action="append",
        metavar="TEMPLATE_OR_FILE",
        help="a prompt template with {} or {c} where the class name goes (e.g. 'a photo of a {}.'), or a file of "
        "them (.json list or one a line); repeat for several. Default: the --classes file's, else 'a photo of a {}.'",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default: 5)")
    parser.add_argument("--output", help="also write the predictions to this .csv or .json file")
    parser.set_defaults(handler=_run_predict)


def _run_predict(args: argparse.Namespace) -> None:
    from cyclip.inference import ZeroShotClassifier, embed_image_files, find_images, report_skipped
    from cyclip.prompts import parse_labels, read_classes, read_templates

    if args.output and Path(args.output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(f"--output {args.output}: name a .csv or .json file")
    if args.top_k < 1:
        raise ValueError(f"--top-k {args.top_k}: must be at least 1")
    classes, templates = read_classes(args.classes) if args.classes else (parse_labels(args.labels), None)
    if args.templates:
        templates = read_templates(args.templates)
    paths = find_images(args.images)
    loaded = load(args.checkpoint, args.model, args.device)
    classifier = ZeroShotClassifier(loaded.model, loaded.tokenizer, classes, templates, loaded.preprocess)
    embedded = embed_image_files(loaded.model, loaded.preprocess, paths, args.batch_size, args.workers)
    predictions = classifier.top_k(classifier.probabilities_of(embedded.embeddings), args.top_k)
    print(_table(embedded.paths, predictions))
    report_skipped(embedded.skipped, len(paths))
    if args.output:
        _write(Path(args.output), embedded, predictions, classifier, loaded)
        print(f"predictions written to {args.output}")


def _table(paths: list[Path], predictions: list[list[tuple[str, float]]]) -> str:
    """An aligned table: the image, then label and probability of each rank."""
    depth = max(len(row) for row in predictions)
    header = ["image"] + [cell for rank in range(1, depth + 1) for cell in (f"top-{rank}", "p")]
    rows = [
        [str(path)] + [cell for label, p in row for cell in (label, f"{p:.4f}")]
        for path, row in zip(paths, predictions, strict=True)
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]

    def line(cells: list[str]) -> str:
        aligned = [
            cell.rjust(width) if column and column % 2 == 0 else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(aligned).rstrip()

    return "\n".join(line(cells) for cells in [header, *rows])


def _write(output: Path, embedded, predictions, classifier, loaded) -> None:
    import csv
    import json

    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".csv":
        with open(output, "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["image", "rank", "label", "probability"])
            for path, row in zip(embedded.paths, predictions, strict=True):
                writer.writerows([str(path), rank, label, p] for rank, (label, p) in enumerate(row, start=1))
        return
    record = {
        "model": loaded.name,
        "checkpoint": loaded.source,
        "classes": classifier.classnames,
        "templates": classifier.templates,
        "predictions": [
            {"image": str(path), "top_k": [{"label": label, "probability": p} for label, p in row]}
            for path, row in zip(embedded.paths, predictions, strict=True)
        ],
        "skipped": [{"image": str(path), "error": reason} for path, reason in embedded.skipped],
    }
    output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
