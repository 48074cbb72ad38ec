"""Every command's --help: each `cyclip eval` subcommand lists only the flags it uses, and every --output says
whether it names a file or a folder."""

from __future__ import annotations

import argparse

import pytest

from cyclip.cli import build_parser

COMMON = {"help", "checkpoint", "embeddings", "model", "device", "batch_size", "workers", "data", "split", "output"}
COMMON |= {"overwrite"}
PROBE = {"train_data", "train_embeddings", "mean_per_class", "seed"}
# What each task reads, written out here as the reference: classification sets take --root, retrieval files
# --image-root; options belong to the tasks that use them.
EXPECTED = {
    "zeroshot": COMMON | {"root", "format"},
    "linear-probe": COMMON | {"root", "format"} | PROBE,
    "few-shot": COMMON | {"root", "shots"} | PROBE,
    "retrieval": COMMON | {"image_root", "format"},
    "consistency": COMMON | {"root"},
    "geometry": COMMON | {"root"},
    "granularity": COMMON | {"root", "superclasses"},
}
OUTPUT_IS = {
    ("train",): "folder",
    ("demo",): "folder",
    ("compare",): "folder",
    ("export",): "folder",
    ("eval", "zeroshot"): "file",
    ("eval", "embed"): "file",
    ("eval", "suite"): "file",
    ("predict",): "file",
    ("index",): "file",
}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _command(*names: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in names:
        parser = _subparsers(parser)[name]
    return parser


@pytest.mark.parametrize("task", sorted(EXPECTED))
def test_each_eval_task_lists_only_the_flags_it_uses(task):
    assert {action.dest for action in _command("eval", task)._actions} == EXPECTED[task]


@pytest.mark.parametrize("command", sorted(OUTPUT_IS))
def test_output_says_whether_it_is_a_file_or_a_folder(command):
    output = next(action for action in _command(*command)._actions if action.dest == "output")
    assert OUTPUT_IS[command] in output.help, output.help
