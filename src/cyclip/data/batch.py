"""The one batch type both training loaders yield (CSV/TSV and WebDataset shards), and the objective reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import default_collate


@dataclass(frozen=True)
class PairBatch:
    """B image-caption pairs, as tensors.

    images [B,3,H,W] and texts [B,L] (token ids) are the pairs; augmented_images / augmented_texts are the
    second views of the same pairs for in-modal training (both present or both None). skipped [B] (long)
    counts, per row, the bad samples that row stood in for, so summing it over an epoch counts the bad
    samples met.
    """

    images: torch.Tensor
    texts: torch.Tensor
    skipped: torch.Tensor
    augmented_images: torch.Tensor | None = None
    augmented_texts: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.augmented_images is None) != (self.augmented_texts is None):
            raise ValueError("a PairBatch has both augmented views (images and texts) or neither")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def has_augmented_views(self) -> bool:
        return self.augmented_images is not None

    def map(self, function: Callable[[torch.Tensor], torch.Tensor]) -> PairBatch:
        """A batch of `function(tensor)` for every tensor present (absent views stay None)."""
        return PairBatch(
            function(self.images),
            function(self.texts),
            function(self.skipped),
            None if self.augmented_images is None else function(self.augmented_images),
            None if self.augmented_texts is None else function(self.augmented_texts),
        )

    def to(self, device: torch.device | str, non_blocking: bool = True) -> PairBatch:
        """Every tensor on `device`; from pinned memory the copies overlap with compute (no host sync)."""
        return self.map(lambda tensor: tensor.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PairBatch:
        """Page-locked copies; the DataLoader's pin-memory thread calls this."""
        return self.map(torch.Tensor.pin_memory)

    def __getitem__(self, rows: slice) -> PairBatch:
        """The rows `rows` (a slice) of every tensor."""
        if not isinstance(rows, slice):
            raise TypeError(f"a PairBatch is sliced by rows (batch[a:b]), not indexed by {type(rows).__name__}")
        return self.map(lambda tensor: tensor[rows])

    @staticmethod
    def cat(batches: Sequence[PairBatch]) -> PairBatch:
        """The rows of `batches` (all with or all without augmented views) in order, as one batch."""
        if not batches:
            raise ValueError("PairBatch.cat needs at least one batch")
        first = batches[0]
        views = [torch.cat([batch.images for batch in batches]), torch.cat([batch.texts for batch in batches])]
        if first.has_augmented_views:
            views += [
                torch.cat([batch.augmented_images for batch in batches]),  # type: ignore[misc]
                torch.cat([batch.augmented_texts for batch in batches]),  # type: ignore[misc]
            ]
        return PairBatch(views[0], views[1], torch.cat([batch.skipped for batch in batches]), *views[2:])

    @staticmethod
    def collate(samples: Sequence[tuple]) -> PairBatch:
        """DataLoader `collate_fn` for samples `(image, tokens, skipped)` or, with augmented views,
        `(image, tokens, augmented_image, augmented_tokens, skipped)` (what `ImageCaptionDataset` returns).

        The tensors are stacked by `default_collate`, which in a worker process stacks straight into
        shared memory (no copy on the way to the main process).
        """
        *views, skipped = default_collate(list(samples))
        return PairBatch(views[0], views[1], skipped, *views[2:])
