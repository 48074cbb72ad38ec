"""Long runs: step checkpoints, exact resume after SIGKILL (also mid-save) and signals, fallbacks, full disks.

Real `cyclip train` processes (one, or two under torchrun with gloo) are interrupted at exact steps by
tests/helpers/interrupt_harness.py and continued with `--resume latest` from their output folder alone; their final
weights are compared with an uninterrupted run of the same settings, and their metrics with its metrics.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from cyclip.checkpoint_folder import CheckpointFolder
from cyclip.checkpoints import read_checkpoint
from cyclip.cli import main
from cyclip.data import write_digits_demo
from cyclip.metrics_log import drop_records_after
from cyclip.preemption import StopSignals
from cyclip.run_state import BatchLayout, DataPosition
from tests.helpers.shards import write_digit_shards

HARNESS = Path(__file__).parent / "helpers" / "interrupt_harness.py"
TIMEOUT = 600
# 64 pairs at a global batch of 16: 4 steps per epoch, 2 epochs, a step checkpoint every 2 steps.
COMMON = ["--model", "cyclip-vit-tiny", "--warmup", "1", "--log-every", "1", "--lr", "1e-4", "--epochs", "2"]
COMMON += ["--save-every-steps", "2"]
CYCLIP = ["--lambda-inmodal", "0.25", "--lambda-crossmodal", "0.25"]
EXIT_STOPPED, EXIT_INTERRUPTED = 75, 130


@dataclass(frozen=True)
class Setting:
    processes: int
    shards: bool
    flags: tuple[str, ...]


SETTINGS = {
    "csv": Setting(1, False, ("--batch-size", "16", "--workers", "0")),
    "csv-workers2-accum2-inmodal": Setting(
        1, False, ("--batch-size", "8", "--accum-freq", "2", "--workers", "2", "--inmodal", *CYCLIP)
    ),
    "csv-2proc-workers2-accum2": Setting(2, False, ("--batch-size", "4", "--accum-freq", "2", "--workers", "2")),
    "shards-workers2": Setting(1, True, ("--batch-size", "16", "--workers", "2", *CYCLIP)),
    "shards-2proc-resampled": Setting(2, True, ("--batch-size", "8", "--workers", "2", "--dataset-resampled")),
}
DISTRIBUTED = {name for name, setting in SETTINGS.items() if setting.processes > 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    """64 digit pairs as a CSV, and as 4 img2dataset-style shards of 16 (one more, corrupt, in shard 1)."""
    digits = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    lines = digits.train_csv.read_text().splitlines()
    csv_path = digits.train_csv.with_name("pairs64.csv")
    csv_path.write_text("\n".join(lines[:65]) + "\n")
    folder = tmp_path_factory.mktemp("shards")
    rows = [line.split(",", 1) for line in lines[1:65]]
    write_digit_shards(rows, csv_path.parent, folder, per_shard=16, corrupt_after=6)
    return {"csv": str(csv_path), "shards": str(folder / "{00000..00003}.tar")}


def run(args: list[str], processes: int, interrupt: str | None = None) -> subprocess.CompletedProcess:
    """`cyclip ARGS` through the harness, in one process or under torchrun."""
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "5"}
    env.pop("CYCLIP_TEST_INTERRUPT", None)
    if interrupt:
        env["CYCLIP_TEST_INTERRUPT"] = interrupt
    return subprocess.run([*launcher, str(HARNESS), *args], env=env, capture_output=True, text=True, timeout=TIMEOUT)


def start_args(setting: Setting, data: dict[str, str], output: Path) -> list[str]:
    source = data["shards"] if setting.shards else data["csv"]
    return ["train", "--train-data", source, "--output", str(output), *COMMON, *setting.flags]


def resume_args(output: Path) -> list[str]:
    """What a requeued job or a user types: the folder alone (its config.yaml holds the settings)."""
    return ["train", "--output", str(output), "--resume", "latest"]


_references: dict[str, Path] = {}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The uninterrupted run of a setting (made once per module)."""

    def make(name: str) -> Path:
        if name not in _references:
            output = tmp_path_factory.mktemp(f"whole-{name}")
            result = run(start_args(SETTINGS[name], data, output), SETTINGS[name].processes)
            assert result.returncode == 0, result.stderr[-3000:]
            _references[name] = output
        return _references[name]

    return make


def max_weight_difference(a: Path, b: Path) -> float:
    first, second = read_checkpoint(a)["model"], read_checkpoint(b)["model"]
    assert first.keys() == second.keys()
    return max((first[k].double() - second[k].double()).abs().max().item() for k in first)


