"""Batches of image-caption pairs for the training loop, from a CSV/TSV file or from WebDataset shards.

Both sources give the same batches, `PairBatch`es (with augmented views for in-modal training), and the
same number of batches on every rank (collectives hang otherwise). Order and augmentation depend only on
(seed, epoch, sample), so an epoch can be started part-way through (`TrainEpoch`): a resumed run continues
with the very batch the interrupted one would have read next.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler

from cyclip import distributed
from cyclip.config import TrainConfig
from cyclip.data.batch import PairBatch
from cyclip.data.captions import ImageCaptionDataset
from cyclip.data.seeding import SeededSamples, sample_seed


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
        kind = config.dataset_type
        self.sharded = kind == "webdataset" or (kind == "auto" and looks_like_shards(path))
        if self.sharded:
            shards = self._shards(0, distributed.rank(), distributed.world_size()) if train else self._shards(0, 0, 1)
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
        if self.sharded:
            if skip and streams is None:
                raise ValueError("resuming WebDataset shards part-way through an epoch needs the stream positions")
            shards = self._shards(epoch, distributed.rank(), distributed.world_size(), skip=skip, streams=streams)
            return TrainEpoch(shards, shards)
        return TrainEpoch(self._csv_loader(epoch, skip), None)

    def epoch(self, epoch: int, rank: int | None = None, world_size: int | None = None) -> Iterable[PairBatch]:
        """Training: this rank's shuffled full batches of `epoch`. Validation: every `world_size`-th batch of
        the file in order, from the `rank`-th (defaults: this process's rank and the job's world size)."""
        rank = distributed.rank() if rank is None else rank
        world_size = distributed.world_size() if world_size is None else world_size
        if self.sharded:
            if not self.train and self.shard_count < world_size:  # too few shards to share: rank 0 reads them all
                return self._shards(epoch, 0, 1) if rank == 0 else []
            return self._shards(epoch, rank, world_size)
        if self.train:
            return self._csv_loader(epoch, 0, rank, world_size)
        self.dataset.set_epoch(epoch)
        batches = list(BatchSampler(range(len(self.dataset)), self.config.batch_size, drop_last=False))
        return DataLoader(
            self.dataset,
            batch_sampler=batches[rank::world_size],
            num_workers=self.config.workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=PairBatch.collate,
        )

    def _csv_loader(self, epoch: int, skip: int, rank: int | None = None, world_size: int | None = None) -> DataLoader:
        """The shuffled full batches of `rank` in `epoch` (a function of seed and epoch), the first `skip` dropped."""
        rank = distributed.rank() if rank is None else rank
        world_size = distributed.world_size() if world_size is None else world_size
        config = self.config
        self.dataset.set_epoch(epoch)
        sampler = DistributedSampler(
            self.dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=config.seed, drop_last=True
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            self.dataset,
            batch_size=config.batch_size,
            sampler=_SkipFirst(sampler, skip * config.batch_size),
            drop_last=True,
            num_workers=config.workers,
            pin_memory=self.device.type == "cuda",
            collate_fn=PairBatch.collate,
            # The workers' base seed comes from here, not from (and not advancing) the global generator.
            generator=torch.Generator().manual_seed(sample_seed(config.seed, epoch, f"loader/{rank}")),
        )

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
            finite=not self.train,
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
