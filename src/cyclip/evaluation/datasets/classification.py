"""`open_classification`: one entry point from a dataset name (or a folder) to a ClassificationSet.

A named dataset is read from its standard local layout under `root`; with no root the argument is a folder:
a labelled folder (labels.csv + classes.json) or an ImageFolder tree (one subfolder of images per class).
A folder is one split, so `split` only matters for named datasets.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cyclip.errors import DataError
from cyclip.evaluation.datasets.arrays import open_cifar, open_stl10
from cyclip.evaluation.datasets.common import ROOT_FLAG, ClassificationSet, check_split, folder_dataset, subfolders
from cyclip.evaluation.datasets.imagenet import (
    open_imagenet,
    open_imagenet_sketch,
    open_imagenet_subset,
    open_imagenetv2,
)
from cyclip.evaluation.datasets.labelled import LabelledImageDataset, read_labelled_folder
from cyclip.evaluation.datasets.names import DEFAULT_TEMPLATES, readable
from cyclip.evaluation.datasets.probes import PROBES, open_probe

_TEST_ONLY = ("imagenetv2", "imagenet-sketch", "imagenet-a", "imagenet-r")
CLASSIFICATION_DATASETS: tuple[str, ...] = ("cifar10", "cifar100", "imagenet", *_TEST_ONLY, "stl10", *PROBES)
_FOLDER_KINDS = "a labelled folder (labels.csv + classes.json) or an ImageFolder tree (one subfolder per class)"


def open_classification(
    name_or_path: str, root: str | Path | None, split: str, transform: Callable
) -> ClassificationSet:
    """The labelled images of a named dataset under `root`, or of the folder `name_or_path` when root is None.

    split: "train" or "test" ("test" is the split papers report: ImageNet's validation images, for one).
    transform: applied to each RGB PIL image; the dataset yields (transform(image), label).
    """
    check_split(split)
    if root is None:
        return _open_folder(Path(name_or_path), transform)
    name = str(name_or_path).lower()
    if name not in CLASSIFICATION_DATASETS:
        raise ValueError(
            f"unknown dataset {name_or_path!r}; the datasets read from a local copy are: "
            f"{', '.join(CLASSIFICATION_DATASETS)} (for a folder of your own, pass no root)"
        )
    if name in _TEST_ONLY and split == "train":
        raise ValueError(f"{name} has a test split only; train linear probes on imagenet and evaluate on {name}")
    if name in ("cifar10", "cifar100"):
        return open_cifar(name, root, split, transform)
    if name == "stl10":
        return open_stl10(root, split, transform)
    if name == "imagenet":
        return open_imagenet(root, split, transform)
    if name == "imagenetv2":
        return open_imagenetv2(root, transform)
    if name == "imagenet-sketch":
        return open_imagenet_sketch(root, transform)
    if name in ("imagenet-a", "imagenet-r"):
        return open_imagenet_subset(name, root, transform)
    return open_probe(name, root, split, transform)


def _open_folder(folder: Path, transform: Callable) -> ClassificationSet:
    if not folder.is_dir():
        if not folder.exists() and str(folder).lower() in CLASSIFICATION_DATASETS:
            raise ValueError(f"{folder} names a dataset: also pass the folder of its local copy as root ({ROOT_FLAG})")
        what = "is a file, not a folder" if folder.exists() else "not found"
        raise DataError(
            f"{folder}: {what}; pass {_FOLDER_KINDS}, or a dataset name with its local folder "
            f"({', '.join(CLASSIFICATION_DATASETS)})"
        )
    name = folder.resolve().name
    if (folder / "labels.csv").exists() or (folder / "classes.json").exists():
        data = read_labelled_folder(folder)
        return ClassificationSet(name, LabelledImageDataset(data, transform), data.classes, data.templates, False)
    if not subfolders(folder):
        raise DataError(f"{folder}: holds neither labels.csv + classes.json nor class subfolders; pass {_FOLDER_KINDS}")
    folders = subfolders(folder)  # visible ones: a stray .ipynb_checkpoints/ is not a class
    dataset = folder_dataset(
        name, folder, {class_folder: index for index, class_folder in enumerate(folders)}, transform
    )
    return ClassificationSet(name, dataset, [readable(c) for c in folders], list(DEFAULT_TEMPLATES), False)
