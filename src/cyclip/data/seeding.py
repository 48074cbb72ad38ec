"""Per-sample random streams: a sample's augmentation depends on (seed, epoch, sample) only.

Not on which process or data-loader worker draws it, nor on what was drawn before. So a run gives the
same batches for any `--workers`, a two-process run sees exactly the augmentations of a one-process run
over the same samples, and a resumed run continues exactly.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, key: int | str) -> int:
    """A 63-bit seed from (run seed, epoch, sample index or key), stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def seeded_randomness(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, `random` and numpy's global generator for the block, then restore them.

    Only the CPU generator: `torch.manual_seed` would also queue a lazy seed for every accelerator
    backend, formatting a stack trace for each, which tripled the per-sample cost in data-loader workers.
    """
    torch_state, python_state, numpy_state = torch.get_rng_state(), random.getstate(), np.random.get_state()
    torch.default_generator.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        random.setstate(python_state)
        np.random.set_state(numpy_state)


class SeededSamples(Dataset):
    """Wraps a map-style dataset so that item i of epoch e is drawn under `sample_seed(seed, e, i)`.

    Items are asked for as `(epoch, i)` (what `EpochIndices` yields), which lets data-loader workers live
    across epochs (`persistent_workers`): the epoch travels with each index instead of being copied into
    the workers once. A plain index `i` means epoch `self.epoch` (set with `set_epoch`).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch of plain indices; workers copy the dataset when they start, so loaders pass `(epoch, i)`."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: int | tuple[int, int]):
        epoch, index = item if isinstance(item, tuple) else (self.epoch, item)
        with seeded_randomness(sample_seed(self.seed, epoch, index)):
            return self.dataset[index]


class EpochIndices(Sampler):
    """A sampler's indices tagged with the epoch set on it: `(epoch, index)`, for `SeededSamples`."""

    def __init__(self, sampler: Sampler, epoch: int = 0) -> None:
        self.sampler = sampler
        self.epoch = epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, index) for index in self.sampler)
