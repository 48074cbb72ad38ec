"""ImageNet (ILSVRC2012) and its test-only variants, read from the folder layouts they are distributed in.

Labels are always ImageNet indices fixed by the sorted wnid list, never positions among the folders found,
so a missing folder cannot shift every later label (and ImageNetV2's folders 0..999 are not sorted as text).
ImageNet-A and ImageNet-R are 200-class subsets: their labels are positions among the wnid folders present,
in ImageNet order, and their class names the matching ImageNet names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from cyclip.errors import DataError
from cyclip.evaluation.datasets.common import ROOT_FLAG, ClassificationSet, check_root, folder_dataset, subfolders
from cyclip.evaluation.datasets.labelled import LabelledImageDataset, LabelledImages
from cyclip.evaluation.datasets.names import imagenet_classes, imagenet_templates, imagenet_wnids
from cyclip.files import CsvReader, read_text

log = logging.getLogger("cyclip.evaluation")

IMAGENET_LAYOUT = (
    "val/<wnid>/*.JPEG, or val/*.JPEG with one labels file (LOC_val_solution.csv, val_labels.txt or labels.csv) "
    "next to val/ or inside it; train/<wnid>/*.JPEG; Kaggle's ILSVRC/Data/CLS-LOC/{train,val} works the same"
)
# Searched in this order in the dataset folder and in the flat val folder; exactly one may exist.
LABEL_FILES = ("LOC_val_solution.csv", "val_labels.txt", "labels.csv")
_KAGGLE = Path("ILSVRC/Data/CLS-LOC")
_NUM_CLASSES = 1000
_SUBSETS = {"imagenet-a": ("n01498041", "jpg"), "imagenet-r": ("n01443537", "jpg")}


def open_imagenet(root: str | Path, split: str, transform: Callable) -> ClassificationSet:
    """ILSVRC2012: split "test" reads the validation images (what papers report), "train" the training images."""
    root = check_root("imagenet", root, IMAGENET_LAYOUT)
    folder = "val" if split == "test" else "train"
    candidates = [root / folder, root / _KAGGLE / folder]
    directory = next((candidate for candidate in candidates if candidate.is_dir()), None)
    if directory is None:
        hint = ""
        if any(name in imagenet_wnids() for name in subfolders(root)):
            hint = f" ({root} itself holds wnid folders: point {ROOT_FLAG} at the folder that holds it as {folder}/)"
        raise DataError(
            f"imagenet: {root} has no {folder}/ folder (looked for {candidates[0]} and {candidates[1]}){hint}; "
            f"point {ROOT_FLAG} at the ImageNet folder: {IMAGENET_LAYOUT}"
        )
    index = {wnid: position for position, wnid in enumerate(imagenet_wnids())}
    folders = subfolders(directory)
    if folders:
        _check_names("imagenet", directory, folders, index, "an ILSVRC2012 wnid such as n01440764")
        if len(folders) != _NUM_CLASSES:
            log.warning("imagenet: %s has %d of the 1000 class folders", directory, len(folders))
        dataset = folder_dataset("imagenet", directory, {name: index[name] for name in folders}, transform)
    elif split == "train":
        raise DataError(
            f"imagenet: {directory} holds no wnid class folders; the training images must be in "
            f"{directory}/<wnid>/*.JPEG as ILSVRC2012_img_train.tar's per-class archives extract"
        )
    else:
        dataset = _flat_val_dataset(root, directory, index, transform)
    return ClassificationSet("imagenet", dataset, imagenet_classes(), imagenet_templates(), False)


def open_imagenetv2(root: str | Path, transform: Callable) -> ClassificationSet:
    """ImageNetV2 as its tarballs extract: `root/0/ .. root/999/`, folder k holding images of ImageNet class k."""
    layout = "the folders 0..999 of an extracted ImageNetV2 tarball, e.g. imagenetv2-matched-frequency-format-val/"
    root = check_root("imagenetv2", root, layout)
    folders = subfolders(root)
    if not folders:
        raise DataError(
            f"imagenetv2: {root} has no class folders (expected e.g. {root / '0'}/*.jpeg){_nested_hint(root)}; "
            f"point {ROOT_FLAG} at {layout}"
        )
    valid = {str(number): number for number in range(_NUM_CLASSES)}
    _check_names("imagenetv2", root, folders, valid, "a class index 0..999")
    dataset = folder_dataset("imagenetv2", root, {name: valid[name] for name in folders}, transform)
    return ClassificationSet("imagenetv2", dataset, imagenet_classes(), imagenet_templates(), False)


def open_imagenet_sketch(root: str | Path, transform: Callable) -> ClassificationSet:
    """ImageNet-Sketch: `root/<wnid>/*.JPEG`, all 1000 ImageNet classes."""
    root = check_root("imagenet-sketch", root, "the sketch/ folder with one folder per wnid")
    index = {wnid: position for position, wnid in enumerate(imagenet_wnids())}
    folders = _wnid_folders("imagenet-sketch", root, index, "n01440764", "JPEG")
    if len(folders) != _NUM_CLASSES:
        log.warning("imagenet-sketch: %s has %d of the 1000 class folders", root, len(folders))
    dataset = folder_dataset("imagenet-sketch", root, {name: index[name] for name in folders}, transform)
    return ClassificationSet("imagenet-sketch", dataset, imagenet_classes(), imagenet_templates(), False)


def open_imagenet_subset(name: str, root: str | Path, transform: Callable) -> ClassificationSet:
    """ImageNet-A or ImageNet-R: `root/<wnid>/*`; classes are the wnid folders present, in ImageNet order."""
    example, extension = _SUBSETS[name]
    root = check_root(name, root, f"the extracted {name} folder with one folder per wnid")
    index = {wnid: position for position, wnid in enumerate(imagenet_wnids())}
    folders = sorted(_wnid_folders(name, root, index, example, extension), key=index.__getitem__)
    if len(folders) != 200:
        log.warning("%s: %s has %d class folders where the released set has 200", name, root, len(folders))
    dataset = folder_dataset(name, root, {wnid: position for position, wnid in enumerate(folders)}, transform)
    names = imagenet_classes()
    return ClassificationSet(name, dataset, [names[index[wnid]] for wnid in folders], imagenet_templates(), False)


def _wnid_folders(name: str, root: Path, index: dict[str, int], example: str, extension: str) -> list[str]:
    folders = subfolders(root)
    if not folders:
        raise DataError(
            f"{name}: {root} has no wnid class folders (expected e.g. {root / example}/*.{extension})"
            f"{_nested_hint(root)}; point {ROOT_FLAG} at the extracted {name} folder"
        )
    _check_names(name, root, folders, index, f"an ILSVRC2012 wnid such as {example}")
    return folders


def _check_names(name: str, directory: Path, folders: list[str], valid: dict[str, int], what: str) -> None:
    unknown = [folder for folder in folders if folder not in valid]
    if unknown:
        hint = _nested_hint(directory) if len(unknown) == len(folders) else ""
        raise DataError(
            f"{name}: {directory / unknown[0]} is not a class folder: its name must be {what} "
            f"({len(unknown)} of {len(folders)} subfolders are not){hint}; point {ROOT_FLAG} at the folder of "
            "class folders"
        )


def _nested_hint(root: Path) -> str:
    """' (did you mean X?)' when `root` holds exactly one folder, as when an archive extracts into a subfolder."""
    folders = subfolders(root)
    if len(folders) == 1 and subfolders(root / folders[0]):
        return f" ({root} holds only {folders[0]}/: point {ROOT_FLAG} at {root / folders[0]}?)"
    return ""


def _flat_val_dataset(root: Path, directory: Path, index: dict[str, int], transform: Callable) -> LabelledImageDataset:
    """Validation images in one folder, labelled by the one labels file found (see LABEL_FILES)."""
    places = list(dict.fromkeys((root, directory)))
    found = [place / file for file in LABEL_FILES for place in places if (place / file).is_file()]
    if not found:
        raise DataError(
            f"imagenet: {directory} holds no wnid class folders and no labels file was found "
            f"(looked for {', '.join(LABEL_FILES)} in {' and '.join(map(str, places))}); "
            "sort the images into val/<wnid>/ folders or add one of those files"
        )
    if len(found) > 1:
        raise DataError(
            f"imagenet: several labels files for {directory}: {', '.join(map(str, found))}; keep only one of them"
        )
    path = found[0]
    if path.suffix != ".csv":
        rows = _text_rows(path, index)
    else:
        with CsvReader(path) as table:
            rows = (_kaggle_rows if path.name == "LOC_val_solution.csv" else _csv_rows)(path, table, index)
    if not rows:
        raise DataError(f"{path}: no labelled images in the file; add one row per validation image")
    paths = [directory / image for _, image, _ in rows]
    missing = [(line, image) for (line, image, _), full in zip(rows, paths, strict=True) if not full.is_file()]
    if missing:
        line, image = missing[0]
        raise DataError(
            f"{path}: line {line}: image not found: {directory / image} ({len(missing)} of {len(rows)} images "
            f"missing; image names are relative to {directory})"
        )
    data = LabelledImages(paths, [label for _, _, label in rows], imagenet_classes(), imagenet_templates())
    return LabelledImageDataset(data, transform)


def _kaggle_rows(path: Path, table: CsvReader, index: dict[str, int]) -> list[tuple[int, str, int]]:
    """LOC_val_solution.csv: ImageId,PredictionString; the label is the wnid of the first box."""
    header = table.header
    if "ImageId" not in header or "PredictionString" not in header:
        raise DataError(f"{path}: the header must name ImageId and PredictionString (found: {', '.join(header)})")
    image_column, boxes_column = header.index("ImageId"), header.index("PredictionString")
    rows = []
    for line, row in table.rows():
        wnids = row[boxes_column].split()[::5]  # each box is: wnid x_min y_min x_max y_max
        if not wnids or wnids[0] not in index:
            raise DataError(
                f"{path}: line {line}: PredictionString {row[boxes_column][:40]!r} does not start with "
                "an ILSVRC2012 wnid"
            )
        rows.append((line, f"{row[image_column].strip()}.JPEG", index[wnids[0]]))
    return rows


def _csv_rows(path: Path, table: CsvReader, index: dict[str, int]) -> list[tuple[int, str, int]]:
    """labels.csv: a header naming the columns image and label; label is an index 0..999 or a wnid."""
    header = table.header
    if "image" not in header or "label" not in header:
        raise DataError(f"{path}: the header must name the columns 'image' and 'label' (found: {', '.join(header)})")
    image_column, label_column = header.index("image"), header.index("label")
    return [
        (line, row[image_column].strip(), _label(path, line, row[label_column], index, ""))
        for line, row in table.rows()
    ]


def _text_rows(path: Path, index: dict[str, int]) -> list[tuple[int, str, int]]:
    """val_labels.txt: no header; per line an image name and a label (index 0..999 or wnid), comma or space apart."""
    rows = []
    for line, text in enumerate(read_text(path).splitlines(), start=1):
        text = text.strip()
        if not text:
            continue
        fields = [field.strip() for field in (text.rsplit(",", 1) if "," in text else text.rsplit(None, 1))]
        if len(fields) != 2 or not all(fields):
            raise DataError(f"{path}: line {line}: expected 'image label' or 'image,label', got {text[:60]!r}")
        hint = " (val_labels.txt has no header line)" if line == 1 else ""
        rows.append((line, fields[0], _label(path, line, fields[1], index, hint)))
    return rows


def _label(path: Path, line: int, value: str, index: dict[str, int], hint: str) -> int:
    value = value.strip()
    if value in index:
        return index[value]
    try:
        number = int(value)
    except ValueError:
        raise DataError(
            f"{path}: line {line}: label {value!r} is neither a class index (0..999) nor an ILSVRC2012 wnid{hint}"
        ) from None
    if not 0 <= number < _NUM_CLASSES:
        raise DataError(
            f"{path}: line {line}: label {number} is out of range for the 1000 ImageNet classes (valid: 0..999)"
        )
    return number
