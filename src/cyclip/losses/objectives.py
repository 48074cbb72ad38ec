"""The objectives as pure functions of L2-normalised features: CLIP, CyCLIP, SigLIP and SigLIP + cyclic.

    L = L_contrastive + lambda_inmodal * L_inmodal + lambda_crossmodal * L_crossmodal

where L_contrastive is CLIP's softmax cross-entropy or SigLIP's sigmoid loss. In the public functions
`logit_scale` is always the LOG of the inverse temperature, the model's parameter itself; the modules of
`cyclip.losses.modules` take the exponentiated scale instead and call `softmax_objective` /
`sigmoid_objective` here, which take it exponentiated (`scale`).

Under torch.distributed each function takes this rank's shard (equal sizes on every rank) and returns the
global-batch value; the gradient reaching the local features is world_size x the matching rows of the
single-process gradient, so DDP's gradient averaging is exact.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from cyclip import distributed
from cyclip.losses import sigmoid, softmax
from cyclip.losses.chunking import ChunkSize, LossKind, resolve_chunk_size
from cyclip.losses.cyclic import cyclic_regularizers
from cyclip.losses.inputs import check_features, checked_bias, scale_from_log


class CyclipLossOutput(NamedTuple):
    """The total and its named terms; the regularizers unweighted (the total applies the lambdas)."""

    total: torch.Tensor
    contrastive: torch.Tensor
    inmodal_cyclic: torch.Tensor
    crossmodal_cyclic: torch.Tensor


def _chunk_size(chunk_size: ChunkSize, features: torch.Tensor, loss: LossKind) -> int:
    return resolve_chunk_size(chunk_size, features.shape[0] * distributed.world_size(), loss, features.device.type)


def clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    chunk_size: ChunkSize = "auto",
) -> torch.Tensor:
    """Symmetric cross-entropy of exp(logit_scale) * I T^T against the diagonal, mean over the global batch.

    `logit_scale` is the LOG of the inverse temperature (the model's `logit_scale` parameter, not its
    exponential). `chunk_size`: None or 0 dense, an int for tiles of that edge, "auto" by batch size.
    """
    check_features(image_features, text_features)
    scale = scale_from_log(logit_scale, image_features.device)
    chunk = _chunk_size(chunk_size, image_features, "softmax")
    return distributed.global_mean(softmax.symmetric_cross_entropy(image_features, text_features, scale, chunk))


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    chunk_size: ChunkSize = "auto",
) -> torch.Tensor:
    """SigLIP's -(1/N) sum_jk log sigmoid(z_jk (exp(logit_scale) <I_j,T_k> + logit_bias)) over the global batch.

    `logit_scale` is the LOG of t (SigLIP initialises it to log 10), `logit_bias` is b itself (init -10).
    """
    check_features(image_features, text_features)
    scale = scale_from_log(logit_scale, image_features.device)
    bias = checked_bias(logit_bias, image_features.device)
    chunk = _chunk_size(chunk_size, image_features, "sigmoid")
    return distributed.global_mean(sigmoid.sigmoid_loss(image_features, text_features, scale, bias, chunk))


def _with_regularizers(
    contrastive: torch.Tensor,
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    lambda_inmodal: float,
    lambda_crossmodal: float,
) -> CyclipLossOutput:
    """Adds the weighted regularizers; they are always reported, without a graph when both lambdas are 0."""
    with torch.set_grad_enabled(torch.is_grad_enabled() and (lambda_inmodal != 0 or lambda_crossmodal != 0)):
        inmodal, crossmodal = cyclic_regularizers(image_features, text_features)
    total = contrastive + lambda_inmodal * inmodal + lambda_crossmodal * crossmodal
    return CyclipLossOutput(total, contrastive, inmodal, crossmodal)


def softmax_objective(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor,
    lambda_inmodal: float,
    lambda_crossmodal: float,
    augmented_image_features: torch.Tensor | None,
    augmented_text_features: torch.Tensor | None,
    chunk_size: ChunkSize,
) -> CyclipLossOutput:
    """`cyclip_loss` with `scale` ALREADY EXPONENTIATED (a 0-dim tensor); features already checked."""
    if (augmented_image_features is None) != (augmented_text_features is None):
        raise ValueError("give both augmented_image_features and augmented_text_features, or neither")
    chunk = _chunk_size(chunk_size, image_features, "softmax")
    local_contrastive = softmax.symmetric_cross_entropy(image_features, text_features, scale, chunk)
    if augmented_image_features is not None:
        check_features(augmented_image_features, augmented_text_features)
        if augmented_image_features.shape != image_features.shape:
            raise ValueError(
                f"augmented features {tuple(augmented_image_features.shape)} must have the shape of the originals "
                f"{tuple(image_features.shape)}: one augmented view per pair"
            )
        inmodal_contrastive = (
            softmax.one_way_cross_entropy(image_features, augmented_image_features, scale, chunk)
            + softmax.one_way_cross_entropy(text_features, augmented_text_features, scale, chunk)
        ) / 2
        local_contrastive = (local_contrastive + inmodal_contrastive) / 2
    contrastive = distributed.global_mean(local_contrastive)
    return _with_regularizers(contrastive, image_features, text_features, lambda_inmodal, lambda_crossmodal)


def cyclip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    lambda_inmodal: float,
    lambda_crossmodal: float,
    augmented_image_features: torch.Tensor | None = None,
    augmented_text_features: torch.Tensor | None = None,
    chunk_size: ChunkSize = "auto",
) -> CyclipLossOutput:
    """CLIP loss plus the weighted cyclic regularizers; lambdas of 0 give plain CLIP, the paper uses 0.25 and 0.25.

    `logit_scale` is the LOG of the inverse temperature (the model's `logit_scale` parameter). With
    augmented views (the paper's in-modal mode) the contrastive term is, as in the released code,
        ( CLIP loss + [ CE(s I I_aug^T) + CE(s T T_aug^T) ] / 2 ) / 2
    (each image must pick its own augmented image, each caption its own augmented caption); the
    regularizers stay on the original pairs. `chunk_size`: None or 0 dense, an int for tiles of that
    edge (every cross-entropy term, O(N·d) memory), "auto" dense below the measured crossover batch.
    """
    check_features(image_features, text_features)
    scale = scale_from_log(logit_scale, image_features.device)
    return softmax_objective(
        image_features,
        text_features,
        scale,
        lambda_inmodal,
        lambda_crossmodal,
        augmented_image_features,
        augmented_text_features,
        chunk_size,
    )


def sigmoid_objective(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor,
    lambda_inmodal: float,
    lambda_crossmodal: float,
    chunk_size: ChunkSize,
) -> CyclipLossOutput:
    """`cyclip_sigmoid_loss` with `scale` ALREADY EXPONENTIATED (a 0-dim tensor); features already checked."""
    chunk = _chunk_size(chunk_size, image_features, "sigmoid")
    contrastive = distributed.global_mean(sigmoid.sigmoid_loss(image_features, text_features, scale, bias, chunk))
    return _with_regularizers(contrastive, image_features, text_features, lambda_inmodal, lambda_crossmodal)


def cyclip_sigmoid_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor | float,
    logit_bias: torch.Tensor | float,
    lambda_inmodal: float = 0.25,
    lambda_crossmodal: float = 0.25,
    augmented_image_features: torch.Tensor | None = None,
    augmented_text_features: torch.Tensor | None = None,
    chunk_size: ChunkSize = "auto",
) -> CyclipLossOutput:
    """SigLIP's sigmoid loss plus the weighted cyclic regularizers (`contrastive` holds the sigmoid loss).

    `logit_scale` is the LOG of t, `logit_bias` is b. The in-modal mode's augmented views are refused:
    its terms are softmax cross-entropies against the own view, and a sigmoid version would need its own
    learned bias for image-image scores, which an open_clip model does not have.
    """
    if augmented_image_features is not None or augmented_text_features is not None:
        raise ValueError(
            "the sigmoid loss has no in-modal terms for augmented views: drop the augmented features, "
            "or use cyclip_loss (the softmax loss), which defines them"
        )
    check_features(image_features, text_features)
    scale = scale_from_log(logit_scale, image_features.device)
    bias = checked_bias(logit_bias, image_features.device)
    return sigmoid_objective(image_features, text_features, scale, bias, lambda_inmodal, lambda_crossmodal, chunk_size)
