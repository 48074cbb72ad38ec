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
