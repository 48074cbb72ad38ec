"""Where a run stands in its data, as a checkpoint records it, and what a resume may change.

A step is `accum_freq` micro-batches on every rank. Every loader is a function of (seed, epoch) and skips
the batches already trained on (`PairBatches.train_epoch`), so continuing exactly needs only the epoch, the
steps done in it and, for WebDataset shards, each data-loader worker's stream position; plus the random
states (`cyclip.runtime.rng_state`, one per rank) and the optimizer's.

CSV data: global step k of an epoch holds the samples at positions [k·G, (k+1)·G) of the epoch's
permutation, G = batch-size × accum-freq × processes, however G is split; so a run may continue with
another split of the same global batch and see the same samples in every step. Shards are split over
processes and data-loader workers, so part-way through an epoch those must stay as they were.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class BatchLayout:
    """How a run cuts its data into steps."""

    batch_size: int
    accum_freq: int
    world_size: int
    workers: int
    sharded: bool
    steps_per_epoch: int

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.accum_freq * self.world_size

    def describe(self) -> str:
        processes = f"{self.world_size} process{'es' if self.world_size > 1 else ''}"
        return f"{self.global_batch} (--batch-size {self.batch_size} x --accum-freq {self.accum_freq} x {processes})"


@dataclass(frozen=True)
class DataPosition:
    """`steps` optimizer steps done in epoch `epoch` (0-based; epochs before it are complete)."""

    epoch: int
    steps: int
    layout: BatchLayout
    streams: list[list[int]] | None = None  # WebDataset: per rank, per data-loader worker (TrainEpoch.streams)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (ints, bools, lists), as a weights-only checkpoint can hold it."""
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], layout: BatchLayout) -> DataPosition:
        """The position a checkpoint records; one written before positions were recorded is at the end of its
        epoch, in the current layout."""
        saved = checkpoint.get("data")
        if saved is None:
            return cls(epoch=int(checkpoint["epoch"]), steps=0, layout=layout)
        return cls(
            epoch=saved["epoch"], steps=saved["steps"], layout=BatchLayout(**saved["layout"]), streams=saved["streams"]
        )

    def continued_in(self, layout: BatchLayout, source: str) -> DataPosition:
        """This position in a resumed run's `layout`; a ValueError (naming `source`) when the run cannot
        continue exactly from it there."""
        saved = self.layout
        if layout.global_batch != saved.global_batch:
            fix = ""
            if saved.global_batch % layout.world_size == 0:
                per_process = saved.global_batch // layout.world_size
                fix = f", e.g. --batch-size {per_process // layout.accum_freq} with --accum-freq {layout.accum_freq}"
                if per_process % layout.accum_freq:
                    fix = f", e.g. --batch-size {per_process} with --accum-freq 1"
            raise ValueError(
                f"{source}: the run was trained at a global batch of {saved.describe()}, this one is "
                f"{layout.describe()}; resume with the same global batch{fix}"
            )
        if not self.steps:
            return replace(self, layout=layout, streams=None)
        if layout.steps_per_epoch != saved.steps_per_epoch:
            raise ValueError(
                f"{source}: the training data changed: {layout.steps_per_epoch} steps per epoch now, "
                f"{saved.steps_per_epoch} when the checkpoint was written part-way through epoch {self.epoch + 1}; "
                "resume from an epoch checkpoint (epoch_N.pt) or train on the same data"
            )
        if layout.sharded and (layout.world_size, layout.workers, layout.batch_size) != (
            saved.world_size,
            saved.workers,
            saved.batch_size,
        ):
            raise ValueError(
                f"{source}: WebDataset shards are read per process and data-loader worker, so part-way through "
                f"an epoch a run continues only as it was: {saved.world_size} process(es), --workers "
                f"{saved.workers}, --batch-size {saved.batch_size} (now {layout.world_size}, {layout.workers}, "
                f"{layout.batch_size}); or resume from an epoch checkpoint (epoch_N.pt)"
            )
        return replace(self, layout=layout)

    def skip(self) -> int:
        """This process's batches of the epoch already trained on."""
        return self.steps * self.layout.accum_freq


def rank_state(saved: Any, rank: int) -> Any:
    """A rank's entry of a per-rank list in a checkpoint (rank 0's for a rank the saving run did not have);
    a single entry (checkpoints written before states were kept per rank) serves every rank."""
    if not isinstance(saved, list):
        return saved
    return saved[rank] if rank < len(saved) else saved[0]
