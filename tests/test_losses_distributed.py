"""The objective under torch.distributed (gloo, 2 processes) against the single-process full batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cyclip.evaluation.consistency import regularizer_values
from cyclip.losses import cyclip_loss
from tests.helpers.reference import direct_inmodal_contrastive, direct_objective, random_features

pytestmark = pytest.mark.distributed

WORLD_SIZE, GLOBAL_BATCH, DIM = 2, 16, 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def loss_and_grads(objective, images, texts, logit_scale, lambdas):
    """(total, contrastive, inmodal, crossmodal) and the gradients of total w.r.t. the three inputs."""
    images, texts, logit_scale = (x.clone().requires_grad_() for x in (images, texts, logit_scale))
    contrastive, inmodal, crossmodal = objective(images, texts, logit_scale)
    total = contrastive + lambdas[0] * inmodal + lambdas[1] * crossmodal
    total.backward()
    return (total, contrastive, inmodal, crossmodal), images.grad, texts.grad, logit_scale.grad


def sharded_objective(lambdas):
    return lambda images, texts, logit_scale: cyclip_loss(images, texts, logit_scale, *lambdas)[1:]


def compare_with_single_process(rank: int, port: int, lambdas: tuple[float, float]) -> None:
    images, texts = (x.double() for x in random_features(GLOBAL_BATCH, DIM, seed=11))
    logit_scale = torch.tensor(1.2, dtype=torch.float64)
    rows = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)
    # The reference: the direct N x N formula on the whole batch.
    full_output, full_images_grad, full_texts_grad, full_scale_grad = loss_and_grads(
        direct_objective, images, texts, logit_scale, lambdas
    )

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        shard_output, shard_images_grad, shard_texts_grad, shard_scale_grad = loss_and_grads(
            sharded_objective(lambdas), images[rows], texts[rows], logit_scale, lambdas
        )
        for shard_value, full_value in zip(shard_output, full_output, strict=True):
            torch.testing.assert_close(shard_value, full_value, rtol=0, atol=1e-8)
        torch.testing.assert_close(shard_images_grad, WORLD_SIZE * full_images_grad[rows], rtol=0, atol=1e-8)
        torch.testing.assert_close(shard_texts_grad, WORLD_SIZE * full_texts_grad[rows], rtol=0, atol=1e-8)
        # logit_scale is a parameter of its own: DDP's average of the rank gradients is the full one.
        scale_grads = [torch.zeros_like(shard_scale_grad) for _ in range(WORLD_SIZE)]
        dist.all_gather(scale_grads, shard_scale_grad)
        torch.testing.assert_close(sum(scale_grads) / WORLD_SIZE, full_scale_grad, rtol=0, atol=1e-8)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("lambdas", [(0.0, 0.0), (0.25, 0.25), (0.5, 0.1)], ids=["clip", "cyclip", "unequal"])
def test_sharded_objective_equals_the_full_batch_objective(lambdas):
    mp.spawn(compare_with_single_process, args=(free_port(), lambdas), nprocs=WORLD_SIZE)


def compare_augmented_with_single_process(rank: int, port: int) -> None:
    """--inmodal: the augmented views are sharded and gathered like the originals."""
    images, texts = (x.double() for x in random_features(GLOBAL_BATCH, DIM, seed=11))
    augmented = [x.double() for x in random_features(GLOBAL_BATCH, DIM, seed=12, gap=0.2)]
    logit_scale = torch.tensor(1.2, dtype=torch.float64)
    rows = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)

    def grads(features, scale, objective):
        features = [x.clone().requires_grad_() for x in features]
        scale = scale.clone().requires_grad_()
        value = objective(*features, scale)
        value.backward()
        return value.detach(), [x.grad for x in features], scale.grad

    def reference(i, t, ai, at, scale):
        _, inmodal, crossmodal = direct_objective(i, t, scale)
        return direct_inmodal_contrastive(i, t, ai, at, scale) + 0.25 * inmodal + 0.25 * crossmodal

    def ours(i, t, ai, at, scale):
        return cyclip_loss(i, t, scale, 0.25, 0.25, augmented_image_features=ai, augmented_text_features=at).total

    full_value, full_grads, full_scale_grad = grads([images, texts, *augmented], logit_scale, reference)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        shards = [x[rows] for x in (images, texts, *augmented)]
        value, shard_grads, scale_grad = grads(shards, logit_scale, ours)
        torch.testing.assert_close(value, full_value, rtol=0, atol=1e-8)
        for shard_grad, full_grad in zip(shard_grads, full_grads, strict=True):
            torch.testing.assert_close(shard_grad, WORLD_SIZE * full_grad[rows], rtol=0, atol=1e-8)
        scale_grads = [torch.zeros_like(scale_grad) for _ in range(WORLD_SIZE)]
        dist.all_gather(scale_grads, scale_grad)
        torch.testing.assert_close(sum(scale_grads) / WORLD_SIZE, full_scale_grad, rtol=0, atol=1e-8)
    finally:
        dist.destroy_process_group()


def test_sharded_inmodal_objective_equals_the_full_batch_objective():
    mp.spawn(compare_augmented_with_single_process, args=(free_port(),), nprocs=WORLD_SIZE)


def evaluate_local_rows(rank: int, port: int) -> None:
    """The evaluation's regularizers inside a process group: each rank measures its own rows only."""
    images, texts = (x.double() for x in random_features(GLOBAL_BATCH, DIM, seed=13, gap=0.3))
    rows = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)
    _, inmodal, crossmodal = direct_objective(images[rows], texts[rows], 0.0)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        values = regularizer_values(images[rows], texts[rows])
        torch.testing.assert_close(values["inmodal_regularizer"], inmodal.item(), rtol=1e-12, atol=0)
        torch.testing.assert_close(values["crossmodal_regularizer"], crossmodal.item(), rtol=1e-12, atol=0)
    finally:
        dist.destroy_process_group()


def test_evaluation_regularizers_ignore_the_process_group():
    mp.spawn(evaluate_local_rows, args=(free_port(),), nprocs=WORLD_SIZE)
