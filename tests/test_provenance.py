"""Provenance: the versions and commit recorded with every result are the real ones."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import open_clip
import torch

import cyclip
from cyclip.provenance import provenance


def test_provenance_names_the_installed_versions_and_the_checkout(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/cyclip", "train", "--output", "runs/a b"])
    record = provenance()
    assert record["cyclip"] == cyclip.__version__
    assert record["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert record["open_clip"] == open_clip.__version__
    assert record["command"] == "cyclip train --output 'runs/a b'"
    source = Path(cyclip.__file__).parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=source, capture_output=True, text=True)
    if head.returncode == 0:  # tests run from a checkout; an installed copy records None
        assert record["git_commit"].removesuffix("-dirty") == head.stdout.strip()
    else:
        assert record["git_commit"] is None
