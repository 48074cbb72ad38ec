"""A run's metrics as they happen: one JSON line per record in metrics.jsonl, and TensorBoard scalars.

A log that cannot be written (a full disk, a file system gone read-only) must not kill a run of many
hours: each sink warns once, naming its file, and is dropped; training and its checkpoints go on (a
checkpoint that cannot be written does stop the run).

A resumed run repeats the steps after its checkpoint, so it first drops what the interrupted run logged
past that step: metrics.jsonl is rewritten without those records, and TensorBoard is told to hide them
(`purge_step`), so every reader sees one record per step and one curve.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import IO, Any

from cyclip.files import write_text_atomically

log = logging.getLogger("cyclip.train")


class MetricsWriter:
    """metrics.jsonl and TensorBoard under `output`, continuing after `start_step`; a no-op unless
    `enabled` (rank 0 alone writes them)."""

    def __init__(self, output: Path, enabled: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        self.jsonl_path = output / "metrics.jsonl"
        self.tensorboard_path = output / "tensorboard"
        self.jsonl: IO[str] | None = None
        self.tensorboard: Any = None
        if enabled:
            resumed = self.jsonl_path.exists() or self.tensorboard_path.exists()
            try:
                if self.jsonl_path.exists():
                    drop_records_after(self.jsonl_path, start_step)
                self.jsonl = self.jsonl_path.open("a")
            except OSError as error:
                self._give_up("jsonl", self.jsonl_path, error)
            try:
                from torch.utils.tensorboard import SummaryWriter

                purge_step = start_step + 1 if resumed else None  # TensorBoard hides what was logged after it
                self.tensorboard = SummaryWriter(str(self.tensorboard_path), purge_step=purge_step)
            except OSError as error:
                self._give_up("tensorboard", self.tensorboard_path, error)

    def write(self, split: str, step: int, epoch: float, values: dict[str, float]) -> None:
        """One record: a line {"split", "step", "epoch", **values}, and each value as the scalar `split/name`.

        `epoch` is the training done when the record is written, in epochs, on every split alike: a training
        record half-way through the second epoch has 1.5, the validation record after it 2.
        """
        if self.jsonl is not None:
            try:
                self.jsonl.write(json.dumps({"split": split, "step": step, "epoch": epoch, **values}) + "\n")
                self.jsonl.flush()
            except OSError as error:
                self._give_up("jsonl", self.jsonl_path, error)
        if self.tensorboard is not None:
            try:
                for name, value in values.items():
                    self.tensorboard.add_scalar(f"{split}/{name}", value, step)
            except OSError as error:
                self._give_up("tensorboard", self.tensorboard_path, error)

    def close(self) -> None:
        for sink, path in (("jsonl", self.jsonl_path), ("tensorboard", self.tensorboard_path)):
            handle = getattr(self, sink)
            if handle is not None:
                try:
                    handle.close()
                except OSError as error:
                    self._give_up(sink, path, error)

    def _give_up(self, sink: str, path: Path, error: OSError) -> None:
        """Warn once about the sink that failed and stop writing to it."""
        handle = getattr(self, sink)
        setattr(self, sink, None)
        reason = (error.strerror or str(error)).lower()
        log.warning("%s: %s; metrics are no longer written there, training goes on", path, reason)
        if handle is not None:
            with contextlib.suppress(OSError):  # already reported; the sink is dropped either way
                handle.close()


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
