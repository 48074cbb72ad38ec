"""Batches of image-caption pairs for the training loop, from a CSV/TSV file or from WebDataset shards.

Both sources give the same batches, `PairBatch`es (with augmented views for in-modal training), and the
same number of batches on every rank (collectives hang otherwise). Order and augmentation depend only on
(seed, epoch, sample).

The training loader is built once and its workers live for the whole run (`persistent_workers`):
starting them again every epoch cost a second per epoch, and more for large datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from cyclip import distributed
from cyclip.config import TrainConfig
from cyclip.data.batch import PairBatch
from cyclip.data.captions import ImageCaptionDataset
from cyclip.data.seeding import EpochIndices, SeededSamples, sample_seed

if TYPE_CHECKING:
    from cyclip.data.shards import ShardBatches


def looks_like_shards(path: str) -> bool:
    """WebDataset shard lists name .tar files (`data/{00000..00127}.tar`, several joined by '::')."""
    return any(part.strip().endswith(".tar") for part in path.split("::"))


class PairBatches:
    """The pairs of one file or shard list; `epoch(e)` iterates this rank's batches of epoch e."""

    def __init__(
        self,
        path: str,
        transform: Callable,
        tokenizer: Callable,
        config: TrainConfig,
        device: torch.device,
        train: bool,
        augment: Callable | None = None,
    ) -> None:
        self.path, self.transform, self.tokenizer = path, transform, tokenizer
        self.config, self.device, self.train, self.augment = config, device, train, augment
        # The training loader of (rank, world size), built at the first epoch: its workers serve every epoch.
        self._train_loader: tuple[tuple[int, int], DataLoader | ShardBatches] | None = None
        kind = config.dataset_type
        self.sharded = kind == "webdataset" or (kind == "auto" and looks_like_shards(path))
        if self.sharded:
            rank, world_size = (distributed.rank(), distributed.world_size()) if train else (0, 1)
            shards = self._shards(0, rank, world_size)
            if train:
                self._train_loader = (rank, world_size), shards
            self.shard_count = len(shards.shards)
            self.num_samples = shards.num_samples
            self.batches_per_epoch = shards.batches_per_epoch if train else 0
        else:
            dataset = ImageCaptionDataset(
                path,
                transform=transform,
                tokenizer=tokenizer,
                image_key=config.csv_img_key,
                caption_key=config.csv_caption_key,
                separator=config.csv_separator,
                on_bad_sample=config.on_bad_sample,
                augment=augment,
                max_image_pixels=config.max_image_pixels,
            )
            self.dataset = SeededSamples(dataset, config.seed)
            self.num_samples = len(dataset)
            self.batches_per_epoch = self.num_samples // (config.batch_size * distributed.world_size())

    def epoch(self, epoch: int, rank: int | None = None, world_size: int | None = None) -> Iterable[PairBatch]:
        """Training: this rank's shuffled full batches of `epoch`. Validation: every `world_size`-th batch of
        the file in order, from the `rank`-th (defaults: this process's rank and the job's world size)."""
        rank = distributed.rank() if rank is None else rank
        world_size = distributed.world_size() if world_size is None else world_size
        if self.train:
            return self._kept_train_loader(epoch, rank, world_size)
        if self.sharded:
            if self.shard_count < world_size:  # too few shards to share: rank 0 reads them all
                return self._shards(epoch, 0, 1) if rank == 0 else []
            return self._shards(epoch, rank, world_size)
        self.dataset.set_epoch(epoch)
        batches = list(BatchSampler(range(len(self.dataset)), self.config.batch_size, drop_last=False))
        return DataLoader(
            self.dataset, batch_sampler=batches[rank::world_size], **self._loader_options(persistent=False)
        )

    def _kept_train_loader(self, epoch: int, rank: int, world_size: int) -> DataLoader | ShardBatches:
        """The training loader of (rank, world_size), built once, moved on to `epoch`."""
        if self._train_loader is None or self._train_loader[0] != (rank, world_size):
            loader = self._shards(epoch, rank, world_size) if self.sharded else self._csv_train_loader(rank, world_size)
            self._train_loader = (rank, world_size), loader
        loader = self._train_loader[1]
        (loader if self.sharded else loader.sampler).set_epoch(epoch)  # type: ignore[union-attr]
        return loader

    def _csv_train_loader(self, rank: int, world_size: int) -> DataLoader:
        """Shuffled full batches of the CSV; the sampler tags each index with its epoch (`EpochIndices`), so the
        workers, which copied the dataset once, draw each sample under its epoch's seed."""
        config = self.config
        sampler = DistributedSampler(
            self.dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed, drop_last=True
        )
        return DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=EpochIndices(sampler),
            drop_last=True,
            # Worker seeds come from this generator, so building the loader leaves the global RNG alone.
            generator=torch.Generator().manual_seed(sample_seed(config.seed, 0, f"loader/{rank}")),
            **self._loader_options(persistent=True),
        )

    def _loader_options(self, persistent: bool) -> dict[str, Any]:
        """Pinned host memory for asynchronous copies to a GPU; workers kept across epochs and fed ahead."""
        options: dict[str, Any] = dict(
            num_workers=self.config.workers, pin_memory=self.device.type == "cuda", collate_fn=PairBatch.collate
        )
        if self.config.workers > 0:
            options.update(persistent_workers=persistent, prefetch_factor=self.config.prefetch_factor)
        return options

    def _shards(self, epoch: int, rank: int, world_size: int):
        from cyclip.data.shards import ShardBatches

        config = self.config
        return ShardBatches(
            self.path,
            self.transform,
            self.tokenizer,
            batch_size=config.batch_size,
            num_samples=config.train_num_samples if self.train else None,
            seed=config.seed,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            workers=config.workers,
            resampled=config.dataset_resampled and self.train,
            on_bad_sample=config.on_bad_sample,
            augment=self.augment,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=config.prefetch_factor,
            finite=not self.train,
            max_image_pixels=config.max_image_pixels,
        )
