"""Model construction through open_clip, the bundled small configs, and loading weights from local files.

Architectures, transforms and the tokenizer all come from open_clip so that our checkpoints stay loadable by
it. Weights are only ever read from local files (never a hub tag), always with `weights_only=True` or from
.safetensors files, and always through `_load_exactly`, so that a file that does not fit is one clear error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.constants import HF_CONFIG_NAME, HF_SAFE_WEIGHTS_NAME
from open_clip.convert import convert_state_dict
from open_clip.model import (
    CLIPTextCfg,
    CLIPVisionCfg,
    convert_to_custom_text_state_dict,
    resize_pos_embed,
    resize_text_pos_embed,
)
from open_clip.modified_resnet import ModifiedResNet

from cyclip.checkpoints import read_checkpoint, read_safetensors, refuse_torchscript
from cyclip.files import read_json

__all__ = [
    "BUNDLED_CONFIG_DIR",
    "LOCAL_DIR_PREFIX",
    "LoadedModel",
    "OPEN_CLIP_CONFIG_NAME",
    "OPEN_CLIP_WEIGHTS_NAME",
    "available_models",
    "convolutional_image_tower",
    "create_model",
    "load_checkpoint",
    "load_model",
    "lock_towers",
    "model_config",
    "model_from_checkpoint",
    "weights_fingerprint",
]

log = logging.getLogger(__name__)

BUNDLED_CONFIG_DIR = Path(__file__).parent / "model_configs"
LOCAL_DIR_PREFIX = "local-dir:"
OPEN_CLIP_CONFIG_NAME = HF_CONFIG_NAME  # open_clip_config.json: {"model_cfg": ..., "preprocess_cfg": ...}
OPEN_CLIP_WEIGHTS_NAME = HF_SAFE_WEIGHTS_NAME  # open_clip_model.safetensors

# Entries of OpenAI's released state dicts that are ints, not weights (open_clip's builder drops them too).
_OPENAI_NON_WEIGHT_KEYS = ("input_resolution", "context_length", "vocab_size")
# Weight files of a `local-dir:` folder in the order open_clip prefers them (factory._find_checkpoint_in_dir).
_FOLDER_WEIGHT_NAMES = (
    OPEN_CLIP_WEIGHTS_NAME,
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)
_FOLDER_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth")
# Config entries that only steer initialisation, not what loaded weights compute.
_INIT_ONLY_KEYS = ("init_logit_scale", "init_logit_bias", "timm_model_pretrained", "hf_model_pretrained")


def _register_bundled_configs() -> None:
    """Add our JSON configs to open_clip's registry once, however often this runs."""
    bundled = {p.stem for p in BUNDLED_CONFIG_DIR.glob("*.json")}
    if not bundled <= set(open_clip.list_models()):
        open_clip.add_model_config(BUNDLED_CONFIG_DIR)


_register_bundled_configs()


def available_models() -> list[str]:
    """Every architecture name `create_model` accepts: open_clip's built-ins plus the bundled tiny ones."""
    return open_clip.list_models()


def model_config(name: str) -> dict[str, Any]:
    """The full open_clip config (`model_cfg`) of an architecture name: bundled, built-in or `local-dir:<folder>`."""
    return open_clip.get_model_config(_check_model_name(name))


# SigLIP's initial temperature and bias (Zhai et al., 2023): t = exp(logit_scale) = 10, b = -10.
SIGMOID_HEAD = {"init_logit_scale": math.log(10.0), "init_logit_bias": -10.0}


