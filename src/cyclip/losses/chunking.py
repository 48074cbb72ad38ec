"""How the batch-by-batch loss terms are computed: densely, or in tiles of logits that never exceed tile².

`chunk_size` everywhere in `cyclip.losses`:
  - None or 0: dense, one (local batch x global batch) matrix of logits, as open_clip does;
  - a positive int: tiles of chunk_size x chunk_size logits, recomputed in the backward (O(N·d) memory);
  - "auto": dense below the loss's CROSSOVER_BATCH (global batch), tiles of `auto_tile_size` from there.
The constants are measured by `benchmarks/objective.py --suites crossover` (CPU, float32, d = 512).
"""

from __future__ import annotations

from typing import Literal

ChunkSize = int | Literal["auto"] | None
LossKind = Literal["softmax", "sigmoid"]

# The global batch from which the tiled loss is at least as fast as the dense one (forward + backward).
# Tiled softmax cross-entropy was faster at every size measured (1.6-2.7x from N = 256: one sweep serves
# both directions, where the dense loss builds two matrices); the sigmoid loss only from N = 4,096.
CROSSOVER_BATCH: dict[str, int] = {"softmax": 256, "sigmoid": 4096}
# Tile edge on CPU: the fastest measured (cache-sized tiles; 512 is as fast, 4,096 is 35 % slower).
CPU_TILE = 1024
# Tile edge on accelerators: large enough that kernel launches stay negligible next to the products
# (64 MiB of float32 logits per tile). Not measured by this project's CPU benchmark.
ACCELERATOR_TILE = 4096


def auto_tile_size(device_type: str) -> int:
    return CPU_TILE if device_type == "cpu" else ACCELERATOR_TILE


def auto_chunk_size(global_batch: int, loss: LossKind, device_type: str) -> int:
    """The tile edge "auto" picks: 0 (dense) below the loss's measured crossover batch."""
    return auto_tile_size(device_type) if global_batch >= CROSSOVER_BATCH[loss] else 0


def resolve_chunk_size(chunk_size: ChunkSize, global_batch: int, loss: LossKind, device_type: str) -> int:
    """The tile edge to use, 0 meaning dense; refuses anything but None, "auto" or an int >= 0."""
    if chunk_size is None:
        return 0
    if chunk_size == "auto":
        return auto_chunk_size(global_batch, loss, device_type)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 0:
        raise ValueError(f"chunk_size must be None or 0 (dense), a positive tile size, or 'auto', got {chunk_size!r}")
    return chunk_size
