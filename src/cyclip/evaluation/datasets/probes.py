"""Linear-probe datasets read through torchvision's own classes from their standard local layouts.

`root` is what torchvision's class takes as root. Before a class is built, the files it needs for the split
are looked for here, so a wrong folder gets a line naming the missing path rather than torchvision's advice to
download. "train" is the training split plus the validation split where the dataset has one, and "test"
the test split: the split sizes of the CLIP paper's linear-probe table. Caltech101 has no official split:
here the first 30 images of each class (image_0001..0030) train and the rest test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import ConcatDataset, Dataset
from torchvision import datasets

from cyclip.data.images import load_rgb_image
from cyclip.errors import DataError
from cyclip.evaluation.datasets.common import (
    ClassificationSet,
    TorchvisionImages,
    check_root,
    one_line,
    require,
    subfolders,
)
from cyclip.evaluation.datasets.labelled import LabelledImageDataset, LabelledImages
from cyclip.evaluation.datasets.names import DEFAULT_TEMPLATES, GTSRB_CLASSES, SVHN_CLASSES, readable

CALTECH101_TRAIN_PER_CLASS = 30


class _Probe(NamedTuple):
    layout: str  # what --root must hold, for messages
    needs: Callable[[str], list[str]]  # torchvision split -> paths under root it reads
    splits: Splits  # our split -> torchvision splits
    mean_per_class: bool


Splits = dict[str, tuple[str, ...]]
_BOTH: Splits = {"train": ("train", "val"), "test": ("test",)}
_SAME: Splits = {"train": ("train",), "test": ("test",)}
_TRAINVAL: Splits = {"train": ("trainval",), "test": ("test",)}
_SST2_FOLDERS = {"train": "train", "val": "valid", "test": "test"}

PROBES: dict[str, _Probe] = {
    "caltech101": _Probe(
        "caltech101/101_ObjectCategories/<category>/image_0001.jpg, as extracted from caltech-101.zip",
        lambda split: ["caltech101/101_ObjectCategories"],
        {"train": ("all",), "test": ("all",)},
        True,
    ),
    "dtd": _Probe(
        "dtd/dtd/{images,labels}/, i.e. dtd-r1.0.1.tar.gz extracted into a folder named dtd",
        lambda split: ["dtd/dtd/images", f"dtd/dtd/labels/{split}1.txt"],
        _BOTH,
        False,
    ),
    "fgvc-aircraft": _Probe(
        "fgvc-aircraft-2013b/data/ as extracted from fgvc-aircraft-2013b.tar.gz",
        lambda split: [
            "fgvc-aircraft-2013b/data/images",
            "fgvc-aircraft-2013b/data/variants.txt",
            f"fgvc-aircraft-2013b/data/images_variant_{split}.txt",
        ],
        _TRAINVAL,
        True,
    ),
    "flowers102": _Probe(
        "flowers-102/{jpg/,imagelabels.mat,setid.mat}",
        lambda split: ["flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"],
        _BOTH,
        True,
    ),
    "food101": _Probe(
        "food-101/{images,meta}/ as extracted from food-101.tar.gz",
        lambda split: ["food-101/images", f"food-101/meta/{split}.json"],
        _SAME,
        False,
    ),
    "gtsrb": _Probe(
        "gtsrb/GTSRB/Training/<00000..00042>/*.ppm, gtsrb/GTSRB/Final_Test/Images/*.ppm and gtsrb/GT-final_test.csv",
        lambda split: (
            ["gtsrb/GTSRB/Training"]
            if split == "train"
            else ["gtsrb/GTSRB/Final_Test/Images", "gtsrb/GT-final_test.csv"]
        ),
        _SAME,
        False,
    ),
    "oxford-pets": _Probe(
        "oxford-iiit-pet/{images,annotations}/ as extracted from images.tar.gz and annotations.tar.gz",
        lambda split: ["oxford-iiit-pet/images", f"oxford-iiit-pet/annotations/{split}.txt"],
        _TRAINVAL,
        True,
    ),
    "rendered-sst2": _Probe(
        "rendered-sst2/{train,valid,test}/{negative,positive}/*.png",
        lambda split: [f"rendered-sst2/{_SST2_FOLDERS[split]}/{label}" for label in ("negative", "positive")],
        _BOTH,
        False,
    ),
    "stanford-cars": _Probe(
        "stanford_cars/{devkit/cars_meta.mat,devkit/cars_train_annos.mat,cars_train/,"
        "cars_test_annos_withlabels.mat,cars_test/}",
        lambda split: (
            ["stanford_cars/devkit/cars_meta.mat"]
            + (
                ["stanford_cars/devkit/cars_train_annos.mat", "stanford_cars/cars_train"]
                if split == "train"
                else ["stanford_cars/cars_test_annos_withlabels.mat", "stanford_cars/cars_test"]
            )
        ),
        _SAME,
        False,
    ),
    "svhn": _Probe(
        "train_32x32.mat and test_32x32.mat (the cropped-digits files)",
        lambda split: [f"{split}_32x32.mat"],
        _SAME,
        False,
    ),
}


def open_probe(name: str, root: str | Path, split: str, transform: Callable) -> ClassificationSet:
    """One of PROBES from its torchvision layout under `root`."""
    probe = PROBES[name]
    root = check_root(name, root, probe.layout)
    for part in probe.splits[split]:
        for relative in probe.needs(part):
            require(name, root, relative, probe.layout)
    if name == "caltech101":
        dataset, classes = _caltech101(root, split, transform, probe.layout)
    else:
        parts = [_build(name, root, part, probe.layout) for part in probe.splits[split]]
        classes = _classes(name, root, parts, probe.layout)
        wrapped = [TorchvisionImages(part, transform, name) for part in parts]
        dataset = wrapped[0] if len(wrapped) == 1 else ConcatDataset(wrapped)
    return ClassificationSet(name, dataset, classes, list(DEFAULT_TEMPLATES), probe.mean_per_class)


def _build(name: str, root: Path, split: str, layout: str) -> Any:
    """torchvision's dataset for `split`, with download=False; its errors become one DataError line.

    Typed Any: the attributes read from it (classes, labels, filename) differ between torchvision's classes.
    """
    if name == "gtsrb":
        _check_gtsrb_folders(root, split, layout)
    factories: dict[str, tuple[Callable[..., Dataset], dict[str, Any]]] = {
        "dtd": (datasets.DTD, {"split": split, "partition": 1}),
        "fgvc-aircraft": (datasets.FGVCAircraft, {"split": split, "annotation_level": "variant"}),
        "flowers102": (datasets.Flowers102, {"split": split}),
        "food101": (datasets.Food101, {"split": split}),
        "gtsrb": (datasets.GTSRB, {"split": split}),
        "oxford-pets": (datasets.OxfordIIITPet, {"split": split, "target_types": "category"}),
        "rendered-sst2": (datasets.RenderedSST2, {"split": split}),
        "stanford-cars": (datasets.StanfordCars, {"split": split}),
        "svhn": (datasets.SVHN, {"split": split}),
    }
    factory, arguments = factories[name]
    if "loader" in inspect.signature(factory).parameters:
        arguments["loader"] = load_rgb_image  # RGB whatever the file's mode; a broken file's error names it
    try:
        return factory(str(root), download=False, **arguments)
    except RuntimeError as error:
        if "download" not in str(error):
            raise DataError(f"{name}: cannot read {root} ({one_line(error)}); expected {layout}") from None
        raise DataError(
            f"{name}: torchvision did not accept {root} as a local copy of the {split} split (a file is missing or "
            f"its checksum differs from the published one); expected {layout}"
        ) from None
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
        raise DataError(
            f"{name}: cannot read {root} ({type(error).__name__}: {one_line(error)}); expected {layout}"
        ) from None


def _classes(name: str, root: Path, parts: list[Any], layout: str) -> list[str]:
    if name == "gtsrb":
        return list(GTSRB_CLASSES)
    if name == "svhn":
        _check_svhn_labels(root, parts)
        return list(SVHN_CLASSES)
    found = [list(part.classes) for part in parts]
    if any(classes != found[0] for classes in found):
        raise DataError(
            f"{name}: the train and validation split files of {root} name different classes; expected {layout}"
        )
    return [readable(c) for c in found[0]] if name == "food101" else found[0]


def _check_gtsrb_folders(root: Path, split: str, layout: str) -> None:
    """torchvision labels GTSRB training images by the position of their folder: all 43 must be there."""
    if split != "train":
        return
    training = root / "gtsrb/GTSRB/Training"
    expected = [f"{number:05d}" for number in range(len(GTSRB_CLASSES))]
    found = subfolders(training)
    if found != expected:
        odd = sorted(set(found) ^ set(expected))
        raise DataError(
            f"gtsrb: {training} must hold exactly the class folders 00000..00042 (found {len(found)}; "
            f"{'missing' if odd[0] in expected else 'unexpected'}: {odd[0]}); expected {layout}"
        )


def _check_svhn_labels(root: Path, parts: list[Any]) -> None:
    for part in parts:
        labels = part.labels
        bad = [index for index, label in enumerate(labels.tolist()) if not 0 <= label < len(SVHN_CLASSES)]
        if bad:
            raise DataError(
                f"svhn: {root / part.filename}: image {bad[0]} has label {labels[bad[0]]} (valid: 1..10, 10 for the "
                f"digit 0; {len(bad)} bad labels)"
            )


def _caltech101(root: Path, split: str, transform: Callable, layout: str) -> tuple[Dataset, list[str]]:
    """torchvision finds the categories and images; the split keeps image_0001..0030 of each class for training."""
    images = root / "caltech101" / "101_ObjectCategories"
    if not (images / "BACKGROUND_Google").is_dir():  # torchvision removes it from the classes and fails without it
        raise DataError(
            f"caltech101: {images} has no BACKGROUND_Google folder; extract 101_ObjectCategories.tar.gz complete"
        )
    try:
        base = datasets.Caltech101(str(root), target_type="category", download=False)
    except (RuntimeError, OSError, ValueError) as error:
        raise DataError(f"caltech101: cannot read {root} ({one_line(error)}); expected {layout}") from None
    paths, labels = [], []
    for label, number in zip(base.y, base.index, strict=True):
        if (number <= CALTECH101_TRAIN_PER_CLASS) == (split == "train"):
            paths.append(images / base.categories[label] / f"image_{number:04d}.jpg")
            labels.append(label)
    classes = [readable(category) for category in base.categories]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise DataError(
            f"caltech101: image not found: {missing[0]} ({len(missing)} of {len(paths)} missing; each category folder "
            "must hold image_0001.jpg .. image_NNNN.jpg without gaps, as the archive extracts)"
        )
    return LabelledImageDataset(LabelledImages(paths, labels, classes, list(DEFAULT_TEMPLATES)), transform), classes
