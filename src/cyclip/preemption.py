"""Stopping a run cleanly when the cluster (or the user) asks: SIGTERM, SIGINT and `--preempt-signal`.

A handler only records the request; the training loop looks at it after each optimizer step, writes a
checkpoint and raises `RunStopped` (exit code `EXIT_STOPPED`), so the job can be requeued and continued
with `--resume auto`. A second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once: no checkpoint.

Forked data-loader workers inherit the handlers and ignore the signals (the process that installed them
decides), so a signal sent to the whole process group (torchrun, SLURM) cannot kill a worker mid-batch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

log = logging.getLogger("cyclip.train")

EXIT_STOPPED = 75  # sysexits' EX_TEMPFAIL: stopped on request after writing a checkpoint; run it again
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell's code for Ctrl-C: stopped at once, nothing saved


class RunStopped(Exception):
    """Training stopped before its last epoch on request; the message says where and how to continue.

    `exit_code` is EXIT_STOPPED after a checkpoint was written, EXIT_INTERRUPTED when nothing was saved.
    The message is empty on the ranks that do not report (all but rank 0).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class StopSignals:
    """While entered, SIGTERM, SIGINT and `extra` (one of config.PREEMPT_SIGNALS) request a stop instead of
    killing.

    `requested` is the name of the first signal received (None until then). Outside the main thread, where
    Python cannot install handlers, nothing is installed and the signals keep their usual effect.
    """

    def __init__(self, extra: str | None = None, announce: bool = True) -> None:
        names = ["SIGTERM", "SIGINT"] + ([f"SIG{extra}"] if extra else [])
        self.signals = [signal.Signals[name] for name in dict.fromkeys(names)]
        self.announce = announce
        self.requested: str | None = None
        self._previous: dict[signal.Signals, Any] = {}  # the handlers to restore
        self._pid = os.getpid()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for number in self.signals:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        if os.getpid() != self._pid:  # a forked data-loader worker: the main process decides
            return
        name = signal.Signals(number).name
        if self.requested is None:
            self.requested = name
            if self.announce:
                log.warning(
                    "%s received: stopping after this step with a checkpoint (Ctrl-C again stops at once, unsaved)",
                    name,
                )
        elif number == signal.SIGINT:
            raise KeyboardInterrupt
