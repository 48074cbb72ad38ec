"""Training under `torchrun --nproc_per_node=2` (gloo on CPU) against one process over the same samples."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cyclip.checkpoints import read_checkpoint
from cyclip.data import write_digits_demo
from tests.helpers.shards import write_digit_shards

pytestmark = pytest.mark.distributed

# LayerNorm-only ViT: a ResNet's BatchNorm statistics would differ between per-rank and whole batches.
# lr 1e-4: Adam divides by the gradient's own size, so on weights whose exact gradient is 0 (attention key
# biases) float rounding noise becomes an update of up to ~lr/50 that differs between the two reductions.
COMMON = ["--model", "cyclip-vit-tiny", "--workers", "0", "--warmup", "1", "--log-every", "1", "--lr", "1e-4"]
CYCLIP = ["--lambda-inmodal", "0.25", "--lambda-crossmodal", "0.25"]
TIMEOUT = 600


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    """32 digit pairs: at a global batch of 16, an epoch is 2 optimizer steps."""
    data = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    lines = data.train_csv.read_text().splitlines()
    path = data.train_csv.with_name("pairs.csv")
    path.write_text("\n".join(lines[:33]) + "\n")
    return path


def run_cyclip(args: list[str], processes: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "cyclip"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
        launcher += ["-m", "cyclip"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*launcher, *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)


def train(data: Path | str, output: Path, processes: int, batch_size: int, *extra: str) -> subprocess.CompletedProcess:
    args = ["train", "--train-data", str(data), "--output", str(output), "--batch-size", str(batch_size)]
    result = run_cyclip([*args, *COMMON, *CYCLIP, *extra], processes)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def max_weight_difference(a: Path, b: Path) -> float:
    first, second = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first)


@pytest.mark.parametrize(
    ("batch_size", "accumulation"), [(8, 1), (4, 2)], ids=["half-batch", "quarter-batch-accumulated-twice"]
)
def test_two_processes_end_with_the_weights_of_one_process(pairs, tmp_path, batch_size, accumulation):
    """Global batch 16 either way; with accumulation the DDP no_sync path and the cached features are used."""
    train(pairs, tmp_path / "one", 1, 16, "--epochs", "1")
    train(pairs, tmp_path / "two", 2, batch_size, "--epochs", "1", "--accum-freq", str(accumulation))
    one, two = tmp_path / "one" / "epoch_1.pt", tmp_path / "two" / "epoch_1.pt"
    assert read_checkpoint(one)["step"] == read_checkpoint(two)["step"] == 2
    assert max_weight_difference(one, two) <= 1e-5
    # ...and the weights did move away from the shared initialisation (lr 0 keeps it).
    train(pairs, tmp_path / "still", 1, 16, "--epochs", "1", "--lr", "0")
    assert max_weight_difference(one, tmp_path / "still" / "epoch_1.pt") > 1e-4
    log = (tmp_path / "two" / "train.log").read_text()
    assert f"global batch 16 ({batch_size} per process x {accumulation} accumulation x 2 processes)" in log


def test_resume_under_two_processes_matches_an_uninterrupted_run(pairs, tmp_path):
    train(pairs, tmp_path / "whole", 2, 8, "--epochs", "2")
    # A run stopped after its first epoch: the folder holds what that run had written by then.
    (tmp_path / "parts").mkdir()
    shutil.copyfile(tmp_path / "whole" / "epoch_1.pt", tmp_path / "parts" / "latest.pt")
    train(pairs, tmp_path / "parts", 2, 8, "--epochs", "2", "--resume", "latest")
    assert read_checkpoint(tmp_path / "parts" / "latest.pt")["step"] == 4
    assert max_weight_difference(tmp_path / "whole" / "epoch_2.pt", tmp_path / "parts" / "epoch_2.pt") <= 1e-6


def test_a_failing_rank_stops_the_job_naming_the_rank(pairs, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    rows = pairs.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([rows[0], f"{broken},a broken image", *[_absolute(r, pairs.parent) for r in rows[1:]]]))
    args = ["train", "--train-data", str(bad), "--output", str(tmp_path / "run"), "--batch-size", "8", "--epochs", "1"]
    result = run_cyclip([*args, *COMMON, "--on-bad-sample", "error"], processes=2)
    assert result.returncode != 0
    assert "cyclip: error on rank" in result.stderr and "broken.png" in result.stderr
    assert not (tmp_path / "run" / "epoch_1.pt").exists()


def _absolute(row: str, root: Path) -> str:
    image, caption = row.split(",", 1)
    return f"{root / image},{caption}"


@pytest.fixture(scope="module")
def shards(pairs, tmp_path_factory) -> Path:
    """The 32 pairs as 4 img2dataset-style shards (jpg + txt, with *_stats.json), plus one corrupt jpg."""
    folder = tmp_path_factory.mktemp("shards")
    rows = [row.split(",", 1) for row in pairs.read_text().splitlines()[1:]]
    write_digit_shards(rows, pairs.parent, folder, per_shard=8, corrupt_after=8)
    return folder


@pytest.mark.parametrize("processes", [1, 2])
def test_webdataset_shards_train_end_to_end(shards, tmp_path, processes):
    output = tmp_path / "run"
    pattern = str(shards / "{00000..00003}.tar")
    train(pattern, output, processes, 16 // processes, "--epochs", "2", "--workers", "1", "--val-data", pattern)
    metrics = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    train_rows = [row for row in metrics if row["split"] == "train"]
    assert train_rows[-1]["step"] == 4  # 33 samples // global batch 16 = 2 steps per epoch
    assert all(math.isfinite(row["loss"]) for row in train_rows)
    assert train_rows[-1]["skipped_samples"] >= 1  # the corrupt jpg, met at least once in two epochs
    val_rows = [row for row in metrics if row["split"] == "val"]
    assert len(val_rows) == 2 and all(math.isfinite(row["loss"]) for row in val_rows)
