"""The typed config objects of cyclip's commands; a training run's config is written next to it as YAML.

Each field is declared once, with its default and an `Option` in its metadata (help text, choices, valid
range, extra flag spellings). The command-line flags are generated from these (`cyclip.cli.options`), and
every config, built from YAML, flags or Python, is checked against them when it is created: one
`ConfigError` line naming the key, the value and what it should be.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from PIL import Image

from cyclip.files import read_yaml_mapping, write_text_atomically
from cyclip.provenance import provenance

LOSSES = ("clip", "siglip")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# OpenCLIP's names for our autocast modes (float32 weights, the forward pass autocast; fp16 with a gradient scaler).
PRECISION_ALIASES = {"amp": "fp16", "amp_bf16": "bf16", "amp_bfloat16": "bf16"}
# OpenCLIP's low-precision-weight modes, and why cyclip does not train that way.
REFUSED_PRECISIONS = {
    name: f"OpenCLIP's {name} stores the weights themselves in {name[5:]}; cyclip keeps float32 weights (AdamW steps "
    f"smaller than {name[5:]}'s resolution would be lost) and autocasts the forward pass: use --precision "
    f"{name[5:]} (OpenCLIP's amp{'_bf16' if name.endswith('bf16') else ''})"
    for name in ("pure_bf16", "pure_fp16")
}
BAD_SAMPLE_POLICIES = ("skip", "error")
DATASET_TYPES = ("auto", "csv", "webdataset")
IMAGE_AUGMENTATIONS = ("autoaugment", "randaugment", "none")
# 64 megapixels: 192 MB once decoded as RGB, in every data-loader worker at once; phone and camera photos
# up to 48 MP pass. Larger images are almost always scans, panoramas or decompression bombs.
DEFAULT_MAX_IMAGE_PIXELS = 64_000_000
# PIL refuses to open any image above twice its decompression-bomb threshold: no higher limit can be honoured.
PIL_PIXEL_CEILING = None if Image.MAX_IMAGE_PIXELS is None else 2 * Image.MAX_IMAGE_PIXELS
PREEMPT_SIGNALS = ("USR1", "USR2", "HUP", "QUIT")
# Options that refine a tower lock, and the lock each needs.
LOCK_DETAILS = {
    "lock_image_unlocked_groups": "lock_image",
    "lock_image_freeze_bn_stats": "lock_image",
    "lock_text_unlocked_layers": "lock_text",
}
PROVENANCE_KEY = "provenance"  # in a run's config.yaml: where the run came from, not an option


class ConfigError(ValueError):
    """A config value of the wrong type, outside its range or not among its choices."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Option:
    """What the help says about a config field and which values it accepts (beyond its declared type).

    Bounds are inclusive (`minimum`, `maximum`) or strict (`above`, `below`); floats must also be finite.
    `aliases` are extra flag spellings (e.g. the paper code's `--cylambda1`); `default_help` says what the
    default means where its value alone does not (None = "off", "read from the data", ...).
    """

    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    below: float | None = None
    aliases: tuple[str, ...] = ()
    default_help: str | None = None

    def range_text(self) -> str:
        """The valid range in words, e.g. '>= 0', '> 0', '>= 0 and < 1'; empty when unbounded."""
        parts = [
            f"{sign} {_number(bound)}"
            for sign, bound in ((">=", self.minimum), (">", self.above), ("<=", self.maximum), ("<", self.below))
            if bound is not None
        ]
        return " and ".join(parts)

    def in_range(self, value: float) -> bool:
        return (
            (self.minimum is None or value >= self.minimum)
            and (self.above is None or value > self.above)
            and (self.maximum is None or value <= self.maximum)
            and (self.below is None or value < self.below)
        )


def option(default: Any, help: str, **details: Any) -> Any:
    """A dataclass field with `default` and an `Option(help, **details)` as its metadata."""
    return field(default=default, metadata={"option": Option(help, **details)})


