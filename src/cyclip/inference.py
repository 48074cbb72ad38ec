"""Using a model on images: embeddings and zero-shot classification, from Python and for `cyclip predict/index`.

Everything runs without gradients in float32, with the model in eval mode. In Python, images are PIL images,
image files or already preprocessed tensors, and an unreadable file is an error. Image files named on the command
line go through `embed_image_files`, which reads them in data-loader workers and skips (and lists) the files that
cannot be decoded, so that one broken file among thousands does not stop the run.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.transform import PreprocessCfg, image_transform_v2
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cyclip.data import load_rgb_image
from cyclip.errors import BadSampleError, DataError
from cyclip.evaluation.embeddings import embed_texts as _embed_texts
from cyclip.evaluation.zeroshot import class_embeddings
from cyclip.prompts import DEFAULT_TEMPLATES, check_labels, normalise_template

__all__ = [
    "IMAGE_SUFFIXES",
    "ImageFileEmbeddings",
    "ZeroShotClassifier",
    "embed_image_files",
    "embed_images",
    "embed_texts",
    "find_images",
    "model_preprocess",
    "report_skipped",
]

log = logging.getLogger(__name__)

# Suffixes of the formats PIL can open (not those it can only write).
IMAGE_SUFFIXES = frozenset(suffix for suffix, kind in Image.registered_extensions().items() if kind in Image.OPEN)
BATCH_SIZE = 256
SKIPPED_SHOWN = 10  # unreadable files listed one a line; the rest are counted

ImageInput = Image.Image | str | os.PathLike | torch.Tensor
ClipModel = Any  # an open_clip model (CLIP, CustomTextCLIP): it has encode_image, encode_text and logit_scale


def _device_of(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def model_preprocess(model: torch.nn.Module) -> Callable[[Image.Image], torch.Tensor]:
    """The inference transform recorded on an open_clip model (size, mean, std, resize mode of its training)."""
    return image_transform_v2(PreprocessCfg(**open_clip.get_model_preprocess_cfg(model)), is_train=False)


def _stack(items: Sequence[ImageInput], preprocess: Callable) -> torch.Tensor:
    """[N, 3, H, W] from PIL images, image files and preprocessed [3, H, W] tensors."""
    tensors = []
    for item in items:
        if isinstance(item, torch.Tensor):
            tensors.append(item)
        else:
            tensors.append(preprocess(item if isinstance(item, Image.Image) else load_rgb_image(item)))
    return torch.stack(tensors)


@torch.no_grad()
def embed_images(
    model: ClipModel,
    images: ImageInput | Sequence[ImageInput],
    preprocess: Callable | None = None,
    batch_size: int = BATCH_SIZE,
) -> torch.Tensor:
    """L2-normalised image embeddings [N, d] (float32, on the CPU) of PIL images, image files or preprocessed
    tensors ([3, H, W] or [N, 3, H, W]); `preprocess` defaults to the model's own inference transform."""
    model.eval()
    if isinstance(images, torch.Tensor):
        batches = list((images.unsqueeze(0) if images.dim() == 3 else images).split(batch_size))
    else:
        items = [images] if isinstance(images, (Image.Image, str, os.PathLike)) else list(images)
        preprocess = preprocess or model_preprocess(model)
        batches = [_stack(items[i : i + batch_size], preprocess) for i in range(0, len(items), batch_size)]
    if not batches:
        raise ValueError("no images given")
    device = _device_of(model)
    features = [model.encode_image(batch.to(device, non_blocking=True), normalize=True).float() for batch in batches]
    return torch.cat(features).cpu()


def embed_texts(
    model: ClipModel, tokenizer: Callable, texts: str | Sequence[str], batch_size: int = BATCH_SIZE
) -> torch.Tensor:
    """L2-normalised text embeddings [M, d] (float32, on the CPU) of a caption or a list of captions."""
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("no texts given")
    return _embed_texts(model, tokenizer, texts, _device_of(model), batch_size, progress=False)


