"""Model construction through open_clip, the bundled small configs, and loading weights from local files.

Architectures, transforms and the tokenizer all come from open_clip so that our checkpoints stay loadable by
it. Weights are only ever read from local files (never a hub tag), always with `weights_only=True`.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import open_clip
import safetensors.torch
import torch
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed

from cyclip.checkpoints import read_checkpoint

__all__ = ["BUNDLED_CONFIG_DIR", "available_models", "create_model", "load_checkpoint"]

BUNDLED_CONFIG_DIR = Path(__file__).parent / "model_configs"

# Entries of OpenAI's released state dicts that are ints, not weights (open_clip's builder drops them too).
_OPENAI_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")
_LOCAL_DIR_PREFIX = "local-dir:"


def _register_bundled_configs() -> None:
    """Add our JSON configs to open_clip's registry once, however often this runs."""
    bundled = {p.stem for p in BUNDLED_CONFIG_DIR.glob("*.json")}
    if not bundled <= set(open_clip.list_models()):
        open_clip.add_model_config(BUNDLED_CONFIG_DIR)


_register_bundled_configs()


def available_models() -> list[str]:
    """Every architecture name `create_model` accepts: open_clip's built-ins plus the bundled tiny ones."""
    return open_clip.list_models()


def create_model(
    name: str, pretrained: str | os.PathLike | None = None, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Callable, Callable, Callable]:
    """Build `(model, preprocess_train, preprocess_val, tokenizer)` for an open_clip architecture.

    `pretrained` is a local file: an open_clip checkpoint, an open_clip or OpenAI state dict, a .safetensors
    file or a cyclip training checkpoint. `name` may also be `local-dir:<folder>` (open_clip's export format).
    """
    name = _check_model_name(name)
    if pretrained is not None and not Path(pretrained).is_file():
        raise FileNotFoundError(
            f"pretrained weights {str(pretrained)!r} not found: cyclip never downloads weights, "
            "pass the path of a local checkpoint, state dict or .safetensors file"
        )
    with _silence_random_init_warning():
        model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(name, device=device)
    if pretrained is not None:
        state_dict, trained_as = _read_weights(Path(pretrained))
        state_dict = _to_open_clip_layout(state_dict, model)
        _load_exactly(model, state_dict, name, source=str(pretrained), trained_as=trained_as)
    return model, preprocess_train, preprocess_val, open_clip.get_tokenizer(name)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Callable, Callable]:
    """Rebuild a trained model from a cyclip training checkpoint: `(model in eval mode, preprocess, tokenizer)`."""
    checkpoint = read_checkpoint(path, device="cpu")
    if not isinstance(checkpoint.get("model"), Mapping) or not isinstance(checkpoint.get("model_name"), str):
        raise ValueError(
            f"{path}: not a cyclip training checkpoint (needs keys 'model' and 'model_name'); "
            "load other weights with create_model(name, pretrained=path)"
        )
    name = checkpoint["model_name"]
    model, _, preprocess_val, tokenizer = create_model(name, device=device)
    _load_exactly(model, _strip_module_prefix(checkpoint["model"]), name, source=str(path))
    return model.eval(), preprocess_val, tokenizer


# --- helpers -----------------------------------------------------------------------------------------


def _check_model_name(name: str) -> str:
    """The name open_clip knows (`ViT-B/32` -> `ViT-B-32`); fail with suggestions, refuse names that download."""
    if name.startswith(_LOCAL_DIR_PREFIX):
        return name  # open_clip reads the folder's config and weights and reports its own errors
    if name.startswith("hf-hub:"):
        raise ValueError(
            f"model {name!r}: cyclip never downloads models; export it to a folder and pass 'local-dir:<folder>'"
        )
    models = available_models()
    if name.replace("/", "-") in models:
        return name.replace("/", "-")
    close = difflib.get_close_matches(name, models, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
    raise ValueError(f"unknown model {name!r}; {hint}available models: {', '.join(models)}")


@contextlib.contextmanager
def _silence_random_init_warning() -> Iterator[None]:
    """open_clip warns 'Model initialized randomly' because we load weights ourselves, after it returns."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded for model")

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def _read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str | None]:
    """The state dict inside any accepted file format, and the model name it was trained as (if recorded)."""
    if path.suffix == ".safetensors":
        try:
            return _strip_module_prefix(safetensors.torch.load_file(path, device="cpu")), None
        except safetensors.SafetensorError as error:
            raise ValueError(f"{path}: not a readable .safetensors file ({error}); re-export it") from error
    checkpoint = read_checkpoint(path, device="cpu")
    trained_as = None
    if isinstance(checkpoint.get("state_dict"), Mapping):  # open_clip training checkpoint
        state_dict = checkpoint["state_dict"]
    elif isinstance(checkpoint.get("model"), Mapping):  # cyclip training checkpoint
        state_dict, trained_as = checkpoint["model"], checkpoint.get("model_name")
    else:  # plain state dict (open_clip or OpenAI layout)
        state_dict = checkpoint
    state_dict = {k: v for k, v in state_dict.items() if k not in _OPENAI_NON_WEIGHT_KEYS}
    return _strip_module_prefix(state_dict), trained_as


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo the `module.` prefix that (Distributed)DataParallel adds to every key."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k.removeprefix("module."): v for k, v in state_dict.items()}
    return dict(state_dict)


def _to_open_clip_layout(state_dict: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Apply open_clip's own key/shape conversions, as `open_clip.load_checkpoint` does."""
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)  # OpenAI text layout -> CustomTextCLIP
    scale = state_dict.get("logit_scale")
    if isinstance(scale, torch.Tensor) and scale.ndim != model.logit_scale.ndim:
        state_dict["logit_scale"] = scale.reshape(model.logit_scale.shape)
    resize_pos_embed(state_dict, model)
    if _text_width(state_dict) == _text_width(model.state_dict()):  # open_clip asserts on a width change
        resize_text_pos_embed(state_dict, model)
    return state_dict


def _text_width(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    for key in ("positional_embedding", "text.positional_embedding"):
        if isinstance(state_dict.get(key), torch.Tensor) and state_dict[key].ndim == 2:
            return state_dict[key].shape[1]
    return None


def _load_exactly(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    name: str,
    source: str,
    trained_as: str | None = None,
) -> None:
    """Load every weight or none: a mismatch is one ValueError listing the differing keys and shapes."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [k for k in state_dict if k in expected and _shape(state_dict[k]) != _shape(expected[k])]
    if missing or unexpected or reshaped:
        problems = [
            _describe("missing", missing, lambda k: f"{k} {_shape(expected[k])}"),
            _describe("unexpected", unexpected, lambda k: f"{k} {_shape(state_dict[k])}"),
            _describe(
                "shape mismatches", reshaped, lambda k: f"{k} {_shape(state_dict[k])} vs model {_shape(expected[k])}"
            ),
        ]
        hint = f"it was trained as {trained_as!r}" if trained_as and trained_as != name else "pass the matching model"
        raise ValueError(f"{source}: weights do not fit model {name!r} ({'; '.join(p for p in problems if p)}); {hint}")
    model.load_state_dict(state_dict, strict=True)


def _describe(kind: str, keys: list[str], show: Callable[[str], str], limit: int = 5) -> str:
    if not keys:
        return ""
    more = f", ... {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {kind}: {', '.join(show(k) for k in keys[:limit])}{more}"


def _shape(value: object) -> list[int] | str:
    return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
