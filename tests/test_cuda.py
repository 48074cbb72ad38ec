"""On a GPU: the objective under bf16 autocast, training steps in bf16 and fp16 (with the gradient
scaler), and CPU and CUDA agreeing on the same batch. Marked `cuda`: they skip where there is no GPU."""

from __future__ import annotations

import copy

import pytest
import torch

from cyclip.config import TrainConfig
from cyclip.data import write_digits_demo
from cyclip.losses import cyclip_loss
from cyclip.models import create_model
from cyclip.runtime import resolve_precision
from cyclip.train import Trainer
from tests.helpers.reference import direct_objective, random_features

pytestmark = pytest.mark.cuda


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    data = write_digits_demo(tmp_path_factory.mktemp("digits"), seed=0)
    small = data.train_csv.with_name("small.csv")
    small.write_text("\n".join(data.train_csv.read_text().splitlines()[:129]) + "\n")  # 4 steps of 32
    return small


def test_loss_under_bf16_autocast_on_the_gpu_matches_float64_on_the_cpu():
    images, texts = random_features(512, 64, seed=3, gap=0.5)
    logit_scale = torch.tensor(2.5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        output = cyclip_loss(images.cuda(), texts.cuda(), logit_scale.cuda(), 0.25, 0.25)
    reference = direct_objective(images, texts, logit_scale)
    # The regularizers run in float32 even under autocast; the logits matmul is bf16 (8-bit mantissa).
    torch.testing.assert_close(output.inmodal_cyclic.cpu().double(), reference[1], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(output.crossmodal_cyclic.cpu().double(), reference[2], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(output.contrastive.cpu().double(), reference[0], rtol=2e-2, atol=0)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_steps_in_reduced_precision_keep_float32_weights_and_learn(digits, tmp_path, precision):
    config = TrainConfig(
        train_data=str(digits), model="cyclip-rn-tiny", epochs=2, batch_size=32, warmup=1, lr=1e-3, workers=0,
        log_every=1, precision=precision, device="cuda", output=str(tmp_path), lambda_inmodal=0.25,
        lambda_crossmodal=0.25,
    )  # fmt: skip
    trainer = Trainer(config)
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    result = trainer.fit()
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    losses = [summary["train"]["loss"] for summary in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    if precision == "fp16":
        assert trainer.scaler.get_scale() > 0


def test_precision_auto_picks_bf16_on_a_gpu_with_native_bf16():
    expected = "bf16" if torch.cuda.get_device_capability(0)[0] >= 8 else "fp32"  # Ampere and later
    assert resolve_precision("auto", torch.device("cuda:0")) == expected


@pytest.fixture
def no_tf32():
    """Full float32 matmuls and convolutions on the GPU, as on the CPU; restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_cpu_and_cuda_give_the_same_loss_and_gradients_on_the_same_batch(no_tf32):
    torch.manual_seed(0)
    on_cpu, *_ = create_model("cyclip-rn-tiny")
    on_gpu = copy.deepcopy(on_cpu).cuda()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(16, 3, 64, 64, generator=generator)
    tokens = torch.randint(1, 49407, (16, 32), generator=generator)
    outputs = []
    for model, device in ((on_cpu, "cpu"), (on_gpu, "cuda")):
        image_features, text_features, _ = model(images.to(device), tokens.to(device))
        output = cyclip_loss(image_features, text_features, model.logit_scale, 0.25, 0.25)
        output.total.backward()
        outputs.append(torch.stack(list(output)).detach().cpu())
    torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-4, atol=1e-5)
    for (name, reference), (_, parameter) in zip(on_cpu.named_parameters(), on_gpu.named_parameters(), strict=True):
        torch.testing.assert_close(parameter.grad.cpu(), reference.grad, rtol=1e-3, atol=1e-5, msg=name)
