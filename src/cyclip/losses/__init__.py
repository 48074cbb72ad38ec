"""The CLIP, CyCLIP and SigLIP objectives as pure functions of tensors (no model, no I/O).

Functional API, `logit_scale` = the LOG of the inverse temperature (the model's parameter):
    clip_loss, cyclip_loss, siglip_loss, cyclip_sigmoid_loss, cyclic_regularizers
Modules for open_clip users, `logit_scale` = EXPONENTIATED (what an open_clip model's forward returns):
    CyclipLoss (for open_clip.loss.ClipLoss), CyclipSigLipLoss (for open_clip.loss.SigLipLoss)
`chunk_size` (all losses): None or 0 dense, an int for tiles of that edge, "auto" (see `chunking`).
"""

from cyclip.losses.chunking import CROSSOVER_BATCH, ChunkSize, auto_chunk_size
from cyclip.losses.cyclic import cyclic_regularizers
from cyclip.losses.modules import CyclipLoss, CyclipSigLipLoss
from cyclip.losses.objectives import CyclipLossOutput, clip_loss, cyclip_loss, cyclip_sigmoid_loss, siglip_loss

__all__ = [
    "CROSSOVER_BATCH",
    "ChunkSize",
    "CyclipLoss",
    "CyclipLossOutput",
    "CyclipSigLipLoss",
    "auto_chunk_size",
    "clip_loss",
    "cyclic_regularizers",
    "cyclip_loss",
    "cyclip_sigmoid_loss",
    "siglip_loss",
]
