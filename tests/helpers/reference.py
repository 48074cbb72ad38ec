"""Independent float64 references: the objective written directly with N x N matrices."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def direct_objective(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor | float):
    """(contrastive, inmodal, crossmodal) exactly as docs/objective.md writes them, in float64."""
    images, texts = images.double(), texts.double()
    logit_scale = torch.as_tensor(logit_scale, dtype=torch.float64)
    batch = images.shape[0]
    logits = logit_scale.exp() * images @ texts.T
    labels = torch.arange(batch)
    contrastive = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    inmodal = ((images @ images.T - texts @ texts.T) ** 2).sum() / batch
    crossmodal = ((images @ texts.T - texts @ images.T) ** 2).sum() / batch
    return contrastive, inmodal, crossmodal


def random_features(batch: int, dim: int, seed: int = 0, gap: float | None = None):
    """L2-normalised float32 (images, texts); with `gap`, texts are images nudged by about `gap`."""
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    if gap is None:
        texts = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
    else:
        noise = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=1)
        texts = F.normalize(images + gap * noise, dim=1)
    return images.float(), texts.float()


def direct_inmodal_contrastive(images, texts, augmented_images, augmented_texts, logit_scale):
    """The released code's --inmodal contrastive term in float64:
    ( [CE(s I T^T) + CE(s T I^T)] / 2 + [CE(s I Iaug^T) + CE(s T Taug^T)] / 2 ) / 2."""
    images, texts, augmented_images, augmented_texts = (
        x.double() for x in (images, texts, augmented_images, augmented_texts)
    )
    scale = torch.as_tensor(logit_scale, dtype=torch.float64).exp()
    labels = torch.arange(images.shape[0])
    crossmodal = (
        F.cross_entropy(scale * images @ texts.T, labels) + F.cross_entropy(scale * texts @ images.T, labels)
    ) / 2
    inmodal = (
        F.cross_entropy(scale * images @ augmented_images.T, labels)
        + F.cross_entropy(scale * texts @ augmented_texts.T, labels)
    ) / 2
    return (crossmodal + inmodal) / 2


def direct_siglip(images, texts, logit_scale, logit_bias):
    """SigLIP's loss in float64 with the N x N labels: -(1/N) sum_jk log sigmoid(z_jk (t <I_j,T_k> + b))."""
    images, texts = images.double(), texts.double()
    scale = torch.as_tensor(logit_scale, dtype=torch.float64).exp()
    labels = 2 * torch.eye(images.shape[0], dtype=torch.float64) - 1
    logits = scale * images @ texts.T + torch.as_tensor(logit_bias, dtype=torch.float64)
    return -F.logsigmoid(labels * logits).sum() / images.shape[0]
