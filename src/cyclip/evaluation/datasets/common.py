"""What every evaluation dataset reader shares: the ClassificationSet record, layout checks, image wrappers.

Layout checks run before any torchvision class is built, so that a wrong folder gets one line saying what
was looked for and where, instead of torchvision's advice to download (nothing here ever downloads).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder, VisionDataset

from cyclip.data.images import DECODE_ERRORS, load_rgb_image, to_rgb
from cyclip.errors import BadSampleError, DataError

SPLITS = ("train", "test")
ROOT_FLAG = "--root"  # the flag (and suite key `root`) naming the local copy of a dataset


@dataclass
class ClassificationSet:
    """A labelled image set ready for zero-shot classification or a linear probe."""

    name: str  # e.g. "cifar10", "imagenet-a", or the folder name
    dataset: Dataset  # yields (image_tensor, int label in [0, len(classes)))
    classes: list[str]  # human-readable class names used for zero-shot prompts
    templates: list[str]  # prompt templates with one "{}" each
    mean_per_class: bool  # linear-probe convention: report mean per-class accuracy instead of accuracy


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test' ('test' is the split papers report), got {split!r}")


def check_root(name: str, root: str | Path, layout: str) -> Path:
    """`root` as a Path, or a DataError when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "not found"
        raise DataError(f"{name}: {root} {what}; point {ROOT_FLAG} at the local copy of {name} ({layout})")
    return root


def require(name: str, root: Path, relative: str, layout: str) -> Path:
    """`root / relative`, or a DataError naming what was looked for, where, and which folder to pass instead."""
    path = root / relative
    if path.exists():
        return path
    top = Path(relative).parts[0]
    if root.name == top and (root.parent / relative).exists():
        hint = f"point {ROOT_FLAG} at {root.parent} (the folder that holds {top}), not at {top} itself"
    else:
        hint = f"point {ROOT_FLAG} at the folder that holds {top} ({layout})"
    raise DataError(f"{name}: {root} has no {relative} (looked for {path}); {hint}")


def subfolders(folder: Path) -> list[str]:
    """Names of the visible subfolders of `folder`, sorted."""
    return sorted(entry.name for entry in folder.iterdir() if entry.is_dir() and not entry.name.startswith("."))


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def as_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from whatever a torchvision dataset returns (any PIL mode, or an HWC/HW uint8 array)."""
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else to_rgb(image)


class TorchvisionImages(Dataset):
    """`(transform(rgb_image), label)` from a torchvision dataset built without a transform.

    Images come out RGB whatever the dataset returns, and a file that fails to load raises BadSampleError
    naming it: evaluation is strict, because skipping an image would silently change the accuracy.
    """

    def __init__(self, base: VisionDataset, transform: Callable, name: str) -> None:
        self.base = base
        self.transform = transform
        self.name = name

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            image, label = self.base[index]
        except BadSampleError:
            raise
        except DECODE_ERRORS as error:  # from a torchvision dataset that opens images itself
            where = sample_file(self.base, index) or f"sample {index}"
            raise BadSampleError(f"{self.name}: {where}: cannot load image ({one_line(error)})") from None
        return self.transform(as_rgb(image)), int(label)


def sample_file(base: object, index: int) -> str | None:
    """The image file behind sample `index` of a torchvision dataset, where its attributes tell (for messages)."""
    for attribute in ("_image_files", "_images", "_samples", "samples"):
        items = getattr(base, attribute, None)
        if isinstance(items, Sequence) and 0 <= index < len(items):
            item = items[index]
            return str(item[0] if isinstance(item, tuple) else item)
    return None


class IndexedImageFolder(ImageFolder):
    """An ImageFolder whose class folders map to given indices instead of their positions in sorted order."""

    def __init__(self, root: Path, class_to_idx: dict[str, int], transform: Callable) -> None:
        self._fixed_class_to_idx = class_to_idx  # read by find_classes, which ImageFolder calls while initialising
        super().__init__(str(root), transform=transform, loader=load_rgb_image)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return sorted(self._fixed_class_to_idx), dict(self._fixed_class_to_idx)


def folder_dataset(name: str, directory: Path, class_to_idx: dict[str, int], transform: Callable) -> ImageFolder:
    """Images under `directory/<class folder>/`, labelled through `class_to_idx`; every class needs an image."""
    try:
        return IndexedImageFolder(directory, class_to_idx, transform)
    except FileNotFoundError as error:  # a class folder without images
        raise DataError(f"{name}: {directory}: {one_line(error)}") from None