def train_losses(output: Path) -> dict[int, float]:
    """step -> loss of the train records of metrics.jsonl; a step logged twice fails."""
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [record["step"] for record in records if record["split"] == "train"]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {record["step"]: record["loss"] for record in records if record["split"] == "train"}


def temporaries(output: Path) -> list[str]:
    return sorted(path.name for path in output.glob(".*.tmp"))


def assert_same_run(output: Path, whole: Path) -> None:
    """Same final weights (1e-6) and the same loss at every logged step as the uninterrupted run."""
    assert max_weight_difference(whole / "epoch_2.pt", output / "epoch_2.pt") <= 1e-6
    assert read_checkpoint(output / "latest.pt")["step"] == 8
    losses, expected = train_losses(output), train_losses(whole)
    assert losses.keys() == expected.keys() == set(range(1, 9))
    for step, loss in expected.items():
        assert losses[step] == pytest.approx(loss, abs=1e-5), step


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.distributed] if name in DISTRIBUTED else []) for name in SETTINGS]
)
def test_killed_three_times_ends_with_the_weights_of_an_uninterrupted_run(name, data, reference, tmp_path):
    """SIGKILL before step 4 (mid-epoch 1), halfway through writing epoch_1.pt, and before step 7
    (mid-epoch 2); each time `--resume latest` continues from the newest complete checkpoint."""
    setting, output = SETTINGS[name], tmp_path / "run"
    first = run(start_args(setting, data, output), setting.processes, "kill@4")
    assert first.returncode != 0 and not (output / "epoch_1.pt").exists(), first.stderr[-2000:]
    assert read_checkpoint(output / "latest.pt")["step"] == 2

    second = run(resume_args(output), setting.processes, "kill-saving@4")
    assert second.returncode != 0 and not (output / "epoch_1.pt").exists(), second.stderr[-2000:]
    assert [name.startswith(".epoch_1.pt.") for name in temporaries(output)] == [True]  # the half-written file
    assert read_checkpoint(output / "latest.pt")["step"] == 2

    third = run(resume_args(output), setting.processes, "kill@7")
    assert third.returncode != 0, third.stderr[-2000:]
    assert temporaries(output) == []  # removed when the second resume started
    assert read_checkpoint(output / "latest.pt")["step"] == 6

    last = run(resume_args(output), setting.processes)
    assert last.returncode == 0, last.stderr[-3000:]
    assert_same_run(output, reference(name))
    assert sorted(path.name for path in output.glob("*.pt")) == [  # --keep-last 2: step_4 was never written
        "epoch_1.pt", "epoch_2.pt", "latest.pt", "step_2.pt", "step_6.pt"
    ]  # fmt: skip


@pytest.mark.slow
def test_sigterm_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(data, reference, tmp_path):
    output = tmp_path / "run"
    stopped = run(start_args(SETTINGS["csv"], data, output), 1, "term@3")
    assert stopped.returncode == EXIT_STOPPED
    assert read_checkpoint(output / "step_3.pt")["step"] == 3
    assert read_checkpoint(output / "latest.pt")["data"]["steps"] == 3
    message = stopped.stderr.strip().splitlines()[-1]
    assert message.startswith("cyclip: stopped by SIGTERM at step 3") and "--resume latest" in message
    assert "Traceback" not in stopped.stderr

    resumed = run(resume_args(output), 1)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(output, reference("csv"))


@pytest.mark.slow
@pytest.mark.distributed
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(data, reference, tmp_path):
    """--preempt-signal USR1 reaching rank 1 alone: both ranks stop after step 3, rank 0 writes step_3.pt."""
    output, setting = tmp_path / "run", SETTINGS["csv-2proc-workers2-accum2"]
    args = start_args(setting, data, output) + ["--preempt-signal", "USR1"]
    stopped = run(args, 2, "usr1@3:r1")
    assert stopped.returncode != 0
    assert f"exitcode  : {EXIT_STOPPED}" in stopped.stderr or f"exit code {EXIT_STOPPED}" in stopped.stderr
    assert read_checkpoint(output / "step_3.pt")["step"] == 3
    assert "stopped by a signal to another process at step 3" in stopped.stderr

    resumed = run(resume_args(output), 2)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(output, reference("csv-2proc-workers2-accum2"))


