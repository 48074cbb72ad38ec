"""cyclip: train and evaluate CLIP and CyCLIP (Goel et al., NeurIPS 2022) image-text models."""

import importlib
from typing import Any

from cyclip.losses import CyclipLossOutput, clip_loss, cyclic_regularizers, cyclip_loss

# Public names whose modules import open_clip: loaded on first use, so that `import cyclip` stays light.
_LAZY = {
    "load_checkpoint": "cyclip.models",
    "load_model": "cyclip.models",
    "ZeroShotClassifier": "cyclip.inference",
    "embed_images": "cyclip.inference",
    "embed_texts": "cyclip.inference",
}

__all__ = ["CyclipLossOutput", "clip_loss", "cyclic_regularizers", "cyclip_loss", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """The names of `_LAZY`, imported when first used."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'cyclip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
