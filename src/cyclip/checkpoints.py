"""Checkpoint files: atomic writes, and reads that can never run code stored in the file.

A crash or a full disk mid-save must not destroy the last good checkpoint, so `save_checkpoint` writes
through `cyclip.files.write_atomically`: the target is replaced only once the new file is complete on disk.
`read_checkpoint` uses `torch.load(weights_only=True)`: a pickle that would need to import or call anything
beyond tensors and plain containers is refused before any of it runs.
"""

from __future__ import annotations

import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from cyclip.files import write_atomically
from cyclip.provenance import provenance

__all__ = ["read_checkpoint", "replace_with_link", "save_checkpoint"]


def save_checkpoint(payload: dict, path: str | os.PathLike) -> None:
    """Write `payload` with `torch.save` so that `path` holds either the old file or the complete new one.

    A `provenance` entry (versions, git commit, command line: strings, readable weights-only) is added unless
    the payload has one.
    """
    payload = {**payload, "provenance": payload.get("provenance") or provenance()}
    write_atomically(path, lambda file: torch.save(payload, file))


def replace_with_link(source: Path, target: Path) -> None:
    """Point `target` at `source`'s bytes atomically: a hard link when possible, else a copy.

    `latest.pt` is kept this way: one more name for the newest epoch checkpoint costs no disk space, and a
    crash leaves either the previous `latest.pt` or the new one, never a partial file.
    """
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with `weights_only=True`; refuse (ValueError) anything that would need more."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found; pass the path of an existing .pt file")
    if _is_torchscript_archive(path):
        raise ValueError(
            f"{path}: refused to load: a TorchScript archive (the format of OpenAI's original CLIP releases), which "
            "torch loads only together with the code it holds; take the same weights as a state dict from open_clip "
            "(e.g. `hf download timm/vit_base_patch32_clip_224.openai open_clip_pytorch_model.bin` for ViT-B/32), or "
            "convert a file you trust once with torch.jit.load(...).state_dict() and torch.save"
        )
    try:
        checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        raise ValueError(
            f"{path}: refused to load: it is not a weights-only checkpoint ({_unpickling_reason(error)}) and "
            "loading it could execute arbitrary code stored in the file; cyclip only reads weights-only "
            "checkpoints (tensors, numbers, strings, lists, dicts), so re-save the weights as a plain state dict "
            "or .safetensors file"
        ) from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError) as error:  # torch's readers on junk bytes
        if isinstance(error, RuntimeError) and not any(s in str(error) for s in ("PytorchStreamReader", "magic")):
            raise
        raise ValueError(
            f"{path}: not a readable PyTorch checkpoint (truncated or corrupt); re-save it or pick another file"
        ) from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: holds a {type(checkpoint).__name__}, expected a dict of weights")
    return checkpoint


def _is_torchscript_archive(path: Path) -> bool:
    """Whether `path` is a zip archive holding TorchScript code (a `constants.pkl` entry), as torch.jit.save writes."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def _unpickling_reason(error: pickle.UnpicklingError) -> str:
    """The one line of torch's long weights-only message that says what was blocked."""
    for line in str(error).splitlines():
        if "nsupported" in line:
            reason = line.strip().removeprefix("WeightsUnpickler error:").strip()
            return reason.split(" Please use")[0].rstrip(".")
    return "it contains objects other than tensors and plain containers"
