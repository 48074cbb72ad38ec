"""Export a cyclip training checkpoint as an open_clip `local-dir:` folder, for OpenCLIP and the tools built on it.

The folder holds `open_clip_config.json` (the architecture's full `model_cfg` and the `preprocess_cfg` the model
was trained with), `open_clip_model.safetensors` (the model's weights only: no optimizer state, no pickle, so
loading it can never run code) and a README.md saying how to load it. It is written into a temporary folder beside
the target and renamed into place once complete, so a crash never leaves a folder that looks complete but is not.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import open_clip
import safetensors.torch
import torch

from cyclip.checkpoints import read_checkpoint
from cyclip.files import atomic_path, fsync_path, require_writable_folder, write_text_atomically
from cyclip.models import (
    LOCAL_DIR_PREFIX,
    OPEN_CLIP_CONFIG_NAME,
    OPEN_CLIP_WEIGHTS_NAME,
    model_config,
    model_from_checkpoint,
)

__all__ = ["export_open_clip"]


def export_open_clip(checkpoint: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the model of a cyclip training checkpoint to `output` as an open_clip `local-dir:` folder.

    `open_clip.create_model_and_transforms("local-dir:<output>")` then rebuilds the same model with the same
    preprocessing. An existing non-empty `output` is refused unless `overwrite` is set and it holds a previous
    export. Returns the folder.
    """
    checkpoint, output = Path(checkpoint), Path(output)
    _check_output(output, checkpoint, overwrite)
    payload = read_checkpoint(checkpoint, device="cpu")
    model, _, _, tokenizer = model_from_checkpoint(payload, checkpoint)
    name = payload["model_name"]
    model_cfg = dict(model_config(name))
    bias = getattr(model, "logit_bias", None)
    if bias is not None:  # trained with the sigmoid loss: open_clip builds the head from this key
        model_cfg["init_logit_bias"] = bias.item()
    config = {"model_cfg": model_cfg, "preprocess_cfg": dict(open_clip.get_model_preprocess_cfg(model))}
    tensors = _safetensors_ready(model.state_dict())

    def write(folder: Path) -> None:
        with atomic_path(folder / OPEN_CLIP_WEIGHTS_NAME) as weights:
            safetensors.torch.save_file(tensors, weights, metadata={"format": "pt", "model_name": name})
        write_text_atomically(folder / OPEN_CLIP_CONFIG_NAME, json.dumps(config, indent=2) + "\n")
        write_text_atomically(folder / "README.md", _readme(name, checkpoint, payload, output))
        save_tokenizer = getattr(tokenizer, "save_pretrained", None)
        if save_tokenizer is not None:  # Hugging Face tokenizers: open_clip reads them from the folder itself
            save_tokenizer(str(folder))

    _write_folder_atomically(output, write)
    return output


def _check_output(output: Path, checkpoint: Path, overwrite: bool) -> None:
    """Refuse targets whose replacement could destroy something other than a previous export."""
    if output.exists() and not output.is_dir():
        raise ValueError(f"{output}: exists and is not a folder; pick a folder path for the export")
    require_writable_folder(output.parent, "--output", given=str(output))  # staged beside `output`, then renamed
    if not output.is_dir() or not any(output.iterdir()):
        return
    if not overwrite:
        raise ValueError(
            f"{output}: folder exists and is not empty; pass --overwrite (overwrite=True) to replace a previous "
            "export, or pick another folder"
        )
    if not (output / OPEN_CLIP_CONFIG_NAME).is_file():
        raise ValueError(
            f"{output}: not replaced: it does not hold a previous export (no {OPEN_CLIP_CONFIG_NAME}) and "
            "--overwrite deletes the folder's contents; pick another folder"
        )
    if checkpoint.resolve().is_relative_to(output.resolve()):
        raise ValueError(f"{output}: not replaced: the checkpoint {checkpoint} lies inside it; pick another folder")


def _safetensors_ready(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors, each contiguous on the CPU and owning its memory, as safetensors requires.

    Tied weights (two names for one storage) and views into a larger buffer are copied, so every name is
    saved and loaded on its own, exactly as `load_state_dict(strict=True)` expects.
    """
    seen: set[int] = set()
    tensors = {}
    for key, value in state_dict.items():
        tensor = value.detach().to("cpu")
        storage = tensor.untyped_storage()
        shared = tensor.numel() > 0 and storage.data_ptr() in seen
        partial = storage.nbytes() != tensor.numel() * tensor.element_size()
        if shared or partial or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        if tensor.numel() > 0:
            seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


def _write_folder_atomically(output: Path, write: Callable[[Path], None]) -> None:
    """Run `write(folder)` on a fresh folder beside `output`, then rename it to `output` (replacing it).

    Files written by other libraries (a Hugging Face tokenizer's) are flushed to disk here before the rename.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.{secrets.token_hex(4)}.tmp"
    staging.mkdir()  # honours the umask, unlike tempfile.mkdtemp's 0700
    aside = staging.with_suffix(".old")
    try:
        write(staging)
        for path in staging.iterdir():
            fsync_path(path)
        fsync_path(staging)
        if output.exists():
            os.replace(output, aside)
            try:
                os.replace(staging, output)
            except BaseException:
                os.replace(aside, output)
                raise
            shutil.rmtree(aside)
        else:
            os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_path(output.parent)


def _readme(name: str, checkpoint: Path, payload: Mapping[str, Any], output: Path) -> str:
    trained = ", ".join(f"{key} {payload[key]}" for key in ("epoch", "step") if isinstance(payload.get(key), int))
    folder = f"path/to/{output.name}"
    return f"""# {name.removeprefix(LOCAL_DIR_PREFIX)}, exported by cyclip

Exported from `{checkpoint.name}`{f" ({trained})" if trained else ""} as an OpenCLIP model folder:

- `{OPEN_CLIP_CONFIG_NAME}`: the architecture (`model_cfg`) and the image preprocessing (`preprocess_cfg`);
- `{OPEN_CLIP_WEIGHTS_NAME}`: the weights (safetensors: loading them cannot run code).

With OpenCLIP, or any tool that takes an OpenCLIP model name:

```python
import open_clip

model, _, preprocess = open_clip.create_model_and_transforms("local-dir:{folder}")
tokenizer = open_clip.get_tokenizer("local-dir:{folder}")
```

With cyclip: `cyclip.models.create_model("local-dir:{folder}")` returns the model, both transforms and the
tokenizer; `cyclip train --model local-dir:{folder}` fine-tunes it, and `--pretrained {folder}` loads these
weights into a model named by `--model` (it must be the same architecture).
"""
