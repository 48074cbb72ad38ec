"""The Python API is discoverable (`help`, `dir`) and every name the README uses exists where it says."""

from __future__ import annotations

import importlib
import pydoc
import re
from pathlib import Path

import pytest

import cyclip
import cyclip.evaluation

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("package", [cyclip, cyclip.evaluation])
def test_help_and_dir_show_every_public_name(package):
    assert set(package.__all__) <= set(dir(package))
    shown = pydoc.render_doc(package, renderer=pydoc.plaintext)
    for name in package.__all__:
        assert getattr(package, name) is not None
        assert re.search(rf"\b{name}\b", package.__doc__), f"{name} is not in {package.__name__}'s docstring"
        assert name in shown


def _readme_names(module: str) -> set[str]:
    """Names the README uses from `module`: `from module import a, b`, `module.name` and the named functions of
    its 'each task is a function in `module`' paragraph."""
    names = set()
    for listed in re.findall(rf"^from {re.escape(module)} import (.+)$", README, flags=re.MULTILINE):
        names |= {name.strip() for name in listed.split(",")}
    names |= set(re.findall(rf"\b{re.escape(module)}\.(\w+)", README))
    paragraph = re.search(rf"each task is a function in `{re.escape(module)}`(.+?)\n\n", README, flags=re.DOTALL)
    if paragraph:
        names |= set(re.findall(r"`(\w+)`", paragraph.group(1)))
    return names


def test_every_name_the_readme_uses_from_the_evaluation_package_exists():
    names = _readme_names("cyclip.evaluation")
    assert {"linear_probe", "consistency_report", "run_task", "Encoder", "TaskSpec"} <= names
    for name in names:
        if name in cyclip.evaluation.__all__:
            assert callable(getattr(cyclip.evaluation, name)) or name == "TASKS", name
        else:  # a submodule the README points to, such as cyclip.evaluation.tasks
            importlib.import_module(f"cyclip.evaluation.{name}")
    assert callable(cyclip.evaluation.linear_probe)  # the function, not the module of the same name


def test_every_top_level_name_the_readme_calls_exists():
    called = set(re.findall(r"\bcyclip\.(\w+)\(", README))
    assert {"load_checkpoint", "embed_images", "embed_texts"} <= called
    for name in called:
        assert callable(getattr(cyclip, name)), name
