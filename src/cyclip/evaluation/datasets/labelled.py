"""Labelled evaluation sets for zero-shot classification: a folder with labels.csv and classes.json.

The folder is checked completely before any model runs, and evaluation is strict: an image that does
not load is an error, because skipping it would silently change the reported accuracy.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from cyclip.data.images import load_rgb_image
from cyclip.errors import DataError
from cyclip.files import CsvReader, read_json
from cyclip.prompts import DEFAULT_TEMPLATES, normalise_template

_LAYOUT = (
    'labels.csv (image,label) and classes.json ({"classes": [...], "templates": ["a photo of a {}.", ...]}, '
    "the class name at {} or {c})"
)


@dataclass
class LabelledImages:
    paths: list[Path]
    labels: list[int]
    classes: list[str]
    templates: list[str]
    captions: list[str] | None = None  # from an optional 'caption' column: labelled image-caption pairs


def read_labelled_folder(folder: str | os.PathLike) -> LabelledImages:
    """Read `folder/classes.json` and `folder/labels.csv`; a label is a class index or a class name.

    A label that parses as an integer is always an index. Image paths are relative to the folder, or absolute.
    An optional `caption` column makes the rows labelled image-caption pairs (for the consistency analysis).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "folder not found"
        raise DataError(f"{folder}: {what}; a labelled set is a folder holding {_LAYOUT}")
    classes, templates = _read_classes(folder / "classes.json")
    paths, labels, captions = _read_labels(folder / "labels.csv", classes)
    return LabelledImages(paths=paths, labels=labels, classes=classes, templates=templates, captions=captions)


class LabelledImageDataset(Dataset):
    """`dataset[i]` is `(image_tensor, label)`; an image that fails to load raises BadSampleError."""

    def __init__(self, data: LabelledImages, transform: Callable) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(load_rgb_image(self.data.paths[index])), self.data.labels[index]


def _read_classes(path: Path) -> tuple[list[str], list[str]]:
    if not path.is_file():
        raise DataError(
            f"{path.parent}: no classes.json (looked for {os.path.abspath(path)}); the folder must hold {_LAYOUT}"
        )
    content = read_json(path, "classes file")
    if not isinstance(content, dict) or "classes" not in content:
        raise DataError(f'{path}: expected an object {{"classes": [...], "templates": [...]}}, got {_kind(content)}')
    classes = content["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(name, str) and name for name in classes):
        raise DataError(f'{path}: "classes" must be a non-empty list of non-empty strings, got {_kind(classes)}')
    duplicates = sorted(name for name, count in Counter(classes).items() if count > 1)
    if duplicates:
        raise DataError(f"{path}: class names must be unique; repeated: {', '.join(map(repr, duplicates))}")
    templates = content.get("templates", DEFAULT_TEMPLATES)
    if not isinstance(templates, list) or not templates or not all(isinstance(t, str) for t in templates):
        raise DataError(f'{path}: "templates" must be a non-empty list of strings, got {_kind(templates)}')
    return classes, [normalise_template(template, str(path)) for template in templates]  # `{}` or `{c}`


def _read_labels(path: Path, classes: list[str]) -> tuple[list[Path], list[int], list[str] | None]:
    if not path.is_file():
        raise DataError(
            f"{path.parent}: no labels.csv (looked for {os.path.abspath(path)}); the folder must hold {_LAYOUT}"
        )
    index_of = {name: index for index, name in enumerate(classes)}
    paths: list[Path] = []
    labels: list[int] = []
    captions: list[str] = []
    missing: list[tuple[int, str]] = []
    with CsvReader(path) as table:
        header = table.header
        if "image" not in header or "label" not in header:
            raise DataError(
                f"{path}: the header must name the columns 'image' and 'label' "
                f"(found: {', '.join(header) or 'an empty file'})"
            )
        image_column, label_column = header.index("image"), header.index("label")
        caption_column = header.index("caption") if "caption" in header else None
        for line, row in table.rows():
            labels.append(_parse_label(path, line, row[label_column].strip(), classes, index_of))
            if caption_column is not None:
                if not row[caption_column].strip():
                    raise DataError(f"{path}: line {line}: empty caption; give every row a caption or none")
                captions.append(row[caption_column])
            image_path = path.parent / row[image_column]
            if not row[image_column].strip() or not image_path.is_file():
                missing.append((line, row[image_column]))
            paths.append(image_path)
    if not paths:
        raise DataError(f"{path}: no data rows after the header; add one 'image,label' row per image")
    if missing:
        line, image = missing[0]
        raise DataError(
            f"{path}: line {line}: image not found: {path.parent / image} "
            f"({len(missing)} of {len(paths)} images missing)"
        )
    return paths, labels, (captions if caption_column is not None else None)


def _parse_label(path: Path, line: int, value: str, classes: list[str], index_of: dict[str, int]) -> int:
    try:
        index = int(value)
    except ValueError:
        if value in index_of:
            return index_of[value]
        raise DataError(
            f"{path}: line {line}: label {value!r} is neither a class index (0..{len(classes) - 1}) "
            f"nor one of the {len(classes)} class names in classes.json"
        ) from None
    if not 0 <= index < len(classes):
        raise DataError(
            f"{path}: line {line}: label {index} is out of range for {len(classes)} classes "
            f"(valid: 0..{len(classes) - 1})"
        )
    return index


def _kind(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else f"{type(value).__name__} {text[:57]}..."
