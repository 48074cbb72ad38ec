"""Few-shot shots: chosen with --shots or a suite's `shots:` key; a k too large for some class is skipped with a
warning naming the class, and the smaller k's results are kept."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from cyclip.cli import main
from cyclip.evaluation.embeddings_file import save_embeddings
from cyclip.evaluation.linear_probe import few_shot_probe
from cyclip.evaluation.tasks import TaskSpec, run_suite

CLASS_NAMES = ["zero", "one", "seven"]


def clusters(counts: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit vectors around one centre per class, `counts[c]` of class c."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.eye(3, 8) * 3
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    x = centres[labels] + torch.randn(len(labels), 8, generator=generator)
    return x / x.norm(dim=1, keepdim=True), labels


@pytest.fixture
def files(tmp_path):
    """Training embeddings where 'seven' has only 5 examples, and a balanced test set."""
    train_x, train_y = clusters([20, 20, 5], seed=0)
    test_x, test_y = clusters([10, 10, 10], seed=1)
    save_embeddings(tmp_path / "train.npz", image_embeddings=train_x, labels=train_y, class_names=CLASS_NAMES)
    save_embeddings(tmp_path / "test.npz", image_embeddings=test_x, labels=test_y, class_names=CLASS_NAMES)
    return tmp_path, (train_x, train_y, test_x, test_y)


def test_a_class_short_of_examples_skips_the_larger_k_and_keeps_the_rest(files, caplog):
    folder, arrays = files
    command = ["eval", "few-shot", "--embeddings", str(folder / "test.npz")]
    command += [
        "--train-embeddings",
        str(folder / "train.npz"),
        "--shots",
        "16,1,8",
        "--output",
        str(folder / "r.json"),
    ]
    with caplog.at_level(logging.WARNING, logger="cyclip"):
        assert main(command) == 0
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert "k = 8, 16 skipped (results for k = 1 kept)" in warning and "'seven' (5)" in warning
    metrics = json.loads((folder / "r.json").read_text())["metrics"]
    assert sorted(metrics) == ["1", "skipped"]
    assert metrics["skipped"] == {
        str(k): f"1 class(es) have fewer than {k} training examples: 'seven' (5)" for k in (8, 16)
    }
    alone = few_shot_probe(*arrays, shots=(1,))["shots"]  # the same draws without a k to skip
    assert metrics["1"] == {"mean": alone[1]["mean"], "std": alone[1]["std"]}


def test_a_suites_shots_key_is_read_like_the_flag(files):
    folder, _ = files
    task = {"task": "few-shot", "embeddings": str(folder / "test.npz"), "train_embeddings": str(folder / "train.npz")}
    spec = TaskSpec.from_dict({**task, "shots": [16, 1]}, "suite.yaml: tasks[0]")  # as the suite reads its YAML
    assert spec.shots == (1, 16)
    assert sorted(run_suite([spec], None, "unused.pt", None)["tasks"][spec.label]["metrics"]) == ["1", "skipped"]
    with pytest.raises(ValueError) as error:
        TaskSpec.from_dict({**task, "shots": [0, 2]}, "suite.yaml: tasks[0]")
    assert str(error.value) == "suite.yaml: tasks[0]: shots: expected integers >= 1 such as 1,2,4,8,16, got [0, 2]"


def test_bad_shots_on_the_command_line_are_one_line(files, capsys):
    folder, _ = files
    command = ["eval", "few-shot", "--embeddings", str(folder / "test.npz"), "--train-embeddings"]
    assert main([*command, str(folder / "train.npz"), "--shots", "1,two"]) == 2
    assert capsys.readouterr().err == "cyclip: error: --shots: expected integers >= 1 such as 1,2,4,8,16, got '1,two'\n"
    assert main([*command, str(folder / "train.npz"), "--shots", "8,16"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "no k in 8, 16 can be drawn" in error and "'seven' (5)" in error
