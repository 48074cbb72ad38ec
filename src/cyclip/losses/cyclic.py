"""The two cyclic regularizers of CyCLIP from three d x d matrices, never from an N x N one.

    L_inmodal    = (1/N) sum_jk (<I_j,I_k> - <T_j,T_k>)^2
    L_crossmodal = (1/N) sum_jk (<I_j,T_k> - <I_k,T_j>)^2

With D = I - T and P = I + T every term is proportional to the image-text gap, so nothing cancels in
float32 when the modalities agree; they are computed in float32 (float64 stays float64) even under
autocast. Under torch.distributed the d x d matrices are summed over ranks: each rank passes its shard and
gets the global-batch values; the gradient reaching the local features is world_size x the matching rows
of the single-process gradient, so DDP's gradient averaging is exact.
"""

from __future__ import annotations

import torch

from cyclip import distributed
from cyclip.losses.inputs import at_least_float32, check_features


class _CyclicRegularizers(torch.autograd.Function):
    """Both regularizers from G_D = D^T D, G_P = P^T P and K = P^T D (summed over ranks).

    sum_jk (<I_j,I_k> - <T_j,T_k>)^2 = (<G_D, G_P>_F + tr(K K)) / 2
    sum_jk (<I_j,T_k> - <I_k,T_j>)^2 = (<G_D, G_P>_F - tr(K K)) / 2
    The backward needs only the global d x d matrices, so it communicates nothing.
    """

    @staticmethod
    def forward(ctx, image_features: torch.Tensor, text_features: torch.Tensor):
        with torch.autocast(image_features.device.type, enabled=False):
            images, texts = at_least_float32(image_features), at_least_float32(text_features)
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
            images, texts = at_least_float32(image_features), at_least_float32(text_features)
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
    check_features(image_features, text_features)
    return _CyclicRegularizers.apply(image_features, text_features)
