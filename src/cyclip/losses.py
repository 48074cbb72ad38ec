"""The CLIP and CyCLIP objective as pure functions of L2-normalised features (derivations: docs/objective.md).

    L = L_contrastive + lambda_inmodal * L_inmodal + lambda_crossmodal * L_crossmodal
    L_inmodal    = (1/N) sum_jk (<I_j,I_k> - <T_j,T_k>)^2
    L_crossmodal = (1/N) sum_jk (<I_j,T_k> - <I_k,T_j>)^2

The regularizers come from three d x d matrices of D = I - T and P = I + T, never from an N x N one,
in float32 (float64 stays float64) even under autocast. Under torch.distributed each function takes
this rank's shard and returns the global-batch value; the gradient reaching the local features is
world_size x the matching rows of the single-process gradient, so DDP's gradient averaging is exact.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from cyclip import distributed


class CyclipLossOutput(NamedTuple):
    total: torch.Tensor
    contrastive: torch.Tensor
    inmodal_cyclic: torch.Tensor
    crossmodal_cyclic: torch.Tensor


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Shape checks only: they read metadata and never synchronise with the device."""
    for name, features in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(features, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(features).__name__}")
        if features.dim() != 2:
            raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(features.shape)}")
        if not features.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {features.dtype}")
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} "
            "must have the same shape (batch, dim): one caption per image, one embedding size"
        )
    if image_features.shape[0] == 0 or image_features.shape[1] == 0:
        raise ValueError(f"features must have at least one row and one column, got shape {tuple(image_features.shape)}")


def clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    """Symmetric cross-entropy of exp(logit_scale) * I T^T against the diagonal, mean over the batch.

    `logit_scale` is the log of the inverse temperature (the model's `logit_scale` parameter, not
    its exponential).
    """
    _check_features(image_features, text_features)
    return distributed.global_mean(_local_clip_loss(image_features, text_features, logit_scale))


def _local_clip_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float
) -> torch.Tensor:
    return (
        _one_way_loss(image_features, text_features, logit_scale)
        + _one_way_loss(text_features, image_features, logit_scale)
    ) / 2


