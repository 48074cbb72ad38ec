"""Start-up checks of a training run: every path it will read or write, before the model is built.

A wrong `--zeroshot-data` folder used to surface after the first epoch had trained, and an unwritable
`--output` at the first checkpoint; each is one line now, before any time is spent. Values (types, ranges,
finiteness) are checked by the config itself; the data files' contents by their readers, which also run
before the first step.
"""

from __future__ import annotations

from pathlib import Path

from cyclip.checkpoint_folder import CheckpointFolder
from cyclip.config import TrainConfig
from cyclip.data.loading import looks_like_shards
from cyclip.data.shards import expand_urls
from cyclip.errors import DataError
from cyclip.files import require_writable_folder
from cyclip.models import check_pretrained

__all__ = ["check_training_run"]


def check_training_run(config: TrainConfig) -> None:
    """Raise one DataError / OutputWriteError line for the first path of `config` that cannot be used."""
    require_writable_folder(config.output, "--output")
    if config.pretrained:
        check_pretrained(config.model, config.pretrained)
    _check_resume(config)
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


def _check_resume(config: TrainConfig) -> None:
    """--resume latest needs a checkpoint in --output (latest.pt or, if that is damaged, an older one), a path
    needs its file; auto starts the run when there is none."""
    if config.resume in (None, "auto"):
        return
    if config.resume == "latest":
        if not CheckpointFolder(Path(config.output), steps_per_epoch=1).has_checkpoint():
            raise DataError(
                f"--resume latest: {config.output} holds no checkpoint (latest.pt, epoch_N.pt or step_N.pt) and so "
                "no run to continue; drop --resume to start one, or pass --resume auto"
            )
        return
    checkpoint = Path(config.resume)
    if not checkpoint.is_file():
        what = "is a folder, not a checkpoint file" if checkpoint.is_dir() else "not found"
        raise DataError(
            f"--resume {config.resume}: {checkpoint} {what}; pass a checkpoint written by `cyclip train` "
            "(e.g. OUTPUT/latest.pt)"
        )
