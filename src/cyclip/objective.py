"""The training objective: the model's forward pass on a `PairBatch`, then the loss, as named terms.

The trainer owns the step (accumulation, precision, clipping, the optimizer) and calls an objective for
everything between a batch and its loss. `build_objective` is the one place that picks the loss from the
config; a different loss (sigmoid, tiled) is a new class with the `Objective` methods, returning the same
`LossTerms`, and a branch there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Generic, Protocol, TypeVar

import torch

from cyclip import distributed
from cyclip.config import TrainConfig
from cyclip.data.batch import PairBatch
from cyclip.losses import cyclip_loss, cyclip_sigmoid_loss
from cyclip.losses.chunking import ChunkSize

T = TypeVar("T")


@dataclass(frozen=True)
class LossTerms(Generic[T]):
    """The parts of one batch's loss; `loss` is the total that is back-propagated.

    The field names are the names of the terms everywhere they appear: metrics.jsonl, TensorBoard
    (`train/<name>`, `val/<name>`), the validation summary and the demo's table (see `TERM_NAMES`).
    """

    loss: T
    contrastive: T
    inmodal_cyclic: T
    crossmodal_cyclic: T

    def __iter__(self) -> Iterator[T]:
        """The values in field order."""
        return (getattr(self, field.name) for field in fields(self))

    def __len__(self) -> int:
        return len(fields(self))

    def as_dict(self) -> dict[str, T]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


TERM_NAMES: LossTerms[str] = LossTerms(*(field.name for field in fields(LossTerms)))
"""Each term's name, as `TERM_NAMES.contrastive`; iterating gives all of them in order."""


@dataclass(frozen=True)
class PairFeatures:
    """The model's L2-normalised embeddings of a `PairBatch`, row for row (augmented views when it has them)."""

    images: torch.Tensor
    texts: torch.Tensor
    augmented_images: torch.Tensor | None = None
    augmented_texts: torch.Tensor | None = None

    @staticmethod
    def cat(parts: Sequence[PairFeatures]) -> PairFeatures:
        """The rows of `parts` in order, as the features of one batch (gradient accumulation joins micro-batches)."""
        views = [[part.images for part in parts], [part.texts for part in parts]]
        if parts[0].augmented_images is not None:
            views += [[part.augmented_images for part in parts], [part.augmented_texts for part in parts]]  # type: ignore[misc]
        return PairFeatures(*(torch.cat(view) for view in views))


class Objective(Protocol):
    """What the trainer calls: `features` and `loss` separately (accumulation caches features between them),
    or both at once."""

    def features(self, model: torch.nn.Module, batch: PairBatch) -> PairFeatures: ...

    def loss(self, features: PairFeatures, *head: torch.Tensor) -> LossTerms[torch.Tensor]: ...

    def __call__(self, model: torch.nn.Module, batch: PairBatch) -> LossTerms[torch.Tensor]: ...


class CyclipObjective:
    """CLIP, or CyCLIP with non-zero lambdas: `cyclip.losses.cyclip_loss` on the model's features of a batch.

    With augmented views (in-modal training) the contrastive term also pairs each image with its augmented
    image and each caption with its augmented caption; see `cyclip_loss`.
    """

    def __init__(self, lambda_inmodal: float, lambda_crossmodal: float, chunk_size: ChunkSize = "auto") -> None:
        self.lambda_inmodal = lambda_inmodal
        self.lambda_crossmodal = lambda_crossmodal
        self.chunk_size = chunk_size

    def features(self, model: torch.nn.Module, batch: PairBatch) -> PairFeatures:
        """One forward pass of `model` (an open_clip CLIP, possibly wrapped in DDP). Augmented views go
        through the model in the same pass as the originals, as in the paper's code."""
        if not batch.has_augmented_views:
            image_features, text_features = model(batch.images, batch.texts)[:2]  # (then scale [, bias])
            return PairFeatures(image_features, text_features)
        image_features, text_features = model(
            torch.cat([batch.images, batch.augmented_images]),  # type: ignore[list-item]  # has_augmented_views
            torch.cat([batch.texts, batch.augmented_texts]),  # type: ignore[list-item]
        )[:2]
        rows = len(batch)
        return PairFeatures(image_features[:rows], text_features[:rows], image_features[rows:], text_features[rows:])

    def loss(self, features: PairFeatures, *head: torch.Tensor) -> LossTerms[torch.Tensor]:
        """The terms of the loss of `features`; `head` is the model's `logit_parameters` (the log of the
        inverse temperature), detached by the caller when it must not get a gradient."""
        (logit_scale,) = head
        output = cyclip_loss(
            features.images,
            features.texts,
            logit_scale,
            self.lambda_inmodal,
            self.lambda_crossmodal,
            augmented_image_features=features.augmented_images,
            augmented_text_features=features.augmented_texts,
            chunk_size=self.chunk_size,
        )
        return LossTerms(output.total, output.contrastive, output.inmodal_cyclic, output.crossmodal_cyclic)

    def __call__(self, model: torch.nn.Module, batch: PairBatch) -> LossTerms[torch.Tensor]:
        return self.loss(self.features(model, batch), *logit_parameters(model))


class SigmoidObjective(CyclipObjective):
    """SigLIP's sigmoid loss plus the cyclic regularizers (`cyclip.losses.cyclip_sigmoid_loss`); the model
    carries the learnable bias (`models.create_model(..., sigmoid_head=True)`). No in-modal views."""

    def loss(self, features: PairFeatures, *head: torch.Tensor) -> LossTerms[torch.Tensor]:
        """`head` is (log inverse temperature, bias): the model's `logit_parameters`."""
        logit_scale, logit_bias = head
        output = cyclip_sigmoid_loss(
            features.images,
            features.texts,
            logit_scale,
            logit_bias,
            self.lambda_inmodal,
            self.lambda_crossmodal,
            chunk_size=self.chunk_size,
        )
        return LossTerms(output.total, output.contrastive, output.inmodal_cyclic, output.crossmodal_cyclic)


def logit_parameters(model: torch.nn.Module) -> tuple[torch.Tensor, ...]:
    """The parameters of the model's similarity head: (logit_scale,), or (logit_scale, logit_bias) for a
    sigmoid-loss model; what `Objective.loss` takes after the features."""
    model = distributed.unwrap(model)
    bias = getattr(model, "logit_bias", None)
    return (model.logit_scale,) if bias is None else (model.logit_scale, bias)  # type: ignore[return-value]


def build_objective(config: TrainConfig) -> Objective:
    """The objective `config` asks for: the one place where the loss is chosen."""
    # --loss-chunk-size: unset = "auto", 0 = dense (None to the loss functions), N = N x N tiles.
    chunk_size: ChunkSize = "auto" if config.loss_chunk_size is None else (config.loss_chunk_size or None)
    kind = SigmoidObjective if config.loss == "siglip" else CyclipObjective
    return kind(config.lambda_inmodal, config.lambda_crossmodal, chunk_size)