def create_model(
    name: str,
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    sigmoid_head: bool = False,
) -> tuple[torch.nn.Module, Callable, Callable, Callable]:
    """Build `(model, preprocess_train, preprocess_val, tokenizer)` for an open_clip architecture.

    `pretrained` is a local file: an open_clip checkpoint, an open_clip or OpenAI state dict, a .safetensors
    file or a cyclip training checkpoint; or a folder in open_clip's `local-dir:` layout (what `cyclip export`
    writes), whose weights are loaded and whose preprocessing is used. `name` may also be `local-dir:<folder>`:
    the architecture, preprocessing and (unless `pretrained` is given) the weights all come from that folder.
    `sigmoid_head` adds SigLIP's learnable bias and starts the scale and bias at SigLIP's t = 10, b = -10.
    """
    name = _check_model_name(name)
    folder_config: dict[str, Any] | None = None
    weights: Path | None
    if pretrained is not None:
        if not Path(pretrained).exists():
            _refuse_pretrained_tag(name, str(pretrained))
        weights, folder_config = _resolve_pretrained(Path(pretrained))
    else:
        weights = _weights_in_folder(_local_dir(name)) if name.startswith(LOCAL_DIR_PREFIX) else None
        if name.startswith(LOCAL_DIR_PREFIX) and weights is None:
            log.warning("%s: no weights file in the folder; the model is initialised randomly", name)
    state_dict, trained_as = _read_weights(weights) if weights is not None else (None, None)  # refusals come first
    preprocess = (folder_config or {}).get("preprocess_cfg") or {}
    model, preprocess_train, preprocess_val = _build_with_weights(
        name,
        device,
        preprocess,
        state_dict,
        source=str(weights),
        trained_as=trained_as,
        head=SIGMOID_HEAD if sigmoid_head else None,
    )
    if folder_config is not None:
        _check_same_architecture(folder_config.get("model_cfg"), name, source=str(pretrained))
    return model, preprocess_train, preprocess_val, open_clip.get_tokenizer(name)


def lock_towers(
    model: torch.nn.Module,
    *,
    image: bool = False,
    image_unlocked_groups: int = 0,
    image_freeze_bn_stats: bool = False,
    text: bool = False,
    text_unlocked_layers: int = 0,
) -> None:
    """Freeze the image and/or text tower as OpenCLIP's --lock-image / --lock-text do (LiT), with open_clip's own
    `lock_image_tower` / `lock_text_tower`: their parameters stop requiring gradients (so the optimizer leaves them
    out), except the last `*_unlocked_*` layer groups; `image_freeze_bn_stats` also stops the image tower's
    BatchNorm layers from updating their running statistics."""
    towers: Any = model  # open_clip's CLIP and CustomTextCLIP both have the two lock methods
    if image:
        if image_unlocked_groups and isinstance(getattr(model, "visual", None), ModifiedResNet):
            raise ValueError(
                f"--lock-image-unlocked-groups {image_unlocked_groups}: open_clip can only lock a ResNet image tower "
                "whole; drop --lock-image-unlocked-groups, or use a ViT"
            )
        if image_freeze_bn_stats and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
            log.warning("--lock-image-freeze-bn-stats: the image tower has no BatchNorm layers; nothing to freeze")
        towers.lock_image_tower(unlocked_groups=image_unlocked_groups, freeze_bn_stats=image_freeze_bn_stats)
    if text:
        towers.lock_text_tower(unlocked_layers=text_unlocked_layers)
    if image or text:
        frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log.info("locked towers: %d of %d parameters frozen, %d trained", frozen, total, total - frozen)


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", model_name: str | None = None
) -> tuple[torch.nn.Module, Callable, Callable]:
    """`(model in eval mode, preprocess, tokenizer)` of anything `load_model` reads: a cyclip checkpoint, an
    exported folder, or (with `model_name`) an open_clip / OpenAI weights file."""
    loaded = load_model(path, model_name, device)
    return loaded.model, loaded.preprocess, loaded.tokenizer


@dataclasses.dataclass
class LoadedModel:
    """A model ready for inference, with what is needed to use it and to tell it apart from other models."""

    model: torch.nn.Module  # in eval mode
    preprocess: Callable  # PIL image -> tensor, the model's own inference transform
    tokenizer: Callable
    name: str  # the architecture: an open_clip name or `local-dir:<folder>`
    source: str  # the file or folder the weights came from

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @functools.cached_property
    def fingerprint(self) -> str:
        """`weights_fingerprint` of the model, computed once."""
        return weights_fingerprint(self.model)


