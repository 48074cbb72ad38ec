import open_clip.loss
import open_clip_train.main
import pytest
import torch

import cyclip.models  # noqa: F401  (registers the bundled model configs with open_clip)
from cyclip.losses import CyclipLoss, CyclipSigLipLoss, clip_loss, cyclic_regularizers, cyclip_loss, siglip_loss
from tests.helpers.loss_checks import LargestTensor, relative_error
from tests.helpers.reference import direct_inmodal_contrastive, direct_objective, random_features

LAMBDA_IN, LAMBDA_CROSS = 0.25, 0.25


def total_and_grads(images, texts, logit_scale, objective):
    """Value of `objective(images, texts, logit_scale)` and its gradients w.r.t. all three inputs."""
    images = images.clone().requires_grad_()
    texts = texts.clone().requires_grad_()
    logit_scale = logit_scale.clone().requires_grad_()
    value = objective(images, texts, logit_scale)
    value.backward()
    return value.detach(), images.grad, texts.grad, logit_scale.grad


def reference_total(images, texts, logit_scale):
    contrastive, inmodal, crossmodal = direct_objective(images, texts, logit_scale)
    return contrastive + LAMBDA_IN * inmodal + LAMBDA_CROSS * crossmodal


@pytest.mark.parametrize("gap", [None, 3e-4], ids=["random", "nearly-aligned"])
def test_values_match_float64_direct_formula(gap):
    images, texts = random_features(256, 64, seed=1, gap=gap)
    logit_scale = torch.tensor(2.659)
    output = cyclip_loss(images, texts, logit_scale, LAMBDA_IN, LAMBDA_CROSS)
    contrastive, inmodal, crossmodal = direct_objective(images, texts, logit_scale)
    for value in output:
        assert value.dtype == torch.float32
    assert relative_error(output.contrastive, contrastive) <= 1e-5
    assert relative_error(output.inmodal_cyclic, inmodal) <= 1e-5
    assert relative_error(output.crossmodal_cyclic, crossmodal) <= 1e-5
    assert relative_error(output.total, contrastive + LAMBDA_IN * inmodal + LAMBDA_CROSS * crossmodal) <= 1e-5


@pytest.mark.parametrize("gap", [None, 3e-4], ids=["random", "nearly-aligned"])
def test_gradients_match_float64_direct_formula(gap):
    images, texts = random_features(256, 64, seed=2, gap=gap)
    logit_scale = torch.tensor(2.659)
    _, *grads = total_and_grads(
        images, texts, logit_scale, lambda i, t, s: cyclip_loss(i, t, s, LAMBDA_IN, LAMBDA_CROSS).total
    )
    _, *reference_grads = total_and_grads(images.double(), texts.double(), logit_scale.double(), reference_total)
    for grad, reference in zip(grads, reference_grads, strict=True):
        assert relative_error(grad, reference) <= 1e-5


@pytest.mark.parametrize("gap", [None, 3e-4], ids=["random", "nearly-aligned"])
def test_regularizer_gradients_alone_match(gap):
    """The regularizer gradients are tiny next to the contrastive ones: check them on their own."""
    images, texts = random_features(128, 32, seed=3, gap=gap)
    for which in (0, 1):
        ours = lambda i, t, s, which=which: cyclic_regularizers(i, t)[which]  # noqa: E731
        reference = lambda i, t, s, which=which: direct_objective(i, t, s)[1 + which]  # noqa: E731
        _, *grads = total_and_grads(images, texts, torch.tensor(0.0), ours)
        _, *reference_grads = total_and_grads(images.double(), texts.double(), torch.tensor(0.0), reference)
        for grad, reference in zip(grads[:2], reference_grads[:2], strict=True):
            assert relative_error(grad, reference) <= 1e-5


def test_textbook_gram_form_would_fail_the_aligned_tolerance():
    """The tolerance above is meaningful: the |I^T I|^2 + |T^T T|^2 - 2|I^T T|^2 form misses it."""
    images, texts = random_features(256, 64, seed=1, gap=3e-4)
    batch = images.shape[0]
    gram = (
        (images.T @ images).square().sum() + (texts.T @ texts).square().sum() - 2 * (images.T @ texts).square().sum()
    ) / batch
    _, inmodal, _ = direct_objective(images, texts, 0.0)
    assert relative_error(gram, inmodal) > 1e-4


def test_zero_lambdas_give_the_clip_loss_and_its_gradient():
    images, texts = random_features(64, 16, seed=4)
    logit_scale = torch.tensor(1.5)
    value, *grads = total_and_grads(images, texts, logit_scale, lambda i, t, s: cyclip_loss(i, t, s, 0.0, 0.0).total)
    clip_value, *clip_grads = total_and_grads(images, texts, logit_scale, clip_loss)
    assert torch.equal(value, clip_value)
    for grad, clip_grad in zip(grads, clip_grads, strict=True):
        torch.testing.assert_close(grad, clip_grad, rtol=0, atol=0)
    output = cyclip_loss(images, texts, logit_scale, 0.0, 0.0)
    _, inmodal, crossmodal = direct_objective(images, texts, logit_scale)
    assert relative_error(output.inmodal_cyclic, inmodal) <= 1e-5  # still reported for logging
    assert relative_error(output.crossmodal_cyclic, crossmodal) <= 1e-5


