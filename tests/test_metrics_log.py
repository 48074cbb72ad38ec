"""metrics.jsonl: the epoch field means the same on every split, and accuracies are fractions."""

from __future__ import annotations

import json

import pytest

from cyclip.config import TrainConfig
from cyclip.data import write_digits_demo
from cyclip.train import Trainer


@pytest.mark.slow
def test_epoch_is_the_training_done_in_epochs_on_train_validation_and_zeroshot_rows(tmp_path):
    data = write_digits_demo(tmp_path / "data", seed=0)
    small = data.train_csv.with_name("small.csv")  # 64 pairs: 4 steps of 16 per epoch
    small.write_text("\n".join(data.train_csv.read_text().splitlines()[:65]) + "\n")
    config = TrainConfig(
        train_data=str(small), val_data=str(data.val_csv), zeroshot_data=str(data.zeroshot_dir),
        model="cyclip-vit-tiny", epochs=2, batch_size=16, log_every=1, workers=0, output=str(tmp_path / "run"),
    )  # fmt: skip
    Trainer(config).fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps_per_epoch = 64 // 16
    train = [record for record in records if record["split"] == "train"]
    assert [record["epoch"] for record in train] == [record["step"] / steps_per_epoch for record in train]
    assert [record["epoch"] for record in train] == [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0]
    for split in ("val", "zeroshot"):
        rows = [record for record in records if record["split"] == split]
        assert [(record["epoch"], record["step"]) for record in rows] == [(1, 4), (2, 8)], split
    assert all(0 <= record["top1"] <= 1 for record in records if record["split"] == "zeroshot")
