"""Every command against the bad inputs a new user brings: one line naming the input, exit code 2, no traceback.

The table runs the real `python -m cyclip` in a subprocess, so what is checked is exactly what a user's
terminal shows (stderr, with progress bars reduced to what stays visible). The failures that need the file
system to misbehave (a full disk, a folder without write permission) patch it and call the CLI in-process.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

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
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_exit_code_2(files, arguments, expected):
    result = run_cli(*arguments, cwd=files)
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr, result.stderr
    assert result.returncode == 2, result.stderr
    lines = visible_lines(result.stderr)
    errors = [line for line in lines if line.startswith("cyclip: error")]
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
        f"cyclip: error: permission denied while writing {target / 'zeroshot.json'}; nothing was written and no "
        "partial file is left (check that the folder is writable, or write elsewhere)"
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
