"""Embeddings of an evaluation set in one `.npz` file, so that every analysis can run without the model.

Arrays (N images, M texts, C classes, d dimensions); only `image_embeddings` is required:

    image_embeddings  float [N, d]   L2-normalised image embeddings
    text_embeddings   float [M, d]   caption embeddings; without image_of_text, M = N and row j describes image j
    image_of_text     int   [M]      index of the image each caption describes (retrieval sets)
    captions          str   [M]      the caption texts
    labels            int   [N]      class index of each image, in 0..C-1
    class_names       str   [C]      class names
    class_embeddings  float [C, d]   zero-shot classifier rows (template-averaged class embeddings)
    image_paths       str   [N]      the file each image row was embedded from (search indexes)
    model_name        str   []       the architecture that embedded them (open_clip name or local-dir:<folder>)
    model_source      str   []       the checkpoint, weights file or folder it was loaded from
    model_fingerprint str   []       `cyclip.models.weights_fingerprint` of its weights, so that a file is only
                                     ever compared with embeddings of the same model

Strings are stored as fixed-width unicode arrays and the file is read with `allow_pickle=False`: writing
never needs pickle, and loading never executes anything. Writes are atomic (`cyclip.files.write_atomically`),
so a reader never sees a half-written file.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cyclip.errors import DataError
from cyclip.files import write_atomically

FLOAT_ARRAYS = ("image_embeddings", "text_embeddings", "class_embeddings")
INT_ARRAYS = ("labels", "image_of_text")
STRING_ARRAYS = ("class_names", "captions", "image_paths")
MODEL_STRINGS = ("model_name", "model_source", "model_fingerprint")  # single strings (0-d arrays)
ARRAYS = FLOAT_ARRAYS + INT_ARRAYS + STRING_ARRAYS + MODEL_STRINGS


@dataclass
class Embeddings:
    """The arrays of an embeddings file as tensors (strings as lists); None where the file has none."""

    image_embeddings: torch.Tensor
    text_embeddings: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    class_embeddings: torch.Tensor | None = None
    image_of_text: torch.Tensor | None = None
    captions: list[str] | None = None
    image_paths: list[str] | None = None
    model_name: str | None = None
    model_source: str | None = None
    model_fingerprint: str | None = None


def _as_numpy(name: str, value) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()
    if name in STRING_ARRAYS:
        return np.asarray([str(item) for item in value], dtype=np.str_)
    if name in MODEL_STRINGS:
        return np.asarray(str(value), dtype=np.str_)
    return np.asarray(value)


def _problems(arrays: dict[str, np.ndarray]) -> list[str]:
    """What is wrong with a set of arrays, one message per array (empty when valid)."""
    unknown = sorted(set(arrays) - set(ARRAYS))
    if unknown:
        return [f"unknown arrays {unknown}; expected some of {list(ARRAYS)}"]
    if "image_embeddings" not in arrays:
        return ["missing array 'image_embeddings' (required)"]
    for name, array in arrays.items():
        kind = array.dtype.kind
        if name in FLOAT_ARRAYS and (kind != "f" or array.ndim != 2):
            return [f"array '{name}' must be a 2-D float array, got {array.dtype} {array.shape}"]
        if name in INT_ARRAYS and (kind not in "iu" or array.ndim != 1):
            return [f"array '{name}' must be a 1-D integer array, got {array.dtype} {array.shape}"]
        if name in STRING_ARRAYS and (kind != "U" or array.ndim != 1):
            return [f"array '{name}' must be a 1-D array of strings, got {array.dtype} {array.shape}"]
        if name in MODEL_STRINGS and (kind != "U" or array.ndim != 0):
            return [f"array '{name}' must be a single string, got {array.dtype} {array.shape}"]
    images = arrays["image_embeddings"]
    num_images, dim = images.shape
    texts = arrays.get("text_embeddings")
    classes = arrays.get("class_embeddings")
    names = arrays.get("class_names")
    labels = arrays.get("labels")
    image_of_text = arrays.get("image_of_text")
    num_classes = classes.shape[0] if classes is not None else (len(names) if names is not None else None)
    num_texts = texts.shape[0] if texts is not None else (len(image_of_text) if image_of_text is not None else None)
    paired_texts = num_images if image_of_text is None else len(image_of_text)
    expected = {
        "text_embeddings": (paired_texts, dim),
        "class_embeddings": (num_classes, dim),
        "class_names": (num_classes,),
        "labels": (num_images,),
        "image_of_text": (num_texts,),
        "captions": (num_texts if num_texts is not None else num_images,),
        "image_paths": (num_images,),
    }
    for name, shape in expected.items():
        if name in arrays and arrays[name].shape != shape:
            return [f"array '{name}' has shape {arrays[name].shape}, expected {shape} to match the other arrays"]
    if (
        labels is not None
        and len(labels)
        and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes))
    ):
        return [f"array 'labels' holds values outside 0..{(num_classes or 1) - 1} (the classes)"]
    if (
        image_of_text is not None
        and len(image_of_text)
        and (image_of_text.min() < 0 or image_of_text.max() >= num_images)
    ):
        return [f"array 'image_of_text' holds image indices outside 0..{num_images - 1}"]
    return []


def save_embeddings(path: str | os.PathLike, **arrays) -> Path:
    """Write the given arrays (tensors, numpy arrays, lists of str) to `path` atomically; returns the path."""
    path = Path(path)
    # Any: numpy types savez's keywords as arrays *or* its allow_pickle flag.
    values: dict[str, Any] = {name: _as_numpy(name, value) for name, value in arrays.items() if value is not None}
    problems = _problems(values)
    if problems:
        raise ValueError(f"{path}: {problems[0]}")
    # Every dtype was checked above: nothing here can need pickle.
    return write_atomically(path, lambda file: np.savez(file, **values))


def load_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read and validate an embeddings file; a bad file raises one DataError naming the file and the array."""
    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a .npz archive (write embeddings files with save_embeddings)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise DataError(f"{path}: embeddings file not found") from None
    except ValueError as error:  # an object array, which would need pickle
        raise DataError(
            f"{path}: holds an array that needs pickle ({error}); rewrite it with save_embeddings"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz embeddings file ({error})") from None
    problems = _problems(arrays)
    if problems:
        raise DataError(f"{path}: {problems[0]}")

    def tensor(name: str, dtype: torch.dtype | None = None) -> torch.Tensor | None:
        if name not in arrays:
            return None
        value = torch.from_numpy(np.ascontiguousarray(arrays[name]))
        return value.to(dtype) if dtype is not None else value

    def strings(name: str) -> list[str] | None:
        return arrays[name].tolist() if name in arrays else None

    return Embeddings(
        image_embeddings=torch.from_numpy(np.ascontiguousarray(arrays["image_embeddings"])),  # required: checked
        text_embeddings=tensor("text_embeddings"),
        labels=tensor("labels", torch.long),
        class_names=strings("class_names"),
        class_embeddings=tensor("class_embeddings"),
        image_of_text=tensor("image_of_text", torch.long),
        captions=strings("captions"),
        image_paths=strings("image_paths"),
        **{name: str(arrays[name]) for name in MODEL_STRINGS if name in arrays},
    )