def test_clip_loss_equals_open_clip_clip_loss():
    images, texts = random_features(128, 32, seed=5)
    logit_scale = torch.tensor(2.659)
    ours = clip_loss(images, texts, logit_scale)
    theirs = open_clip.loss.ClipLoss()(images, texts, logit_scale.exp())
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)


def test_bf16_autocast_inputs_give_float32_accurate_regularizers():
    images, texts = random_features(256, 64, seed=6, gap=1e-2)
    projection = torch.eye(64) + 0.01 * torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        images_bf16, texts_bf16 = images @ projection, texts @ projection  # what a model emits under autocast
        assert images_bf16.dtype == torch.bfloat16
        images_bf16.requires_grad_()
        texts_bf16.requires_grad_()
        inmodal, crossmodal = cyclic_regularizers(images_bf16, texts_bf16)
    assert inmodal.dtype == crossmodal.dtype == torch.float32
    _, inmodal_ref, crossmodal_ref = direct_objective(images_bf16.detach(), texts_bf16.detach(), 0.0)
    assert relative_error(inmodal, inmodal_ref) <= 1e-5
    assert relative_error(crossmodal, crossmodal_ref) <= 1e-5
    (inmodal + crossmodal).backward()
    assert images_bf16.grad.dtype == torch.bfloat16


def test_regularizers_never_build_a_batch_by_batch_tensor():
    batch, dim = 512, 16
    images, texts = random_features(batch, dim, seed=7)
    images.requires_grad_()
    texts.requires_grad_()
    with LargestTensor() as mode:
        inmodal, crossmodal = cyclic_regularizers(images, texts)
        (inmodal + crossmodal).backward()
    assert mode.largest <= 3 * batch * dim < batch * batch


@pytest.mark.parametrize(
    ("images", "texts", "message"),
    [
        (torch.zeros(8), torch.zeros(8), "must be 2-D"),
        (torch.zeros(2, 8, 4), torch.zeros(2, 8, 4), "must be 2-D"),
        (torch.zeros(8, 4), torch.zeros(6, 4), "same shape"),
        (torch.zeros(8, 4), torch.zeros(8, 5), "same shape"),
        (torch.zeros(0, 4), torch.zeros(0, 4), "at least one row"),
        (torch.zeros(8, 4, dtype=torch.long), torch.zeros(8, 4, dtype=torch.long), "floating-point"),
    ],
)
def test_bad_shapes_raise_value_error_naming_what_was_received(images, texts, message):
    for function in (
        lambda i, t: cyclip_loss(i, t, 0.0, 0.25, 0.25),
        cyclic_regularizers,
        lambda i, t: clip_loss(i, t, 0.0),
    ):
        with pytest.raises(ValueError, match=message) as raised:
            function(images, texts)
        assert str(tuple(images.shape)) in str(raised.value) or "dtype" in str(raised.value)


def test_non_scalar_logit_scale_is_refused():
    images, texts = random_features(4, 3)
    with pytest.raises(ValueError, match="logit_scale must be a scalar"):
        clip_loss(images, texts, torch.ones(2))


def test_inmodal_augmented_loss_matches_the_released_formula_in_value_and_gradient():
    images, texts = (x.double() for x in random_features(24, 16, seed=3))
    augmented_images, augmented_texts = (x.double() for x in random_features(24, 16, seed=4, gap=0.3))
    inputs = [x.clone().requires_grad_() for x in (images, texts, augmented_images, augmented_texts)]
    scale = torch.tensor(2.1, dtype=torch.float64, requires_grad=True)
    output = cyclip_loss(inputs[0], inputs[1], scale, 0.25, 0.5, inputs[2], inputs[3])
    output.total.backward()

    reference_inputs = [x.clone().requires_grad_() for x in (images, texts, augmented_images, augmented_texts)]
    reference_scale = scale.detach().clone().requires_grad_()
    contrastive = direct_inmodal_contrastive(*reference_inputs, reference_scale)
    _, inmodal, crossmodal = direct_objective(reference_inputs[0], reference_inputs[1], reference_scale)
    (contrastive + 0.25 * inmodal + 0.5 * crossmodal).backward()

    torch.testing.assert_close(output.contrastive, contrastive, rtol=1e-12, atol=0)
    torch.testing.assert_close(output.inmodal_cyclic, inmodal, rtol=1e-12, atol=0)  # regularizers on originals only
    for ours, theirs in zip(inputs, reference_inputs, strict=True):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(scale.grad, reference_scale.grad, rtol=1e-10, atol=1e-12)


def test_one_augmented_view_without_the_other_is_refused():
    images, texts = random_features(4, 8)
    with pytest.raises(ValueError, match="both augmented"):
        cyclip_loss(images, texts, 1.0, 0.25, 0.25, augmented_image_features=images)


