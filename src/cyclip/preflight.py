"""Start-up checks of a training run: every path it will read or write, before the model is built.

A wrong `--zeroshot-data` folder used to surface after the first epoch had trained, and an unwritable
`--output` at the first checkpoint; each is one line now, before any time is spent. Values (types, ranges,
finiteness) are checked by the config itself; the data files' contents by their readers, which also run
before the first step.
"""

from __future__ import annotations

from pathlib import Path

from cyclip.config import TrainConfig
from cyclip.data.loading import looks_like_shards
from cyclip.data.shards import expand_urls
from cyclip.errors import DataError
from cyclip.files import require_writable_folder
from cyclip.models import check_pretrained

__all__ = ["check_training_run", "resume_path"]


def resume_path(config: TrainConfig) -> Path | None:
    """The checkpoint `--resume` names: OUTPUT/latest.pt for 'latest', else the path given."""
    if not config.resume:
        return None
    return Path(config.output) / "latest.pt" if config.resume == "latest" else Path(config.resume)


def check_training_run(config: TrainConfig) -> None:
    """Raise one DataError / OutputWriteError line for the first path of `config` that cannot be used."""
    require_writable_folder(config.output, "--output")
    if config.pretrained:
        check_pretrained(config.model, config.pretrained)
    checkpoint = resume_path(config)
    if checkpoint is not None and not checkpoint.is_file():
        what = "is a folder, not a checkpoint file" if checkpoint.is_dir() else "not found"
        hint = (
            f"{config.output} holds no run to continue; drop --resume to start one"
            if config.resume == "latest"
            else "pass a checkpoint written by `cyclip train` (e.g. OUTPUT/latest.pt)"
        )
        raise DataError(f"--resume {config.resume}: {checkpoint} {what}; {hint}")
    if config.train_data:
        _check_pairs("--train-data", config.train_data, config)
    if config.val_data:
        _check_pairs("--val-data", config.val_data, config)
    if config.zeroshot_data:
        from cyclip.evaluation.datasets.labelled import read_labelled_folder

        try:
            read_labelled_folder(config.zeroshot_data)
        except DataError as error:
            raise DataError(f"--zeroshot-data {error}") from None


def _check_pairs(flag: str, path: str, config: TrainConfig) -> None:
    """The file or the local shards exist (their contents are read, and checked, when the batches are built)."""
    if config.dataset_type == "webdataset" or (config.dataset_type == "auto" and looks_like_shards(path)):
        try:
            expand_urls(path)
        except DataError as error:
            raise DataError(f"{flag} {error}") from None
        return
    if not Path(path).is_file():
        what = "is a folder, not a file" if Path(path).is_dir() else "not found"
        raise DataError(f"{flag} {path}: {what}; pass a CSV/TSV of image paths and captions, or WebDataset shards")
