"""How the batch-by-batch loss terms are computed: densely, or in tiles of logits that never exceed tile².

`chunk_size` everywhere in `cyclip.losses`:
  - None or 0: dense, one (local batch x global batch) matrix of logits, as open_clip does;
  - a positive int: tiles of chunk_size x chunk_size logits, recomputed in the backward (O(N·d) memory);
  - "auto": dense below CROSSOVER_BATCH (global batch), tiles of AUTO_CHUNK_SIZE from there on.
The two constants are measured by benchmarks/objective.py on CPU float32 at d = 512 (see the README).
"""

from __future__ import annotations

from typing import Literal

ChunkSize = int | Literal["auto"] | None

# The global batch from which the tiled loss is at least as fast as the dense one (forward + backward).
CROSSOVER_BATCH = 4096
# Tile edge: large enough for efficient matrix products, small enough (64 MiB of float32 logits) for any device.
AUTO_CHUNK_SIZE = 4096


def auto_chunk_size(global_batch: int) -> int:
    """The tile edge "auto" picks for a global batch: 0 (dense) below the measured crossover."""
    return AUTO_CHUNK_SIZE if global_batch >= CROSSOVER_BATCH else 0


def resolve_chunk_size(chunk_size: ChunkSize, global_batch: int) -> int:
    """The tile edge to use, 0 meaning dense; refuses anything but None, "auto" or an int >= 0."""
    if chunk_size is None:
        return 0
    if chunk_size == "auto":
        return auto_chunk_size(global_batch)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"chunk_size must be None or 0 (dense), a positive tile size, or 'auto', got {chunk_size!r}")
    return chunk_size
