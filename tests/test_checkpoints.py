"""Checkpoint files: atomic replacement, and refusal of pickles that would run code."""

import json
import os
import pickle
import random
import shlex
from pathlib import Path

import pytest
import torch

from cyclip.checkpoints import read_checkpoint, save_checkpoint
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


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    save_checkpoint(_payload(1.0), path)

    def half_written_then_fail(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial checkpoint bytes")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_written_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(_payload(2.0), path)
    monkeypatch.undo()

    assert torch.equal(read_checkpoint(path)["model"]["w"], torch.full((3, 2), 1.0))
    assert os.listdir(tmp_path) == ["latest.pt"]


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


@pytest.mark.parametrize("damage", ["truncated", "junk", "empty"])
def test_damaged_file_is_a_clear_error(tmp_path, damage):
    path = tmp_path / "damaged.pt"
    save_checkpoint(_payload(1.0), path)
    content = {"truncated": path.read_bytes()[:200], "junk": b"this is not a checkpoint", "empty": b""}[damage]
    path.write_bytes(content)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_checkpoint(path)


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
