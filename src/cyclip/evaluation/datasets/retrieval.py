"""Image-text retrieval sets: a Karpathy-split JSON (COCO, Flickr30k) or a CSV/TSV of image,caption rows.

Everything is checked before a model runs: a missing image or an empty caption is an error naming the file,
row or entry, because dropping one would silently change Recall@K.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset

from cyclip.data.captions import caption_problem, image_file_problem, read_pairs
from cyclip.data.images import load_rgb_image
from cyclip.errors import DataError
from cyclip.files import read_json

# Karpathy's "restval" images (COCO's val2014 images outside the 5k val and test sets) are training images.
KARPATHY_SPLITS = {"train": ("train", "restval"), "val": ("val",), "test": ("test",)}


@dataclass
class RetrievalSet:
    """Images and their captions, with the image of each caption."""

    name: str
    images: Dataset  # yields (image_tensor, image_index)
    captions: list[str]  # all captions, flat
    image_of_caption: torch.Tensor  # LongTensor [num_captions]: index into images of each caption's image


class ImageFiles(Dataset):
    """`(transform(image), index)` for a list of image files; a broken file raises BadSampleError naming it."""

    def __init__(self, paths: list[str], transform: Callable | None) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | Image.Image, int]:
        image = load_rgb_image(self.paths[index])
        return (self.transform(image) if self.transform is not None else image), index


def open_retrieval(
    path: str | Path,
    image_root: str | Path | None = None,
    split: str = "test",
    transform: Callable | None = None,
    *,
    image_key: str = "filepath",
    caption_key: str = "title",
    separator: str = ",",
) -> RetrievalSet:
    """Read a retrieval set; image paths are relative to `image_root` (default: the file's folder) or absolute.

    A .json file is a Karpathy split file and `split` picks "train" (with "restval"), "val" or "test"; any other
    file is a CSV/TSV with the columns `image_key` and `caption_key` (one row per caption), which is one split.
    transform: applied to each RGB PIL image (None: the images come out as PIL images).
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    if path.suffix.lower() == ".json":
        if split not in KARPATHY_SPLITS:
            raise ValueError(f"split must be one of {', '.join(KARPATHY_SPLITS)} for a Karpathy JSON, got {split!r}")
        name, images, captions, owners = _read_karpathy(path, root, split)
    else:
        if split != "test":
            raise ValueError(
                f"split={split!r} applies to Karpathy JSON files; a CSV/TSV file is one split: pass that split's file"
            )
        name, images, captions, owners = _read_csv(path, root, image_key, caption_key, separator)
    return RetrievalSet(name, ImageFiles(images, transform), captions, torch.tensor(owners, dtype=torch.long))


def _read_karpathy(path: Path, root: Path, split: str) -> tuple[str, list[str], list[str], list[int]]:
    if not path.is_file():
        raise DataError(
            f"{path}: {'is a folder, not a file' if path.is_dir() else 'file not found'}; pass a Karpathy split file "
            "such as dataset_coco.json or dataset_flickr30k.json"
        )
    content = read_json(path, "Karpathy split file")
    entries = content.get("images") if isinstance(content, dict) else None
    if not isinstance(entries, list):
        raise DataError(f'{path}: expected a Karpathy split file, an object {{"images": [...]}}')
    wanted = KARPATHY_SPLITS[split]
    images: list[str] = []
    captions: list[str] = []
    owners: list[int] = []
    seen: dict[str, int] = {}
    for number, entry in enumerate(entries):
        where = f"{path}: images[{number}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str) or not entry["filename"]:
            raise DataError(f"{where}: expected an object with a non-empty 'filename'")
        where = f"{where} ({entry['filename']})"
        entry_split = entry.get("split")
        if not isinstance(entry_split, str):
            raise DataError(f"{where}: no 'split' (one of train, restval, val, test)")
        seen[entry_split] = seen.get(entry_split, 0) + 1
        if entry_split not in wanted:
            continue
        sentences = entry.get("sentences")
        if not isinstance(sentences, list) or not all(isinstance(s, dict) and "raw" in s for s in sentences):
            raise DataError(f"{where}: 'sentences' must be a list of objects with a 'raw' caption")
        folder = entry.get("filepath", "")
        if not isinstance(folder, str):
            raise DataError(f"{where}: 'filepath' must be a folder name")
        for position, sentence in enumerate(sentences):
            raw = sentence["raw"]
            problem = caption_problem(raw) if isinstance(raw, str) else ("caption", "caption is not a string")
            if problem:
                raise DataError(f"{where}: sentences[{position}]: {problem[1]}")
            captions.append(raw)
            owners.append(len(images))
        images.append(os.path.join(root, folder, entry["filename"]))
    if not images:
        found = ", ".join(f"{count} {name}" for name, count in sorted(seen.items())) or "no images at all"
        raise DataError(f"{path}: no images in the {split} split ({'/'.join(wanted)}); the file has {found}")
    problems = [problem for problem in (image_file_problem(image, image) for image in images) if problem]
    if problems:
        raise DataError(
            f"{path}: {problems[0][1]} ({len(problems)} of {len(images)} {split} images unusable); images are "
            f"looked for under {root} as filepath/filename: pass the folder that holds them as the image root"
        )
    name = content.get("dataset") if isinstance(content.get("dataset"), str) else path.stem
    return name, images, captions, owners


def _read_csv(
    path: Path, root: Path, image_key: str, caption_key: str, separator: str
) -> tuple[str, list[str], list[str], list[int]]:
    """Rows of (image, caption); rows naming the same image file share one image, in order of first appearance."""
    names, captions, lines = read_pairs(path, image_key, caption_key, separator)
    index_of: dict[str, int] = {}
    images: list[str] = []
    owners: list[int] = []
    for name, caption, line in zip(names, captions, lines, strict=True):
        resolved = os.path.normpath(os.path.join(root, name))
        problem = caption_problem(caption) or (image_file_problem(name, resolved) if resolved not in index_of else None)
        if problem:
            where = "" if os.path.isabs(name) else f" (looked for {resolved})"
            raise DataError(f"{path}: line {line}: {problem[1]}{where}")
        if resolved not in index_of:
            index_of[resolved] = len(images)
            images.append(resolved)
        owners.append(index_of[resolved])
    return path.stem, images, captions, owners
