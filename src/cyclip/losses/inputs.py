"""Checks and conversions of what the losses receive: the features and the two temperature conventions.

Two conventions for the temperature exist and must never be mixed up:
  - the functional API (`clip_loss`, `cyclip_loss`, `siglip_loss`, ...) takes `logit_scale` as the LOG of the
    inverse temperature: the model's `logit_scale` parameter itself;
  - the modules (`CyclipLoss`, `CyclipSigLipLoss`) take what an open_clip model's forward returns, the
    EXPONENTIATED scale `model.logit_scale.exp()`, as `open_clip.loss.ClipLoss` does.
Each side refuses the other's value where it can tell without reading the tensor (no device sync).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["at_least_float32", "check_features", "checked_bias", "exponentiated_scale", "scale_from_log"]


def check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    """Shape checks only: they read metadata and never synchronise with the device."""
    for name, features in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(features, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape (batch, dim), got {type(features).__name__}")
        if features.dim() != 2:
            raise ValueError(f"{name} must be 2-D (batch, dim), got shape {tuple(features.shape)}")
        if not features.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got dtype {features.dtype}")
    if image_features.shape != text_features.shape:
        raise ValueError(
            f"image_features {tuple(image_features.shape)} and text_features {tuple(text_features.shape)} "
            "must have the same shape (batch, dim): one caption per image, one embedding size"
        )
    if image_features.shape[0] == 0 or image_features.shape[1] == 0:
        raise ValueError(f"features must have at least one row and one column, got shape {tuple(image_features.shape)}")


def _scalar(value: torch.Tensor | float, name: str, device: torch.device) -> torch.Tensor:
    value = torch.as_tensor(value, device=device)
    if value.numel() != 1:
        raise ValueError(f"{name} must be a scalar, got shape {tuple(value.shape)}")
    return value.reshape(())


def scale_from_log(logit_scale: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """exp(logit_scale) for the functional API, which takes the log (the model parameter itself)."""
    logit_scale = torch.as_tensor(logit_scale, device=device)
    if logit_scale.grad_fn is not None and logit_scale.grad_fn.name() == "ExpBackward0":
        raise ValueError(
            "logit_scale must be the LOG of the inverse temperature (the model's logit_scale parameter), but this "
            "tensor is the output of exp(), like the scale an open_clip model's forward returns: pass "
            "model.logit_scale, or use cyclip.losses.CyclipLoss, which takes the exponentiated scale"
        )
    return _scalar(logit_scale, "logit_scale", device).exp()


def exponentiated_scale(logit_scale: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    """The modules' scale, already exponentiated (what an open_clip model's forward returns)."""
    if isinstance(logit_scale, nn.Parameter):
        raise ValueError(
            "logit_scale must be the EXPONENTIATED scale an open_clip model's forward returns "
            "(model.logit_scale.exp()), not the log parameter model.logit_scale itself; the functional "
            "cyclip.losses.cyclip_loss takes the log"
        )
    return _scalar(logit_scale, "logit_scale", device)


def checked_bias(logit_bias: torch.Tensor | float, device: torch.device) -> torch.Tensor:
    return _scalar(logit_bias, "logit_bias", device)


def at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