class ZeroShotClassifier:
    """Zero-shot classification among `classnames`: each class is the normalised mean of its prompts' embeddings
    (the templates filled with its name), an image's class probabilities are softmax(exp(logit_scale) · cos).

    >>> classifier = ZeroShotClassifier(model, tokenizer, ["cat", "dog"], ["a photo of a {}."])
    >>> classifier.predict(images, k=2)  # [[("cat", 0.93), ("dog", 0.07)], ...]
    """

    def __init__(
        self,
        model: ClipModel,
        tokenizer: Callable,
        classnames: Sequence[str],
        templates: Sequence[str] | None = None,
        preprocess: Callable | None = None,
    ) -> None:
        self.model = model.eval()
        self.classnames = check_labels(classnames, "classnames")
        self.templates = [normalise_template(t, "templates") for t in (templates or DEFAULT_TEMPLATES)]
        self.preprocess = preprocess or model_preprocess(model)
        device = _device_of(model)
        self.class_embeddings = class_embeddings(model, tokenizer, self.classnames, self.templates, device)
        with torch.no_grad():
            self.logit_scale = model.logit_scale.detach().exp().float().cpu()

    def probabilities_of(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """[N, C] class probabilities of L2-normalised image embeddings."""
        return (self.logit_scale * image_embeddings.float() @ self.class_embeddings.T).softmax(dim=1)

    def probabilities(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """[N, C] class probabilities (columns in the order of `classnames`)."""
        return self.probabilities_of(embed_images(self.model, images, self.preprocess))

    def predict(self, images: ImageInput | Sequence[ImageInput], k: int = 1) -> list[list[tuple[str, float]]]:
        """Per image, its k most probable classes as (class name, probability), most probable first."""
        return self.top_k(self.probabilities(images), k)

    def top_k(self, probabilities: torch.Tensor, k: int) -> list[list[tuple[str, float]]]:
        """(class name, probability) of the k largest entries of each row, largest first."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        values, indices = probabilities.topk(min(k, len(self.classnames)), dim=1)
        return [
            [(self.classnames[i], p) for i, p in zip(row_indices, row_values, strict=True)]
            for row_indices, row_values in zip(indices.tolist(), values.tolist(), strict=True)
        ]


def find_images(specs: Sequence[str]) -> list[Path]:
    """Image files from paths, glob patterns and folders (searched recursively for `IMAGE_SUFFIXES`), in the order
    given, each folder's and pattern's files sorted, duplicates dropped. A spec that yields nothing is an error."""
    found: dict[Path, None] = {}
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found[path] = None
        elif path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not images:
                raise DataError(f"{path}: no image files in this folder or below (looked for .jpg, .png, .webp, ...)")
            found.update(dict.fromkeys(images))
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
            if not matches:
                raise DataError(f"{spec}: no file matches this pattern")
            found.update(dict.fromkeys(matches))
        else:
            raise DataError(f"{spec}: no such image file or folder")
    if not found:
        raise DataError("no images given; pass image files, folders or glob patterns")
    return list(found)


class _ImageFiles(Dataset):
    """`dataset[i]` is `(i, tensor, None)`, or `(i, None, reason)` when the file cannot be decoded."""

    def __init__(self, paths: Sequence[Path], preprocess: Callable) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return index, self.preprocess(load_rgb_image(self.paths[index])), None
        except BadSampleError as error:
            return index, None, str(error)


def _collate_readable(
    items: list[tuple[int, torch.Tensor | None, str | None]],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    """(indices of the decoded images, their stacked tensors or None, (index, reason) of the others)."""
    readable = [(index, tensor) for index, tensor, _ in items if tensor is not None]
    failed = [(index, reason or "unreadable") for index, tensor, reason in items if tensor is None]
    stacked = torch.stack([tensor for _, tensor in readable]) if readable else None
    return [index for index, _ in readable], stacked, failed


@dataclass
class ImageFileEmbeddings:
    embeddings: torch.Tensor  # [n, d], L2-normalised float32 on the CPU, one row per readable file
    paths: list[Path]  # the readable files, in the order of the rows
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # unreadable files and why


@torch.no_grad()
def embed_image_files(
    model: ClipModel,
    preprocess: Callable,
    paths: Sequence[Path],
    batch_size: int = BATCH_SIZE,
    workers: int = 2,
    progress: bool = True,
) -> ImageFileEmbeddings:
    """Embed image files in batches (decoded in `workers` processes); unreadable files are skipped and listed.

    The progress bar appears when there is more than one batch. Embeddings stay on the model's device until
    the end, so the loop never waits for a copy back to the host.
    """
    model.eval()
    device = _device_of(model)
    paths = list(paths)
    loader = DataLoader(
        _ImageFiles(paths, preprocess),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=_collate_readable,
        pin_memory=device.type == "cuda",
    )
    rows, chunks, skipped = [], [], []
    with tqdm(
        total=len(paths), unit="image", desc="embedding images", disable=not progress or len(paths) <= batch_size
    ) as bar:
        for indices, images, failed in loader:
            if images is not None:
                chunks.append(model.encode_image(images.to(device, non_blocking=True), normalize=True).float())
                rows += indices
            skipped += [(paths[index], reason) for index, reason in failed]
            bar.update(len(indices) + len(failed))
    if not rows:
        raise DataError(f"none of the {len(paths)} images could be read (first: {skipped[0][1]})")
    return ImageFileEmbeddings(torch.cat(chunks).cpu(), [paths[i] for i in rows], skipped)


def report_skipped(skipped: Sequence[tuple[Path, str]], total: int) -> None:
    """Warn about unreadable files: one line each for the first `SKIPPED_SHOWN`, then how many more, then the count."""
    for _, reason in skipped[:SKIPPED_SHOWN]:
        log.warning("skipped %s", reason)
    if len(skipped) > SKIPPED_SHOWN:
        log.warning("... and %d more unreadable images", len(skipped) - SKIPPED_SHOWN)
    if skipped:
        log.warning("skipped %d of %d images (unreadable)", len(skipped), total)
