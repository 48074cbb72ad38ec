"""Walking a (local queries x global keys) matrix of logits tile by tile, and finding its diagonal in a tile.

Query row j of this rank is global row `offset + j`; its positive key is global key `offset + j`.
"""

from __future__ import annotations

import torch


def spans(length: int, tile: int) -> list[slice]:
    """Consecutive slices of at most `tile` covering range(length); the last one may be shorter."""
    return [slice(start, min(start + tile, length)) for start in range(0, length, tile)]


def diagonal(tile: torch.Tensor, first_row: int, first_col: int) -> tuple[torch.Tensor, slice]:
    """The entries of `tile` whose global row equals their global column (a view, maybe empty), and their
    global indices, for a tile whose top-left entry is (global row `first_row`, global column `first_col`)."""
    entries = tile.diagonal(first_row - first_col)
    start = max(first_row, first_col)
    return entries, slice(start, start + entries.numel())


def finish_gradients(
    grad_q: torch.Tensor,
    grad_k: torch.Tensor,
    q: torch.Tensor,
    s: torch.Tensor,
    weight: torch.Tensor,
    needs_scale: bool,
    dtypes: tuple[torch.dtype, torch.dtype, torch.dtype],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(grad of queries, grad of keys, grad of the scale) of a tiled loss over the logits s·q·kᵀ, from the sums of
    grad_logits·k and grad_logitsᵀ·(s·q) the sweep accumulated: both times the upstream `weight`; the scale's
    gradient is read off before grad_q takes its factor s. Cast to the inputs' `dtypes` (queries, keys, scale)."""
    grad_q *= weight
    grad_k *= weight
    grad_scale = (q * grad_q).sum().to(dtypes[2]) if needs_scale else None
    grad_q *= s
    return grad_q.to(dtypes[0]), grad_k.to(dtypes[1]), grad_scale
