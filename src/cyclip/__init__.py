"""cyclip: train and evaluate CLIP and CyCLIP (Goel et al., NeurIPS 2022) image-text models."""

from typing import Any

from cyclip.losses import CyclipLossOutput, clip_loss, cyclic_regularizers, cyclip_loss

__all__ = ["CyclipLossOutput", "clip_loss", "cyclic_regularizers", "cyclip_loss", "load_checkpoint"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """`cyclip.load_checkpoint` without importing open_clip until it is used."""
    if name == "load_checkpoint":
        from cyclip.models import load_checkpoint

        return load_checkpoint
    raise AttributeError(f"module 'cyclip' has no attribute {name!r}")
