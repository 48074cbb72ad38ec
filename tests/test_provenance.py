"""Provenance: the versions and commit recorded with every result are the real ones."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import open_clip
import pytest
import torch
import yaml

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


def _expected_versions(record: dict) -> None:
    assert record["cyclip"] == cyclip.__version__
    assert record["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert record["open_clip"] == open_clip.__version__


def test_version_flag_prints_the_versions(capsys):
    from cyclip.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"cyclip {cyclip.__version__}") and printed.count("\n") == 1
    assert f"open_clip {open_clip.__version__}" in printed and f"torch {torch.__version__.split('+')[0]}" in printed


def test_config_yaml_records_provenance_and_still_reads_back(tmp_path, monkeypatch):
    from cyclip.cli import build_parser
    from cyclip.cli.train import train_config_from_args
    from cyclip.config import TrainConfig

    monkeypatch.setattr(sys, "argv", ["cyclip", "train", "--epochs", "3"])
    config = TrainConfig(train_data="train.csv", epochs=3, output=str(tmp_path))
    config.save_yaml(tmp_path / "config.yaml")
    written = yaml.safe_load((tmp_path / "config.yaml").read_text())
    _expected_versions(written["provenance"])
    assert written["provenance"]["command"] == "cyclip train --epochs 3"
    assert {key: value for key, value in written.items() if key != "provenance"} == dataclasses.asdict(config)
    again = train_config_from_args(build_parser().parse_args(["train", "--config", str(tmp_path / "config.yaml")]))
    assert again == config


def test_checkpoints_record_provenance_readable_weights_only(tmp_path):
    from cyclip.checkpoints import save_checkpoint

    save_checkpoint({"model": {"w": torch.ones(2)}, "model_name": "x"}, tmp_path / "a.pt")
    stored = torch.load(tmp_path / "a.pt", weights_only=True)
    _expected_versions(stored["provenance"])
    assert torch.equal(stored["model"]["w"], torch.ones(2))


def test_eval_results_record_provenance(tmp_path):
    from cyclip.evaluation.report import read_results, write_results

    results = {
        "checkpoint": "c.pt",
        "model": "m",
        "tasks": {"zeroshot/x": {"task": "zeroshot", "metrics": {"top1": 1}}},
    }
    json_path, markdown_path = write_results(results, tmp_path / "eval.json")
    _expected_versions(read_results(json_path)["provenance"])
    assert f"cyclip {cyclip.__version__}" in markdown_path.read_text()
