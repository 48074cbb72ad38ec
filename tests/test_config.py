"""Config values: declared types, valid ranges and devices, checked at start-up in one line each."""

from __future__ import annotations

import math
from dataclasses import fields

import pytest
import torch

from cyclip import runtime
from cyclip.cli import build_parser, main
from cyclip.cli.train import train_config_from_args
from cyclip.config import ConfigError, DemoConfig, TrainConfig

# --- types ---------------------------------------------------------------------------------------------------

ACCEPTED = [
    ("epochs", 3, 3),
    ("epochs", "3", 3),
    ("epochs", 3.0, 3),
    ("train_num_samples", "1e6", 1_000_000),  # YAML 1.1 reads 1e6 as a string
    ("lr", "1e-3", 1e-3),
    ("lr", " 5E-4 ", 5e-4),
    ("lr", 1, 1.0),
    ("lambda_inmodal", "0.25", 0.25),
    ("grad_clip_norm", None, None),
    ("grad_clip_norm", "1", 1.0),
    ("inmodal", True, True),
    ("precision", "bf16", "bf16"),
    ("precision", "auto", "auto"),
    ("compile", True, True),
    ("prefetch_factor", "4", 4),
    ("precision", "amp", "fp16"),  # OpenCLIP's names of the same autocast modes
    ("precision", "amp_bf16", "bf16"),
    ("precision", "amp_bfloat16", "bf16"),
    ("inmodal_image_augmentation", "none", "none"),
]


@pytest.mark.parametrize(("key", "value", "expected"), ACCEPTED)
def test_values_of_the_declared_type_or_numbers_written_as_strings_are_accepted(key, value, expected):
    got = getattr(TrainConfig(**{key: value}), key)
    assert got == expected and type(got) is type(expected)


REFUSED_TYPES = [
    ("epochs", "three", "an integer >= 1"),
    ("epochs", 2.5, "an integer >= 1"),
    ("epochs", [3], "an integer >= 1"),
    ("epochs", None, "an integer >= 1"),
    ("workers", True, "an integer >= 0"),
    ("lr", True, "a number >= 0"),
    ("lr", [0.1, 0.2], "a number >= 0"),
    ("lr", {"value": 0.1}, "a number >= 0"),
    ("lambda_inmodal", "a quarter", "a number >= 0"),
    ("grad_clip_norm", "off", "a number > 0 or null"),
    ("train_num_samples", "12.5", "an integer >= 1 or null"),
    ("inmodal", "yes", "true or false"),
    ("inmodal", 1, "true or false"),
    ("model", 50, "a string"),
    ("train_data", ["a.csv", "b.csv"], "a string or null"),
    ("precision", "fp8", "one of auto, fp32, bf16, fp16"),
    ("on_bad_sample", "ignore", "one of skip, error"),
    ("dataset_type", ["csv"], "one of auto, csv, webdataset"),
]


@pytest.mark.parametrize(("key", "value", "expected"), REFUSED_TYPES)
def test_a_value_of_the_wrong_type_is_one_line_naming_key_value_and_type(key, value, expected):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**{key: value})
    shown = "null" if value is None else repr(value)
    assert str(raised.value) == f"{key}: expected {expected}, got {shown}"
    assert raised.value.key == key


# --- ranges --------------------------------------------------------------------------------------------------

OUT_OF_RANGE = [
    ("lambda_inmodal", -0.25, "a number >= 0"),
    ("lambda_crossmodal", "-1e-3", "a number >= 0"),
    ("lambda_inmodal", float("nan"), "a number >= 0"),
    ("lambda_crossmodal", "inf", "a number >= 0"),
    ("wd", -0.1, "a number >= 0"),
    ("lr", -1e-4, "a number >= 0"),
    ("lr", "nan", "a number >= 0"),
    ("grad_clip_norm", -1.0, "a number > 0 or null"),
    ("grad_clip_norm", 0.0, "a number > 0 or null"),
    ("grad_clip_norm", float("inf"), "a number > 0 or null"),
    ("beta1", 1.0, "a number >= 0 and < 1"),
    ("beta2", -0.5, "a number >= 0 and < 1"),
    ("eps", 0.0, "a number > 0"),
    ("epochs", 0, "an integer >= 1"),
    ("batch_size", 1, "an integer >= 2"),
    ("accum_freq", 0, "an integer >= 1"),
    ("log_every", 0, "an integer >= 1"),
    ("warmup", -1, "an integer >= 0"),
    ("workers", -2, "an integer >= 0"),
    ("train_num_samples", 0, "an integer >= 1 or null"),
    ("seed", -1, "an integer >= 0 and <= 4294967295"),
    ("seed", 2**32, "an integer >= 0 and <= 4294967295"),
]


