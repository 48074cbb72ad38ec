"""Drop-in losses for open_clip users: they take exactly what an open_clip model's forward returns.

`CyclipLoss` replaces `open_clip.loss.ClipLoss`, `CyclipSigLipLoss` replaces `open_clip.loss.SigLipLoss`.
Their `logit_scale` is the EXPONENTIATED scale (`model.logit_scale.exp()`, what the model's forward
returns), unlike the functional API, which takes the log. With `output_dict=True` they return the weighted
terms, whose sum is the loss, as open_clip_train expects. Exact under torch.distributed with no
arguments about ranks: every rank passes its own features and gets the global-batch loss.
"""

from __future__ import annotations

import torch
from torch import nn

from cyclip.losses.chunking import ChunkSize, resolve_chunk_size
from cyclip.losses.inputs import check_features, checked_bias, exponentiated_scale
from cyclip.losses.objectives import CyclipLossOutput, sigmoid_objective, softmax_objective


class _CyclicLossModule(nn.Module):
    """What both loss modules share: the lambdas (the paper's CyCLIP defaults), the tile size, the output."""

    def __init__(
        self, lambda_inmodal: float = 0.25, lambda_crossmodal: float = 0.25, chunk_size: ChunkSize = "auto"
    ) -> None:
        super().__init__()
        resolve_chunk_size(chunk_size, 1, "softmax", "cpu")  # refuse a bad value when built, not at the first step
        self.lambda_inmodal, self.lambda_crossmodal, self.chunk_size = lambda_inmodal, lambda_crossmodal, chunk_size

    def _result(self, output: CyclipLossOutput, output_dict: bool) -> torch.Tensor | dict[str, torch.Tensor]:
        if not output_dict:
            return output.total
        return {
            "contrastive_loss": output.contrastive,
            "inmodal_cyclic_loss": self.lambda_inmodal * output.inmodal_cyclic,
            "crossmodal_cyclic_loss": self.lambda_crossmodal * output.crossmodal_cyclic,
        }

    def extra_repr(self) -> str:
        return (
            f"lambda_inmodal={self.lambda_inmodal}, lambda_crossmodal={self.lambda_crossmodal}, "
            f"chunk_size={self.chunk_size!r}"
        )


class CyclipLoss(_CyclicLossModule):
    """CyCLIP's loss in place of `open_clip.loss.ClipLoss`: CLIP's cross-entropy + lambda-weighted cyclic terms.

    forward(image_features, text_features, logit_scale, output_dict=False) with `logit_scale` ALREADY
    EXPONENTIATED, as an open_clip model's forward returns it. Lambdas of 0 give CLIP; the paper's
    CyCLIP uses 0.25 / 0.25. `chunk_size`: None or 0 dense, an int for tiles of that edge, "auto" by
    batch size (see `cyclip.losses.chunking`).
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor | None = None,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss (a scalar), or with `output_dict` {"contrastive_loss", "inmodal_cyclic_loss",
        "crossmodal_cyclic_loss"}, the regularizers already multiplied by their lambdas."""
        if logit_bias is not None:
            raise ValueError(
                "this model has a logit_bias (a SigLIP model): use cyclip.losses.CyclipSigLipLoss instead of CyclipLoss"
            )
        check_features(image_features, text_features)
        scale = exponentiated_scale(logit_scale, image_features.device)
        output = softmax_objective(
            image_features,
            text_features,
            scale,
            self.lambda_inmodal,
            self.lambda_crossmodal,
            None,
            None,
            self.chunk_size,
        )
        return self._result(output, output_dict)


class CyclipSigLipLoss(_CyclicLossModule):
    """SigLIP's sigmoid loss + lambda-weighted cyclic terms in place of `open_clip.loss.SigLipLoss`.

    forward(image_features, text_features, logit_scale, logit_bias, output_dict=False) with `logit_scale`
    ALREADY EXPONENTIATED (t) and `logit_bias` b, as a SigLIP open_clip model's forward returns them.
    Unlike open_clip's SigLipLoss, whose per-rank value is normalised by the local batch, the value is the
    global-batch loss on every rank (the gradients are the same).
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        logit_bias: torch.Tensor,
        output_dict: bool = False,
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        """The loss (a scalar), or with `output_dict` the weighted terms, as `CyclipLoss.forward`."""
        check_features(image_features, text_features)
        scale = exponentiated_scale(logit_scale, image_features.device)
        bias = checked_bias(logit_bias, image_features.device)
        output = sigmoid_objective(
            image_features, text_features, scale, bias, self.lambda_inmodal, self.lambda_crossmodal, self.chunk_size
        )
        return self._result(output, output_dict)
