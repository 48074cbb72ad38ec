"""cyclip: train and evaluate CLIP and CyCLIP (Goel et al., NeurIPS 2022) image-text models.

The public functions (`dir(cyclip)` lists them; `cyclip --help` is the command line):

    load_checkpoint(path, device, model_name)  (model, preprocess, tokenizer) of a cyclip checkpoint, an exported
                                                folder, or an open_clip / OpenAI weights file with model_name
    load_model(path, model_name, device)        the same as a LoadedModel, with architecture, source, fingerprint
    embed_images(model, images)                 L2-normalised image embeddings [N, d] of PIL images or files
    embed_texts(model, tokenizer, texts)        L2-normalised text embeddings [M, d]
    ZeroShotClassifier(model, tokenizer, classnames, templates)
                                                .predict(images, k) and .probabilities(images)
    cyclip_loss(image_features, text_features, logit_scale, lambda_inmodal, lambda_crossmodal)
                                                the CyCLIP objective, a CyclipLossOutput of its named terms
    clip_loss(image_features, text_features, logit_scale)
                                                the symmetric contrastive (CLIP) loss
    cyclic_regularizers(image_features, text_features)
                                                (in-modal, cross-modal) cyclic regularizers

Evaluation is `cyclip.evaluation` (one function per task, on embeddings); training is
`cyclip.train.train(cyclip.config.TrainConfig(...))`.
"""

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
