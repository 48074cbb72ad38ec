"""Batches of image-caption pairs for the training loop, from a CSV/TSV file or from WebDataset shards.

Both sources give the same batches, `PairBatch`es (with augmented views for in-modal training), and the
same number of batches on every rank (collectives hang otherwise). Order and augmentation depend only on
(seed, epoch, sample), so an epoch can be started part-way through (`TrainEpoch`): a resumed run continues
with the very batch the interrupted one would have read next.

The training loader is built once and its workers live for the whole run (`persistent_workers`):
starting them again every epoch cost a second per epoch, and more for large datasets. Only the rest of an
epoch that a resumed run starts part-way through gets a loader of its own.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler

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

    def train_epoch(self, epoch: int, skip: int = 0, streams: list[int] | None = None) -> TrainEpoch:
        """This rank's training batches of `epoch` after its first `skip` ones, which are not read.

        CSV: the sampler's first skip x batch-size indices are dropped (nothing is decoded). Shards: each
        data-loader worker re-reads its shards without decoding up to `streams[worker]`, the position a
        previous `TrainEpoch.streams()` reported after the same `skip` batches (required when skip > 0).
        """
        rank, world_size = distributed.rank(), distributed.world_size()
        if not skip:
            loader = self._kept_train_loader(epoch, rank, world_size)
            return TrainEpoch(loader, loader if self.sharded else None)
        if self.sharded:
            if streams is None:
                raise ValueError("resuming WebDataset shards part-way through an epoch needs the stream positions")
            shards = self._shards(epoch, rank, world_size, skip=skip, streams=streams)
            return TrainEpoch(shards, shards)
        return TrainEpoch(self._csv_train_loader(rank, world_size, epoch, skip), None)

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

    def _csv_train_loader(self, rank: int, world_size: int, epoch: int = 0, skip: int = 0) -> DataLoader:
        """Shuffled full batches of the CSV; the sampler tags each index with its epoch (`EpochIndices`), so the
        workers, which copied the dataset once, draw each sample under its epoch's seed. With `skip`, the loader
        of one epoch without its first `skip` batches (never read), whose workers end with it."""
        config = self.config
        sampler = DistributedSampler(
            self.dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed, drop_last=True
        )
        indices = EpochIndices(sampler)
        indices.set_epoch(epoch)
        return DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=_SkipFirst(indices, skip * config.batch_size) if skip else indices,
            drop_last=True,
            # Worker seeds come from this generator, so building the loader leaves the global RNG alone.
            generator=torch.Generator().manual_seed(sample_seed(config.seed, 0, f"loader/{rank}")),
            **self._loader_options(persistent=not skip),
        )

    def _loader_options(self, persistent: bool) -> dict[str, Any]:
        """Pinned host memory for asynchronous copies to a GPU; workers kept across epochs and fed ahead."""
        options: dict[str, Any] = dict(
            num_workers=self.config.workers, pin_memory=self.device.type == "cuda", collate_fn=PairBatch.collate
        )
        if self.config.workers > 0:
            options.update(persistent_workers=persistent, prefetch_factor=self.config.prefetch_factor)
        return options

    def _shards(self, epoch: int, rank: int, world_size: int, skip: int = 0, streams: list[int] | None = None):
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
            skip=skip,
            streams=streams,
        )


class TrainEpoch:
    """One rank's training batches of one epoch, and where the reading stands (for a checkpoint)."""

    def __init__(self, batches: Iterable[PairBatch], shards=None) -> None:
        self._batches = batches
        self._shards = shards

    def __iter__(self) -> Iterator[PairBatch]:
        return iter(self._batches)

    def streams(self) -> list[int] | None:
        """Per data-loader worker, how far its shard stream has been read for the batches yielded so far
        (what `PairBatches.train_epoch(streams=...)` continues from); None for CSV data, which needs none."""
        return None if self._shards is None else list(self._shards.positions)


class _SkipFirst(Sampler[int]):
    """A sampler's indices without the first `count`."""

    def __init__(self, sampler: DistributedSampler, count: int) -> None:
        self.sampler = sampler
        self.count = count

    def __iter__(self) -> Iterator[int]:
        return itertools.islice(iter(self.sampler), self.count, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.count)
