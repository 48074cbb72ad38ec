"""The speed options and what measures them: kept data-loader workers, the per-interval timing in
metrics.jsonl and on the console (plain lines off a terminal, a bar on one), --precision auto, the fused
optimizer and --compile (against eager)."""

from __future__ import annotations

import copy
import io
import json
import logging
import math
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DistributedSampler

from cyclip.config import TrainConfig
from cyclip.data import ImageCaptionDataset, write_digits_demo
from cyclip.data.loading import PairBatches
from cyclip.data.seeding import SeededSamples
from cyclip.data.shards import ShardBatches
from cyclip.losses import cyclip_loss
from cyclip.models import create_model
from cyclip.progress import TrainProgress
from cyclip.runtime import resolve_precision
from cyclip.train import Trainer, build_optimizer
from tests.helpers.stand_ins import CharTokenizer, to_tensor


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The demo's digits data with a 97-row training CSV: 6 batches of 16."""
    data = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    small = data.train_csv.with_name("small.csv")
    small.write_text("\n".join(data.train_csv.read_text().splitlines()[:98]) + "\n")
    return data, small


def test_csv_loader_keeps_its_workers_and_draws_each_epoch_under_its_own_seeds(digits):
    _, small = digits
    config = TrainConfig(train_data=str(small), batch_size=16, workers=2, seed=5)
    batches = PairBatches(str(small), to_tensor, CharTokenizer(), config, torch.device("cpu"), train=True)
    pairs = ImageCaptionDataset(
        small,
        to_tensor,
        CharTokenizer(),
        image_key="filepath",
        caption_key="title",
        separator=",",
        on_bad_sample="skip",
    )
    reference = SeededSamples(pairs, seed=5)
    loaders = set()
    for epoch in (0, 1):
        loader = batches.epoch(epoch)
        loaders.add(id(loader))
        got = list(loader)
        # The documented order: the distributed sampler's permutation of (seed, epoch), cut into full batches.
        sampler = DistributedSampler(reference, num_replicas=1, rank=0, shuffle=True, seed=5, drop_last=True)
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert len(got) == len(order) // 16 == 6
        for number, batch in enumerate(got):
            rows = [reference[(epoch, index)] for index in order[16 * number : 16 * (number + 1)]]
            assert torch.equal(batch.images, torch.stack([row[0] for row in rows]))
            assert torch.equal(batch.texts, torch.stack([row[1] for row in rows]))
            assert batch.skipped.tolist() == [0] * 16
    assert len(loaders) == 1 and loader.persistent_workers and loader.prefetch_factor == 2


def _write_shards(folder, shards: int = 4, per_shard: int = 12) -> str:
    """PNG + caption samples whose pixel value is their number, so batches can be told apart."""
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as sink:
            for index in range(per_shard):
                buffer = io.BytesIO()
                Image.fromarray(np.full((4, 4, 3), shard * per_shard + index, dtype=np.uint8)).save(buffer, "PNG")
                sink.write({"__key__": f"{shard}-{index}", "png": buffer.getvalue(), "txt": f"caption {index}"})
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def test_shard_loader_keeps_its_workers_and_gives_each_epoch_the_batches_of_a_fresh_loader(tmp_path):
    pattern = _write_shards(tmp_path)
    options = dict(
        batch_size=4, num_samples=48, seed=3, rank=0, world_size=1, workers=2, resampled=False, on_bad_sample="skip"
    )
    kept = ShardBatches(pattern, to_tensor, CharTokenizer(), epoch=0, **options)
    epochs = []
    for epoch in (0, 1, 2):
        kept.set_epoch(epoch)
        got = list(kept)
        fresh = list(ShardBatches(pattern, to_tensor, CharTokenizer(), epoch=epoch, **options))
        assert len(got) == len(fresh) == 12
        for ours, theirs in zip(got, fresh, strict=True):
            assert torch.equal(ours.images, theirs.images) and torch.equal(ours.texts, theirs.texts)
            assert torch.equal(ours.skipped, theirs.skipped)
        epochs.append(torch.cat([batch.images[:, 0, 0, 0] for batch in got]))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])
    assert kept._loader is not None and kept._loader.persistent_workers