def load_model(
    source: str | os.PathLike, model_name: str | None = None, device: str | torch.device = "cpu"
) -> LoadedModel:
    """Load any model cyclip can read, for evaluation and inference.

    `source` is a cyclip training checkpoint, a folder in open_clip's `local-dir:` layout (what `cyclip export`
    writes), or an open_clip checkpoint, state dict, OpenAI state dict or .safetensors file. Files that do not
    record their architecture need `model_name` (an open_clip name such as ViT-B-32); one that records it is
    refused under another name, since same-shaped weights of another architecture would load silently.
    """
    path = Path(source)
    if path.is_dir():
        name = _check_model_name(model_name or f"{LOCAL_DIR_PREFIX}{path}")
        model, _, preprocess, tokenizer = create_model(name, pretrained=path, device=device)
    elif path.is_file():
        state_dict, trained_as = _read_weights(path)
        name = _architecture_of_file(path, model_name, trained_as)
        model, _, preprocess = _build_with_weights(name, device, {}, state_dict, str(path), trained_as)
        tokenizer = open_clip.get_tokenizer(name)
    else:
        raise FileNotFoundError(
            f"{path}: model not found; pass a cyclip checkpoint (.pt), a folder written by `cyclip export`, or an "
            "open_clip / OpenAI weights file (.pt, .bin, .safetensors) with --model NAME"
        )
    return LoadedModel(model.eval(), preprocess, tokenizer, name, str(path))


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short SHA-256 of every state-dict entry (name, dtype, shape, bytes): equal exactly when two models
    compute the same function from the same weights, wherever and from whichever file format they were loaded."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().to("cpu").contiguous()
        digest.update(f"{key}:{tensor.dtype}:{list(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def model_from_checkpoint(
    checkpoint: Mapping[str, Any], source: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, Callable, Callable, Callable]:
    """`(model, preprocess_train, preprocess_val, tokenizer)` of a cyclip training checkpoint already read.

    For callers that need the rest of the checkpoint too (its step, its config) without reading it twice.
    """
    if not isinstance(checkpoint.get("model"), Mapping) or not isinstance(checkpoint.get("model_name"), str):
        raise ValueError(
            f"{source}: not a cyclip training checkpoint (needs keys 'model' and 'model_name'); "
            "load other weights with create_model(name, pretrained=path)"
        )
    name = _check_model_name(checkpoint["model_name"])
    weights = _strip_module_prefix(checkpoint["model"])
    model, preprocess_train, preprocess_val = _build_with_weights(name, device, {}, weights, str(source), None)
    return model, preprocess_train, preprocess_val, open_clip.get_tokenizer(name)


def convolutional_image_tower(model: torch.nn.Module) -> bool:
    """True for a ResNet-style image tower (many convolutions), where channels_last memory speeds up the
    convolutions on a GPU; a ViT has a single one, its patch embedding."""
    return sum(isinstance(module, torch.nn.Conv2d) for module in model.get_submodule("visual").modules()) > 1


# --- helpers -----------------------------------------------------------------------------------------


def _check_model_name(name: str) -> str:
    """The name open_clip knows (`ViT-B/32` -> `ViT-B-32`); fail with suggestions, refuse names that download."""
    if name.startswith(LOCAL_DIR_PREFIX):
        _read_folder_config(_local_dir(name))  # a missing or broken folder is one clear error, before any work
        return name
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


def _architecture_of_file(path: Path, model_name: str | None, trained_as: str | None) -> str:
    """The architecture of a weights file: the one it records, or `model_name`; refuse a conflict or neither."""
    if model_name is None and trained_as is None:
        raise ValueError(
            f"{path}: the file does not record its architecture; pass it with --model NAME (e.g. ViT-B-32, "
            "RN50; `open_clip.list_models()` lists them)"
        )
    if model_name is not None and trained_as is not None:
        if _check_model_name(model_name) != _check_model_name(trained_as):
            raise ValueError(f"{path}: holds a {trained_as!r} model, not {model_name!r}; drop --model")
    return _check_model_name(model_name or trained_as or "")


def _local_dir(name: str) -> Path:
    return Path(name.removeprefix(LOCAL_DIR_PREFIX))


