"""`--loss` and `--loss-chunk-size` reach the training objective: the terms equal the float64 formulas, the
sigmoid loss's bias lives in the model, its checkpoints load and evaluate."""

from __future__ import annotations

import math

import pytest
import torch

from cyclip.checkpoints import read_checkpoint
from cyclip.cli import main
from cyclip.config import TrainConfig
from cyclip.data import write_digits_demo
from cyclip.models import create_model, load_checkpoint
from cyclip.objective import PairFeatures, build_objective
from tests.helpers.reference import direct_objective, direct_siglip, random_features


@pytest.mark.parametrize("chunk_size", [None, 0, 5])
@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_objective_terms_equal_the_formulas(loss, chunk_size):
    images, texts = (x.double() for x in random_features(12, 6, seed=3, gap=0.4))
    config = TrainConfig(loss=loss, loss_chunk_size=chunk_size, lambda_inmodal=0.25, lambda_crossmodal=0.5)
    scale, bias = torch.tensor(2.3, dtype=torch.float64), torch.tensor(-4.0, dtype=torch.float64)
    head = (scale,) if loss == "clip" else (scale, bias)
    terms = build_objective(config).loss(PairFeatures(images, texts), *head)

    contrastive, inmodal, crossmodal = direct_objective(images, texts, scale)
    if loss == "siglip":
        contrastive = direct_siglip(images, texts, scale, bias)
    torch.testing.assert_close(terms.contrastive, contrastive, rtol=1e-10, atol=0)
    torch.testing.assert_close(terms.inmodal_cyclic, inmodal, rtol=1e-10, atol=0)
    torch.testing.assert_close(terms.loss, contrastive + 0.25 * inmodal + 0.5 * crossmodal, rtol=1e-10, atol=0)


def test_sigmoid_head_starts_at_siglip_s_temperature_and_bias():
    model, *_ = create_model("cyclip-vit-tiny", sigmoid_head=True)
    assert model.logit_scale.exp().item() == pytest.approx(10.0)
    assert model.logit_bias.item() == -10.0
    plain, *_ = create_model("cyclip-vit-tiny")
    assert getattr(plain, "logit_bias", None) is None
    assert plain.logit_scale.exp().item() == pytest.approx(1 / 0.07)


def test_siglip_with_inmodal_views_is_refused_in_one_line(capsys):
    assert main(["train", "--train-data", "x.csv", "--loss", "siglip", "--inmodal"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--loss siglip" in error


@pytest.mark.slow
def test_siglip_run_learns_its_bias_and_its_checkpoint_evaluates(tmp_path, capsys):
    data = write_digits_demo(tmp_path / "digits", seed=0)
    run = tmp_path / "run"
    argv = ["train", "--train-data", str(data.val_csv), "--loss", "siglip", "--loss-chunk-size", "16"]
    fast = ["--model", "cyclip-vit-tiny", "--batch-size", "32", "--workers", "0", "--warmup", "1", "--epochs", "1"]
    assert main([*argv, *fast, "--lambda-inmodal", "0.25", "--output", str(run)]) == 0
    state = read_checkpoint(run / "latest.pt")["model"]
    assert state["logit_bias"].item() != -10.0  # trained
    model, _, _ = load_checkpoint(run / "latest.pt")
    assert model.logit_bias.item() == state["logit_bias"].item()
    assert math.isfinite(model.logit_scale.item())
    capsys.readouterr()
    assert main(["eval", "zeroshot", "--checkpoint", str(run / "latest.pt"), "--data", str(data.zeroshot_dir)]) == 0
    assert "top1" in capsys.readouterr().out