def test_augmented_views_of_another_shape_are_refused():
    images, texts = random_features(4, 8)
    augmented_images, augmented_texts = random_features(3, 8)
    with pytest.raises(ValueError, match=r"one augmented view per pair") as raised:
        cyclip_loss(images, texts, 1.0, 0.25, 0.25, augmented_images, augmented_texts)
    assert "(3, 8)" in str(raised.value) and "(4, 8)" in str(raised.value)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_cyclip_loss_module_takes_the_exponentiated_scale_and_equals_the_functional_api(chunk_size):
    images, texts = (x.double() for x in random_features(37, 16, seed=8, gap=0.5))
    log_scale = torch.tensor(2.3, dtype=torch.float64)
    module = CyclipLoss(lambda_inmodal=0.25, lambda_crossmodal=0.5, chunk_size=chunk_size)
    ours, *ours_grads = total_and_grads(images, texts, log_scale, lambda i, t, s: module(i, t, s.exp()))
    functional, *functional_grads = total_and_grads(
        images, texts, log_scale, lambda i, t, s: cyclip_loss(i, t, s, 0.25, 0.5, chunk_size=chunk_size).total
    )
    torch.testing.assert_close(ours, functional, rtol=1e-14, atol=0)
    for grad, functional_grad in zip(ours_grads, functional_grads, strict=True):
        torch.testing.assert_close(grad, functional_grad, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("chunk_size", [None, 48])
def test_cyclip_loss_module_with_zero_lambdas_equals_open_clip_clip_loss(chunk_size):
    images, texts = random_features(128, 32, seed=9)
    log_scale = torch.tensor(2.659)
    module = CyclipLoss(lambda_inmodal=0.0, lambda_crossmodal=0.0, chunk_size=chunk_size)
    ours, *ours_grads = total_and_grads(images, texts, log_scale, lambda i, t, s: module(i, t, s.exp()))
    theirs, *their_grads = total_and_grads(
        images, texts, log_scale, lambda i, t, s: open_clip.loss.ClipLoss()(i, t, s.exp())
    )
    torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=0)
    for grad, their_grad in zip(ours_grads, their_grads, strict=True):  # two float32 computations
        assert relative_error(grad, their_grad.double()) <= 1e-5


def test_modules_take_an_open_clip_models_output_dict_as_open_clip_train_calls_them():
    """open_clip_train calls loss(**model_out, output_dict=True) and sums the values: the sum is the total."""
    torch.manual_seed(0)
    for loss, init_logit_bias in ((CyclipLoss(), None), (CyclipSigLipLoss(lambda_inmodal=0.5), -10.0)):
        model = open_clip.create_model("cyclip-vit-tiny", init_logit_bias=init_logit_bias, output_dict=True)
        model_out = model(torch.randn(4, 3, 32, 32), torch.randint(1, 100, (4, 32)))
        losses = loss(**model_out, output_dict=True)
        assert set(losses) == {"contrastive_loss", "inmodal_cyclic_loss", "crossmodal_cyclic_loss"}
        total = loss(**model_out)
        torch.testing.assert_close(sum(losses.values()), total, rtol=1e-6, atol=0)
        log_scale, features = model.logit_scale, (model_out["image_features"], model_out["text_features"])
        if init_logit_bias is None:
            expected = cyclip_loss(*features, log_scale, 0.25, 0.25).total  # CyclipLoss(): the paper's lambdas
        else:
            expected = siglip_loss(*features, log_scale, model.logit_bias) + sum(
                lam * reg for lam, reg in zip((0.5, 0.25), cyclic_regularizers(*features), strict=True)
            )
        torch.testing.assert_close(total, expected, rtol=1e-6, atol=0)
        total.backward()
        assert model.logit_scale.grad is not None


def test_the_two_scale_conventions_cannot_be_swapped():
    images, texts = random_features(8, 4)
    log_scale = torch.nn.Parameter(torch.tensor(2.659))
    with pytest.raises(ValueError, match="LOG of the inverse temperature"):
        cyclip_loss(images, texts, log_scale.exp(), 0.25, 0.25)
    with pytest.raises(ValueError, match="EXPONENTIATED"):
        CyclipLoss()(images, texts, log_scale)


def test_cyclip_loss_module_refuses_a_siglip_model_output():
    images, texts = random_features(8, 4)
    with pytest.raises(ValueError, match="CyclipSigLipLoss"):
        CyclipLoss()(images, texts, torch.tensor(10.0), logit_bias=torch.tensor(-10.0))


def test_modules_refuse_a_bad_chunk_size_when_built():
    with pytest.raises(ValueError, match="chunk_size must be"):
        CyclipLoss(chunk_size=-3)


def test_open_clip_train_looks_its_loss_up_where_the_readme_launcher_replaces_it():
    """The README's launcher sets open_clip_train.main.create_loss; main() must read that global at run time."""
    assert callable(open_clip_train.main.create_loss)
    assert "create_loss" in open_clip_train.main.main.__code__.co_names