def _read_folder_config(folder: Path) -> dict[str, Any]:
    """The parsed open_clip_config.json of a `local-dir:` folder, checked for the `model_cfg` open_clip needs."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: model folder not found; pass a folder written by `cyclip export`")
    path = folder / OPEN_CLIP_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found, so {folder} is not an open_clip model folder; pass a folder written by `cyclip export`"
        )
    config = read_json(path, fix="re-export the model")
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ValueError(f"{path}: has no 'model_cfg' object (the architecture); re-export the model")
    if not isinstance(config.get("preprocess_cfg", {}), dict):
        raise ValueError(f"{path}: 'preprocess_cfg' must be an object; re-export the model")
    return config


def _weights_in_folder(folder: Path) -> Path | None:
    """The weights file open_clip would pick in a `local-dir:` folder (safetensors first), or None."""
    for file_name in _FOLDER_WEIGHT_NAMES:
        if (folder / file_name).is_file():
            return folder / file_name
    candidates = sorted(p for p in folder.iterdir() if p.suffix in _FOLDER_WEIGHT_SUFFIXES and p.is_file())
    candidates.sort(key=lambda p: p.suffix != ".safetensors")  # stable: alphabetical within each kind
    return candidates[0] if candidates else None


def check_pretrained(name: str, pretrained: str | os.PathLike) -> None:
    """Refuse `pretrained` as `create_model` would, without reading weights or building anything, so that start-up
    checks find it: one of open_clip's tags (with how to fetch its file), a missing path, a folder without
    weights, a TorchScript archive."""
    if not Path(pretrained).exists():
        _refuse_pretrained_tag(name, str(pretrained))
    weights, _ = _resolve_pretrained(Path(pretrained))
    refuse_torchscript(weights)


def _resolve_pretrained(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The weights file `pretrained` names, and the folder's config when it names an exported folder."""
    if path.is_file():
        return path, None
    if path.is_dir():
        weights = _weights_in_folder(path)
        if weights is None:
            raise FileNotFoundError(
                f"{path}: no weights file in the folder (looked for {OPEN_CLIP_WEIGHTS_NAME} and other "
                f"{'/'.join(_FOLDER_WEIGHT_SUFFIXES)} files); pass a folder written by `cyclip export`"
            )
        return weights, _read_folder_config(path) if (path / OPEN_CLIP_CONFIG_NAME).exists() else None
    raise FileNotFoundError(
        f"pretrained weights {str(path)!r} not found: cyclip never downloads weights, "
        "pass the path of a local checkpoint, state dict, .safetensors file or exported model folder"
    )


def _refuse_pretrained_tag(name: str, tag: str) -> None:
    """A FileNotFoundError that says how to fetch the file once when `tag` is one of open_clip's pretrained tags for
    `name` (cyclip reads weights only from local files); nothing otherwise."""
    source = open_clip.get_pretrained_cfg(name, tag)
    if not source:
        return
    fetch = f"import open_clip; print(open_clip.download_pretrained(open_clip.get_pretrained_cfg({name!r}, {tag!r})))"
    how = f'fetch it once with `python -c "{fetch}"` (it prints the file\'s path)'
    if source.get("hf_hub"):  # 'org/repo/' (open_clip's default file name) or 'org/repo/file'
        repo, file_name = os.path.split(source["hf_hub"])
        how += f" or `hf download {repo} {file_name or 'open_clip_pytorch_model.bin'} --local-dir weights/`"
    quick_gelu = (
        f"; these weights use QuickGELU, so train them as --model {name}-quickgelu"
        if (source.get("quick_gelu") and not name.endswith("-quickgelu") and f"{name}-quickgelu" in available_models())
        else ""
    )
    raise FileNotFoundError(
        f"--pretrained {tag}: not a file but open_clip's tag for {name} weights, and cyclip never downloads weights: "
        f"{how}, then pass the file's path to --pretrained{quick_gelu}"
    )


def _build(
    name: str, device: str | torch.device, preprocess: Mapping[str, Any] | None = None, **head: float
) -> tuple[torch.nn.Module, Callable, Callable]:
    """open_clip's model and transforms without any weights (we load them ourselves, through `_load_exactly`);
    `head` sets open_clip's `init_logit_scale` / `init_logit_bias` (a bias makes the SigLIP head)."""
    preprocess = preprocess or {}
    with _silence_random_init_warning():
        return open_clip.create_model_and_transforms(
            name,
            load_weights=False,
            device=device,
            **head,
            image_mean=preprocess.get("mean"),
            image_std=preprocess.get("std"),
            image_interpolation=preprocess.get("interpolation"),
            image_resize_mode=preprocess.get("resize_mode"),
        )


def _build_with_weights(
    name: str,
    device: str | torch.device,
    preprocess: Mapping[str, Any],
    state_dict: dict[str, torch.Tensor] | None,
    source: str,
    trained_as: str | None,
    head: Mapping[str, float] | None = None,
) -> tuple[torch.nn.Module, Callable, Callable]:
    """`_build`, then load `state_dict` (any accepted layout) exactly, when there is one.

    Weights that carry a `logit_bias` (a model trained with the sigmoid loss) get a model with that head; a
    sigmoid head (`head`) started from weights without one keeps its initial bias.
    """
    head = dict(head or {})
    if state_dict is not None and any(key.endswith("logit_bias") for key in state_dict):
        head.setdefault("init_logit_bias", 0.0)  # replaced by the stored bias
    model, preprocess_train, preprocess_val = _build(name, device, preprocess, **head)
    if state_dict is not None:
        weights = _to_open_clip_layout(state_dict, model)
        bias = getattr(model, "logit_bias", None)
        if bias is not None and "logit_bias" not in weights:
            weights["logit_bias"] = bias.detach().clone()
        _load_exactly(model, weights, name, source=source, trained_as=trained_as)
    return model, preprocess_train, preprocess_val


