"""Checkpoint files: atomic writes, and reads that can never run code stored in the file.

A crash or a full disk mid-save must not destroy the last good checkpoint, so `save_checkpoint` writes
through `cyclip.files.write_atomically`: the target is replaced only once the new file is complete on disk,
and a write the file system refuses is one `OutputWriteError` line naming the checkpoint that is still intact.
`read_checkpoint` uses `torch.load(weights_only=True)` (or safetensors): a pickle that would need to import or
call anything beyond tensors and plain containers is refused before any of it runs, and a file that is no
checkpoint at all (damaged, or another format) is told apart from it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import pickletools
import shutil
import struct
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import torch

from cyclip.errors import OutputWriteError
from cyclip.files import refused_write, write_atomically, write_failure
from cyclip.provenance import provenance

__all__ = [
    "TRAINING_STATE_KEYS",
    "newest_checkpoint",
    "read_checkpoint",
    "read_safetensors",
    "refuse_torchscript",
    "replace_with_link",
    "require_training_state",
    "save_checkpoint",
]

# What `cyclip train` saves besides the weights, and `--resume` needs back.
TRAINING_STATE_KEYS = ("model", "model_name", "optimizer", "scheduler", "scaler", "step", "epoch", "rng")
# Pickle opcodes that import or call something: a pickle using them is more than plain data.
_CODE_OPCODES = frozenset(
    ("GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4")
)


def save_checkpoint(payload: dict, path: str | os.PathLike) -> None:
    """Write `payload` with `torch.save` so that `path` holds either the old file or the complete new one.

    A `provenance` entry (versions, git commit, command line: strings, readable weights-only) is added unless
    the payload has one. A write the file system refuses (ENOSPC, EACCES, EROFS, ...) leaves no temporary file
    and raises OutputWriteError naming the newest checkpoint that is still intact.
    """
    path = Path(path)
    payload = {**payload, "provenance": payload.get("provenance") or provenance()}
    try:
        write_atomically(path, lambda file: torch.save(payload, file))
    except OutputWriteError as error:
        if error.refused is None:
            raise
        raise OutputWriteError(write_failure(path, error.refused, _intact(path)), refused=error.refused) from None


def _intact(path: Path) -> str:
    """What a failed save of `path` left as the newest checkpoint, in words."""
    previous = _previous_checkpoint(path)
    return f"the previous checkpoint {previous} is intact" if previous else f"no earlier checkpoint is in {path.parent}"


def _previous_checkpoint(path: Path) -> Path | None:
    """The file a failed save left as the newest checkpoint: the target itself, else the newest beside it."""
    return path if path.is_file() else newest_checkpoint(path.parent)


def newest_checkpoint(folder: Path) -> Path | None:
    """The newest .pt file in `folder` (`latest.pt` on a tie, since it names the same file as the epoch it
    links to), for messages that must name a checkpoint that really exists; None when there is none."""
    with contextlib.suppress(OSError):
        candidates = [p for p in folder.glob("*.pt") if p.is_file()]
        if candidates:
            return max(candidates, key=lambda p: (p.stat().st_mtime, p.name == "latest.pt"))
    return None


def replace_with_link(source: Path, target: Path) -> None:
    """Point `target` at `source`'s bytes atomically: a hard link when possible, else a copy.

    `latest.pt` is kept this way: one more name for the newest epoch checkpoint costs no disk space, and a
    crash leaves either the previous `latest.pt` or the new one, never a partial file.
    """
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        refused = refused_write(error)
        if refused is None:
            raise
        kept = f"{source} is complete" + (f" and the previous {target} is intact" if target.is_file() else "")
        raise OutputWriteError(write_failure(target, refused, kept), refused=refused) from None


def read_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict with `weights_only=True` (a .safetensors file with safetensors); refuse
    (ValueError) a pickle that would need more, and a file that is no checkpoint at all."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found; pass the path of an existing .pt file")
    if _is_safetensors(path):
        return read_safetensors(path, device)[0]
    refuse_torchscript(path)
    try:
        with warnings.catch_warnings():  # torch's note on a pickle protocol it does not expect: the error says more
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            checkpoint = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(error)
        if reason.startswith("Unsupported operand") and not _pickle_needs_code(path):
            raise ValueError(_not_a_checkpoint(path)) from None
        raise ValueError(
            f"{path}: refused to load: it is not a weights-only checkpoint ({reason}) and "
            "loading it could execute arbitrary code stored in the file; cyclip only reads weights-only "
            "checkpoints (tensors, numbers, strings, lists, dicts), so re-save the weights as a plain state dict "
            "or .safetensors file"
        ) from None
    except (RuntimeError, EOFError, KeyError, IndexError, ValueError, struct.error) as error:  # torch on junk bytes
        if isinstance(error, RuntimeError) and not any(s in str(error) for s in ("PytorchStreamReader", "magic")):
            raise
        raise ValueError(_not_a_checkpoint(path)) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path}: holds a {type(checkpoint).__name__}, expected a dict of weights")
    return checkpoint


def read_safetensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[dict, dict[str, str]]:
    """The tensors and the metadata of a .safetensors file; a damaged file is one ValueError line."""
    try:
        with safetensors.safe_open(path, framework="pt", device=str(device)) as file:
            return {key: file.get_tensor(key) for key in file.keys()}, dict(file.metadata() or {})
    except safetensors.SafetensorError as error:
        raise ValueError(
            f"{path}: not a readable .safetensors file ({' '.join(str(error).split())}): truncated or corrupt; "
            "re-export it or pick another file"
        ) from None


def require_training_state(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Refuse to resume from a file without the optimizer, schedule and step that `cyclip train` saves."""
    missing = [key for key in TRAINING_STATE_KEYS if key not in checkpoint]
    if missing:
        kind = "weights only" if "optimizer" not in checkpoint else "no cyclip training state"
        raise ValueError(
            f"{path}: holds {kind}, no training state to resume (no {', '.join(missing)}); to start a new run "
            f"from these weights pass --pretrained {path} instead of --resume"
        )


