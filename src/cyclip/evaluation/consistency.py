"""How interchangeable the image and text spaces are, on held-out image-caption pairs.

    inmodal_gap    = mean_{j != k} |<I_j,I_k> - <T_j,T_k>|
    crossmodal_gap = mean_{j != k} |<I_j,T_k> - <I_k,T_j>|

Computed in row blocks so that memory stays O(block x N).
"""

from __future__ import annotations

import torch


def consistency_gaps(images: torch.Tensor, texts: torch.Tensor, block: int = 1024) -> dict[str, float]:
    """The two mean absolute gaps over ordered pairs j != k of L2-normalised embeddings."""
    if images.shape != texts.shape or images.dim() != 2 or images.shape[0] < 2:
        raise ValueError(
            f"need two (N, d) embedding matrices with N >= 2, got {tuple(images.shape)} and {tuple(texts.shape)}"
        )
    images, texts = images.double(), texts.double()
    batch = images.shape[0]
    inmodal = crossmodal = 0.0
    for start in range(0, batch, block):
        stop = min(start + block, batch)
        diagonal = (torch.arange(stop - start), torch.arange(start, stop))
        inmodal_block = images[start:stop] @ images.T - texts[start:stop] @ texts.T
        crossmodal_block = images[start:stop] @ texts.T - texts[start:stop] @ images.T
        inmodal_block[diagonal] = 0.0
        crossmodal_block[diagonal] = 0.0
        inmodal += inmodal_block.abs().sum().item()
        crossmodal += crossmodal_block.abs().sum().item()
    pairs = batch * (batch - 1)
    return {"inmodal_gap": inmodal / pairs, "crossmodal_gap": crossmodal / pairs}
