"""CIFAR-10, CIFAR-100 and STL-10: images stored as arrays in the files torchvision reads, read here directly.

torchvision's classes for these hash every file of the dataset against the published MD5 sums (STL-10's
also demands the 2.7 GB unlabelled file for any split), and CIFAR's batches are pickles, which
`pickle.load` would let run code. So the same files are read here in the same format: the pickles through an
unpickler that builds nothing but numpy arrays, lists and strings, the STL-10 binaries through a memory map.
"""

from __future__ import annotations

import codecs
import os
import pickle
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cyclip.errors import DataError
from cyclip.evaluation.datasets.common import ClassificationSet, check_root, one_line, require
from cyclip.evaluation.datasets.names import CIFAR_TEMPLATES, DEFAULT_TEMPLATES, STL10_CLASSES, readable


class _CifarFiles(NamedTuple):
    archive: str
    folder: str
    train: list[str]
    test: list[str]
    meta: str
    names_key: str
    labels_key: str


_CIFAR = {
    "cifar10": _CifarFiles(
        "cifar-10-python.tar.gz",
        "cifar-10-batches-py",
        [f"data_batch_{number}" for number in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        "label_names",
        "labels",
    ),
    "cifar100": _CifarFiles(
        "cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"], "meta", "fine_label_names", "fine_labels"
    ),
}
_CIFAR_SIDE = 32
_STL10_FOLDER = "stl10_binary"
_STL10_SIDE = 96


class ArrayImages(Dataset):
    """`(transform(image), label)` from a uint8 array [N, 3, a, b]; `axes` turns one item into H×W×3."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, axes: tuple[int, int, int], transform: Callable) -> None:
        self.images = images
        self.labels = labels
        self.axes = axes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def pixels(self) -> np.ndarray:
        """The uint8 array [N, 3, a, b] of all images."""
        return self.images

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        pixels = np.ascontiguousarray(self.pixels()[index].transpose(self.axes))
        return self.transform(Image.fromarray(pixels)), int(self.labels[index])


class MappedImages(ArrayImages):
    """ArrayImages over a raw uint8 file, memory-mapped on first use in each process (workers never copy it)."""

    def __init__(
        self, path: Path, shape: tuple[int, ...], labels: np.ndarray, axes: tuple[int, int, int], transform: Callable
    ) -> None:
        super().__init__(np.empty((0, *shape[1:]), dtype=np.uint8), labels, axes, transform)
        self.path = path
        self.shape = shape
        self.mapped: np.ndarray | None = None

    def pixels(self) -> np.ndarray:
        if self.mapped is None:
            self.mapped = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        return self.mapped

    def __getstate__(self) -> dict:
        return {**self.__dict__, "mapped": None}


def open_cifar(name: str, root: str | Path, split: str, transform: Callable) -> ClassificationSet:
    """CIFAR-10/100 from torchvision's root: `root/cifar-10-batches-py/` or `root/cifar-100-python/`."""
    files = _CIFAR[name]
    layout = f"{files.folder}/ as extracted from {files.archive}"
    root = check_root(name, root, layout)
    meta = require(name, root, f"{files.folder}/{files.meta}", layout)
    classes = _string_list(meta, _load_pickle(meta), files.names_key)
    arrays, labels = [], []
    for file in files.train if split == "train" else files.test:
        path = require(name, root, f"{files.folder}/{file}", layout)
        batch = _load_pickle(path)
        data = np.asarray(_entry(path, batch, "data"))
        rows = data.shape[0] if data.ndim == 2 else -1
        if data.dtype != np.uint8 or data.shape != (rows, 3 * _CIFAR_SIDE * _CIFAR_SIDE):
            raise DataError(
                f"{path}: 'data' must be a uint8 array of shape [N, 3072] (3 colour planes of 32x32), "
                f"got {data.dtype} {list(data.shape)}"
            )
        batch_labels = _labels(
            path, _entry(path, batch, files.labels_key), files.labels_key, rows, len(classes), meta.name
        )
        arrays.append(data.reshape(rows, 3, _CIFAR_SIDE, _CIFAR_SIDE))
        labels.append(batch_labels)
    images = np.concatenate(arrays) if len(arrays) > 1 else arrays[0]
    dataset = ArrayImages(images, np.concatenate(labels), (1, 2, 0), transform)
    return ClassificationSet(name, dataset, [readable(c) for c in classes], list(CIFAR_TEMPLATES), False)


