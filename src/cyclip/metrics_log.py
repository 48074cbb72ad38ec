"""A run's metrics as they happen: one JSON line per record in metrics.jsonl, and TensorBoard scalars.

A resumed run repeats the steps after its checkpoint, so it first drops what the interrupted run logged
past that step: metrics.jsonl is rewritten without those records, and TensorBoard is told to hide them
(`purge_step`), so every reader sees one record per step and one curve.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


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

    def write(self, split: str, step: int, epoch: int, values: dict[str, float]) -> None:
        """One record: a line {"split", "step", "epoch", **values}, and each value as the scalar `split/name`."""
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
    kept = [line.rstrip("\n") + "\n" for line in lines if _step(line) is not None and _step(line) <= step]
    if kept == lines:
        return 0
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.writelines(kept)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return len(lines) - len(kept)


def _step(line: str) -> int | None:
    """A record's step; None for a line that is not a complete record."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None
