"""What a training run reports as it goes: where each logging interval's time went, and how it is shown.

`IntervalClock` splits the wall time of an interval into waiting for data and the rest, like OpenCLIP's
`Data (t)` / `Batch (t)`. `TrainProgress` shows it: one plain line per interval on the console and in
train.log (step, epoch progress, loss and its parts, lr, samples/s, data share, ETA), as OpenCLIP's
out.log does, and on a terminal also a progress bar per epoch, with the lines printed above it. When
stderr is not a terminal (a cluster job's log file) there are no bars: their carriage-return redraws
would fill the file.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import torch
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from cyclip.objective import TERM_NAMES

log = logging.getLogger("cyclip.train")


class IntervalClock:
    """Wall time of one logging interval and the part of it spent waiting for data.

    Host clocks only: nothing here waits for the device. Over a whole interval the host is in step with
    the device, because the interval ends with reading the loss (one sync), so the total is exact; the
    data share is what the host spent blocked on the loader, i.e. time the device may have idled.
    """

    def __init__(self, step: int) -> None:
        self.restart(step)

    def restart(self, step: int) -> None:
        """Start a new interval at optimizer step `step`."""
        self.first_step, self.start, self.data_seconds = step, time.perf_counter(), 0.0

    @contextlib.contextmanager
    def waiting_for_data(self) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.data_seconds += time.perf_counter() - begin

    def timings(self, step: int, samples_per_step: int, processes: int) -> dict[str, float]:
        """The interval up to `step`: samples/s in total and per process, seconds per step waiting for data
        (`data_time`) and in all (`batch_time`), and their ratio (`data_fraction`)."""
        steps = max(step - self.first_step, 1)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        per_device = steps * samples_per_step / elapsed
        return {
            "samples_per_second": per_device * processes,
            "samples_per_second_per_device": per_device,
            "data_time": self.data_seconds / steps,
            "batch_time": elapsed / steps,
            "data_fraction": self.data_seconds / elapsed,
        }


def peak_memory(device: torch.device) -> dict[str, float]:
    """On CUDA the most memory tensors have held since the start (`peak_memory_gib`); nothing elsewhere."""
    if device.type != "cuda":
        return {}
    return {"peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30}


class TrainProgress:
    """The console view of one run: a line per logging interval, and a bar per epoch on a terminal.

    `enabled=False` (every rank but 0) shows nothing. `close()` must be called (it restores the logging
    handlers that print above the bars).
    """

    def __init__(
        self, steps_per_epoch: int, epochs: int, first_step: int, enabled: bool, stream: TextIO | None = None
    ) -> None:
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self.enabled = enabled
        self.stream = sys.stderr if stream is None else stream
        self.bars = enabled and self.stream.isatty()
        self.first_step, self.start = first_step, time.perf_counter()  # the ETA's rate: steps since this start
        self.bar: Any = None
        self._redirect = contextlib.ExitStack()
        if self.bars:  # log lines go above the bar instead of through it
            self._redirect.enter_context(logging_redirect_tqdm())

    def start_epoch(self, epoch: int, done: int = 0) -> None:
        """`epoch` counts from 0; `done` steps of it were trained before (a resumed run)."""
        if self.bars:
            self.bar = tqdm(
                total=self.steps_per_epoch,
                initial=done,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                leave=False,
                dynamic_ncols=True,
                file=self.stream,
            )

    def advance(self) -> None:
        """One optimizer step done."""
        if self.bar is not None:
            self.bar.update(1)

    def report(self, step: int, epoch: int, summary: dict[str, float]) -> None:
        """The interval that ended at optimizer step `step` of `epoch` (from 0): its line, and the bar's postfix."""
        if not self.enabled:
            return
        log.info("%s", self.interval_line(step, epoch, summary))
        if self.bar is not None:
            memory = {"mem": f"{summary['peak_memory_gib']:.1f}G"} if "peak_memory_gib" in summary else {}
            self.bar.set_postfix(
                loss=f"{summary[TERM_NAMES.loss]:.4f}",
                scale=f"{summary['logit_scale']:.1f}",
                data=f"{100 * summary['data_fraction']:.0f}%",
                rate=f"{summary['samples_per_second']:.0f}/s",
                **memory,
            )

    def interval_line(self, step: int, epoch: int, summary: dict[str, float]) -> str:
        total = self.steps_per_epoch * self.epochs
        in_epoch = step - epoch * self.steps_per_epoch
        data = f"data {summary['data_time']:.3f} s ({100 * summary['data_fraction']:.0f}%)"
        rate = f"{summary['samples_per_second']:.1f} samples/s"
        if summary["samples_per_second_per_device"] != summary["samples_per_second"]:
            rate += f" ({summary['samples_per_second_per_device']:.1f} per device)"
        parts = [
            f"step {step}/{total} (epoch {epoch + 1}/{self.epochs}, {100 * in_epoch / self.steps_per_epoch:.0f}%)",
            terms_text(summary),
            f"lr {summary['lr']:.3g}",
            rate,
            f"{summary['batch_time']:.3f} s/step, {data}",
        ]
        if "peak_memory_gib" in summary:
            parts.append(f"peak memory {summary['peak_memory_gib']:.2f} GiB")
        parts.append(f"ETA {self._eta(step, total)}")
        return " | ".join(parts)

    def _eta(self, step: int, total: int) -> str:
        """Time left at the mean pace since this process started training (epoch ends included)."""
        done = step - self.first_step
        if done <= 0:
            return "?"
        seconds = (time.perf_counter() - self.start) / done * (total - step)
        return str(datetime.timedelta(seconds=round(seconds)))

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self.end_epoch()
        self._redirect.close()


def terms_text(values: dict[str, Any]) -> str:
    """'loss 1.2345 (contrastive 1.2000, in-modal 0.0300, cross-modal 0.0045)' from a summary's loss terms."""
    return (
        f"loss {values[TERM_NAMES.loss]:.4f} (contrastive {values[TERM_NAMES.contrastive]:.4f}, "
        f"in-modal {values[TERM_NAMES.inmodal_cyclic]:.4f}, cross-modal {values[TERM_NAMES.crossmodal_cyclic]:.4f})"
    )
