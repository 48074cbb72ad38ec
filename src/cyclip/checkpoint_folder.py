"""The checkpoints in a run's output folder: their names and order, writing one, keeping the newest,
finding the newest readable one to resume from, and removing what a killed process left behind.

`epoch_N.pt` is written after each epoch and `step_N.pt` every --save-every-steps / --save-every-minutes;
the newest of them is also `latest.pt` (a hard link, so no extra space). A checkpoint is complete or
absent (atomic writes); a process killed mid-save leaves only a `.NAME.pt.XXXX.tmp` file, removed when
the next run in the folder starts.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from cyclip.checkpoints import read_checkpoint, replace_with_link, save_checkpoint

log = logging.getLogger("cyclip.train")

LATEST = "latest.pt"
_NAME = re.compile(r"^(epoch|step)_(\d+)\.pt$")
# Only the temporaries cyclip itself makes in an output folder: `.NAME.pt.XXXX.tmp` from an atomic write,
# `.latest.pt.tmp` from re-linking latest.pt, `.metrics.jsonl.XXXX.tmp` from rewriting the metrics.
_TEMPORARY = re.compile(r"^\.(?:(?:latest|(?:epoch|step)_\d+)\.pt|metrics\.jsonl)\.(?:[A-Za-z0-9_]+\.)?tmp$")


class CheckpointFolder:
    """The checkpoints of the run in `path`; `steps_per_epoch` orders epoch checkpoints among step ones."""

    def __init__(self, path: Path, steps_per_epoch: int) -> None:
        self.path = path
        self.steps_per_epoch = steps_per_epoch
        self.last: Path | None = None  # the newest complete checkpoint of this run: written or resumed from

    def epoch_file(self, epoch: int) -> Path:
        return self.path / f"epoch_{epoch}.pt"

    def step_file(self, step: int) -> Path:
        return self.path / f"step_{step}.pt"

    def step_of(self, path: Path) -> int | None:
        """The optimizer step a checkpoint's name says it was written at (epoch_N: the end of epoch N)."""
        match = _NAME.match(path.name)
        if match is None:
            return None
        number = int(match.group(2))
        return number if match.group(1) == "step" else number * self.steps_per_epoch

    def checkpoints(self) -> list[Path]:
        """The epoch_N.pt and step_N.pt files, newest first."""
        return [path for _, path in self._by_step()]

    def _by_step(self) -> list[tuple[int, Path]]:
        """(step, file) of each checkpoint, newest first (an epoch checkpoint before a step one of the same
        step: it was written later, after validation)."""
        found = [(step, path) for path in self.path.glob("*.pt") if (step := self.step_of(path)) is not None]
        return sorted(found, key=lambda item: (item[0], item[1].name.startswith("epoch")), reverse=True)

    def has_checkpoint(self) -> bool:
        return (self.path / LATEST).is_file() or bool(self.checkpoints())

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the temporary files a killed process left mid-save; only names cyclip itself makes."""
        stale = [path for path in self.path.glob(".*.tmp") if _TEMPORARY.match(path.name) and path.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.info("removed %d unfinished file(s) of an interrupted save: %s", len(stale), _names(stale))
        return stale

    def write(self, payload: dict[str, Any], path: Path) -> Path:
        """Write a checkpoint atomically and point latest.pt at it; a failed write is one OutputWriteError
        naming the file and the previous checkpoint, which stays intact."""
        save_checkpoint(payload, path)
        replace_with_link(path, self.path / LATEST)
        self.last = path
        return path

    def prune(self, keep_last: int, keep_epochs: bool, step: int) -> list[Path]:
        """Delete all but the newest `keep_last` step checkpoints up to `step` (and epoch checkpoints with
        keep_epochs=False); never the newest checkpoint, the one latest.pt names. Checkpoints past `step`
        (of a run continued from an earlier one) are left to be overwritten."""
        candidates = [
            path
            for written, path in self._by_step()
            if written <= step and not (keep_epochs and path.name.startswith("epoch"))
        ]
        removed = [path for path in candidates[keep_last:] if path != self.last]
        for path in removed:
            path.unlink(missing_ok=True)
        return removed

    def read_newest(self, announce: bool = True) -> tuple[Path, dict[str, Any]]:
        """The newest checkpoint that can be read: latest.pt, else the newest epoch_N.pt / step_N.pt,
        with a warning naming each file that could not be read. None readable is a ValueError."""
        latest = self.path / LATEST
        candidates = ([latest] if latest.is_file() else []) + self.checkpoints()
        if not candidates:
            raise ValueError(
                f"{self.path}: no checkpoint to resume from (no latest.pt, epoch_N.pt or step_N.pt); "
                "start the run without --resume, or with --resume auto"
            )
        bad: list[str] = []
        for path in candidates:
            if path != latest and latest.is_file() and _same_file(path, latest) and bad:
                bad[-1] += f" (the same file as {path.name})"
                continue
            try:
                checkpoint = read_checkpoint(path, device="cpu")
            except ValueError as error:
                bad.append(f"{path.name} ({str(error).removeprefix(f'{path}: ').split('; ')[0]})")  # no fix hint
                continue
            if bad and announce:
                log.warning(
                    "%s: unreadable checkpoint(s) %s; resuming from %s, the newest readable one",
                    self.path,
                    "; ".join(bad),
                    path.name,
                )
            self.last = path
            return path, checkpoint
        raise ValueError(f"{self.path}: no readable checkpoint to resume from: {'; '.join(bad)}")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _names(paths: list[Path]) -> str:
    return ", ".join(path.name for path in paths)
