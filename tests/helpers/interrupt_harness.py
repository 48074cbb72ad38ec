"""`python tests/helpers/interrupt_harness.py train ...`: the `cyclip` command, interrupted once at a chosen step.

For the resume tests: a SIGKILL or a signal at an exact point of a real run, in one process or under
torchrun, without test hooks in cyclip itself. CYCLIP_TEST_INTERRUPT="ACTION@STEP" or "ACTION@STEP:rRANK"
(only that rank acts; default every rank):

    kill@N         SIGKILL when step N is about to start (N - 1 steps done)
    kill-saving@N  SIGKILL halfway through writing the checkpoint of step N (its temporary file stays)
    term@N, usr1@N SIGTERM / SIGUSR1 when step N is about to start: the run stops after step N
    int-int@N      SIGINT twice when step N is about to start: Ctrl-C pressed twice
"""

from __future__ import annotations

import io
import os
import re
import signal
import sys

import torch

import cyclip.train
from cyclip.cli import main

SIGNALS = {"kill": [signal.SIGKILL], "term": [signal.SIGTERM], "usr1": [signal.SIGUSR1]}
SIGNALS["int-int"] = [signal.SIGINT, signal.SIGINT]


def install(spec: str) -> None:
    match = re.fullmatch(r"([a-z0-9-]+)@(\d+)(?::r(\d+))?", spec)
    if match is None:
        raise SystemExit(f"bad CYCLIP_TEST_INTERRUPT {spec!r}")
    action, step, rank = match.group(1), int(match.group(2)), match.group(3)
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return
    if action == "kill-saving":
        _kill_while_saving(step)
        return
    real_step = cyclip.train.Trainer._optimizer_step

    def optimizer_step(trainer, micro_batches):
        if trainer.step + 1 == step:
            for number in SIGNALS[action]:
                os.kill(os.getpid(), number)
        return real_step(trainer, micro_batches)

    cyclip.train.Trainer._optimizer_step = optimizer_step


def _kill_while_saving(step: int) -> None:
    real_save = torch.save

    def save(payload, file, *args, **kwargs):
        if isinstance(payload, dict) and payload.get("step") == step and "optimizer" in payload:
            buffer = io.BytesIO()
            real_save(payload, buffer, *args, **kwargs)
            file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            file.flush()
            os.fsync(file.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real_save(payload, file, *args, **kwargs)

    torch.save = save


if __name__ == "__main__":
    if os.environ.get("CYCLIP_TEST_INTERRUPT"):
        install(os.environ["CYCLIP_TEST_INTERRUPT"])
    sys.exit(main(sys.argv[1:]))