def test_persistent_workers_leave_the_global_random_state_alone(digits):
    _, small = digits
    config = TrainConfig(train_data=str(small), batch_size=16, workers=1)
    batches = PairBatches(str(small), to_tensor, CharTokenizer(), config, torch.device("cpu"), train=True)
    state = torch.get_rng_state()
    next(iter(batches.epoch(0)))
    assert torch.equal(torch.get_rng_state(), state)  # a resumed run and a continuous one see the same stream


@pytest.mark.slow
def test_each_log_interval_records_data_and_step_time(digits, tmp_path, caplog):
    _, small = digits
    config = TrainConfig(
        train_data=str(small), model="cyclip-vit-tiny", epochs=1, batch_size=16, workers=1, log_every=3,
        warmup=1, output=str(tmp_path), device="cpu",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="cyclip"):
        Trainer(config).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [record for record in records if record["split"] == "train"]
    assert [record["step"] for record in train] == [3, 6]
    for record in train:
        assert 0 < record["data_time"] <= record["batch_time"]
        assert record["data_fraction"] == pytest.approx(record["data_time"] / record["batch_time"])
        assert record["samples_per_second"] == pytest.approx(16 / record["batch_time"])
        assert record["samples_per_second_per_device"] == record["samples_per_second"]  # one process
        assert "peak_memory_gib" not in record  # CUDA only
    messages = [record.getMessage() for record in caplog.records]
    assert "fp32 (--precision auto) on cpu" in messages[0]
    assert sum(message.startswith("step ") and "| ETA " in message for message in messages) == 2


