"""The demo's data: scikit-learn's 1797 real 8x8 handwritten digit scans, written as an image-caption set.

Shipped inside scikit-learn, so the demo needs no download. Held-out images and held-out caption
templates (never seen in training) make the zero-shot and validation numbers honest.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TRAIN_TEMPLATES = [
    "a handwritten {}",
    "the digit {}",
    "a scan of the number {}",
    "a drawing of a {}",
    "the number {} written by hand",
    "a small grayscale {}",
]
HELDOUT_TEMPLATES = ["a photo of a {}.", "an image of the number {}", "a picture showing the digit {}."]


@dataclass
class DigitsDemoData:
    root: Path
    train_csv: Path
    val_csv: Path
    zeroshot_dir: Path  # held-out images: labels.csv (image,label,caption) + classes.json
    probe_train_dir: Path  # training images as a labelled folder, for linear probes
    superclasses: Path  # {"zero": "even", "one": "odd", ...}: a grouping for the fine/coarse analysis


def write_digits_demo(
    root: str | os.PathLike, seed: int = 0, heldout_fraction: float = 0.2, captions_per_image: int = 2
) -> DigitsDemoData:
    """Write images/, train.csv, val.csv, zeroshot/, probe_train/ and superclasses.json under `root`.

    The same seed gives the same bytes.

    The split is stratified so every digit is in the held-out set. Calling again on the same root
    overwrites the same files.
    """
    # Imported here: scikit-learn takes a second to import and only the demo needs it.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be between 0 and 1 (exclusive), got {heldout_fraction}")
    if captions_per_image < 1:
        raise ValueError(f"captions_per_image must be at least 1, got {captions_per_image}")
    root = Path(root)
    digits = load_digits()
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)  # scans hold 0..16
    labels = digits.target.astype(int)
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = [f"images/{index:04d}.png" for index in range(len(labels))]
    for name, image in zip(names, pixels, strict=True):
        Image.fromarray(image).save(root / name)

    train, heldout = train_test_split(
        np.arange(len(labels)), test_size=heldout_fraction, stratify=labels, random_state=seed
    )
    train, heldout = np.sort(train), np.sort(heldout)
    rng = np.random.default_rng(seed)
    train_rows = []
    for index in train:
        picks = rng.choice(
            len(TRAIN_TEMPLATES), size=captions_per_image, replace=captions_per_image > len(TRAIN_TEMPLATES)
        )
        train_rows += [(names[index], TRAIN_TEMPLATES[pick].format(DIGIT_NAMES[labels[index]])) for pick in picks]
    val_rows = [
        (names[index], HELDOUT_TEMPLATES[rng.integers(len(HELDOUT_TEMPLATES))].format(DIGIT_NAMES[labels[index]]))
        for index in heldout
    ]
    data = DigitsDemoData(
        root, root / "train.csv", root / "val.csv", root / "zeroshot", root / "probe_train", root / "superclasses.json"
    )
    _write_csv(data.train_csv, ("filepath", "title"), train_rows)
    _write_csv(data.val_csv, ("filepath", "title"), val_rows)
    classes = json.dumps({"classes": DIGIT_NAMES, "templates": HELDOUT_TEMPLATES}, indent=2) + "\n"
    heldout_rows = [(f"../{image}", labels[i], caption) for i, (image, caption) in zip(heldout, val_rows, strict=True)]
    for folder, header, rows in (
        (data.zeroshot_dir, ("image", "label", "caption"), heldout_rows),
        (data.probe_train_dir, ("image", "label"), [(f"../{names[i]}", labels[i]) for i in train]),
    ):
        folder.mkdir(exist_ok=True)
        _write_csv(folder / "labels.csv", header, rows)
        (folder / "classes.json").write_text(classes, encoding="utf-8")
    parity = {name: ("even" if digit % 2 == 0 else "odd") for digit, name in enumerate(DIGIT_NAMES)}
    data.superclasses.write_text(json.dumps(parity, indent=2) + "\n", encoding="utf-8")
    return data


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
