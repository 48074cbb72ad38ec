"""Command-line flags generated from a config dataclass's field metadata (`cyclip.config.Option`).

A flag per field (`--batch-size` for `batch_size`, plus the Option's aliases), its help built from the
Option's text, the field's default and valid range; booleans get `--x/--no-x`. Values reach the config as
given (no argparse `type` or `choices`), so that every wrong value, typed on the command line or written
in a YAML file, is refused by the config's own check in one line.
"""

from __future__ import annotations

import argparse
from typing import Any

from cyclip.config import OptionField, option_fields

METAVARS = {int: "INT", float: "NUMBER"}


def flag(name: str) -> str:
    """The flag of a config field: `batch_size` -> `--batch-size`."""
    return "--" + name.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, config_class: type) -> None:
    """One flag per field of `config_class`, all defaulting to None (= not given on the command line)."""
    for described in option_fields(config_class):
        options: dict[str, Any] = {"default": None, "help": _help(described)}
        if described.type is bool:
            options["action"] = argparse.BooleanOptionalAction
        elif described.option.choices:
            options["metavar"] = "{" + ",".join(described.option.choices) + "}"
        elif described.type in METAVARS:
            options["metavar"] = METAVARS[described.type]
        parser.add_argument(flag(described.name), *described.option.aliases, dest=described.name, **options)


def given_flags(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of `config_class` whose flags were given, with the values as typed."""
    values = {described.name: getattr(args, described.name) for described in option_fields(config_class)}
    return {name: value for name, value in values.items() if value is not None}


def _help(described: OptionField) -> str:
    option = described.option
    notes = []
    if described.default is not None:
        notes.append(f"default: {_default_text(described.default)}")
    elif option.default_help:
        notes.append(f"default: {option.default_help}")
    if option.range_text():
        notes.append(f"valid: {option.range_text()}")
    text = option.help + (f" ({'; '.join(notes)})" if notes else "")
    return text.replace("%", "%%")  # argparse formats help with %


def _default_text(default: Any) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, float):
        return f"{default:g}"
    return repr(default) if isinstance(default, str) and default in (",", "") else str(default)
