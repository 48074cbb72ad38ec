"""cyclip: train and evaluate CLIP and CyCLIP (Goel et al., NeurIPS 2022) image-text models."""

from cyclip.losses import CyclipLossOutput, clip_loss, cyclic_regularizers, cyclip_loss

__all__ = ["CyclipLossOutput", "clip_loss", "cyclic_regularizers", "cyclip_loss"]
__version__ = "0.1.0"