def test_ctrl_c_twice_stops_at_once_without_saving(data, tmp_path):
    output = tmp_path / "run"
    result = run(start_args(SETTINGS["csv"], data, output), 1, "int-int@3")
    assert result.returncode == EXIT_INTERRUPTED
    assert not (output / "step_3.pt").exists() and read_checkpoint(output / "latest.pt")["step"] == 2
    assert "Traceback" not in result.stderr and temporaries(output) == []
    assert result.stderr.strip().splitlines()[-1] == (
        f"cyclip: interrupted after step 2 (epoch 1) without saving; the last checkpoint is {output}/step_2.pt: "
        "continue with --resume latest"
    )


# --- in one process, through the command line -----------------------------------------------------------------


def train_in_process(data: dict[str, str], output: Path, *flags: str) -> int:
    return main(
        ["train", "--train-data", data["csv"], "--output", str(output), *COMMON, *SETTINGS["csv"].flags, *flags]
    )


def test_a_damaged_latest_checkpoint_falls_back_to_the_newest_readable_one(data, tmp_path, caplog):
    output = tmp_path / "run"
    assert train_in_process(data, output, "--epochs", "1") == 0
    latest = output / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])  # in place: epoch_1.pt, the same file, is damaged too
    caplog.clear()
    assert main(["train", "--output", str(output), "--resume", "latest", "--epochs", "2"]) == 0
    warnings = [record.getMessage() for record in caplog.records if record.levelname == "WARNING"]
    fallback = next(message for message in warnings if "unreadable" in message)
    assert "latest.pt (not a checkpoint (corrupt or another format" in fallback
    assert "the same file as epoch_1.pt" in fallback
    assert fallback.endswith("resuming from step_2.pt, the newest readable one")
    assert any("--epochs 2: the run was started with 1 epochs" in message for message in warnings)
    assert read_checkpoint(output / "latest.pt")["step"] == 8
    assert sorted(train_losses(output)) == list(range(1, 9))


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(data, tmp_path, capsys):
    output = tmp_path / "run"
    output.mkdir()
    (output / "latest.pt").write_bytes(b"not a checkpoint")
    (output / "config.yaml").write_text(yaml.safe_dump({"train_data": data["csv"]}))
    assert main(["train", "--output", str(output), "--resume", "auto"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "no readable checkpoint to resume from: latest.pt" in error


def test_a_full_disk_during_a_save_stops_naming_the_file_and_keeps_the_previous_checkpoint(
    data, tmp_path, monkeypatch, capsys
):
    output, real_save, calls = tmp_path / "run", torch.save, []

    def save_until_the_disk_is_full(payload, file, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            file.write(b"PK\x03\x04 the first bytes of a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(payload, file, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    assert train_in_process(data, output) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"cyclip: error: no space left on device while writing {output}/epoch_1.pt; the previous checkpoint "
        f"{output}/latest.pt is intact and no partial file is left (free some space, or write elsewhere)"
    )
    monkeypatch.undo()
    assert read_checkpoint(output / "step_2.pt")["step"] == read_checkpoint(output / "latest.pt")["step"] == 2
    assert temporaries(output) == [] and not (output / "epoch_1.pt").exists()


def test_resume_auto_starts_a_run_then_continues_it_then_says_it_is_finished(data, tmp_path, caplog):
    output = tmp_path / "run"
    assert train_in_process(data, output, "--epochs", "1", "--resume", "auto") == 0
    assert any("holds no checkpoint yet: starting the run" in record.getMessage() for record in caplog.records)
    assert yaml.safe_load((output / "config.yaml").read_text())["resume"] is None  # the file starts the run again
    caplog.clear()
    assert main(["train", "--output", str(output), "--resume", "auto"]) == 0
    messages = [record.getMessage() for record in caplog.records]
    assert (
        f"{output}: the run is finished (epoch 1 of 1, step 4); nothing to train (raise --epochs to train longer)"
        in (messages)
    )
    assert not any(message.startswith("training ") for message in messages)
    assert main(["train", "--output", str(output), "--resume", "auto", "--epochs", "2"]) == 0
    assert read_checkpoint(output / "latest.pt")["step"] == 8


def test_resuming_with_another_global_batch_is_refused_in_one_line(data, tmp_path, capsys):
    output = tmp_path / "run"
    assert train_in_process(data, output, "--epochs", "1") == 0
    capsys.readouterr()
    assert main(["train", "--output", str(output), "--resume", "latest", "--batch-size", "8", "--epochs", "2"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "global batch of 16 (--batch-size 16 x --accum-freq 1 x 1 process), this one is 8" in error
    assert error.endswith("resume with the same global batch, e.g. --batch-size 16 with --accum-freq 1")


# --- the pieces ------------------------------------------------------------------------------------------------


def test_only_cyclips_own_temporaries_are_removed_at_start(tmp_path):
    ours = [".step_40.pt.k2j_x9a.tmp", ".epoch_3.pt.abc123.tmp", ".latest.pt.tmp", ".metrics.jsonl.q1w2e3.tmp"]
    theirs = [".mydata.tmp", "notes.tmp", ".step_40.pt.keep", ".step_x.pt.abc.tmp", "step_4.pt.abc.tmp"]
    for name in ours + theirs:
        (tmp_path / name).write_bytes(b"partial")
    removed = CheckpointFolder(tmp_path, steps_per_epoch=10).remove_stale_temporaries()
    assert sorted(path.name for path in removed) == sorted(ours)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(theirs)


def test_keep_last_prunes_old_step_checkpoints_and_keeps_epochs_unless_asked(tmp_path):
    folder = CheckpointFolder(tmp_path, steps_per_epoch=10)
    payload = {"model": {"w": torch.ones(1)}}
    for step in (5, 10, 15, 20, 25):
        path = folder.epoch_file(step // 10) if step % 10 == 0 else folder.step_file(step)
        folder.write(payload, path)
        folder.prune(keep_last=2, keep_epochs=True, step=step)
    assert sorted(path.name for path in tmp_path.glob("*.pt")) == [
        "epoch_1.pt", "epoch_2.pt", "latest.pt", "step_15.pt", "step_25.pt"
    ]  # fmt: skip
    assert os.path.samefile(tmp_path / "latest.pt", tmp_path / "step_25.pt")
    folder.prune(keep_last=2, keep_epochs=False, step=25)
    assert sorted(path.name for path in tmp_path.glob("*.pt")) == ["epoch_2.pt", "latest.pt", "step_25.pt"]
    folder.write(payload, folder.step_file(35))  # a checkpoint past the step a run continues from is not pruned
    folder.prune(keep_last=1, keep_epochs=False, step=25)
    assert sorted(path.name for path in tmp_path.glob("*.pt")) == ["latest.pt", "step_25.pt", "step_35.pt"]


def test_dropping_metrics_past_a_step_keeps_the_rest_and_removes_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"split": "train", "step": step, "loss": 1.0 / step} for step in (1, 2, 3, 4)]
    records.insert(3, {"split": "val", "step": 3, "loss": 0.5})
    path.write_text("".join(json.dumps(record) + "\n" for record in records) + '{"split": "train", "st')
    assert drop_records_after(path, 3) == 2
    assert [json.loads(line) for line in path.read_text().splitlines()] == records[:4]
    assert drop_records_after(path, 3) == 0


def test_a_position_continues_in_another_split_of_the_same_global_batch_only():
    layout = BatchLayout(batch_size=8, accum_freq=2, world_size=2, workers=2, sharded=False, steps_per_epoch=10)
    position = DataPosition(epoch=1, steps=4, layout=layout)
    split = BatchLayout(batch_size=32, accum_freq=1, world_size=1, workers=0, sharded=False, steps_per_epoch=10)
    assert position.continued_in(split, "ck.pt").skip() == 4  # 4 steps of 32 per process
    with pytest.raises(ValueError, match=r"global batch of 32 \(--batch-size 8 x --accum-freq 2 x 2 processes\)"):
        position.continued_in(BatchLayout(16, 1, 1, 0, False, 20), "ck.pt")
    shards = DataPosition(epoch=1, steps=4, layout=BatchLayout(8, 2, 2, 2, True, 10), streams=[[9, 9], [9, 9]])
    with pytest.raises(ValueError, match="WebDataset shards .* 2 process.*--workers 2"):
        shards.continued_in(BatchLayout(8, 2, 2, 4, True, 10), "ck.pt")
    at_epoch_end = DataPosition(epoch=2, steps=0, layout=BatchLayout(8, 2, 2, 2, True, 10))
    assert at_epoch_end.continued_in(BatchLayout(16, 2, 1, 4, True, 10), "ck.pt").streams is None


def test_a_stop_signal_is_recorded_and_a_second_ctrl_c_interrupts():
    previous = signal.getsignal(signal.SIGUSR1)
    with StopSignals("USR1", announce=False) as signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert signals.requested == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated request changes nothing
        assert signals.requested == "SIGUSR1"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGUSR1) is previous
