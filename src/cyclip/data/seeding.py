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
from torch.utils.data import Dataset


def sample_seed(seed: int, epoch: int, key: int | str) -> int:
    """A 63-bit seed from (run seed, epoch, sample index or key), stable across processes and Python versions."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@contextlib.contextmanager
def seeded_randomness(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator, `random` and numpy's global generator for the block, then restore them."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class SeededSamples(Dataset):
    """Wraps a map-style dataset so that item i of epoch e is drawn under `sample_seed(seed, e, i)`."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Call before building the epoch's loader: workers copy the dataset when iteration starts."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        with seeded_randomness(sample_seed(self.seed, self.epoch, index)):
            return self.dataset[index]