def _check_same_architecture(folder_cfg: Mapping[str, Any] | None, name: str, source: str) -> None:
    """Refuse weights whose folder config differs from `name` in what shapes cannot show (e.g. QuickGELU)."""
    if folder_cfg is None:
        return
    differences = _config_differences(_architecture(folder_cfg), _architecture(model_config(name)))
    if differences:
        shown = ", ".join(f"{key}: folder {ours!r} vs model {theirs!r}" for key, ours, theirs in differences[:5])
        more = f", ... {len(differences) - 5} more" if len(differences) > 5 else ""
        raise ValueError(
            f"{source}: the weights fit model {name!r} but the folder's architecture differs ({shown}{more}), so "
            f"they would compute something else; load the folder itself as model 'local-dir:{source}'"
        )


def _architecture(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A model config with open_clip's defaults filled in and initialisation-only entries dropped."""
    arch = {k: v for k, v in cfg.items() if k not in _INIT_ONLY_KEYS}
    arch.setdefault("quick_gelu", False)
    arch.setdefault("custom_text", False)
    for key, defaults in (("vision_cfg", CLIPVisionCfg), ("text_cfg", CLIPTextCfg)):
        if isinstance(arch.get(key), Mapping):
            tower = dict(arch[key])
            with contextlib.suppress(TypeError):  # a field this open_clip does not know: compare as written
                tower = dataclasses.asdict(defaults(**tower))
            arch[key] = {k: v for k, v in tower.items() if k not in _INIT_ONLY_KEYS}
    return arch


def _config_differences(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every leaf where two JSON-like configs differ."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return [
            difference
            for key in sorted(set(a) | set(b))
            for difference in _config_differences(a.get(key), b.get(key), f"{prefix}{key}.")
        ]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [(prefix.rstrip("."), a, b)]


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
        state_dict, metadata = read_safetensors(path)
        return _strip_module_prefix(state_dict), metadata.get("model_name")
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
    state_dict = convert_state_dict(model, state_dict)  # third-party layouts open_clip knows (MobileCLIP)
    if "positional_embedding" in state_dict and not hasattr(model, "positional_embedding"):
        state_dict = convert_to_custom_text_state_dict(state_dict)  # OpenAI text layout -> CustomTextCLIP
    scale, target = state_dict.get("logit_scale"), model.get_parameter("logit_scale")
    if isinstance(scale, torch.Tensor) and scale.ndim != target.ndim:
        state_dict["logit_scale"] = scale.reshape(target.shape)
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
    # BatchNorm's step counter is not a weight: frozen BatchNorm layers (--lock-image-freeze-bn-stats) have none,
    # and torch fills it in when a state dict lacks it.
    missing = [k for k in expected if k not in state_dict and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    reshaped = [k for k in state_dict if k in expected and _shape(state_dict[k]) != _shape(expected[k])]
    if missing or unexpected or reshaped:
        problems = [
            _key_summary("missing", missing, lambda k: f"{k} {_shape(expected[k])}"),
            _key_summary("unexpected", unexpected, lambda k: f"{k} {_shape(state_dict[k])}"),
            _key_summary(
                "shape mismatches", reshaped, lambda k: f"{k} {_shape(state_dict[k])} vs model {_shape(expected[k])}"
            ),
        ]
        hint = f"it was trained as {trained_as!r}" if trained_as and trained_as != name else "pass the matching model"
        raise ValueError(f"{source}: weights do not fit model {name!r} ({'; '.join(p for p in problems if p)}); {hint}")
    model.load_state_dict(state_dict, strict=True)


def _key_summary(kind: str, keys: list[str], show: Callable[[str], str], limit: int = 5) -> str:
    """'3 missing: a [2], b [4], ...': how many keys of one kind, and the first `limit` of them shown."""
    if not keys:
        return ""
    more = f", ... {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {kind}: {', '.join(show(k) for k in keys[:limit])}{more}"


def _shape(value: object) -> list[int] | str:
    return list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
