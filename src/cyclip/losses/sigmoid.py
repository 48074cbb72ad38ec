"""The sigmoid loss of SigLIP: every (image, text) pair of the global batch is one binary decision.

    L = -(1/N) sum_jk log sigmoid(z_jk (t <I_j,T_k> + b)),   z_jk = +1 if j == k else -1

This rank's share is the sum over its own image rows against every text (gathered with gradient) divided
by its local batch, so that `distributed.global_mean` of it is L and the gradient reaching this rank's
features is world_size x the matching rows of the single-process one (open_clip's `SigLipLoss` follows
the same convention with a ring of text blocks instead of a gather).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cyclip import distributed
from cyclip.losses import tiles
from cyclip.losses.inputs import at_least_float32


def sigmoid_loss(
    images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """This rank's share of L; `scale` is t = exp(log t) (already exponentiated), `bias` is b."""
    all_texts = distributed.gather_with_grad(texts)
    offset = distributed.rank() * images.shape[0]
    if chunk_size:
        return _TiledSigmoidLoss.apply(images, all_texts, scale, bias, offset, chunk_size)
    logits = at_least_float32(scale * images @ all_texts.T + bias)
    signs = -torch.ones_like(logits)
    signs.diagonal(offset).fill_(1.0)
    return -F.logsigmoid(signs * logits).sum() / images.shape[0]


class _TiledSigmoidLoss(torch.autograd.Function):
    """The sigmoid loss over tiles of logits u = t Q K^T + b, recomputed in the backward.

    dL/du_jk = sigmoid(u_jk) / n off the diagonal and -sigmoid(-u_jj) / n on it (n: local batch); the
    diagonal entries are negated in place before the sigmoid so that neither side cancels.
    """

    @staticmethod
    def forward(ctx, queries, keys, scale, bias, offset: int, tile: int):
        dtype = torch.promote_types(queries.dtype, torch.float32)
        with torch.autocast(queries.device.type, enabled=False):
            scaled_q, k, b = queries.to(dtype) * scale.to(dtype), keys.to(dtype), bias.to(dtype)
            row_sums = scaled_q.new_zeros(scaled_q.shape[0])
            for rows in tiles.spans(scaled_q.shape[0], tile):
                for cols in tiles.spans(k.shape[0], tile):
                    signed = torch.addmm(b, scaled_q[rows], k[cols].T).neg_()  # z u: -u off the diagonal
                    tiles.diagonal(signed, offset + rows.start, cols.start)[0].neg_()
                    row_sums[rows] -= F.logsigmoid(signed).sum(dim=1)
            value = row_sums.sum() / scaled_q.shape[0]
        ctx.save_for_backward(queries, keys, scale, bias)
        ctx.offset, ctx.tile = offset, tile
        return value

    @staticmethod
    def backward(ctx, grad_value):
        queries, keys, scale, bias = ctx.saved_tensors
        dtype = torch.promote_types(queries.dtype, torch.float32)
        with torch.autocast(queries.device.type, enabled=False):
            q, k, s, b = queries.to(dtype), keys.to(dtype), scale.to(dtype), bias.to(dtype)
            scaled_q = q * s
            grad_q, grad_k = torch.zeros_like(q), torch.zeros_like(k)  # sum_k G_jk k_k and s sum_j G_jk q_j
            grad_bias = q.new_zeros(())
            for rows in tiles.spans(q.shape[0], ctx.tile):
                for cols in tiles.spans(k.shape[0], ctx.tile):
                    grad_logits = torch.addmm(b, scaled_q[rows], k[cols].T)
                    entries = tiles.diagonal(grad_logits, ctx.offset + rows.start, cols.start)[0]
                    entries.neg_()
                    grad_logits.sigmoid_()
                    entries.neg_()
                    grad_q[rows].addmm_(grad_logits, k[cols])
                    grad_k[cols].addmm_(grad_logits.T, scaled_q[rows])
                    grad_bias += grad_logits.sum()
            weight = grad_value.to(dtype) / q.shape[0]
            grad_queries, grad_keys, grad_scale = tiles.finish_gradients(
                grad_q, grad_k, q, s, weight, ctx.needs_input_grad[2], (queries.dtype, keys.dtype, scale.dtype)
            )
        return (
            grad_queries,
            grad_keys,
            grad_scale,
            (grad_bias * weight).to(bias.dtype) if ctx.needs_input_grad[3] else None,
            None,
            None,
        )