def _is_safetensors(path: Path) -> bool:
    """A .safetensors name, or safetensors' layout: an 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as file:
        head = file.read(9)
    size = path.stat().st_size
    return len(head) == 9 and head[8:9] == b"{" and 0 < struct.unpack("<Q", head[:8])[0] <= size - 8


def _pickle_needs_code(path: Path) -> bool:
    """Whether the file holds a complete pickle (as Python 3 writes them) that imports or calls something.

    Read statically with pickletools, never executed. torch's legacy format is several pickles in a row, the
    object last; random bytes fail to parse within a few opcodes.
    """
    with open(path, "rb") as file:
        if file.read(1) != b"\x80":  # PROTO: every pickle written by Python 3 starts with it
            return False
        file.seek(0)
        while True:
            try:
                opcodes = {opcode.name for opcode, _, _ in pickletools.genops(file)}
            except Exception:  # whatever the parser meets in arbitrary bytes: no (further) complete pickle
                return False
            if opcodes & _CODE_OPCODES:
                return True


def _not_a_checkpoint(path: Path) -> str:
    return (
        f"{path}: not a checkpoint (corrupt or another format: {_looks_like(path)}); pass a file written by "
        "`cyclip train` (e.g. OUTPUT/latest.pt), torch.save or safetensors"
    )


def _looks_like(path: Path) -> str:
    """A few words on what the file seems to hold instead, for the message."""
    with open(path, "rb") as file:
        head = file.read(4096)
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04"):  # torch.save's ZIP container
        return "a truncated or damaged PyTorch checkpoint, or another ZIP archive"
    if head[:1] == b"\x80":
        return "a truncated or damaged pickle"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(head) - 3:  # not merely a character cut at the end of what was read
            return "unrecognised bytes"
    return "a text file" if b"\x00" not in head else "unrecognised bytes"


def refuse_torchscript(path: Path) -> None:
    """Refuse (ValueError) a TorchScript archive, which torch loads only together with the code it holds;
    cheap (the zip directory alone), so start-up checks can run it before anything is built."""
    if _is_torchscript_archive(path):
        raise ValueError(
            f"{path}: refused to load: a TorchScript archive (the format of OpenAI's original CLIP releases), which "
            "torch loads only together with the code it holds; take the same weights as a state dict from open_clip "
            "(e.g. `hf download timm/vit_base_patch32_clip_224.openai open_clip_pytorch_model.bin` for ViT-B/32), or "
            "convert a file you trust once with torch.jit.load(...).state_dict() and torch.save"
        )


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
