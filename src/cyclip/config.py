"""The one typed object that describes a training run; written next to every run as YAML."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from cyclip.data.images import DEFAULT_MAX_IMAGE_PIXELS

PRECISIONS = ("fp32", "bf16", "fp16")
BAD_SAMPLE_POLICIES = ("skip", "error")
DATASET_TYPES = ("auto", "csv", "webdataset")
IMAGE_AUGMENTATIONS = ("autoaugment", "randaugment")


@dataclass
class TrainConfig:
    """Every knob of `cyclip train`; field names are the CLI flags with dashes turned to underscores."""

    train_data: str | None = None
    val_data: str | None = None
    zeroshot_data: str | None = None
    csv_img_key: str = "filepath"
    csv_caption_key: str = "title"
    csv_separator: str = ","
    on_bad_sample: str = "skip"
    dataset_type: str = "auto"
    train_num_samples: int | None = None
    dataset_resampled: bool = False
    inmodal: bool = False
    inmodal_image_augmentation: str = "autoaugment"
    model: str = "cyclip-rn-tiny"
    pretrained: str | None = None
    lambda_inmodal: float = 0.0
    lambda_crossmodal: float = 0.0
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    wd: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    warmup: int = 100
    accum_freq: int = 1
    grad_clip_norm: float | None = None
    grad_checkpointing: bool = False
    precision: str = "fp32"
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    output: str = "runs/cyclip"
    resume: str | None = None
    log_every: int = 10
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be 'skip' or 'error', got {self.on_bad_sample!r}")
        if self.dataset_type not in DATASET_TYPES:
            raise ValueError(f"dataset-type must be one of {', '.join(DATASET_TYPES)}, got {self.dataset_type!r}")
        if self.inmodal_image_augmentation not in IMAGE_AUGMENTATIONS:
            raise ValueError(
                f"inmodal-image-augmentation must be one of {', '.join(IMAGE_AUGMENTATIONS)}, "
                f"got {self.inmodal_image_augmentation!r}"
            )
        if self.train_num_samples is not None and self.train_num_samples < 1:
            raise ValueError(f"train-num-samples must be at least 1, got {self.train_num_samples}")
        for name in ("epochs", "batch_size", "accum_freq", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError("batch-size must be at least 2: a contrastive batch needs negatives")
        if self.workers < 0 or self.warmup < 0:
            raise ValueError("workers and warmup must not be negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping (parsed safely: plain data only); one clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error.__class__.__name__}: {error})".replace("\n", " ")) from None
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(values).__name__}")
    return values


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config into a dict of known TrainConfig fields; unknown keys are an error."""
    values = read_yaml_mapping(path, "config file")
    known = {field.name for field in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{path}: unknown option(s) {', '.join(unknown)}; see `cyclip train --help`")
    return values
