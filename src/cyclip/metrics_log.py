"""A run's metrics as they happen: one JSON line per record in metrics.jsonl, and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path


class MetricsWriter:
    """metrics.jsonl and TensorBoard under `output`; a no-op unless `enabled` (rank 0 alone writes them)."""

    def __init__(self, output: Path, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.jsonl = (output / "metrics.jsonl").open("a")
            self.tensorboard = SummaryWriter(str(output / "tensorboard"))

    def write(self, split: str, step: int, epoch: float, values: dict[str, float]) -> None:
        """One record: a line {"split", "step", "epoch", **values}, and each value as the scalar `split/name`.

        `epoch` is the training done when the record is written, in epochs, on every split alike: a training
        record half-way through the second epoch has 1.5, the validation record after it 2.
        """
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"split": split, "step": step, "epoch": epoch, **values}) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()