def _one_way_loss(queries: torch.Tensor, keys: torch.Tensor, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """This rank's share of mean_j CE(exp(logit_scale) * q_j . K^T, j): each query must pick its own key.

    Each rank computes the rows of its own queries against the keys of every rank (gathered with gradient);
    `distributed.global_mean` of the result is the global-batch value.
    """
    logit_scale = torch.as_tensor(logit_scale, device=queries.device)
    if logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a scalar, got shape {tuple(logit_scale.shape)}")
    all_keys = distributed.gather_with_grad(keys)
    logits = logit_scale.reshape(()).exp() * queries @ all_keys.T
    return _diagonal_cross_entropy(logits, distributed.rank() * queries.shape[0])


def _diagonal_cross_entropy(logits: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean over rows j of the cross-entropy of row j against column j + offset.

    Written as softplus(logsumexp_{k != target}(z_k - z_target)), which equals log-softmax cross-entropy
    but keeps float32 precision when the loss is tiny (well-aligned batches), where 1 - p cancels.
    """
    if logits.shape[1] == 1:  # a single pair: nothing to contrast against
        return logits.sum() * 0.0
    logits = _at_least_float32(logits)
    shifted = logits - logits.diagonal(offset)[:, None]
    shifted.diagonal(offset).fill_(float("-inf"))
    return F.softplus(torch.logsumexp(shifted, dim=1)).mean()


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class _CyclicRegularizers(torch.autograd.Function):
    """Both regularizers from G_D = D^T D, G_P = P^T P and K = P^T D (summed over ranks).

    sum_jk (<I_j,I_k> - <T_j,T_k>)^2 = (<G_D, G_P>_F + tr(K K)) / 2
    sum_jk (<I_j,T_k> - <I_k,T_j>)^2 = (<G_D, G_P>_F - tr(K K)) / 2
    The backward needs only the global d x d matrices, so it communicates nothing.
    """

    @staticmethod
    def forward(ctx, image_features: torch.Tensor, text_features: torch.Tensor):
        with torch.autocast(image_features.device.type, enabled=False):
            images, texts = _at_least_float32(image_features), _at_least_float32(text_features)
            diff, summ = images - texts, images + texts
            grams = torch.stack([diff.T @ diff, summ.T @ summ, summ.T @ diff])
            distributed.all_reduce_sum_(grams)
            gram_diff, gram_sum, cross = grams
            frobenius = (gram_diff * gram_sum).sum()
            trace_cross_sq = (cross * cross.T).sum()
            global_batch = image_features.shape[0] * distributed.world_size()
            inmodal = (frobenius + trace_cross_sq) / (2 * global_batch)
            crossmodal = (frobenius - trace_cross_sq) / (2 * global_batch)
        ctx.save_for_backward(image_features, text_features, gram_diff, gram_sum, cross)
        ctx.global_batch = global_batch
        return inmodal, crossmodal

    @staticmethod
    def backward(ctx, grad_inmodal: torch.Tensor, grad_crossmodal: torch.Tensor):
        image_features, text_features, gram_diff, gram_sum, cross = ctx.saved_tensors
        with torch.autocast(image_features.device.type, enabled=False):
            images, texts = _at_least_float32(image_features), _at_least_float32(text_features)
            diff, summ = images - texts, images + texts
            # d inmodal / dD = (D G_P + P K^T) / N,  d inmodal / dP = (P G_D + D K) / N;
            # the crossmodal derivatives flip the sign of the K terms.
            factor = distributed.world_size() / ctx.global_batch
            sym = (grad_inmodal + grad_crossmodal) * factor
            skew = (grad_inmodal - grad_crossmodal) * factor
            grad_diff = torch.addmm(diff @ (sym * gram_sum), summ, skew * cross.T)
            grad_sum = torch.addmm(summ @ (sym * gram_diff), diff, skew * cross)
            grad_images = (grad_sum + grad_diff).to(image_features.dtype)
            grad_texts = (grad_sum - grad_diff).to(text_features.dtype)
        return grad_images, grad_texts


def cyclic_regularizers(image_features: torch.Tensor, text_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(in-modal, cross-modal) cyclic regularizers, each (1/N) sum_jk of squared gaps, in float32."""
    _check_features(image_features, text_features)
    return _CyclicRegularizers.apply(image_features, text_features)


def cyclip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    lambda_inmodal: float,
    lambda_crossmodal: float,
    augmented_image_features: torch.Tensor | None = None,
    augmented_text_features: torch.Tensor | None = None,
) -> CyclipLossOutput:
    """CLIP loss plus the weighted cyclic regularizers; lambdas of 0 give plain CLIP, the paper uses 0.25 and 0.25.

    With augmented views (the paper's in-modal mode) the contrastive term is, as in the released code,
        ( CLIP loss + [ CE(s I I_aug^T) + CE(s T T_aug^T) ] / 2 ) / 2
    (each image must pick its own augmented image, each caption its own augmented caption); the
    regularizers stay on the original pairs. The regularizers are always reported; with both lambdas 0
    they are computed without a graph.
    """
    _check_features(image_features, text_features)
    if (augmented_image_features is None) != (augmented_text_features is None):
        raise ValueError("give both augmented_image_features and augmented_text_features, or neither")
    local_contrastive = _local_clip_loss(image_features, text_features, logit_scale)
    if augmented_image_features is not None:
        _check_features(augmented_image_features, augmented_text_features)
        if augmented_image_features.shape != image_features.shape:
            raise ValueError(
                f"augmented features {tuple(augmented_image_features.shape)} must have the shape of the originals "
                f"{tuple(image_features.shape)}: one augmented view per pair"
            )
        inmodal_contrastive = (
            _one_way_loss(image_features, augmented_image_features, logit_scale)
            + _one_way_loss(text_features, augmented_text_features, logit_scale)
        ) / 2
        local_contrastive = (local_contrastive + inmodal_contrastive) / 2
    contrastive = distributed.global_mean(local_contrastive)
    with torch.set_grad_enabled(torch.is_grad_enabled() and (lambda_inmodal != 0 or lambda_crossmodal != 0)):
        inmodal, crossmodal = cyclic_regularizers(image_features, text_features)
    total = contrastive + lambda_inmodal * inmodal + lambda_crossmodal * crossmodal
    return CyclipLossOutput(total, contrastive, inmodal, crossmodal)
