"""The softmax cross-entropy of CLIP: each query must pick its own key among all keys of the global batch.

Every function returns this rank's share, the mean over its own query rows; `distributed.global_mean` of
it is the global-batch value. Keys are gathered with gradient, so the gradient reaching this rank's
features is world_size x the matching rows of the single-process one.

Row j's loss is written softplus(x_j) with x_j = logsumexp_{k != j}(z_jk) - z_jj (the diagonal left out of
the log-sum-exp): it equals logsumexp_k(z_jk) - z_jj but stays float32-accurate when the loss is tiny
(well-aligned batches), where 1 - p_jj cancels. The tiled form (derivation in docs/objective-at-scale.md)
keeps one tile of logits at a time and stores only per-row and per-column statistics.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cyclip import distributed
from cyclip.losses import tiles
from cyclip.losses.inputs import at_least_float32


def one_way_cross_entropy(queries: torch.Tensor, keys: torch.Tensor, scale: torch.Tensor, chunk_size: int):
    """This rank's share of mean_j CE(scale * q_j K^T, j); `scale` is the exponentiated inverse temperature."""
    all_keys = distributed.gather_with_grad(keys)
    offset = distributed.rank() * queries.shape[0]
    if chunk_size:
        return _TiledCrossEntropy.apply(queries, all_keys, scale, offset, chunk_size, False)
    return _diagonal_cross_entropy(scale * queries @ all_keys.T, offset)


def symmetric_cross_entropy(images: torch.Tensor, texts: torch.Tensor, scale: torch.Tensor, chunk_size: int):
    """This rank's share of [CE(s I T^T) + CE(s T I^T)] / 2; `scale` is the exponentiated inverse temperature.

    Tiled, one sweep over this rank's rows of s I T^T yields both directions: the row statistics for
    its images and, all-reduced over ranks, the column statistics for every text.
    """
    if chunk_size:
        all_texts = distributed.gather_with_grad(texts)
        offset = distributed.rank() * images.shape[0]
        return _TiledCrossEntropy.apply(images, all_texts, scale, offset, chunk_size, True)
    return (one_way_cross_entropy(images, texts, scale, 0) + one_way_cross_entropy(texts, images, scale, 0)) / 2


def _diagonal_cross_entropy(logits: torch.Tensor, offset: int) -> torch.Tensor:
    """Mean over rows j of the cross-entropy of row j against column j + offset, densely."""
    if logits.shape[1] == 1:  # a single pair: nothing to contrast against
        return logits.sum() * 0.0
    logits = at_least_float32(logits)
    shifted = logits - logits.diagonal(offset)[:, None]
    shifted.diagonal(offset).fill_(float("-inf"))
    return F.softplus(torch.logsumexp(shifted, dim=1)).mean()


