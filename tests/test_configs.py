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
