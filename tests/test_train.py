"""End to end: CSV -> `cyclip train` -> checkpoint -> `cyclip eval zeroshot`, resume, bad input."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from cyclip.checkpoints import read_checkpoint
from cyclip.cli import build_parser, main
from cyclip.cli.train import train_config_from_args
from cyclip.config import TrainConfig
from cyclip.data import write_digits_demo
from cyclip.data.batch import PairBatch
from cyclip.evaluation.datasets.labelled import read_labelled_folder
from cyclip.models import load_checkpoint
from cyclip.train import Trainer

FAST = ["--model", "cyclip-vit-tiny", "--batch-size", "32", "--workers", "0", "--warmup", "2", "--log-every", "2"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The demo's digits data with a 192-row training CSV, so that an epoch is 6 steps."""
    data = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    lines = data.train_csv.read_text().splitlines()
    small = data.train_csv.with_name("small.csv")
    small.write_text("\n".join(lines[:193]) + "\n")
    return data, small


@pytest.mark.slow
def test_train_then_zeroshot_from_the_command_line(digits, tmp_path, capsys):
    data, small = digits
    run = tmp_path / "run"
    argv = ["train", "--train-data", str(small), "--val-data", str(data.val_csv), "--epochs", "2"]
    assert main([*argv, *FAST, "--lr", "1e-3", "--output", str(run)]) == 0
    for name in ("epoch_1.pt", "epoch_2.pt", "latest.pt", "config.yaml", "metrics.jsonl"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_records] == [2, 4, 6, 8, 10, 12]
    assert {"loss", "contrastive", "inmodal_cyclic", "crossmodal_cyclic", "lr", "logit_scale"} <= set(train_records[0])
    assert sum(r["split"] == "val" for r in records) == 2

    capsys.readouterr()
    assert main([*argv, *FAST, "--output", str(run)]) == 2  # never silently mixes two runs in one folder
    assert "--resume latest" in capsys.readouterr().err

    results = tmp_path / "zeroshot.json"
    assert (
        main(
            [
                "eval",
                "zeroshot",
                "--checkpoint",
                str(run / "latest.pt"),
                "--data",
                str(data.zeroshot_dir),
                "--output",
                str(results),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    metrics = json.loads(results.read_text())["metrics"]
    assert "top1" in capsys.readouterr().out

    # Independent reference: per-class mean of normalised template embeddings, argmax over classes.
    model, preprocess, tokenizer = load_checkpoint(run / "latest.pt")
    labelled = read_labelled_folder(data.zeroshot_dir)
    from PIL import Image

    with torch.no_grad():
        weights = []
        for name in labelled.classes:
            prompts = tokenizer([template.format(name) for template in labelled.templates])
            weights.append(F.normalize(F.normalize(model.encode_text(prompts), dim=-1).mean(0), dim=0))
        images = torch.stack([preprocess(Image.open(path).convert("RGB")) for path in labelled.paths])
        scores = F.normalize(model.encode_image(images), dim=-1) @ torch.stack(weights).T
    labels = torch.tensor(labelled.labels)
    ranks = (scores > scores.gather(1, labels[:, None])).sum(1)  # classes scoring above the true one
    assert metrics["num_images"] == len(labels)
    for k in (1, 3, 5, 10):
        assert metrics[f"top{k}"] == pytest.approx((ranks < k).double().mean().item(), abs=1e-9)


@pytest.mark.slow
def test_loss_goes_down_on_a_learnable_problem(digits, tmp_path):
    data, _ = digits
    config = TrainConfig(
        train_data=str(data.train_csv),
        val_data=str(data.val_csv),
        epochs=3,
        batch_size=64,
        lr=1e-3,
        warmup=10,
        workers=0,
        output=str(tmp_path),
        lambda_inmodal=0.25,
        lambda_crossmodal=0.25,
    )
    result = Trainer(config).fit()
    chance = torch.log(torch.tensor(64.0)).item()  # the contrastive loss of embeddings that carry no information
    final = result.history[-1]["val"]["contrastive"]
    assert final < 0.75 * chance, (final, chance)
    assert result.history[-1]["val"]["loss"] < result.history[0]["val"]["loss"]


def test_load_checkpoint_reproduces_the_training_process_embeddings(digits, tmp_path):
    data, small = digits
    trainer = Trainer(TrainConfig(train_data=str(small), epochs=1, batch_size=32, workers=0, output=str(tmp_path)))
    result = trainer.fit()
    pixels = torch.randint(0, 256, (4, 20, 20, 3), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    images = torch.stack([trainer.preprocess_val(Image.fromarray(p.numpy())) for p in pixels])
    tokens = trainer.tokenizer(["a handwritten three", "the digit seven", "zero", "a scan of the number one"])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model.encode_image(images), trainer.model.encode_text(tokens)
        model, _, tokenizer = load_checkpoint(result.checkpoint)
        assert not model.training
        assert torch.equal(tokenizer(["zero"]), trainer.tokenizer(["zero"]))
        torch.testing.assert_close(model.encode_image(images), expected[0], rtol=0, atol=0)
        torch.testing.assert_close(model.encode_text(tokens), expected[1], rtol=0, atol=0)


def _max_weight_difference(path_a: Path, path_b: Path) -> float:
    a, b = read_checkpoint(path_a)["model"], read_checkpoint(path_b)["model"]
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.slow
def test_resume_after_sigkill_ends_with_the_same_weights(digits, tmp_path):
    data, small = digits
    base = [
        sys.executable,
        "-m",
        "cyclip",
        "train",
        "--train-data",
        str(small),
        "--epochs",
        "4",
        *FAST,
        "--lambda-inmodal",
        "0.25",
        "--lambda-crossmodal",
        "0.25",
        "--workers",
        "1",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run([*base, "--output", str(tmp_path / "whole")], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [*base, "--output", str(killed)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while not (killed / "latest.pt").exists():  # linked once epoch_1.pt is complete: the first resumable state
        assert process.poll() is None and time.monotonic() < deadline, "run ended before its first checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "epoch_4.pt").exists(), "the run finished before it could be killed"
    subprocess.run([*base, "--output", str(killed), "--resume", "latest"], check=True, env=env, capture_output=True)

    assert _max_weight_difference(tmp_path / "whole" / "epoch_4.pt", killed / "epoch_4.pt") <= 1e-6
    assert read_checkpoint(killed / "latest.pt")["step"] == 4 * 6


def test_config_yaml_round_trips_through_the_command_line(digits, tmp_path):
    data, small = digits
    args = build_parser().parse_args(
        [
            "train",
            "--train-data",
            str(small),
            "--cylambda1",
            "0.3",
            "--cylambda2",
            "0.1",
            "--csv-separator",
            "\\t",
            "--epochs",
            "7",
            "--output",
            str(tmp_path),
        ]
    )
    config = train_config_from_args(args)
    assert (config.lambda_inmodal, config.lambda_crossmodal, config.csv_separator) == (0.3, 0.1, "\t")
    config.save_yaml(tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["epochs"] == 7
    again = train_config_from_args(build_parser().parse_args(["train", "--config", str(tmp_path / "config.yaml")]))
    assert again == config
    override = build_parser().parse_args(["train", "--config", str(tmp_path / "config.yaml"), "--epochs", "2"])
    assert train_config_from_args(override).epochs == 2


def test_unknown_config_key_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "learning_rate" in error and "bad.yaml" in error


def test_missing_column_stops_before_training_with_one_line(digits, tmp_path, capsys):
    data, small = digits
    code = main(["train", "--train-data", str(small), "--csv-img-key", "image", *FAST, "--output", str(tmp_path)])
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "small.csv" in error and "'image'" in error and "filepath" in error and "title" in error


def _csv_with_bad_rows(small: Path, folder: Path) -> Path:
    """small.csv with a zero-byte image, a corrupt image and an empty caption inserted."""
    (folder / "empty.png").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    header, *rows = small.read_text().splitlines()
    image = (small.parent / rows[0].split(",")[0]).resolve()
    bad = [f"{folder / 'empty.png'},a handwritten one", f"{folder / 'corrupt.png'},a handwritten two", f"{image},"]
    path = folder / "with_bad.csv"
    good = [f"{(small.parent / row.split(',')[0]).resolve()},{row.split(',', 1)[1]}" for row in rows[: 64 - 3]]
    path.write_text("\n".join([header, *bad, *good]) + "\n")
    return path


def test_bad_samples_are_skipped_and_counted(digits, tmp_path):
    _, small = digits
    csv_path = _csv_with_bad_rows(small, tmp_path)
    run = tmp_path / "run"
    assert main(["train", "--train-data", str(csv_path), "--epochs", "1", *FAST, "--output", str(run)]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["skipped_samples"] == 3  # each bad row is met once per epoch


def test_bad_sample_can_stop_the_run(digits, tmp_path, capsys):
    _, small = digits
    csv_path = _csv_with_bad_rows(small, tmp_path)
    argv = ["train", "--train-data", str(csv_path), "--on-bad-sample", "error", "--epochs", "1", *FAST]
    assert main([*argv, "--output", str(tmp_path / "run")]) == 2
    error = capsys.readouterr().err
    assert "with_bad.csv" in error and "line 2" in error


@pytest.mark.slow
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(digits, tmp_path, monkeypatch):
    data, small = digits
    import cyclip.objective as objective_module
    import cyclip.train as train_module

    real_loss, calls = objective_module.cyclip_loss, []

    def loss_that_explodes_in_epoch_two(*args, **kwargs):
        output = real_loss(*args, **kwargs)
        calls.append(1)
        if len(calls) == 9:  # step index 8: the third step of the second epoch
            return output._replace(total=output.total * float("nan"))
        return output

    monkeypatch.setattr(objective_module, "cyclip_loss", loss_that_explodes_in_epoch_two)
    config = TrainConfig(train_data=str(small), epochs=3, batch_size=32, workers=0, log_every=2, output=str(tmp_path))
    with pytest.raises(train_module.NonFiniteLossError, match="step 8"):
        Trainer(config).fit()
    assert read_checkpoint(tmp_path / "latest.pt")["epoch"] == 1
    assert not (tmp_path / "epoch_2.pt").exists()


def test_load_checkpoint_is_the_package_level_api():
    import cyclip
    import cyclip.models

    assert cyclip.load_checkpoint is cyclip.models.load_checkpoint


@pytest.mark.slow
def test_bf16_autocast_and_accumulation_train_with_float32_weights(digits, tmp_path):
    _, small = digits
    config = TrainConfig(
        train_data=str(small), epochs=1, batch_size=16, accum_freq=2, precision="bf16", grad_clip_norm=1.0,
        workers=0, log_every=2, lambda_inmodal=0.25, lambda_crossmodal=0.25, output=str(tmp_path),
    )  # fmt: skip
    result = Trainer(config).fit()
    train = result.history[-1]["train"]
    assert all(torch.isfinite(torch.tensor(train[k])) for k in ("loss", "inmodal_cyclic", "crossmodal_cyclic"))
    weights = read_checkpoint(result.checkpoint)["model"]
    assert all(w.dtype == torch.float32 for w in weights.values() if w.is_floating_point())
    assert read_checkpoint(result.checkpoint)["step"] == 192 // 32


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_accumulated_step_has_the_gradient_of_one_big_batch(digits, tmp_path):
    _, small = digits

    def gradients(accum_freq: int, batches) -> dict[str, torch.Tensor]:
        config = TrainConfig(
            train_data=str(small), model="cyclip-vit-tiny", batch_size=16, accum_freq=accum_freq, workers=0,
            lambda_inmodal=0.25, lambda_crossmodal=0.25, output=str(tmp_path / str(accum_freq)),
        )  # fmt: skip
        trainer = Trainer(config)  # same seed: same initial weights
        trainer.optimizer.step = lambda *args, **kwargs: None  # keep the weights and the gradients
        trainer.optimizer.zero_grad = lambda *args, **kwargs: None
        trainer._optimizer_step(batches)
        return {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}

    loader = torch.utils.data.DataLoader(_dataset(small), batch_size=32, collate_fn=PairBatch.collate)
    batch = next(iter(loader))
    whole = gradients(1, [batch])
    accumulated = gradients(2, [batch[:16], batch[16:]])
    assert whole.keys() == accumulated.keys()
    for name in whole:
        scale = whole[name].abs().max().clamp(min=1e-12)
        assert ((accumulated[name] - whole[name]).abs().max() / scale).item() <= 1e-4, name


def _dataset(csv_path: Path):
    from cyclip.data import ImageCaptionDataset
    from cyclip.models import create_model

    _, _, preprocess, tokenizer = create_model("cyclip-vit-tiny")
    return ImageCaptionDataset(
        csv_path, preprocess, tokenizer, image_key="filepath", caption_key="title", separator=",", on_bad_sample="skip"
    )


def test_gradient_checkpointing_gives_the_same_gradient(digits, tmp_path):
    _, small = digits
    batch = next(iter(torch.utils.data.DataLoader(_dataset(small), batch_size=16, collate_fn=PairBatch.collate)))

    def gradients(checkpointing: bool) -> dict[str, torch.Tensor]:
        config = TrainConfig(
            train_data=str(small), model="cyclip-vit-tiny", batch_size=16, workers=0, lambda_inmodal=0.25,
            lambda_crossmodal=0.25, grad_checkpointing=checkpointing, output=str(tmp_path / str(checkpointing)),
        )  # fmt: skip
        trainer = Trainer(config)
        trainer.optimizer.step = lambda *args, **kwargs: None
        trainer.optimizer.zero_grad = lambda *args, **kwargs: None
        trainer._optimizer_step([batch])
        return {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 10
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.slow
def test_inmodal_training_runs_end_to_end_and_is_repeatable(digits, tmp_path):
    _, small = digits
    args = ["train", "--train-data", str(small), "--epochs", "1", *FAST, "--inmodal", "--lambda-inmodal", "0.25"]
    for run in ("a", "b"):
        assert main([*args, "--output", str(tmp_path / run)]) == 0
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert train_records[-1]["step"] == 6 and all(math.isfinite(r["loss"]) for r in train_records)
    assert yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["inmodal"] is True
    # Same seed, same augmented views: the two runs end with identical weights.
    assert _max_weight_difference(tmp_path / "a" / "epoch_1.pt", tmp_path / "b" / "epoch_1.pt") == 0.0
