"""Checkpoint files: atomic replacement, and refusal of pickles that would run code."""

import errno
import json
import os
import pickle
import random
import shlex
import tempfile
from pathlib import Path

import pytest
import safetensors.torch
import torch

from cyclip.checkpoints import TRAINING_STATE_KEYS, read_checkpoint, require_training_state, save_checkpoint
from cyclip.errors import OutputWriteError
from cyclip.export import export_open_clip
from cyclip.models import BUNDLED_CONFIG_DIR, create_model, load_checkpoint


def _payload(value: float) -> dict:
    return {
        "model": {"w": torch.full((3, 2), value), "steps": torch.tensor(7)},
        "model_name": "cyclip-vit-tiny",
        "step": 7,
        "epoch": 1,
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        "config": {"lr": 1e-3, "name": "run", "tags": ["a", "b"], "resume": None},
    }


def test_round_trip_creates_folders_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "run" / "sub" / "epoch_1.pt"
    payload = _payload(1.5)
    save_checkpoint(payload, path)
    loaded = read_checkpoint(path)
    assert torch.equal(loaded["model"]["w"], payload["model"]["w"])
    assert torch.equal(loaded["rng"]["torch"], payload["rng"]["torch"])
    assert loaded["rng"]["python"] == payload["rng"]["python"]
    assert {k: loaded[k] for k in ("model_name", "step", "epoch", "config")} == {
        k: payload[k] for k in ("model_name", "step", "epoch", "config")
    }
    assert os.listdir(path.parent) == [path.name]


def _disk_full() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _half_written_then(failure):
    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial checkpoint bytes")
        failure()

    return save


def _torch_full_disk() -> None:
    """What torch.save really raises on a full disk: its zip writer's RuntimeError, during the OSError."""
    try:
        raise _disk_full()
    except OSError:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598") from None


def _plain_full_disk() -> None:
    raise _disk_full()


@pytest.mark.parametrize("failure", [_torch_full_disk, _plain_full_disk], ids=["torch-runtime-error", "oserror"])
def test_full_disk_keeps_the_previous_checkpoint_and_says_so(tmp_path, monkeypatch, failure):
    previous = tmp_path / "epoch_1.pt"
    save_checkpoint(_payload(1.0), previous)
    os.link(previous, tmp_path / "latest.pt")
    target = tmp_path / "epoch_2.pt"

    monkeypatch.setattr(torch, "save", _half_written_then(failure))
    with pytest.raises(OutputWriteError) as error:
        save_checkpoint(_payload(2.0), target)
    monkeypatch.undo()

    assert str(error.value) == (
        f"no space left on device while writing {target}; the previous checkpoint {tmp_path / 'latest.pt'} is "
        "intact and no partial file is left (free some space, or write elsewhere)"
    )
    assert sorted(os.listdir(tmp_path)) == ["epoch_1.pt", "latest.pt"]  # the temporary file is gone
    assert torch.equal(read_checkpoint(tmp_path / "latest.pt")["model"]["w"], torch.full((3, 2), 1.0))


def test_failed_overwrite_keeps_the_file_it_would_replace(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(_payload(1.0), path)
    monkeypatch.setattr(torch, "save", _half_written_then(_plain_full_disk))
    with pytest.raises(OutputWriteError, match=f"the previous checkpoint {path} is intact"):
        save_checkpoint(_payload(2.0), path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.full((3, 2), 1.0))
    assert os.listdir(tmp_path) == ["latest.pt"]


def test_first_save_failing_says_no_checkpoint_exists_and_other_errors_pass_through(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "save", _half_written_then(_plain_full_disk))
    with pytest.raises(OutputWriteError, match=f"no earlier checkpoint is in {tmp_path}"):
        save_checkpoint(_payload(2.0), tmp_path / "epoch_1.pt")

    def bug():
        raise RuntimeError("a bug, not the disk")

    monkeypatch.setattr(torch, "save", _half_written_then(bug))
    with pytest.raises(RuntimeError, match="a bug, not the disk"):
        save_checkpoint(_payload(2.0), tmp_path / "epoch_1.pt")
    assert os.listdir(tmp_path) == []


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OutputWriteError) as error:
        save_checkpoint(_payload(1.0), tmp_path / "epoch_1.pt")
    assert str(error.value) == (
        f"permission denied while writing {tmp_path / 'epoch_1.pt'}; no earlier checkpoint is in {tmp_path} and no "
        "partial file is left (check that the folder is writable, or write elsewhere)"
    )


