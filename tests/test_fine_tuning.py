"""Fine-tuning public weights: --pretrained with open_clip's tags explained, and --lock-image / --lock-text
(OpenCLIP's LiT options), where what is frozen stays bit-identical and the rest trains."""

from __future__ import annotations

import pytest
import torch

from cyclip.cli import main
from cyclip.config import TrainConfig
from cyclip.data import write_digits_demo
from cyclip.models import load_model
from cyclip.train import Trainer


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """64 image-caption pairs of the demo's digits: two steps of 32."""
    data = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    lines = data.train_csv.read_text().splitlines()
    small = data.train_csv.with_name("small.csv")
    small.write_text("\n".join(lines[:65]) + "\n")
    return small


def train_two_steps(pairs, tmp_path, **options) -> tuple[Trainer, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The trainer, and its model's state (parameters and buffers) before and after two steps at a high lr."""
    config = TrainConfig(
        train_data=str(pairs), epochs=1, batch_size=32, lr=1e-2, warmup=0, workers=0, output=str(tmp_path), **options
    )
    trainer = Trainer(config)
    before = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.fit()
    return trainer, before, trainer.model.state_dict()


def is_image_tower(name: str) -> bool:
    return name.startswith("visual.")


def is_text_tower(name: str) -> bool:
    return not is_image_tower(name) and name != "logit_scale"


def check_frozen_exactly(trainer, before, after, frozen) -> None:
    """Parameters named by `frozen` are bit-identical and out of the optimizer; every other one changed."""
    parameters = dict(trainer.model.named_parameters())
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    for name, parameter in parameters.items():
        if frozen(name):
            assert torch.equal(after[name], before[name]), f"{name} changed"
            assert not parameter.requires_grad and id(parameter) not in optimized, name
        else:
            assert not torch.equal(after[name], before[name]), f"{name} did not train"
            assert id(parameter) in optimized, name
    assert any(frozen(name) for name in parameters) and not all(frozen(name) for name in parameters)


@pytest.mark.slow
def test_lock_image_leaves_the_last_groups_of_a_vit_trainable(pairs, tmp_path):
    trainer, before, after = train_two_steps(
        pairs, tmp_path, model="cyclip-vit-tiny", lock_image=True, lock_image_unlocked_groups=2
    )
    last = len(trainer.model.visual.transformer.resblocks) - 1
    unlocked = (f"visual.transformer.resblocks.{last}.", "visual.ln_post.", "visual.proj")  # OpenCLIP's last 2 groups
    check_frozen_exactly(trainer, before, after, lambda name: is_image_tower(name) and not name.startswith(unlocked))


@pytest.mark.slow
def test_lock_text_freezes_the_text_tower_but_its_projection(pairs, tmp_path):
    trainer, before, after = train_two_steps(
        pairs, tmp_path, model="cyclip-vit-tiny", lock_text=True, lock_text_unlocked_layers=1
    )
    check_frozen_exactly(trainer, before, after, lambda name: is_text_tower(name) and name != "text_projection")


@pytest.mark.slow
def test_lock_image_of_a_resnet_with_and_without_frozen_batchnorm_statistics(pairs, tmp_path):
    statistics = ("running_mean", "running_var")
    trainer, before, after = train_two_steps(pairs, tmp_path / "free", model="cyclip-rn-tiny", lock_image=True)
    check_frozen_exactly(trainer, before, after, is_image_tower)
    moving = [name for name in after if is_image_tower(name) and name.endswith(statistics)]
    assert moving and all(not torch.equal(after[name], before[name]) for name in moving)  # OpenCLIP's default

    trainer, before, after = train_two_steps(
        pairs, tmp_path / "fixed", model="cyclip-rn-tiny", lock_image=True, lock_image_freeze_bn_stats=True
    )
    check_frozen_exactly(trainer, before, after, is_image_tower)
    assert all(torch.equal(after[name], before[name]) for name in moving)

    reloaded = load_model(tmp_path / "fixed" / "latest.pt").model.state_dict()  # frozen BatchNorm has no step counter
    assert all(torch.equal(reloaded[name], before[name]) for name in moving)


def test_lock_details_need_their_lock_and_a_resnet_locks_whole(tmp_path, capsys):
    base = ["train", "--train-data", "pairs.csv", "--output", str(tmp_path)]
    assert main([*base, "--lock-image-unlocked-groups", "2"]) == 2
    assert capsys.readouterr().err == (
        "cyclip: error: --lock-image-unlocked-groups: only applies to a locked tower; add --lock-image or drop it\n"
    )
    assert main([*base, "--lock-text-unlocked-layers", "1", "--lock-image"]) == 2
    assert "add --lock-text or drop it" in capsys.readouterr().err


def test_a_resnet_image_tower_cannot_be_partly_locked(pairs, tmp_path, capsys):
    argv = ["train", "--train-data", str(pairs), "--model", "cyclip-rn-tiny", "--workers", "0", "--batch-size", "32"]
    assert main([*argv, "--lock-image", "--lock-image-unlocked-groups", "1", "--output", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "can only lock a ResNet image tower whole" in error


@pytest.mark.parametrize(
    ("model", "tag", "expected"),
    [
        (
            "ViT-B-32",
            "laion2b_s34b_b79k",
            "hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K open_clip_pytorch_model.bin",
        ),
        ("RN50", "openai", "these weights use QuickGELU, so train them as --model RN50-quickgelu"),
    ],
)
def test_an_open_clip_tag_as_pretrained_says_how_to_fetch_the_file_once(tmp_path, capsys, model, tag, expected):
    argv = ["train", "--train-data", "pairs.csv", "--model", model, "--pretrained", tag, "--output", str(tmp_path)]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--pretrained {tag}: not a file but open_clip's tag for {model} weights" in error
    assert f"open_clip.get_pretrained_cfg('{model}', '{tag}')" in error and expected in error