@pytest.mark.parametrize(("key", "value", "expected"), OUT_OF_RANGE)
def test_a_value_out_of_range_is_refused_naming_the_range(key, value, expected):
    with pytest.raises(ConfigError) as raised:
        TrainConfig(**{key: value})
    message = str(raised.value)
    assert message.startswith(f"{key}: expected {expected}, got ")
    shown = message.rsplit("got ", 1)[1]
    number = float(value)
    assert (math.isnan(number) and shown == "nan") or float(shown) == number


def test_bounds_are_inclusive_where_the_help_says_so():
    config = TrainConfig(lambda_inmodal=0, wd=0, lr=0, beta1=0, warmup=0, workers=0, batch_size=2, seed=2**32 - 1)
    assert (config.lambda_inmodal, config.wd, config.lr, config.batch_size, config.seed) == (
        0.0,
        0.0,
        0.0,
        2,
        2**32 - 1,
    )


def test_every_numeric_option_has_a_documented_range_shown_in_the_help(capsys):
    numeric = [item for item in fields(TrainConfig) if item.type in ("int", "float", "int | None", "float | None")]
    assert len(numeric) == 24
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for item in numeric:
        valid = item.metadata["option"].range_text()
        assert valid and f"valid: {valid})" in help_text, item.name
    assert "--epochs INT number of passes over the training data (default: 10; valid: >= 1)" in help_text
    assert "--lambda-inmodal NUMBER, --cylambda1 NUMBER" in help_text


# --- through the command line: flags and YAML alike ----------------------------------------------------------

FLAG_ERRORS = [
    (["--epochs", "three"], "--epochs: expected an integer >= 1, got 'three'"),
    (["--epochs", "0"], "--epochs: expected an integer >= 1, got 0"),
    (["--lambda-inmodal", "-0.25"], "--lambda-inmodal: expected a number >= 0, got -0.25"),
    (["--cylambda2", "nan"], "--lambda-crossmodal: expected a number >= 0, got nan"),
    (["--wd", "-0.1"], "--wd: expected a number >= 0, got -0.1"),
    (["--grad-clip-norm", "-1"], "--grad-clip-norm: expected a number > 0 or null, got -1.0"),
    (["--batch-size", "1"], "--batch-size: expected an integer >= 2, got 1"),
    (["--workers", "1.5"], "--workers: expected an integer >= 0, got '1.5'"),
    (["--prefetch-factor", "0"], "--prefetch-factor: expected an integer >= 1, got 0"),
    (["--precision", "fp8"], "--precision: expected one of auto, fp32, bf16, fp16, got 'fp8'"),
    (
        ["--precision", "pure_bf16"],
        "--precision: OpenCLIP's pure_bf16 stores the weights themselves in bf16; cyclip "
        "keeps float32 weights (AdamW steps smaller than bf16's resolution would be lost) and autocasts the forward "
        "pass: use --precision bf16 (OpenCLIP's amp_bf16)",
    ),
    (["--on-bad-sample", "ignore"], "--on-bad-sample: expected one of skip, error, got 'ignore'"),
]


