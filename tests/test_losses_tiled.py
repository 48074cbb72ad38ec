"""The tiled softmax cross-entropy (chunk_size > 0) against float64 formulas written with N x N matrices."""

import pytest
import torch

from cyclip.losses import CROSSOVER_BATCH, auto_chunk_size, clip_loss, cyclip_loss
from tests.helpers.loss_checks import LargestTensor, relative_error, value_and_grads
from tests.helpers.reference import direct_inmodal_contrastive, direct_objective, random_features

# 37 is prime: only 1 and 37 divide it, so every other tile size leaves a ragged last tile.
BATCH, DIM = 37, 8
TILES = [1, 5, 16, 36, 37, 64]


def direct_total(lambdas):
    def total(images, texts, logit_scale):
        contrastive, inmodal, crossmodal = direct_objective(images, texts, logit_scale)
        return contrastive + lambdas[0] * inmodal + lambdas[1] * crossmodal

    return total


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("lambdas", [(0.0, 0.0), (0.25, 0.25)], ids=["clip", "cyclip"])
def test_tiled_float64_matches_the_direct_formula_to_1e_10(tile, lambdas):
    images, texts = (x.double() for x in random_features(BATCH, DIM, seed=1))
    logit_scale = torch.tensor(2.3, dtype=torch.float64)
    value, grads = value_and_grads(
        lambda i, t, s: cyclip_loss(i, t, s, *lambdas, chunk_size=tile).total, images, texts, logit_scale
    )
    reference, reference_grads = value_and_grads(direct_total(lambdas), images, texts, logit_scale)
    assert relative_error(value, reference) <= 1e-10
    for grad, reference_grad in zip(grads, reference_grads, strict=True):  # images, texts, logit scale
        assert relative_error(grad, reference_grad) <= 1e-10


@pytest.mark.parametrize("tile", [7, 64, 100, 256])
@pytest.mark.parametrize("gap", [None, 3e-4], ids=["random", "gap-3e-4"])
def test_tiled_float32_matches_the_float64_formula_to_1e_5(tile, gap):
    """With a 3e-4 image-text gap the loss is ~1e-3 and 1 - p_jj would cancel: the tiles must not lose it."""
    images, texts = random_features(256, 64, seed=2, gap=gap)
    logit_scale = torch.tensor(2.659)
    value, grads = value_and_grads(lambda i, t, s: clip_loss(i, t, s, chunk_size=tile), images, texts, logit_scale)
    reference, reference_grads = value_and_grads(
        lambda i, t, s: direct_objective(i, t, s)[0], images.double(), texts.double(), logit_scale.double()
    )
    assert value.dtype == torch.float32
    assert relative_error(value, reference) <= 1e-5
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        assert grad.dtype == torch.float32
        assert relative_error(grad, reference_grad) <= 1e-5


@pytest.mark.parametrize("tile", [1, 5, 37])
def test_tiled_inmodal_terms_match_the_released_formula(tile):
    images, texts = (x.double() for x in random_features(BATCH, DIM, seed=3))
    augmented_images, augmented_texts = (x.double() for x in random_features(BATCH, DIM, seed=4, gap=0.3))
    logit_scale = torch.tensor(2.1, dtype=torch.float64)

    def ours(i, t, ai, at, s):
        return cyclip_loss(i, t, s, 0.25, 0.5, ai, at, chunk_size=tile).total

    def reference(i, t, ai, at, s):
        _, inmodal, crossmodal = direct_objective(i, t, s)
        return direct_inmodal_contrastive(i, t, ai, at, s) + 0.25 * inmodal + 0.5 * crossmodal

    inputs = (images, texts, augmented_images, augmented_texts, logit_scale)
    value, grads = value_and_grads(ours, *inputs)
    reference_value, reference_grads = value_and_grads(reference, *inputs)
    assert relative_error(value, reference_value) <= 1e-10
    for grad, reference_grad in zip(grads, reference_grads, strict=True):
        assert relative_error(grad, reference_grad) <= 1e-10


def test_a_single_pair_has_zero_loss_and_gradient_as_in_the_dense_loss():
    images, texts = random_features(1, 4, seed=5)
    value, grads = value_and_grads(lambda i, t, s: clip_loss(i, t, s, chunk_size=4), images, texts, torch.tensor(1.0))
    assert value.item() == 0.0
    for grad in grads:
        assert torch.count_nonzero(grad) == 0


def test_bf16_autocast_features_are_tiled_in_float32():
    images, texts = random_features(128, 32, seed=6, gap=1e-2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images_bf16 = (images @ torch.eye(32)).requires_grad_()
        texts_bf16 = (texts @ torch.eye(32)).requires_grad_()
        assert images_bf16.dtype == torch.bfloat16
        value = clip_loss(images_bf16, texts_bf16, torch.tensor(2.659), chunk_size=48)
    reference = direct_objective(images_bf16.detach(), texts_bf16.detach(), 2.659)[0]
    assert value.dtype == torch.float32
    assert relative_error(value, reference) <= 1e-5
    value.backward()
    assert images_bf16.grad.dtype == texts_bf16.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("augmented", [False, True], ids=["cyclip", "cyclip-inmodal"])
def test_the_tiled_objective_never_builds_more_than_a_tile_of_logits(augmented):
    """Forward and backward of the whole CyCLIP objective: nothing beyond a tile or the N x d features."""
    batch, dim, tile = 512, 16, 64
    features = [x.requires_grad_() for x in random_features(batch, dim, seed=7)]
    if augmented:
        features += [x.requires_grad_() for x in random_features(batch, dim, seed=8)]
    logit_scale = torch.tensor(2.0, requires_grad=True)
    with LargestTensor() as mode:
        output = cyclip_loss(features[0], features[1], logit_scale, 0.25, 0.25, *features[2:], chunk_size=tile)
        output.total.backward()
    assert mode.largest <= max(tile * tile, batch * dim) < batch * batch


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_auto_is_dense_below_the_crossover_and_tiled_from_it(loss):
    crossover = CROSSOVER_BATCH[loss]
    assert auto_chunk_size(crossover - 1, loss, "cpu") == 0
    assert auto_chunk_size(crossover, loss, "cpu") > 0
    assert auto_chunk_size(crossover, loss, "cuda") >= auto_chunk_size(crossover, loss, "cpu")


def test_auto_below_the_crossover_is_the_dense_loss():
    images, texts = random_features(CROSSOVER_BATCH["softmax"] - 1, 16, seed=9)
    scale = torch.tensor(2.0)
    assert torch.equal(clip_loss(images, texts, scale, chunk_size="auto"), clip_loss(images, texts, scale, None))
    assert torch.equal(clip_loss(images, texts, scale, chunk_size=0), clip_loss(images, texts, scale, None))


@pytest.mark.parametrize("chunk_size", [-1, 2.5, "big", True])
def test_bad_chunk_sizes_are_refused_naming_the_value(chunk_size):
    images, texts = random_features(4, 3)
    with pytest.raises(ValueError, match="chunk_size must be") as raised:
        clip_loss(images, texts, 1.0, chunk_size=chunk_size)
    assert repr(chunk_size) in str(raised.value)
