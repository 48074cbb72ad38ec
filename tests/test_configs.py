"""The shipped recipes in configs/: every file loads through `cyclip train`'s config reader and holds the
paper's values; the evaluation suite parses with `cyclip eval suite`'s reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from cyclip.cli.evaluate import _read_suite_config
from cyclip.config import TrainConfig, read_config_file
from cyclip.evaluation.datasets.classification import CLASSIFICATION_DATASETS
from cyclip.evaluation.tasks import TaskSpec

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# recipe: (lambda_inmodal, lambda_crossmodal), as in the paper's ablation of the two regularizers
RECIPES = {"clip": (0.0, 0.0), "cyclip": (0.25, 0.25), "i-cyclip": (0.25, 0.0), "c-cyclip": (0.0, 0.25)}


def test_every_shipped_training_recipe_is_one_of_the_paper_s_four():
    assert sorted(path.name for path in CONFIGS.glob("cc3m-*.yaml")) == sorted(
        f"cc3m-rn50-{recipe}.yaml" for recipe in RECIPES
    )


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_loads_and_holds_the_authors_defaults(recipe):
    config = TrainConfig(**read_config_file(CONFIGS / f"cc3m-rn50-{recipe}.yaml"))

    assert (config.lambda_inmodal, config.lambda_crossmodal) == RECIPES[recipe]
    assert config.model == "RN50"
    assert config.batch_size == 128  # per GPU
    assert config.epochs == 64
    assert config.lr == 5e-4
    assert config.wd == 0.1
    assert config.warmup == 10_000
    assert (config.beta1, config.beta2, config.eps) == (0.9, 0.999, 1e-8)  # the authors' Adam settings
    assert config.inmodal is False  # the augmentation mode is a different experiment
    assert config.accum_freq == 1
    assert config.train_data.startswith("data/cc3m/") and config.val_data.startswith("data/cc3m/")
    assert config.output == f"runs/cc3m-rn50-{recipe}"


def test_paper_evaluation_suite_parses_and_names_every_benchmark():
    path = CONFIGS / "eval-paper.yaml"
    config = _read_suite_config(path)
    specs = [TaskSpec.from_dict(task, f"{path}: tasks[{i}]") for i, task in enumerate(config["tasks"])]

    zeroshot = {spec.data for spec in specs if spec.task == "zeroshot"}
    probes = {spec.data for spec in specs if spec.task == "linear-probe"}
    assert zeroshot == {"imagenet", "imagenetv2", "imagenet-sketch", "imagenet-a", "imagenet-r", "cifar10", "cifar100"}
    assert {"imagenet", "cifar10", "cifar100"} <= probes <= set(CLASSIFICATION_DATASETS)
    assert {spec.task for spec in specs} == {"zeroshot", "linear-probe"}
    assert all(spec.root for spec in specs)  # named datasets are read from a local copy
    assert len({spec.label for spec in specs}) == len(specs)  # one report row per task


@pytest.fixture(scope="module")
def digits_csvs(tmp_path_factory):
    from cyclip.data import write_digits_demo

    data = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    return data.train_csv, data.val_csv


def _rows(csv: Path) -> int:
    return len(csv.read_text().splitlines()) - 1  # one header line


@pytest.mark.parametrize("recipe", RECIPES)
def test_dry_run_of_every_recipe_prints_the_resolved_plan_and_writes_nothing(
    recipe, digits_csvs, tmp_path, monkeypatch, capsys
):
    import open_clip

    from cyclip.cli import main

    monkeypatch.chdir(tmp_path)  # the recipes' outputs are relative: runs/...
    train_csv, val_csv = digits_csvs
    config = CONFIGS / f"cc3m-rn50-{recipe}.yaml"
    flags = ["--train-data", str(train_csv), "--val-data", str(val_csv), "--workers", "0", "--dry-run"]
    assert main(["train", "--config", str(config), *flags]) == 0

    plan = capsys.readouterr().out
    parameters = sum(p.numel() for p in open_clip.create_model("RN50").parameters())
    steps = _rows(train_csv) // 128
    assert f"{parameters / 1e6:.1f} M parameters" in plan
    assert f"{_rows(train_csv):,} training pairs" in plan and f"validation {_rows(val_csv):,} pairs" in plan
    assert "global 128 = 128 per process x 1 accumulation x 1 process(es)" in plan
    assert f"64 epochs x {steps:,} steps = {64 * steps:,} steps" in plan
    lambdas = RECIPES[recipe]
    assert f"clip loss, lambda_inmodal {lambdas[0]:g}, lambda_crossmodal {lambdas[1]:g}" in plan
    assert "warm-up (10,000 steps) is not shorter than the run" in plan  # the digits are far smaller than CC3M
    assert list(tmp_path.iterdir()) == []  # nothing written: no output folder, no log


def test_dry_run_names_missing_data_in_one_line(tmp_path, monkeypatch, capsys):
    from cyclip.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", str(CONFIGS / "cc3m-rn50-clip.yaml"), "--dry-run"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "data/cc3m/train/00000.tar: shard not found" in error
