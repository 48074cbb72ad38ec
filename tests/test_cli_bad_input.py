"""Every command against the bad inputs a new user brings: one line naming the input, exit code 2, no traceback.

The table runs the real `python -m cyclip` in a subprocess, so what is checked is exactly what a user's
terminal shows (stderr, with progress bars reduced to what stays visible). The failures that need the file
system to misbehave (a full disk, a folder without write permission) patch it and call the CLI in-process.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import open_clip
import pytest
import safetensors.torch
import torch
from PIL import Image

from cyclip.cli import main
from cyclip.models import create_model, load_checkpoint
from tests.helpers.bad_files import huge_png_bytes, write

MODEL = "cyclip-rn-tiny"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A folder of good and bad inputs, shared by the table below."""
    root = tmp_path_factory.mktemp("inputs")
    model = create_model(MODEL)[0]
    state = model.state_dict()
    torch.save({"model": state, "model_name": MODEL}, root / "weights-only.pt")
    torch.save(state, root / "state-dict.pt")
    (root / "random.pt").write_bytes(os.urandom(4000))
    (root / "notes.pt").write_text("not a checkpoint at all\n")
    safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, root / "good.safetensors")
    good = (root / "good.safetensors").read_bytes()
    (root / "corrupt.safetensors").write_bytes(good[: len(good) // 3])
    # A training CSV whose third row is a 144 MP image, and a labelled folder holding one.
    write(root / "images" / "huge.png", huge_png_bytes())
    for index in range(3):
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(root / "images" / f"{index}.png")
    rows = ["images/0.png,a", "images/huge.png,b", "images/1.png,c", "images/2.png,d"]  # every row is used
    (root / "train.csv").write_text("filepath,title\n" + "\n".join(rows) + "\n")
    for name, images in (("labelled", ["0.png", "1.png"]), ("labelled-huge", ["0.png", "huge.png"])):
        folder = root / name
        folder.mkdir()
        (folder / "classes.json").write_text(json.dumps({"classes": ["red", "dark"]}))
        (folder / "labels.csv").write_text(
            "image,label\n" + "".join(f"../images/{image},{i}\n" for i, image in enumerate(images))
        )
    (root / "retrieval.csv").write_text("path,text\nimages/0.png,a\n")
    (root / "results.json").write_text("{}\n")
    (root / "suite.yaml").write_text("tasks:\n  - task: zeroshot\n    data: labelled\n")
    return root


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    result = subprocess.run(
        [sys.executable, "-m", "cyclip", *args], cwd=cwd, env=environment, capture_output=True, timeout=300
    )
    # Decoded here: text=True would turn the carriage returns of progress bars into line breaks.
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode())


def visible_lines(stderr: str) -> list[str]:
    """What stays on a terminal: per line, the text after the last carriage return (tqdm redraws with them)."""
    return [shown for line in stderr.split("\n") if (shown := line.rsplit("\r", 1)[-1].strip())]


ERROR_LINE = re.compile(r"^cyclip( [a-z]+)?: error")
TRAIN = ("train", "--train-data", "train.csv", "--device", "cpu", "--batch-size", "2", "--epochs", "1")
EVAL = ("--device", "cpu", "--batch-size", "2", "--workers", "0")

# (case, arguments, what the error line must contain: one text or several). Paths are relative to the inputs folder.
CASES = [
    ("resume random bytes", (*TRAIN, "--workers", "0", "--output", "r1", "--resume", "random.pt"),
     "random.pt: not a checkpoint (corrupt or another format: unrecognised bytes)"),
    ("resume text file", (*TRAIN, "--workers", "0", "--output", "r2", "--resume", "notes.pt"),
     "notes.pt: not a checkpoint (corrupt or another format: a text file)"),
    ("resume plain state dict", (*TRAIN, "--workers", "0", "--output", "r3", "--resume", "state-dict.pt"),
     "state-dict.pt: holds weights only, no training state to resume"),
    ("resume weights-only dict", (*TRAIN, "--workers", "0", "--output", "r4", "--resume", "weights-only.pt"),
     "to start a new run from these weights pass --pretrained weights-only.pt instead of --resume"),
    ("resume safetensors", (*TRAIN, "--workers", "0", "--output", "r5", "--resume", "good.safetensors"),
     "good.safetensors: holds weights only"),
    ("resume corrupt safetensors", (*TRAIN, "--workers", "0", "--output", "r6", "--resume", "corrupt.safetensors"),
     "corrupt.safetensors: not a readable .safetensors file"),
    ("pretrained corrupt safetensors", (*TRAIN, "--output", "r7", "--pretrained", "corrupt.safetensors"),
     "corrupt.safetensors: not a readable .safetensors file"),
    ("huge image, error policy, in a worker",
     (*TRAIN, "--workers", "1", "--output", "r8", "--on-bad-sample", "error"),
     ("train.csv: line 3: ", "images/huge.png: image too large to decode", "--max-image-pixels")),
    ("pixel limit out of range", (*TRAIN, "--output", "r9", "--max-image-pixels", "0"),
     "--max-image-pixels: expected an integer >= 1 and <= "),
    ("eval random bytes", ("eval", "zeroshot", "--checkpoint", "random.pt", "--data", "labelled", *EVAL),
     "random.pt: not a checkpoint (corrupt or another format"),
    ("eval corrupt safetensors",
     ("eval", "zeroshot", "--checkpoint", "corrupt.safetensors", "--data", "labelled", *EVAL),
     "corrupt.safetensors: not a readable .safetensors file"),
    ("eval huge image in a worker",
     ("eval", "zeroshot", "--checkpoint", "weights-only.pt", "--data", "labelled-huge", "--device", "cpu",
      "--workers", "1"),
     "huge.png: image too large to decode (12000x12000 = 144,000,000 pixels, above the limit of 64,000,000)"),
    ("eval retrieval columns", ("eval", "retrieval", "--checkpoint", "weights-only.pt", "--data", "retrieval.csv",
                                *EVAL),
     "retrieval.csv: the header 'path,text' names no image and caption columns"),
    ("eval named dataset without its folder",
     ("eval", "zeroshot", "--checkpoint", "weights-only.pt", "--data", "cifar10", "--root", "nowhere", *EVAL),
     "cifar10: nowhere not found; point --root at the local copy of cifar10"),
    ("export text file", ("export", "--checkpoint", "notes.pt", "--output", "e1"),
     "notes.pt: not a checkpoint (corrupt or another format: a text file)"),
    ("export corrupt safetensors", ("export", "--checkpoint", "corrupt.safetensors", "--output", "e2"),
     "corrupt.safetensors: not a readable .safetensors file"),
    ("compare a checkpoint", ("compare", "weights-only.pt", "notes.pt"), "weights-only.pt: not a JSON results file"),
    # Output locations (checked before any model is built): an existing file where a folder goes, a folder where
    # a file goes, a file in the way of the folder to create.
    ("train output is a file", (*TRAIN, "--output", "notes.pt"),
     "--output notes.pt: notes.pt is a file, not a folder; choose another --output"),
    ("eval output is a folder", ("eval", "zeroshot", "--checkpoint", "weights-only.pt", "--data", "labelled", *EVAL,
                                 "--output", "images"),
     "images: is a folder; --output takes the file to write"),
    ("eval suite output under a file", ("eval", "suite", "--config", "suite.yaml", "--checkpoint", "weights-only.pt",
                                        "--output", "notes.pt/eval.json"),
     "--output notes.pt/eval.json: notes.pt is a file, not a folder"),
    ("export output is a file", ("export", "--checkpoint", "weights-only.pt", "--output", "notes.pt"),
     "notes.pt: exists and is not a folder"),
    ("export output under a file", ("export", "--checkpoint", "weights-only.pt", "--output", "notes.pt/x"),
     "--output notes.pt/x: notes.pt is a file, not a folder"),
    ("demo output is a file", ("demo", "--output", "notes.pt"), "--output notes.pt: notes.pt is a file, not a folder"),
    ("demo device", ("demo", "--device", "gpu0", "--output", "d1"), "--device 'gpu0' is not a device name"),
    ("predict output under a file", ("predict", "images", "--labels", "a,b", "--checkpoint", "weights-only.pt",
                                     "--output", "notes.pt/p.csv"),
     "--output notes.pt/p.csv: notes.pt is a file, not a folder"),
    ("predict missing image", ("predict", "nowhere.png", "--labels", "a,b", "--checkpoint", "weights-only.pt"),
     "nowhere.png: no such image file or folder"),
    ("index output under a file", ("index", "images", "--checkpoint", "weights-only.pt",
                                   "--output", "notes.pt/i.npz"),
     "--output notes.pt/i.npz: notes.pt is a file, not a folder"),
    ("index random checkpoint", ("index", "images", "--checkpoint", "random.pt", "--output", "i1.npz"),
     "random.pt: not a checkpoint (corrupt or another format"),
    ("search missing index", ("search", "--index", "nowhere.npz", "a red car"),
     "nowhere.npz: embeddings file not found"),
    ("compare output is a file", ("compare", "results.json", "--output", "notes.pt"),
     "--output notes.pt: notes.pt is a file, not a folder"),
    # Every path of a training run, before the model is built (an epoch is not lost to a typo).
    ("train zeroshot folder missing", (*TRAIN, "--output", "r10", "--zeroshot-data", "nowhere"),
     "--zeroshot-data nowhere: folder not found"),
    ("train val data missing", (*TRAIN, "--output", "r11", "--val-data", "nowhere.csv"),
     "--val-data nowhere.csv: not found"),
    ("train pretrained missing", (*TRAIN, "--output", "r12", "--pretrained", "nowhere.pt"),
     "pretrained weights 'nowhere.pt' not found: cyclip never downloads weights"),
    ("train resume missing", (*TRAIN, "--output", "r13", "--resume", "nowhere.pt"),
     "--resume nowhere.pt: nowhere.pt not found"),
    ("train resume latest of a new run", (*TRAIN, "--output", "r14", "--resume", "latest"),
     "--resume latest: r14 holds no checkpoint (latest.pt, epoch_N.pt or step_N.pt)"),
    ("train shards missing", ("train", "--train-data", "shards/{0..3}.tar", "--device", "cpu", "--output", "r15"),
     "--train-data shards/0.tar: shard not found (4 of the 4 shards"),
]  # fmt: skip

# argparse's own errors: one line naming the command, pointing to its --help, exit code 2 (no usage block).
USAGE_CASES = [
    ("no command", (), "cyclip: error: the following arguments are required: COMMAND (see cyclip --help)"),
    ("unknown command", ("nocommand",), "cyclip: error: argument COMMAND: invalid choice: 'nocommand'"),
    ("train unknown flag", ("train", "--bogus"),
     "cyclip train: error: unrecognized arguments: --bogus (see cyclip train --help)"),
    ("train flag without value", ("train", "--epochs"),
     "cyclip train: error: argument --epochs: expected one argument"),
    ("eval without task", ("eval",), "cyclip eval: error: the following arguments are required: TASK"),
    ("eval unknown flag", ("eval", "zeroshot", "--checkpoint", "x", "--bogus"),
     "cyclip eval: error: unrecognized arguments: --bogus"),
    ("export without checkpoint", ("export", "--output", "e"),
     "cyclip export: error: the following arguments are required: --checkpoint"),
    ("compare without runs", ("compare",), "cyclip compare: error: the following arguments are required: runs"),
    ("demo unknown flag", ("demo", "--bogus"), "cyclip demo: error: unrecognized arguments: --bogus"),
    ("predict without labels", ("predict", "a.png", "--checkpoint", "x"),
     "cyclip predict: error: one of the arguments --labels --classes is required"),
    ("index without output", ("index", "a.png", "--checkpoint", "x"),
     "cyclip index: error: the following arguments are required: --output"),
    ("search top-k not a number", ("search", "--index", "i", "--top-k", "x"),
     "cyclip search: error: argument --top-k: invalid int value: 'x'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("arguments", "expected"), [case[1:] for case in USAGE_CASES], ids=[case[0] for case in USAGE_CASES]
)
def test_usage_errors_are_one_line_naming_the_command(capsys, arguments, expected):
    with pytest.raises(SystemExit) as stop:
        main(list(arguments))
    assert stop.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith(expected), stderr
    assert stderr.rstrip().endswith("--help)")


@pytest.mark.parametrize(("arguments", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_code_2(files, arguments, expected):
    result = run_cli(*arguments, cwd=files)
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = visible_lines(result.stderr)
    errors = [line for line in lines if ERROR_LINE.match(line)]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    assert all(text in errors[0] for text in ((expected,) if isinstance(expected, str) else expected)), errors[0]
    if arguments[0] != "train":  # a training run may log its start before the failing step; nothing else may
        assert lines == errors, result.stderr


def test_eval_output_into_a_new_folder_is_created(files):
    result = run_cli(
        "eval", "zeroshot", "--checkpoint", "weights-only.pt", "--data", "labelled", *EVAL,
        "--output", "new/nested/zeroshot.json", cwd=files,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads((files / "new" / "nested" / "zeroshot.json").read_text())
    assert record["task"] == "zeroshot" and record["metrics"]["num_images"] == 2


def test_full_disk_at_the_checkpoint_stops_training_with_one_line(files, tmp_path, monkeypatch, capsys):
    output = tmp_path / "run"

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 the first bytes")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.chdir(files)
    monkeypatch.setattr(torch, "save", full_disk)
    code = main([*TRAIN, "--workers", "0", "--output", str(output), "--train-data", "train.csv"])
    monkeypatch.undo()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert error == (
        f"cyclip: error: no space left on device while writing {output / 'epoch_1.pt'}; no earlier checkpoint is in "
        f"{output} and no partial file is left (free some space, or write elsewhere)"
    )
    assert not [name for name in os.listdir(output) if name.endswith((".pt", ".tmp"))]


def test_permission_denied_on_an_output_folder_is_one_line(files, tmp_path, monkeypatch, capsys):
    target = tmp_path / "locked"
    real_mkdir = Path.mkdir

    def refuse(self, *args, **kwargs):
        if self == target:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.chdir(files)
    monkeypatch.setattr(Path, "mkdir", refuse)
    code = main(["eval", "zeroshot", "--checkpoint", "weights-only.pt", "--data", "labelled", *EVAL,
                 "--output", str(target / "zeroshot.json")])  # fmt: skip
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"cyclip: error: --output {target / 'zeroshot.json'}: cannot write in {target} (permission denied); "
        "choose another --output or make the folder writable"
    )


def test_full_disk_keeps_the_previous_checkpoint_loadable(files, tmp_path, monkeypatch, capsys):
    """A first epoch saved, the second's save hitting a full disk: the run stops, latest.pt still loads."""
    output = tmp_path / "run"
    monkeypatch.chdir(files)
    assert main([*TRAIN, "--workers", "0", "--output", str(output)]) == 0
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    code = main([*TRAIN, "--workers", "0", "--output", str(output), "--epochs", "2", "--resume", "latest"])
    monkeypatch.undo()
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"cyclip: error: no space left on device while writing {output / 'epoch_2.pt'}; the previous checkpoint "
        f"{output / 'latest.pt'} is intact and no partial file is left (free some space, or write elsewhere)"
    )
    assert sorted(name for name in os.listdir(output) if name.endswith((".pt", ".tmp"))) == ["epoch_1.pt", "latest.pt"]
    load_checkpoint(output / "latest.pt")


def _no_model_may_be_built(monkeypatch) -> None:
    """Make building a model or reading a checkpoint fail loudly: the checks under test must come first."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was built (or a checkpoint read) before the output was checked")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)
    monkeypatch.setattr(torch, "load", refuse)


def _unwritable(monkeypatch, locked: Path) -> None:
    """Folders under `locked` refuse new files, as a read-only mount or a folder of another user does."""
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).is_relative_to(locked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


OUTPUT_COMMANDS = {
    "train": lambda out: [*TRAIN, "--workers", "0", "--output", out],
    "eval": lambda out: ["eval", "zeroshot", "--checkpoint", "weights-only.pt", "--data", "labelled", *EVAL,
                         "--output", f"{out}.json"],
    "export": lambda out: ["export", "--checkpoint", "weights-only.pt", "--output", out],
    "demo": lambda out: ["demo", "--device", "cpu", "--output", out],
    "predict": lambda out: ["predict", "images", "--labels", "a,b", "--checkpoint", "weights-only.pt",
                            "--output", f"{out}.csv"],
    "index": lambda out: ["index", "images", "--checkpoint", "weights-only.pt", "--output", f"{out}.npz"],
}  # fmt: skip


@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_unwritable_output_is_one_line_before_any_model_is_built(files, tmp_path, monkeypatch, capsys, command):
    locked = tmp_path / "locked"
    arguments = OUTPUT_COMMANDS[command](str(locked / "out"))
    given = arguments[-1]
    folder = Path(given) if command in ("train", "demo") else locked  # a folder output, or a file's folder
    monkeypatch.chdir(files)
    _unwritable(monkeypatch, locked)
    _no_model_may_be_built(monkeypatch)
    assert main(arguments) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"cyclip: error: --output {given}: cannot write in {folder} (permission denied); choose another --output "
        "or make the folder writable"
    )


def test_training_paths_are_checked_before_the_model_is_built(files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(files)
    _no_model_may_be_built(monkeypatch)
    assert main([*TRAIN, "--output", str(tmp_path / "run"), "--zeroshot-data", "nowhere"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("cyclip: error: --zeroshot-data nowhere: folder not found; a labelled set is a folder")


def test_a_log_that_cannot_be_written_warns_once_and_training_goes_on(files, tmp_path, monkeypatch, caplog):
    """metrics.jsonl on a full disk: one warning naming it; the run ends normally with its checkpoint."""
    output = tmp_path / "run"
    real_open = Path.open

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, text):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def flush(self):
            pass

        def close(self):
            self.handle.close()

    def open_metrics(self, *args, **kwargs):
        handle = real_open(self, *args, **kwargs)
        return FullDisk(handle) if self.name == "metrics.jsonl" else handle

    monkeypatch.chdir(files)
    monkeypatch.setattr(Path, "open", open_metrics)
    with caplog.at_level(logging.WARNING, logger="cyclip.train"):
        code = main([*TRAIN, "--workers", "0", "--output", str(output), "--epochs", "2", "--log-every", "1"])
    monkeypatch.undo()
    assert code == 0
    warnings = [record.getMessage() for record in caplog.records if "metrics.jsonl" in record.getMessage()]
    assert warnings == [
        f"{output / 'metrics.jsonl'}: no space left on device; metrics are no longer written there, training goes on"
    ]
    assert (output / "epoch_2.pt").is_file() and load_checkpoint(output / "latest.pt")
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))  # the other log went on