class OptionField(NamedTuple):
    """One field of a config class, resolved: name, default, declared type (without None), whether None is
    allowed, and its Option."""

    name: str
    default: Any
    type: type
    optional: bool
    option: Option

    def expected(self) -> str:
        """What a valid value is, in words: 'an integer >= 1', 'one of skip, error', 'true or false', ..."""
        if self.option.choices:
            text = f"one of {', '.join(self.option.choices)}"
        else:
            text = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[self.type]
            if self.option.range_text():
                text += f" {self.option.range_text()}"
        return text + (" or null" if self.optional else "")

    def check(self, value: Any) -> Any:
        """`value` as this field's type (numbers may be written as strings, as YAML reads `1e-3`); a
        ConfigError if it is not one, or is out of range."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(self.name, f"expected {self.expected()}, got null")
        converted = _convert(value, self.type)
        if converted is None:
            raise ConfigError(self.name, f"expected {self.expected()}, got {_show(value)}")
        if self.option.choices and converted not in self.option.choices:
            raise ConfigError(self.name, f"expected {self.expected()}, got {_show(value)}")
        if self.type in (int, float) and (not math.isfinite(converted) or not self.option.in_range(converted)):
            raise ConfigError(self.name, f"expected {self.expected()}, got {_show(converted)}")
        return converted


@functools.cache
def option_fields(config_class: type) -> tuple[OptionField, ...]:
    """The fields of a config dataclass with their declared types and Options, in declaration order."""
    hints = typing.get_type_hints(config_class)
    resolved = []
    for item in fields(config_class):
        kind, optional = hints[item.name], False
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            members = [member for member in typing.get_args(kind) if member is not type(None)]
            kind, optional = members[0], len(members) < len(typing.get_args(kind))
        resolved.append(OptionField(item.name, item.default, kind, optional, item.metadata["option"]))
    return tuple(resolved)


def _convert(value: Any, kind: type) -> Any:
    """`value` as `kind`, or None when it is not one. Bools are not numbers; integral numbers and numeric
    strings ('1e-3', '1e6') are accepted for numeric fields; nothing else is converted."""
    if kind is bool or isinstance(value, bool):
        return value if kind is bool and isinstance(value, bool) else None
    if kind is str:
        return value if isinstance(value, str) else None
    if isinstance(value, str):
        try:
            value = float(value.strip()) if kind is float else _integer_text(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            return None
        return int(value)
    return float(value)


def _integer_text(text: str) -> int | float:
    """'12' -> 12, '1e6' -> 1000000.0 (left to the integer check); ValueError for anything else."""
    try:
        return int(text)
    except ValueError:
        return float(text)


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def _number(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


class CheckedConfig:
    """Base of the config dataclasses: every field is converted to its declared type and checked against its
    Option when the config is created."""

    def __post_init__(self) -> None:
        for described in option_fields(type(self)):  # type: ignore[arg-type]  # a class is hashable
            setattr(self, described.name, described.check(getattr(self, described.name)))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]  # every subclass is a dataclass


@dataclass
class TrainConfig(CheckedConfig):
    """Every knob of `cyclip train`; field names are the CLI flags with dashes turned to underscores."""

    train_data: str | None = option(
        None,
        "CSV/TSV of image paths and captions (paths relative to its folder), or WebDataset shards such as "
        "'data/{00000..00127}.tar' (several lists joined by '::')",
    )
    val_data: str | None = option(
        None, "held-out pairs (CSV/TSV or shards); the validation loss is computed on them after each epoch"
    )
    zeroshot_data: str | None = option(
        None, "labelled folder (labels.csv + classes.json): zero-shot accuracy after each epoch"
    )
    csv_img_key: str = option("filepath", "column holding the image paths")
    csv_caption_key: str = option("title", "column holding the captions")
    csv_separator: str = option(",", "column separator, e.g. ',' or '\\t' (or 'tab') for TSV")
    on_bad_sample: str = option(
        "skip", "unreadable image or empty caption: skip and count it, or stop", choices=BAD_SAMPLE_POLICIES
    )
    dataset_type: str = option(
        "auto",
        "csv or webdataset; auto = shards when the path names .tar files, else csv",
        choices=DATASET_TYPES,
    )
    train_num_samples: int | None = option(
        None,
        "WebDataset: samples per epoch",
        minimum=1,
        default_help="read from img2dataset's *_stats.json or a sizes.json",
    )
    dataset_resampled: bool = option(
        False, "WebDataset: draw shards with replacement, each rank on its own stream (for many nodes)"
    )
    inmodal: bool = option(
        False, "the paper's in-modal mode: add image-augmented image and text-augmented text contrastive terms"
    )
    inmodal_image_augmentation: str = option(
        "autoaugment",
        "--inmodal: image augmentation policy (none: only the caption is augmented)",
        choices=IMAGE_AUGMENTATIONS,
    )
    model: str = option(
        "cyclip-rn-tiny", "open_clip architecture (RN50, ViT-B-32, ...); for CPU: cyclip-rn-tiny, cyclip-vit-tiny"
    )
    pretrained: str | None = option(
        None,
        "weights to start from: a local open_clip/OpenAI checkpoint, state dict, safetensors file or exported "
        "model folder",
    )
    lock_image: bool = option(
        False,
        "freeze the image tower, as OpenCLIP's LiT option does (its parameters are left out of the optimizer)",
    )
    lock_image_unlocked_groups: int = option(
        0,
        "with --lock-image: layer groups at the end of the image tower that stay trainable (ViT: 1 = the "
        "projection, 2 = also the last block, ...; a ResNet tower locks whole)",
        minimum=0,
    )
    lock_image_freeze_bn_stats: bool = option(
        False, "with --lock-image: also keep the BatchNorm running statistics of the image tower fixed"
    )
    lock_text: bool = option(False, "freeze the text tower (its parameters are left out of the optimizer)")
    lock_text_unlocked_layers: int = option(
        0,
        "with --lock-text: layer groups at the end of the text tower that stay trainable (1 = the projection, "
        "2 = also the last block and final LayerNorm, ...)",
        minimum=0,
    )
    lambda_inmodal: float = option(
        0.0,
        "weight of the in-modal cyclic regularizer (0 = CLIP; CyCLIP uses 0.25)",
        minimum=0,
        aliases=("--cylambda1",),
    )
    lambda_crossmodal: float = option(
        0.0,
        "weight of the cross-modal cyclic regularizer (0 = CLIP; CyCLIP uses 0.25)",
        minimum=0,
        aliases=("--cylambda2",),
    )
    loss: str = option(
        "clip",
        "the contrastive term: clip (softmax cross-entropy over the global batch, as CLIP and CyCLIP) or siglip "
        "(SigLIP's sigmoid loss, with a learnable bias); the cyclic regularizers add to either",
        choices=LOSSES,
    )
    loss_chunk_size: int | None = option(
        None,
        "tile edge of the contrastive loss: N computes it in N x N tiles of logits (memory O(batch x dim) instead "
        "of O(batch^2), exact); 0 always uses the dense N x N matrix",
        minimum=0,
        default_help="auto: dense below the batch size where tiling was measured to be as fast, tiled above",
    )
    epochs: int = option(10, "number of passes over the training data", minimum=1)
    batch_size: int = option(
        64,
        "pairs per step and per process (a contrastive batch needs negatives); global batch = this x processes "
        "x accum-freq",
        minimum=2,
    )
    lr: float = option(5e-4, "peak learning rate of the cosine schedule", minimum=0)
    wd: float = option(0.1, "AdamW weight decay, not applied to gains, biases, logit scale", minimum=0)
    beta1: float = option(0.9, "AdamW beta1", minimum=0, below=1)
    beta2: float = option(0.98, "AdamW beta2", minimum=0, below=1)
    eps: float = option(1e-6, "AdamW epsilon", above=0)
    warmup: int = option(100, "linear warm-up steps before the cosine decay", minimum=0)
    accum_freq: int = option(1, "micro-batches per step; the contrastive batch is batch-size x accum-freq", minimum=1)
    grad_clip_norm: float | None = option(
        None, "clip the global gradient norm to this value", above=0, default_help="off"
    )
    grad_checkpointing: bool = option(
        False, "recompute activations in the backward pass: less memory, larger batches, one more forward pass"
    )
    precision: str = option(
        "auto",
        "auto = bf16 autocast on a CUDA GPU with native bf16 (Ampere or later), else fp32 (the log's first line "
        "says which); fp32; or float32 weights with the forward pass autocast to bf16 / fp16 (fp16 with a gradient "
        "scaler); OpenCLIP's amp and amp_bf16 are accepted for fp16 and bf16",
        choices=PRECISIONS,
    )
    compile: bool = option(
        False, "torch.compile the model (both towers; the loss stays eager): faster steps after a slow first one"
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps; auto = cuda when available")
    workers: int = option(2, "data-loading processes", minimum=0)
    prefetch_factor: int = option(2, "batches each data-loading process prepares ahead", minimum=1)
    seed: int = option(0, "seed for initialisation, data order and augmentation", minimum=0, maximum=2**32 - 1)
    output: str = option("runs/cyclip", "folder for checkpoints, metrics.jsonl, TensorBoard and config.yaml")
    resume: str | None = option(
        None,
        "continue a run exactly: 'latest' (OUTPUT/latest.pt, or the newest readable checkpoint if it is damaged), "
        "'auto' (latest when OUTPUT holds a checkpoint, else start: for jobs that are requeued) or a checkpoint "
        "path; with latest/auto the settings come from OUTPUT/config.yaml (flags given override them)",
    )
    save_every_steps: int | None = option(
        None,
        "also write a checkpoint (step_N.pt, which becomes latest.pt) every N optimizer steps",
        minimum=1,
        default_help="off",
    )
    save_every_minutes: float | None = option(
        None,
        "also write a checkpoint when this many minutes have passed since the last one",
        above=0,
        default_help="off",
    )
    keep_last: int = option(2, "step checkpoints to keep: older step_N.pt files are deleted", minimum=1)
    keep_epochs: bool = option(
        True, "keep every epoch_N.pt (--no-keep-epochs: they count towards --keep-last like step checkpoints)"
    )
    preempt_signal: str | None = option(
        None,
        "one more signal that stops the run after the current step with a checkpoint, like SIGTERM and SIGINT "
        "(e.g. USR1 with SLURM's --signal=USR1@120)",
        choices=PREEMPT_SIGNALS,
        default_help="none",
    )
    log_every: int = option(10, "steps between metric logs", minimum=1)
    max_image_pixels: int = option(
        DEFAULT_MAX_IMAGE_PIXELS,
        "images with more pixels are bad samples, refused from their header and never decoded",
        minimum=1,
        maximum=PIL_PIXEL_CEILING,
    )

    def __post_init__(self) -> None:
        if isinstance(self.precision, str):  # anything else is refused by the field's own check
            if self.precision in REFUSED_PRECISIONS:
                raise ConfigError("precision", REFUSED_PRECISIONS[self.precision])
            self.precision = PRECISION_ALIASES.get(self.precision, self.precision)
        super().__post_init__()
        for name, needs in LOCK_DETAILS.items():
            if getattr(self, name) and not getattr(self, needs):
                raise ConfigError(name, f"only applies to a locked tower; add --{needs.replace('_', '-')} or drop it")
        if self.loss == "siglip" and self.inmodal:
            raise ConfigError(
                "inmodal",
                "the in-modal mode's terms are softmax cross-entropies against each sample's augmented view; "
                "it is not defined for --loss siglip (use --loss clip, or drop --inmodal)",
            )

    def lock_options(self) -> dict[str, Any]:
        """The tower locks as `cyclip.models.lock_towers` takes them."""
        return {
            "image": self.lock_image,
            "image_unlocked_groups": self.lock_image_unlocked_groups,
            "image_freeze_bn_stats": self.lock_image_freeze_bn_stats,
            "text": self.lock_text,
            "text_unlocked_layers": self.lock_text_unlocked_layers,
        }

    def save_yaml(self, path: str | Path) -> None:
        """The options (never `resume`: the file starts this run again, and `--resume latest` reads it), then
        under `provenance:` the versions and command that made the run (`--config` skips it)."""
        values = {**self.to_dict(), "resume": None, PROVENANCE_KEY: provenance()}
        write_text_atomically(path, yaml.safe_dump(values, sort_keys=False))


def _train_option(name: str) -> Any:
    """TrainConfig's field `name` (default and Option), for a command that passes it on to training."""
    source = next(item for item in fields(TrainConfig) if item.name == name)
    return field(default=source.default, metadata=source.metadata)


@dataclass
class DemoConfig(CheckedConfig):
    """The knobs of `cyclip demo`: the rest of the two training runs is fixed by the demo."""

    output: str = option("cyclip-demo", "folder for data, runs, JSON and plots")
    model: str = _train_option("model")
    epochs: int = option(8, "epochs per model", minimum=1)
    device: str = _train_option("device")
    workers: int = option(0, "data-loading processes (0: the small demo loads fastest in the main process)", minimum=0)
    seed: int = _train_option("seed")
    shift: bool = option(
        False,
        "robustness demo: train on handwritten digits with seeds SEED, SEED+1, SEED+2, test zero-shot on held-out "
        "handwritten and on typeset digits, report mean ± std",
    )


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config into a dict of known TrainConfig fields; unknown keys are an error. The `provenance:`
    record of a run's config.yaml is not an option and is left out, so a run's config starts another."""
    values = read_yaml_mapping(path, "config file")
    values.pop(PROVENANCE_KEY, None)
    known = {item.name for item in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}; see `cyclip train --help`")
    return values
