"""Run `cyclip train` and OpenCLIP's `open_clip_train.main` as whole processes and time them from outside.

Each trainer's own samples/s meter measures something different (cyclip's spans whole log intervals,
OpenCLIP's `Batch (t)` one step), so comparisons never use them. Instead this module stamps every line
a trainer prints with this process's clock as it arrives, reads from the line how many optimizer steps
are done, and derives samples/s from two such stamps: the first at or after the warm-up and the last.
It also keeps the whole run's wall time (start-up, epoch ends and exit included).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# OpenCLIP's trainer in a process where cyclip's bundled model configs are registered with open_clip; it
# prints the peak GPU memory at exit, which OpenCLIP does not log. webdataset >= 1.0 ends each shard's
# file stream with an empty end-of-shard marker that open_clip_train's (3.3) sample grouping cannot
# read (KeyError: 'fname'), so its expander is asked for none.
OPENCLIP_MAIN = (
    "import atexit, functools, sys, torch, cyclip.models, open_clip_train.data, webdataset.tariterators\n"
    "open_clip_train.data.tar_file_expander = functools.partial(\n"
    "    webdataset.tariterators.tar_file_expander, eof_value=None)\n"
    "from open_clip_train.main import main\n"
    "atexit.register(lambda: torch.cuda.is_available() and "
    "print(f'peak memory {torch.cuda.max_memory_allocated() / 2**30:.3f} GiB', flush=True))\n"
    "main(sys.argv[1:])\n"
)
OPENCLIP_PRECISIONS = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}

_CYCLIP_STEP = re.compile(r"step (\d+)/\d+ \(epoch .*?\| ([\d.]+) s/step, data ([\d.]+) s")
_OPENCLIP_STEP = re.compile(r"Train Epoch: (\d+) \[\s*(\d+)/\d+.*?Data \(t\): ([\d.]+) Batch \(t\): ([\d.]+)")
_PEAK_MEMORY = re.compile(r"peak memory ([\d.]+) GiB")


@dataclass
class Marker:
    """A log line saying that `step` optimizer steps are done, stamped `seconds` after the process started."""

    step: int
    seconds: float
    data_time: float  # the trainer's mean seconds per step waiting for data over the interval that ended here
    batch_time: float  # its mean seconds per step in all, same interval


@dataclass
class RunTiming:
    name: str
    wall_seconds: float
    global_batch: int
    markers: list[Marker] = field(default_factory=list)
    peak_memory_gib: float | None = None

    def window(self, warmup_steps: int) -> tuple[Marker, Marker]:
        """The first marker at or after the warm-up and the last one."""
        after = [marker for marker in self.markers if marker.step >= warmup_steps]
        if len(after) < 2:
            raise RuntimeError(f"{self.name}: fewer than two step lines after step {warmup_steps}; run more steps")
        return after[0], after[-1]

    def samples_per_second(self, warmup_steps: int) -> float:
        first, last = self.window(warmup_steps)
        return (last.step - first.step) * self.global_batch / (last.seconds - first.seconds)

    def seconds_between(self, warmup_steps: int) -> float:
        first, last = self.window(warmup_steps)
        return last.seconds - first.seconds

    def data_share(self, warmup_steps: int) -> float:
        """Data time over step time, as each trainer reports them, over the log intervals after the warm-up."""
        first, _ = self.window(warmup_steps)
        intervals = [m for m in self.markers if m.step > first.step]
        batch = sum(m.batch_time for m in intervals)
        return sum(m.data_time for m in intervals) / batch if batch else float("nan")


def cyclip_command(
    data: str, output: Path, model: str, batch_size: int, workers: int, precision: str, epochs: int, **extra
) -> list[str]:
    """`cyclip train` on the CPU or GPU of this machine; `extra` adds flags (`compile=True` -> --compile)."""
    command = [
        sys.executable, "-m", "cyclip", "train", "--train-data", data, "--model", model,
        "--batch-size", str(batch_size), "--workers", str(workers), "--precision", precision,
        "--epochs", str(epochs), "--warmup", "10", "--output", str(output),
    ]  # fmt: skip
    return command + _flags(extra)


def openclip_command(
    data: str, output: Path, model: str, batch_size: int, workers: int, precision: str, epochs: int, **extra
) -> list[str]:
    """OpenCLIP's trainer with checkpoints, reporting and evaluation off, as close to `cyclip train` as it goes."""
    command = [
        sys.executable, "-c", OPENCLIP_MAIN, "--train-data", data, "--model", model,
        "--batch-size", str(batch_size), "--workers", str(workers), "--precision", OPENCLIP_PRECISIONS[precision],
        "--epochs", str(epochs), "--warmup", "10", "--logs", str(output), "--name", "run",
        "--report-to", "", "--save-frequency", "0",
    ]  # fmt: skip
    return command + _flags(extra)


def _flags(options: dict) -> list[str]:
    """`{"log_every": 5, "compile": True, "pretrained": None}` -> `["--log-every", "5", "--compile"]`."""
    flags: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not None and value is not False:
            flags += [flag, str(value)]
    return flags


def run_timed(
    name: str, command: list[str], global_batch: int, steps_per_epoch: int, cwd: Path | None = None
) -> RunTiming:
    """Run `command` to the end, stamping each output line (split at newlines and carriage returns)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    timing = RunTiming(name=name, wall_seconds=0.0, global_batch=global_batch)
    tail: list[str] = []
    pending = b""
    while chunk := process.stdout.read1(65536):
        now = time.perf_counter() - start
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for raw in lines:
            line = raw.decode("utf-8", errors="replace")
            tail = (tail + [line])[-40:]
            _read_line(line, now, timing, steps_per_epoch)
    process.wait()
    timing.wall_seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"{name} failed ({process.returncode}):\n" + "\n".join(tail))
    return timing


def _read_line(line: str, seconds: float, timing: RunTiming, steps_per_epoch: int) -> None:
    if match := _CYCLIP_STEP.search(line):
        step, batch_time, data_time = int(match[1]), float(match[2]), float(match[3])
    elif match := _OPENCLIP_STEP.search(line):
        epoch, samples = int(match[1]), int(match[2])
        step = epoch * steps_per_epoch + samples // timing.global_batch
        data_time, batch_time = float(match[3]), float(match[4])
    else:
        if match := _PEAK_MEMORY.search(line):
            timing.peak_memory_gib = max(timing.peak_memory_gib or 0.0, float(match[1]))
        return
    if match := _PEAK_MEMORY.search(line):
        timing.peak_memory_gib = max(timing.peak_memory_gib or 0.0, float(match[1]))
    if not timing.markers or timing.markers[-1].step != step:
        timing.markers.append(Marker(step, seconds, data_time, batch_time))
