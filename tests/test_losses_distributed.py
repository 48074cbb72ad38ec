"""The objective under torch.distributed (gloo, 2 processes) against the single-process full batch."""

import os
import socket

import open_clip.loss
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cyclip.evaluation.consistency import regularizer_values
from cyclip.losses import CyclipLoss, cyclip_loss, siglip_loss
from tests.helpers.reference import direct_inmodal_contrastive, direct_objective, direct_siglip, random_features

pytestmark = pytest.mark.distributed

WORLD_SIZE, GLOBAL_BATCH, DIM = 2, 16, 8
# Dense, then tiles that split each rank's 8 rows raggedly, evenly, and not at all.
CHUNK_SIZES = [None, 3, 4, 20]


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


def sharded_objective(lambdas, chunk_size):
    def objective(images, texts, logit_scale):
        return cyclip_loss(images, texts, logit_scale, *lambdas, chunk_size=chunk_size)[1:]

    return objective


def assert_sharded_gradients_match(shard_grads, full_grads, rows, shard_scalar_grads, full_scalar_grads):
    """Features: world_size x the full-batch rows; scalars (own parameters): DDP's rank average is the full one."""
    for shard_grad, full_grad in zip(shard_grads, full_grads, strict=True):
        torch.testing.assert_close(shard_grad, WORLD_SIZE * full_grad[rows], rtol=0, atol=1e-8)
    for shard_grad, full_grad in zip(shard_scalar_grads, full_scalar_grads, strict=True):
        rank_grads = [torch.zeros_like(shard_grad) for _ in range(WORLD_SIZE)]
        dist.all_gather(rank_grads, shard_grad)
        torch.testing.assert_close(sum(rank_grads) / WORLD_SIZE, full_grad, rtol=0, atol=1e-8)


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
        for chunk_size in CHUNK_SIZES:
            shard_output, shard_images_grad, shard_texts_grad, shard_scale_grad = loss_and_grads(
                sharded_objective(lambdas, chunk_size), images[rows], texts[rows], logit_scale, lambdas
            )
            for shard_value, full_value in zip(shard_output, full_output, strict=True):
                torch.testing.assert_close(shard_value, full_value, rtol=0, atol=1e-8)
            assert_sharded_gradients_match(
                (shard_images_grad, shard_texts_grad),
                (full_images_grad, full_texts_grad),
                rows,
                (shard_scale_grad,),
                (full_scale_grad,),
            )
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

    def ours(chunk_size):
        return lambda i, t, ai, at, scale: (
            cyclip_loss(
                i, t, scale, 0.25, 0.25, augmented_image_features=ai, augmented_text_features=at, chunk_size=chunk_size
            ).total
        )

    full_value, full_grads, full_scale_grad = grads([images, texts, *augmented], logit_scale, reference)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        shards = [x[rows] for x in (images, texts, *augmented)]
        for chunk_size in CHUNK_SIZES:
            value, shard_grads, scale_grad = grads(shards, logit_scale, ours(chunk_size))
            torch.testing.assert_close(value, full_value, rtol=0, atol=1e-8)
            assert_sharded_gradients_match(shard_grads, full_grads, rows, (scale_grad,), (full_scale_grad,))
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


def value_and_grads(objective, *inputs):
    inputs = [x.clone().requires_grad_() for x in inputs]
    value = objective(*inputs)
    value.backward()
    return value.detach(), [x.grad for x in inputs]


def compare_siglip_with_single_process_and_open_clip(rank: int, port: int) -> None:
    """The sigmoid loss: our shards against the full-batch formula and against open_clip's SigLipLoss."""
    images, texts = (x.double() for x in random_features(GLOBAL_BATCH, DIM, seed=13, gap=0.6))
    log_t, bias = torch.tensor(2.0, dtype=torch.float64), torch.tensor(-3.0, dtype=torch.float64)
    rows = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)
    full_value, full_grads = value_and_grads(direct_siglip, images, texts, log_t, bias)

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        shard = (images[rows], texts[rows], log_t, bias)
        for chunk_size in CHUNK_SIZES:
            value, grads = value_and_grads(
                lambda i, t, s, b, chunk_size=chunk_size: siglip_loss(i, t, s, b, chunk_size=chunk_size), *shard
            )
            torch.testing.assert_close(value, full_value, rtol=0, atol=1e-8)
            assert_sharded_gradients_match(grads[:2], full_grads[:2], rows, grads[2:], full_grads[2:])
            for dist_impl in ("bidir", "gather"):
                # open_clip takes t exponentiated and returns the loss normalised by the local batch.
                siglip = open_clip.loss.SigLipLoss(rank=rank, world_size=WORLD_SIZE, dist_impl=dist_impl)
                their_value, their_grads = value_and_grads(
                    lambda i, t, s, b, siglip=siglip: siglip(i, t, s.exp(), b), *shard
                )
                rank_values = [torch.zeros_like(their_value) for _ in range(WORLD_SIZE)]
                dist.all_gather(rank_values, their_value)
                torch.testing.assert_close(value, sum(rank_values) / WORLD_SIZE, rtol=1e-12, atol=0)
                for grad, their_grad in zip(grads, their_grads, strict=True):  # the same on every rank
                    torch.testing.assert_close(grad, their_grad, rtol=1e-10, atol=1e-14)
    finally:
        dist.destroy_process_group()


def test_evaluation_regularizers_ignore_the_process_group():
    mp.spawn(evaluate_local_rows, args=(free_port(),), nprocs=WORLD_SIZE)


def test_sharded_siglip_equals_the_full_batch_loss_and_open_clip():
    mp.spawn(compare_siglip_with_single_process_and_open_clip, args=(free_port(),), nprocs=WORLD_SIZE)


def compare_module_with_single_process(rank: int, port: int) -> None:
    """CyclipLoss gets each rank's features and the exponentiated scale, as in open_clip_train."""
    images, texts = (x.double() for x in random_features(GLOBAL_BATCH, DIM, seed=14))
    log_scale = torch.tensor(1.7, dtype=torch.float64)
    rows = slice(rank * GLOBAL_BATCH // WORLD_SIZE, (rank + 1) * GLOBAL_BATCH // WORLD_SIZE)

    def reference(i, t, s):
        contrastive, inmodal, crossmodal = direct_objective(i, t, s)
        return contrastive + 0.25 * inmodal + 0.25 * crossmodal

    full_value, full_grads = value_and_grads(reference, images, texts, log_scale)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        for chunk_size in CHUNK_SIZES:
            loss = CyclipLoss(chunk_size=chunk_size)
            value, grads = value_and_grads(
                lambda i, t, s, loss=loss: loss(i, t, s.exp()), images[rows], texts[rows], log_scale
            )
            torch.testing.assert_close(value, full_value, rtol=0, atol=1e-8)
            assert_sharded_gradients_match(grads[:2], full_grads[:2], rows, grads[2:], full_grads[2:])
    finally:
        dist.destroy_process_group()


def test_sharded_cyclip_loss_module_equals_the_full_batch_objective():
    mp.spawn(compare_module_with_single_process, args=(free_port(),), nprocs=WORLD_SIZE)