@pytest.mark.parametrize(("argv", "message"), FLAG_ERRORS)
def test_a_bad_flag_value_is_exit_code_2_and_one_line(argv, message, tmp_path, capsys):
    assert main(["train", "--train-data", "pairs.csv", "--output", str(tmp_path), *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"cyclip: error: {message}\n" and "Traceback" not in captured.out
    assert not any(tmp_path.iterdir())  # refused before anything was written


YAML_ERRORS = [
    ('epochs: "three"', "epochs: expected an integer >= 1, got 'three'"),
    ("workers: true", "workers: expected an integer >= 0, got True"),
    ("lr: [0.1, 0.01]", "lr: expected a number >= 0, got [0.1, 0.01]"),
    ("lambda_inmodal: -0.25", "lambda_inmodal: expected a number >= 0, got -0.25"),
    ("lambda_crossmodal: .inf", "lambda_crossmodal: expected a number >= 0, got inf"),
    ("grad_clip_norm: -1", "grad_clip_norm: expected a number > 0 or null, got -1.0"),
    ("inmodal: 1", "inmodal: expected true or false, got 1"),
    ("model: [RN50]", "model: expected a string, got ['RN50']"),
    ("precision: [amp]", "precision: expected one of auto, fp32, bf16, fp16, got ['amp']"),
    (
        "precision: pure_fp16",
        "precision: OpenCLIP's pure_fp16 stores the weights themselves in fp16; cyclip keeps float32 weights "
        "(AdamW steps smaller than fp16's resolution would be lost) and autocasts the forward pass: use --precision "
        "fp16 (OpenCLIP's amp)",
    ),
    ("epochs:", "epochs: expected an integer >= 1, got null"),
]


@pytest.mark.parametrize(("content", "message"), YAML_ERRORS)
def test_a_bad_yaml_value_is_exit_code_2_and_one_line_naming_the_file_and_key(content, message, tmp_path, capsys):
    path = tmp_path / "run.yaml"
    path.write_text(f"train_data: pairs.csv\noutput: {tmp_path / 'out'}\n{content}\n")
    assert main(["train", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"cyclip: error: {path}: {message}\n"
    assert not (tmp_path / "out").exists()


def test_yaml_numbers_in_scientific_notation_are_numbers_and_flags_override_them(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("lr: 1e-3\ntrain_num_samples: 1e6\nwd: 5e-2\nepochs: 3\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--wd", "0"])
    config = train_config_from_args(args)
    assert (config.lr, config.train_num_samples, config.wd, config.epochs) == (1e-3, 1_000_000, 0.0, 3)


def test_a_bad_flag_value_is_named_as_the_flag_even_when_the_yaml_sets_the_key_too(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 2\n")
    with pytest.raises(ValueError, match=r"^--epochs: expected an integer >= 1, got -2$"):
        train_config_from_args(build_parser().parse_args(["train", "--config", str(path), "--epochs", "-2"]))


def test_demo_flags_take_their_defaults_and_checks_from_the_demo_config(capsys):
    train, demo = TrainConfig(), DemoConfig()
    assert (demo.model, demo.device, demo.seed) == (train.model, train.device, train.seed)
    assert (demo.epochs, demo.workers) == (8, 0)
    args = build_parser().parse_args(["demo"])
    assert all(getattr(args, item.name) is None for item in fields(DemoConfig))  # not given: the config decides
    assert main(["demo", "--epochs", "0"]) == 2
    assert capsys.readouterr().err == "cyclip: error: --epochs: expected an integer >= 1, got 0\n"


# --- devices -------------------------------------------------------------------------------------------------


def fake_cuda(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(runtime, "_mps_available", lambda: False)


DEVICE_ERRORS = [
    ("gpu0", 0, "--device 'gpu0' is not a device name; use auto, cpu, cuda, cuda:N or mps (available here: cpu)"),
    ("cuda0", 2, "--device 'cuda0' is not a device name; use auto, cpu, cuda, cuda:N or mps (available here: "
     "cpu, cuda:0, cuda:1)"),
    ("meta", 0, "--device 'meta' is not a device name; use auto, cpu, cuda, cuda:N or mps (available here: cpu)"),
    ("cuda", 0, "--device cuda: CUDA is not available on this machine; available here: cpu"),
    ("cuda:0", 0, "--device cuda:0: CUDA is not available on this machine; available here: cpu"),
    ("cuda:7", 2, "--device cuda:7: this machine has 2 CUDA device(s), so there is no cuda:7; available here: cpu, "
     "cuda:0, cuda:1"),
    ("mps", 1, "--device mps: MPS (Apple GPU) is not available on this machine; available here: cpu, cuda:0"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "gpus", "message"), DEVICE_ERRORS)
def test_a_device_this_machine_lacks_is_one_line_listing_what_it_has(name, gpus, message, monkeypatch):
    fake_cuda(monkeypatch, gpus)
    with pytest.raises(ValueError) as raised:
        runtime.resolve_device(name)
    assert str(raised.value) == message


@pytest.mark.parametrize(("name", "gpus", "expected"), [("auto", 0, "cpu"), ("cpu", 2, "cpu"), ("cuda:1", 2, "cuda:1")])
def test_devices_this_machine_has_resolve(name, gpus, expected, monkeypatch):
    fake_cuda(monkeypatch, gpus)
    assert runtime.resolve_device(name) == torch.device(expected)


def test_a_missing_device_stops_cyclip_train_before_the_model_is_built(tmp_path, capsys, monkeypatch):
    fake_cuda(monkeypatch, 0)
    import cyclip.train as train_module

    monkeypatch.setattr(train_module, "create_model", lambda *args, **kwargs: pytest.fail("model built"))
    argv = ["train", "--train-data", "pairs.csv", "--output", str(tmp_path / "run"), "--device", "cuda:7"]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "cyclip: error: --device cuda:7: CUDA is not available on this machine; available here: cpu\n"
    )