def _expected_lr(step: int, peak: float, warmup: int, total: int) -> float:
    """The learning rate after `step` optimizer steps: linear warm-up, then cosine to zero (the README's schedule)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


LINE = re.compile(
    r"step (\d+)/12 \(epoch (\d)/2, (\d+)%\) \| loss ([\d.]+) \(contrastive ([\d.]+), in-modal ([\d.]+), "
    r"cross-modal ([\d.]+)\) \| lr ([\d.e+-]+) \| ([\d.]+) samples/s \| ([\d.]+) s/step, data ([\d.]+) s \((\d+)%\) \| "
    r"ETA (\d+:\d\d:\d\d)$"
)


@pytest.mark.slow
def test_off_a_terminal_the_console_and_train_log_get_plain_lines_every_log_every_steps(digits, tmp_path):
    """stderr redirected to a file, as on a cluster: no carriage-return bars, one line per --log-every steps
    (and at each epoch end) with step, epoch progress, loss and its parts, lr, samples/s, data share, ETA."""
    _, small = digits
    output = tmp_path / "run"
    command = [
        sys.executable, "-m", "cyclip", "train", "--train-data", str(small), "--model", "cyclip-vit-tiny",
        "--batch-size", "16", "--workers", "0", "--epochs", "2", "--warmup", "2", "--lr", "1e-3",
        "--log-every", "4", "--lambda-inmodal", "0.25", "--lambda-crossmodal", "0.25", "--output", str(output),
    ]  # fmt: skip
    with (tmp_path / "stderr.txt").open("w") as stderr:
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=stderr)
    console = (tmp_path / "stderr.txt").read_text()
    assert "\r" not in console
    first = next(line for line in console.splitlines() if line.startswith("training "))
    assert first.endswith("fp32 (--precision auto) on cpu")
    lines = [line for line in console.splitlines() if line.startswith("step ")]
    logged = [line.split("cyclip.train: ", 1)[1] for line in (output / "train.log").read_text().splitlines()]
    assert [line for line in logged if line.startswith("step ")] == lines
    matches = [LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    # 6 steps per epoch, a line every 4 steps and at each epoch's end.
    assert [(int(m[1]), int(m[2]), int(m[3])) for m in matches] == [
        (4, 1, 67), (6, 1, 100), (10, 2, 67), (12, 2, 100),
    ]  # fmt: skip
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    for match, record in zip(matches, [record for record in records if record["split"] == "train"], strict=True):
        step, loss, contrastive, inmodal, crossmodal = int(match[1]), *map(float, match.group(4, 5, 6, 7))
        assert loss == pytest.approx(contrastive + 0.25 * inmodal + 0.25 * crossmodal, abs=2e-4)
        assert float(match[8]) == pytest.approx(_expected_lr(step, 1e-3, 2, 12), rel=2e-3, abs=1e-9)
        assert float(match[9]) == pytest.approx(record["samples_per_second"], abs=0.06)
        assert float(match[10]) == pytest.approx(record["batch_time"], abs=6e-4)
        assert float(match[11]) == pytest.approx(record["data_time"], abs=6e-4)
        assert int(match[12]) == round(100 * record["data_fraction"])
    assert matches[-1][13] == "0:00:00"


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_epoch_gets_a_bar_and_the_lines_go_above_it(caplog):
    summary = {
        "loss": 1.5, "contrastive": 1.25, "inmodal_cyclic": 0.5, "crossmodal_cyclic": 0.5, "lr": 1e-4,
        "logit_scale": 14.3, "samples_per_second": 100.0, "samples_per_second_per_device": 50.0,
        "data_time": 0.02, "batch_time": 0.64, "data_fraction": 0.03125,
    }  # fmt: skip
    terminal = _Terminal()
    progress = TrainProgress(steps_per_epoch=4, epochs=3, first_step=4, enabled=True, stream=terminal)
    with caplog.at_level(logging.INFO, logger="cyclip"):
        progress.start_epoch(1)
        for _ in range(2):
            progress.advance()
        progress.report(6, 1, summary)
        progress.close()
    assert "\r" in terminal.getvalue() and "epoch 2/3" in terminal.getvalue() and "data=3%" in terminal.getvalue()
    (line,) = [record.getMessage() for record in caplog.records]
    assert line.startswith("step 6/12 (epoch 2/3, 50%) | loss 1.5000 (contrastive 1.2500, in-modal 0.5000, ")
    assert "| 100.0 samples/s (50.0 per device) | 0.640 s/step, data 0.020 s (3%) |" in line


def test_disabled_progress_shows_nothing(caplog):
    terminal = _Terminal()
    progress = TrainProgress(steps_per_epoch=4, epochs=1, first_step=0, enabled=False, stream=terminal)
    with caplog.at_level(logging.INFO, logger="cyclip"):
        progress.start_epoch(0)
        progress.advance()
        progress.report(1, 0, {})
        progress.close()
    assert terminal.getvalue() == "" and not caplog.records


def test_precision_auto_is_fp32_on_cpu_and_explicit_choices_stay():
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    assert TrainConfig().precision == "auto"


def test_adamw_uses_the_fused_kernel_on_cpu():
    model, *_ = create_model("cyclip-rn-tiny")
    optimizer = build_optimizer(model, TrainConfig())
    assert all(group["fused"] for group in optimizer.param_groups)


@pytest.mark.slow
def test_compiled_model_gives_the_eager_loss_and_gradients():
    torch.manual_seed(0)
    eager, *_ = create_model("cyclip-rn-tiny")
    compiled = copy.deepcopy(eager)
    compiled.compile()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 64, 64, generator=generator)
    tokens = torch.randint(1, 49407, (8, 32), generator=generator)
    losses = []
    for model in (eager, compiled):
        image_features, text_features, _ = model(images, tokens)
        output = cyclip_loss(image_features, text_features, model.logit_scale, 0.25, 0.25)
        output.total.backward()
        losses.append(torch.stack(list(output)).detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-5)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their keys
    for (name, reference), (_, parameter) in zip(eager.named_parameters(), compiled.named_parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-3, atol=1e-5, msg=name)
