"""A model that embeds evaluation datasets on demand and remembers the results.

Tasks that read the same dataset (zero-shot, consistency and geometry on one folder) pay for its
embeddings once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from cyclip.evaluation.datasets import open_classification, open_retrieval
from cyclip.evaluation.datasets.labelled import read_labelled_folder
from cyclip.evaluation.embeddings import embed_images, embed_texts
from cyclip.evaluation.embeddings_file import Embeddings
from cyclip.evaluation.zeroshot import class_embeddings


class Encoder:
    """A model and its preprocessing; `labelled` and `retrieval` embed a dataset once and cache it."""

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable,
        tokenizer: Callable,
        device: torch.device | str,
        batch_size: int,
        workers: int,
        progress: bool = True,
    ) -> None:
        self.model, self.preprocess, self.tokenizer = model.eval(), preprocess, tokenizer
        self.device, self.batch_size, self.workers, self.progress = torch.device(device), batch_size, workers, progress
        self._cache: dict[tuple, tuple[Embeddings, bool]] = {}
        self.images_embedded, self.seconds_embedding = 0, 0.0

    def labelled(self, data: str, root: str | None, split: str) -> tuple[Embeddings, bool]:
        """Image embeddings, labels and zero-shot class embeddings of a classification set (and its
        caption embeddings when it is a labelled folder with a `caption` column); plus the dataset's
        mean-per-class convention."""
        key = ("labelled", data, root, split)
        if key not in self._cache:
            dataset = open_classification(data, root, split, self.preprocess)
            started = time.perf_counter()
            images, labels = embed_images(
                self.model, dataset.dataset, self.device, self.batch_size, self.workers, self.progress
            )
            self._count(len(labels), started)
            captions = read_labelled_folder(data).captions if root is None and _is_labelled_folder(data) else None
            texts = (
                embed_texts(self.model, self.tokenizer, captions, self.device, self.batch_size, self.progress)
                if captions
                else None
            )
            embeddings = Embeddings(
                image_embeddings=images,
                text_embeddings=texts,
                labels=labels.long(),
                class_names=list(dataset.classes),
                class_embeddings=class_embeddings(
                    self.model, self.tokenizer, dataset.classes, dataset.templates, self.device
                ),
                captions=captions,
            )
            self._cache[key] = (embeddings, dataset.mean_per_class)
        return self._cache[key]

    def retrieval(self, data: str, image_root: str | None, split: str) -> Embeddings:
        """Image and caption embeddings of a retrieval set, with the image of each caption."""
        key = ("retrieval", data, image_root, split)
        if key not in self._cache:
            dataset = open_retrieval(data, image_root, split, self.preprocess)
            started = time.perf_counter()
            images, _ = embed_images(
                self.model, dataset.images, self.device, self.batch_size, self.workers, self.progress
            )
            self._count(len(images), started)
            texts = embed_texts(
                self.model, self.tokenizer, dataset.captions, self.device, self.batch_size, self.progress
            )
            embeddings = Embeddings(
                image_embeddings=images,
                text_embeddings=texts,
                image_of_text=dataset.image_of_caption.long(),
                captions=list(dataset.captions),
            )
            self._cache[key] = (embeddings, False)
        return self._cache[key][0]

    def _count(self, images: int, started: float) -> None:
        self.images_embedded += images
        self.seconds_embedding += time.perf_counter() - started


def _is_labelled_folder(data: str) -> bool:
    return (Path(data) / "labels.csv").is_file() and (Path(data) / "classes.json").is_file()