def _off_diagonal_logsumexps(
    scaled_queries: torch.Tensor, keys: torch.Tensor, offset: int, tile: int, with_columns: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logsumexp over k != j of z_jk = scaled_q_j . key_k, per row j and (optionally) per column k.

    An online log-sum-exp: each tile's row and column log-sum-exps are merged into running ones.
    """
    minus_inf = float("-inf")
    row_lse = scaled_queries.new_full((scaled_queries.shape[0],), minus_inf)
    col_lse = keys.new_full((keys.shape[0],), minus_inf) if with_columns else None
    for rows in tiles.spans(scaled_queries.shape[0], tile):
        running = row_lse[rows]
        for cols in tiles.spans(keys.shape[0], tile):
            logits = scaled_queries[rows] @ keys[cols].T
            tiles.diagonal(logits, offset + rows.start, cols.start)[0].fill_(minus_inf)
            running = torch.logaddexp(running, torch.logsumexp(logits, dim=1))
            if with_columns:
                col_lse[cols] = torch.logaddexp(col_lse[cols], torch.logsumexp(logits, dim=0))
        row_lse[rows] = running
    return row_lse, col_lse


class _TiledCrossEntropy(torch.autograd.Function):
    """Mean over this rank's rows of CE(s Q K^T, diagonal), and with `symmetric` also of the columns it owns.

    Forward keeps, per row j, lse_j = logsumexp_k z_jk and sigmoid(x_j) = 1 - p_jj (and the same per
    column); the backward recomputes each tile of logits and forms dL/dz_jk = (p_jk - delta_jk) / N from
    them, writing the diagonal as -sigmoid(x) so that no 1 - p cancels. Under torch.distributed this rank
    also returns the column-direction gradient for its rows (all columns), and a partial key gradient that
    the gather's backward sums over ranks, so the rank gradients add up to the exact global one.
    """

    @staticmethod
    def forward(ctx, queries, keys, scale, offset: int, tile: int, symmetric: bool):
        dtype = torch.promote_types(queries.dtype, torch.float32)
        with torch.autocast(queries.device.type, enabled=False):
            q, k = queries.to(dtype), keys.to(dtype)
            scaled_q = q * scale.to(dtype)
            own = slice(offset, offset + q.shape[0])
            positives = (scaled_q * k[own]).sum(dim=1)  # z_jj
            row_lse, col_lse = _off_diagonal_logsumexps(scaled_q, k, offset, tile, symmetric)
            row_x = row_lse - positives
            value = F.softplus(row_x).mean()
            saved = [positives + F.softplus(row_x), torch.sigmoid(row_x)]
            if symmetric:
                all_positives = distributed.all_gather(positives)
                col_x = distributed.all_reduce_logsumexp(col_lse) - all_positives
                value = (value + F.softplus(col_x[own]).mean()) / 2
                saved += [all_positives + F.softplus(col_x), torch.sigmoid(col_x)]
        ctx.save_for_backward(queries, keys, scale, *saved)
        ctx.offset, ctx.tile, ctx.symmetric = offset, tile, symmetric
        return value

    @staticmethod
    def backward(ctx, grad_value):
        queries, keys, scale, row_lse, row_one_minus_p, *columns = ctx.saved_tensors
        offset, symmetric = ctx.offset, ctx.symmetric
        col_lse, col_one_minus_p = columns if symmetric else (None, None)
        dtype = row_lse.dtype
        with torch.autocast(queries.device.type, enabled=False):
            q, k, s = queries.to(dtype), keys.to(dtype), scale.to(dtype)
            scaled_q = q * s
            grad_q, grad_k = torch.zeros_like(q), torch.zeros_like(k)  # sum_k G_jk k_k and s sum_j G_jk q_j
            for rows in tiles.spans(q.shape[0], ctx.tile):
                for cols in tiles.spans(k.shape[0], ctx.tile):
                    logits = scaled_q[rows] @ k[cols].T
                    grad_logits = (logits - row_lse[rows, None]).exp_()
                    if symmetric:
                        grad_logits += logits.sub_(col_lse[None, cols]).exp_()
                    entries, index = tiles.diagonal(grad_logits, offset + rows.start, cols.start)
                    if entries.numel():  # p_jj - 1 = -sigmoid(x_j), without cancellation
                        miss = row_one_minus_p[index.start - offset : index.stop - offset]
                        entries.copy_(-(miss + col_one_minus_p[index]) if symmetric else -miss)
                    grad_q[rows].addmm_(grad_logits, k[cols])
                    grad_k[cols].addmm_(grad_logits.T, scaled_q[rows])
            weight = grad_value.to(dtype) / (q.shape[0] * (2 if symmetric else 1))
            grad_queries, grad_keys, grad_scale = tiles.finish_gradients(
                grad_q, grad_k, q, s, weight, ctx.needs_input_grad[2], (queries.dtype, keys.dtype, scale.dtype)
            )
        return (
            grad_queries,
            grad_keys,
            grad_scale,
            None,
            None,
            None,
        )