def open_stl10(root: str | Path, split: str, transform: Callable) -> ClassificationSet:
    """STL-10 from torchvision's root: `root/stl10_binary/{train,test}_{X,y}.bin` (+ class_names.txt)."""
    layout = f"{_STL10_FOLDER}/ as extracted from stl10_binary.tar.gz"
    root = check_root("stl10", root, layout)
    images_path = require("stl10", root, f"{_STL10_FOLDER}/{split}_X.bin", layout)
    labels_path = require("stl10", root, f"{_STL10_FOLDER}/{split}_y.bin", layout)
    names_path = root / _STL10_FOLDER / "class_names.txt"
    classes = STL10_CLASSES
    if names_path.is_file():
        classes = [line.strip() for line in names_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    raw = np.fromfile(labels_path, dtype=np.uint8)
    bad = np.flatnonzero((raw < 1) | (raw > len(classes)))
    if bad.size:
        raise DataError(
            f"{labels_path}: byte {bad[0]} holds label {raw[bad[0]]}, out of range for {len(classes)} classes "
            f"(valid: 1..{len(classes)}; {bad.size} bad labels)"
        )
    image_bytes = 3 * _STL10_SIDE * _STL10_SIDE
    size = os.path.getsize(images_path)
    if size != raw.size * image_bytes:
        raise DataError(
            f"{images_path}: {size} bytes, but {labels_path.name} holds {raw.size} labels and each image takes "
            f"{image_bytes} bytes (3x96x96); the two files do not belong together or one is truncated"
        )
    shape = (raw.size, 3, _STL10_SIDE, _STL10_SIDE)
    # Each colour plane is stored column by column: element [c, x, y] is the pixel at row y, column x.
    dataset = MappedImages(images_path, shape, raw.astype(np.int64) - 1, (2, 1, 0), transform)
    return ClassificationSet("stl10", dataset, [readable(c) for c in classes], list(DEFAULT_TEMPLATES), False)


class _ArrayUnpickler(pickle.Unpickler):
    """Builds only numpy arrays, dtypes and numpy scalars besides plain Python data: a pickle cannot run code."""

    def find_class(self, module: str, name: str) -> object:
        allowed = _allowed_globals().get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a dataset file holds only arrays")
        return allowed


@cache
def _allowed_globals() -> dict[tuple[str, str], object]:
    sample = np.zeros(1, dtype=np.uint8)
    reconstruct = sample.__reduce__()[0]  # what pickles of any protocol below 5 name as _reconstruct
    frombuffer = sample.__reduce_ex__(5)[0]  # protocol 5
    scalar = np.int64(0).__reduce__()[0]
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol 2 writes Python 3 bytes
    }
    for package in ("numpy.core", "numpy._core"):  # pickles written by numpy 1.x name numpy.core
        allowed[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return allowed


def _load_pickle(path: Path) -> dict:
    """A CIFAR pickle (Python 2 ones included) as a dict with str keys."""
    try:
        with open(path, "rb") as file:
            content = _ArrayUnpickler(file, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise DataError(f"{path}: not a readable CIFAR pickle ({one_line(error)}); re-extract the archive") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(content).__name__}; re-extract the archive")
    return {_text(key): value for key, value in content.items()}


def _entry(path: Path, content: dict, key: str) -> object:
    if key not in content:
        raise DataError(f"{path}: no {key!r} entry (found: {', '.join(sorted(content))}); is this the right file?")
    return content[key]


def _string_list(path: Path, content: dict, key: str) -> list[str]:
    names = _entry(path, content, key)
    if not isinstance(names, list) or not names or not all(isinstance(name, (str, bytes)) for name in names):
        raise DataError(f"{path}: {key!r} must be a non-empty list of class names")
    return [_text(name) for name in names]


def _labels(path: Path, values: object, key: str, rows: int, num_classes: int, meta: str) -> np.ndarray:
    labels = np.asarray(values)
    if labels.ndim != 1 or labels.size != rows or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: {key!r} must hold one integer label per image ({rows} images)")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise DataError(
            f"{path}: row {bad[0]} has label {labels[bad[0]]}, out of range for the {num_classes} classes in {meta} "
            f"(valid: 0..{num_classes - 1}; {bad.size} bad labels)"
        )
    return labels.astype(np.int64)


def _text(value: object) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)
