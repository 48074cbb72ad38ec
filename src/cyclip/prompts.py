"""Class names and prompt templates given on the command line or in files, checked before any model runs.

Templates take the class name at `{}` (the project's placeholder, `str.format`'s) or at `{c}` (clip_benchmark's);
both are turned into `{}` here, so the rest of the code formats templates one way. Labels must be unique: two
classes with one name would split that name's probability between them.
"""

from __future__ import annotations

import os
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from cyclip.errors import DataError
from cyclip.files import read_json

__all__ = ["DEFAULT_TEMPLATES", "check_labels", "normalise_template", "parse_labels", "read_classes", "read_templates"]

DEFAULT_TEMPLATES = ["a photo of a {}."]  # when a classes file or a dataset brings none
_PLACEHOLDERS = ("", "c")  # `{}` and clip_benchmark's `{c}`
_CLASSES_LAYOUT = '{"classes": ["cat", "dog", ...], "templates": ["a photo of a {}.", ...]} or a list of names'


def check_labels(labels: Sequence[str], where: str) -> list[str]:
    """The labels as a list; refuse an empty list, an empty name or a repeated name, naming `where` they came from."""
    labels = list(labels)
    if not labels:
        raise DataError(f"{where}: no labels given; pass at least one class name, e.g. --labels 'cat,dog'")
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise DataError(f"{where}: every label must be a non-empty string, got {labels!r:.80}")
    duplicates = sorted(label for label, count in Counter(labels).items() if count > 1)
    if duplicates:
        raise DataError(f"{where}: duplicate labels {', '.join(map(repr, duplicates))}; each class must be named once")
    return labels


def parse_labels(text: str, where: str = "--labels") -> list[str]:
    """Comma-separated class names (surrounding spaces dropped), checked by `check_labels`."""
    labels = [label.strip() for label in text.split(",")] if text.strip() else []
    if any(not label for label in labels):
        raise DataError(f"{where}: empty label in {text!r}; separate class names by single commas")
    return check_labels(labels, where)


def read_classes(path: str | os.PathLike) -> tuple[list[str], list[str] | None]:
    """Class names and templates (None when the file has none) from a classes.json file (`_CLASSES_LAYOUT`)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: classes file not found; pass a JSON file {_CLASSES_LAYOUT}")
    content = read_json(path)
    if isinstance(content, list):
        return check_labels(content, str(path)), None
    if not isinstance(content, dict) or not isinstance(content.get("classes"), list):
        raise DataError(f"{path}: expected {_CLASSES_LAYOUT}")
    classes = check_labels(content["classes"], str(path))
    templates = content.get("templates")
    if templates is None:
        return classes, None
    if not isinstance(templates, list) or not all(isinstance(t, str) for t in templates):
        raise DataError(f'{path}: "templates" must be a list of strings such as "a photo of a {{}}."')
    return classes, _checked_templates(templates, str(path))


def read_templates(values: Iterable[str]) -> list[str]:
    """Templates from each value: a JSON file (a list, or an object with "templates"), a text file (one template
    a line), or else the template itself."""
    templates: list[str] = []
    for value in values:
        path = Path(value)
        if not path.is_file():
            templates.append(normalise_template(value, "--templates"))
        elif path.suffix.lower() == ".json":
            content = read_json(path)
            listed = content.get("templates") if isinstance(content, dict) else content
            if not isinstance(listed, list) or not all(isinstance(t, str) for t in listed):
                raise DataError(f'{path}: expected a list of templates or {{"templates": [...]}}')
            templates += _checked_templates(listed, str(path))
        else:
            lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
            templates += _checked_templates([line for line in lines if line], str(path))
    if not templates:
        raise DataError("--templates: no templates found; give e.g. --templates 'a photo of a {}.'")
    return templates


def normalise_template(template: str, where: str) -> str:
    """`template` with its class-name placeholder(s) written `{}` (or `{0}` when the name appears more than once)."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as error:
        raise DataError(f"{where}: template {template!r} is not a valid format string ({error})") from None
    fields = [(name, spec, conversion) for _, name, spec, conversion in parts if name is not None]
    if not fields or any(name not in _PLACEHOLDERS or spec or conversion for name, spec, conversion in fields):
        raise DataError(
            f"{where}: template {template!r} needs the class name as '{{}}' (or clip_benchmark's '{{c}}') and no "
            "other braces (write literal braces as '{{' and '}}')"
        )
    placeholder = "{}" if len(fields) == 1 else "{0}"
    return "".join(
        literal.replace("{", "{{").replace("}", "}}") + (placeholder if name is not None else "")
        for literal, name, _, _ in parts
    )


def _checked_templates(templates: list[str], where: str) -> list[str]:
    if not templates:
        raise DataError(f"{where}: the list of templates is empty; give at least one, e.g. 'a photo of a {{}}.'")
    return [normalise_template(template, where) for template in templates]
