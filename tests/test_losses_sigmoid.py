"""SigLIP's sigmoid loss, alone and with the cyclic regularizers, against the float64 formula and open_clip."""

import math

import open_clip.loss
import pytest
import torch

from cyclip.losses import cyclip_sigmoid_loss, siglip_loss
from tests.helpers.loss_checks import LargestTensor, relative_error, value_and_grads
from tests.helpers.reference import direct_objective, direct_siglip, random_features

BATCH, DIM = 37, 8
SIGLIP_INIT = (math.log(10), -10.0)  # (log t, b) as SigLIP initialises them


@pytest.mark.parametrize("tile", [None, 1, 5, 16, 37, 64])
@pytest.mark.parametrize("scale_and_bias", [SIGLIP_INIT, (2.0, 1.5)], ids=["init", "trained"])
def test_float64_matches_the_direct_formula_to_1e_10(tile, scale_and_bias):
    images, texts = (x.double() for x in random_features(BATCH, DIM, seed=1, gap=0.5))
    log_t, bias = (torch.tensor(x, dtype=torch.float64) for x in scale_and_bias)
    value, grads = value_and_grads(
        lambda i, t, s, b: siglip_loss(i, t, s, b, chunk_size=tile), images, texts, log_t, bias
    )
    reference, reference_grads = value_and_grads(direct_siglip, images, texts, log_t, bias)
    assert relative_error(value, reference) <= 1e-10
    for grad, reference_grad in zip(grads, reference_grads, strict=True):  # images, texts, log t, b
        assert relative_error(grad, reference_grad) <= 1e-10


@pytest.mark.parametrize("tile", [None, 7, 100])
@pytest.mark.parametrize("gap", [None, 3e-4], ids=["random", "gap-3e-4"])
def test_float32_matches_the_float64_formula_to_1e_5(tile, gap):
    images, texts = random_features(256, 64, seed=2, gap=gap)
    log_t, bias = torch.tensor(3.0), torch.tensor(-8.0)
    value, grads = value_and_grads(
        lambda i, t, s, b: siglip_loss(i, t, s, b, chunk_size=tile), images, texts, log_t, bias
    )
    reference, reference_grads = value_and_grads(
        direct_siglip, images.double(), texts.double(), log_t.double(), bias.double()
    )
    assert value.dtype == torch.float32
    assert relative_error(value, reference) <= 1e-5
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        assert relative_error(grad, reference_grad) <= 1e-5


@pytest.mark.parametrize("tile", [None, 5, 37])
def test_equals_open_clip_siglip_loss_in_value_and_gradient(tile):
    """open_clip's SigLipLoss takes t exponentiated; in one process its local batch is the global one."""
    images, texts = (x.double() for x in random_features(BATCH, DIM, seed=3, gap=0.7))
    log_t, bias = (torch.tensor(x, dtype=torch.float64) for x in (2.2, -3.0))
    value, grads = value_and_grads(
        lambda i, t, s, b: siglip_loss(i, t, s, b, chunk_size=tile), images, texts, log_t, bias
    )
    theirs, their_grads = value_and_grads(
        lambda i, t, s, b: open_clip.loss.SigLipLoss()(i, t, s.exp(), b), images, texts, log_t, bias
    )
    torch.testing.assert_close(value, theirs, rtol=1e-12, atol=0)
    for grad, their_grad in zip(grads, their_grads, strict=True):
        torch.testing.assert_close(grad, their_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("tile", [None, 5])
def test_with_cyclic_regularizers_is_the_sum_of_the_terms(tile):
    images, texts = (x.double() for x in random_features(BATCH, DIM, seed=4, gap=0.5))
    log_t, bias = (torch.tensor(x, dtype=torch.float64) for x in SIGLIP_INIT)

    def ours(i, t, s, b):
        return cyclip_sigmoid_loss(i, t, s, b, 0.25, 0.5, chunk_size=tile).total

    def reference(i, t, s, b):
        _, inmodal, crossmodal = direct_objective(i, t, 0.0)
        return direct_siglip(i, t, s, b) + 0.25 * inmodal + 0.5 * crossmodal

    value, grads = value_and_grads(ours, images, texts, log_t, bias)
    reference_value, reference_grads = value_and_grads(reference, images, texts, log_t, bias)
    assert relative_error(value, reference_value) <= 1e-10
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        assert relative_error(grad, reference_grad) <= 1e-10
    output = cyclip_sigmoid_loss(images, texts, log_t, bias, 0.25, 0.5, chunk_size=tile)
    torch.testing.assert_close(output.contrastive, direct_siglip(images, texts, log_t, bias), rtol=1e-12, atol=0)


def test_the_tiled_sigmoid_objective_never_builds_more_than_a_tile_of_logits():
    batch, dim, tile = 512, 16, 64
    images, texts = (x.requires_grad_() for x in random_features(batch, dim, seed=5))
    log_t, bias = (torch.tensor(x, requires_grad=True) for x in SIGLIP_INIT)
    with LargestTensor() as mode:
        cyclip_sigmoid_loss(images, texts, log_t, bias, chunk_size=tile).total.backward()
    assert mode.largest <= max(tile * tile, batch * dim) < batch * batch


def test_augmented_views_are_refused_with_the_reason():
    images, texts = random_features(4, 8)
    with pytest.raises(ValueError, match="no in-modal terms for augmented views"):
        cyclip_sigmoid_loss(images, texts, 1.0, -10.0, augmented_image_features=images, augmented_text_features=texts)


def test_a_non_scalar_bias_is_refused():
    images, texts = random_features(4, 8)
    with pytest.raises(ValueError, match="logit_bias must be a scalar"):
        siglip_loss(images, texts, 1.0, torch.zeros(2))