class _ShellAttack:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


class _FunctionAttack:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("attack", [_ShellAttack, _FunctionAttack])
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pickle_is_refused_without_running(tmp_path, attack, writer):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    payload = {"model": {"w": torch.ones(2)}, "model_name": "x", "extra": attack(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)

    with pytest.raises(ValueError, match="arbitrary code") as error:
        read_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()

    # The file really is live: an unsafe load runs the payload (proves the refusal above mattered).
    with open(path, "rb") as f:
        if writer == "torch.save":
            torch.load(f, weights_only=False)
        else:
            pickle.load(f)
    assert marker.exists()


def _load_with(loader: str, path: Path, tmp_path: Path) -> None:
    """Every way cyclip reads weights, pointed at `path` (or at a model folder holding it)."""
    if loader == "read_checkpoint":
        read_checkpoint(path)
    elif loader == "load_checkpoint":
        load_checkpoint(path)
    elif loader == "create_model(pretrained=file)":
        create_model("cyclip-vit-tiny", pretrained=path)
    elif loader == "export_open_clip":
        export_open_clip(path, tmp_path / "export")
    else:  # a local-dir folder whose weights file is the pickle
        config = {"model_cfg": json.loads((BUNDLED_CONFIG_DIR / "cyclip-vit-tiny.json").read_text())}
        (path.parent / "open_clip_config.json").write_text(json.dumps(config))
        if loader == "create_model(pretrained=folder)":
            create_model("cyclip-vit-tiny", pretrained=path.parent)
        else:
            create_model(f"local-dir:{path.parent}")


@pytest.mark.parametrize("attack", [_ShellAttack, _FunctionAttack])
@pytest.mark.parametrize(
    "loader",
    [
        "read_checkpoint",
        "load_checkpoint",
        "create_model(pretrained=file)",
        "export_open_clip",
        "create_model(pretrained=folder)",
        "create_model(local-dir:folder)",
    ],
)
def test_every_loader_refuses_code_without_running_it(tmp_path, attack, loader):
    marker, folder = tmp_path / "pwned", tmp_path / "model"
    folder.mkdir()
    path = folder / "pytorch_model.bin"  # a weights name open_clip's local-dir: folders use
    torch.save({"model": {"w": torch.ones(2)}, "model_name": "cyclip-vit-tiny", "extra": attack(marker)}, path)

    with pytest.raises(ValueError) as error:
        _load_with(loader, path, tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path}: refused to load") and "arbitrary code" in message and "\n" not in message
    assert not marker.exists()
    assert not (tmp_path / "export").exists()

    torch.load(path, weights_only=False)  # the file really is live: an unsafe load runs the payload
    assert marker.exists()


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        read_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize(
    ("damage", "looks_like"),
    [
        ("truncated", "a truncated or damaged PyTorch checkpoint, or another ZIP archive"),
        ("text", "a text file"),
        ("empty", "an empty file"),
        ("random", "unrecognised bytes"),
        ("cut-pickle", "a truncated or damaged pickle"),
    ],
)
def test_file_that_is_no_checkpoint_is_told_apart_from_code(tmp_path, damage, looks_like):
    path = tmp_path / "damaged.pt"
    save_checkpoint(_payload(1.0), path)
    content = {
        "truncated": path.read_bytes()[:200],
        "text": b"this is not a checkpoint\nbut some notes.\n",
        "empty": b"",
        "random": random.Random(0).randbytes(5000),
        "cut-pickle": pickle.dumps({"w": list(range(1000))})[:300],
    }[damage]
    path.write_bytes(content)
    with pytest.raises(ValueError) as error:
        read_checkpoint(path)
    assert str(error.value) == (
        f"{path}: not a checkpoint (corrupt or another format: {looks_like}); pass a file written by `cyclip train` "
        "(e.g. OUTPUT/latest.pt), torch.save or safetensors"
    )


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes_are_never_called_code(tmp_path, seed):
    path = tmp_path / "noise.pt"
    path.write_bytes(random.Random(seed).randbytes(random.Random(seed).randint(1, 20000)))
    with pytest.raises(ValueError, match="not a checkpoint \\(corrupt or another format"):
        read_checkpoint(path)


def _safetensors_file(path: Path) -> Path:
    safetensors.torch.save_file({"w": torch.ones(4, 4), "b": torch.zeros(4)}, path, metadata={"model_name": "x"})
    return path


@pytest.mark.parametrize("damage", ["truncated", "header", "random"])
@pytest.mark.parametrize("loader", ["read_checkpoint", "load_checkpoint", "create_model(pretrained=file)", "export"])
def test_damaged_safetensors_is_one_line_everywhere(tmp_path, damage, loader):
    path = _safetensors_file(tmp_path / "model.safetensors")
    good = path.read_bytes()
    path.write_bytes(
        {"truncated": good[: len(good) // 2], "header": b"\xff" * 8 + good[8:], "random": os.urandom(2000)}[damage]
    )
    with pytest.raises(ValueError) as error:
        if loader == "export":
            export_open_clip(path, tmp_path / "export")
        else:
            _load_with(loader, path, tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path}: not a readable .safetensors file (") and "\n" not in message
    assert message.endswith("truncated or corrupt; re-export it or pick another file")


def test_safetensors_named_otherwise_is_read_as_safetensors(tmp_path):
    path = _safetensors_file(tmp_path / "model.pt")
    assert torch.equal(read_checkpoint(path)["w"], torch.ones(4, 4))


@pytest.mark.parametrize(
    ("checkpoint", "kind"),
    [
        ({"visual.w": torch.ones(1), "logit_scale": torch.ones(())}, "weights only"),
        ({"model": {"w": torch.ones(1)}, "model_name": "cyclip-rn-tiny"}, "weights only"),
        ({"state_dict": {}, "optimizer": {}, "epoch": 3}, "no cyclip training state"),
    ],
    ids=["plain-state-dict", "model-without-optimizer", "open_clip-checkpoint"],
)
def test_resume_needs_training_state(tmp_path, checkpoint, kind):
    path = tmp_path / "weights.pt"
    missing = [key for key in TRAINING_STATE_KEYS if key not in checkpoint]
    with pytest.raises(ValueError) as error:
        require_training_state(checkpoint, path)
    assert str(error.value) == (
        f"{path}: holds {kind}, no training state to resume (no {', '.join(missing)}); to start a new run from "
        f"these weights pass --pretrained {path} instead of --resume"
    )
    require_training_state({key: None for key in TRAINING_STATE_KEYS}, path)  # a full training checkpoint passes


def test_torchscript_archive_is_refused_in_one_line(tmp_path, capsys):
    """OpenAI's original CLIP files are TorchScript archives: refused with the way to a state dict, not a traceback."""
    from cyclip.cli import main

    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "ViT-B-32.pt")
    with pytest.raises(ValueError, match="a TorchScript archive"):
        read_checkpoint(tmp_path / "ViT-B-32.pt")
    argv = ["train", "--train-data", "x.csv", "--pretrained", str(tmp_path / "ViT-B-32.pt"), "--output", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "TorchScript archive" in error and "hf download" in error
