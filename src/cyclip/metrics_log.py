"""A run's metrics as they happen: one JSON line per record in metrics.jsonl, and TensorBoard scalars.

A resumed run repeats the steps after its checkpoint, so it first drops what the interrupted run logged
past that step: metrics.jsonl is rewritten without those records, and TensorBoard is told to hide them
(`purge_step`), so every reader sees one record per step and one curve.
"""

from __future__ import annotations

import json
from pathlib import Path

from cyclip.files import write_text_atomically


class MetricsWriter:
    """metrics.jsonl and TensorBoard under `output`, continuing after `start_step`; a no-op unless
    `enabled` (rank 0 alone writes them)."""

    def __init__(self, output: Path, enabled: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            path = output / "metrics.jsonl"
            resumed = path.exists() or (output / "tensorboard").exists()
            if path.exists():
                drop_records_after(path, start_step)
            self.jsonl = path.open("a")
            purge_step = start_step + 1 if resumed else None  # TensorBoard hides what was logged after it
            self.tensorboard = SummaryWriter(str(output / "tensorboard"), purge_step=purge_step)

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


def drop_records_after(path: Path, step: int) -> int:
    """Rewrite a metrics.jsonl (atomically) without its records past `step` and any line cut short by a
    kill; returns how many lines were dropped."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    steps = [_step(line) for line in lines]
    kept = [line.rstrip("\n") + "\n" for line, at in zip(lines, steps, strict=True) if at is not None and at <= step]
    if kept == lines:
        return 0
    write_text_atomically(path, "".join(kept))
    return len(lines) - len(kept)


def _step(line: str) -> int | None:
    """A record's step; None for a line that is not a complete record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None
