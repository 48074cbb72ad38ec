"""Batched, no-grad embedding of images and captions; shared by every evaluation task."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


@torch.no_grad()
def _embed(
    model: torch.nn.Module,
    dataset: Dataset,
    second: Callable[[torch.Tensor], torch.Tensor],
    device: torch.device | str,
    batch_size: int,
    workers: int,
    progress: bool,
    desc: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Image embeddings of items (image, x, ...) and `second(x)`, concatenated over batches."""
    model.eval()
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    firsts, seconds = [], []
    for images, others, *_ in tqdm(loader, desc=desc, disable=not progress, leave=False):
        firsts.append(model.encode_image(images.to(device, non_blocking=True), normalize=True).float().cpu())
        seconds.append(second(others))
    return torch.cat(firsts), torch.cat(seconds)


def embed_images(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image embeddings (float32, on CPU) of a dataset of (image, label), and the labels."""
    return _embed(model, dataset, torch.as_tensor, device, batch_size, workers, progress, "embedding images")


def embed_pairs(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    workers: int = 0,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised (image, caption) embeddings of a dataset of (image, tokens, ...)."""

    def encode_text(tokens: torch.Tensor) -> torch.Tensor:
        return model.encode_text(tokens.to(device, non_blocking=True), normalize=True).float().cpu()

    return _embed(model, dataset, encode_text, device, batch_size, workers, progress, "embedding pairs")


@torch.no_grad()
def embed_texts(
    model: torch.nn.Module,
    tokenizer: Callable,
    texts: list[str],
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    progress: bool = True,
) -> torch.Tensor:
    """L2-normalised embeddings (float32, on CPU) of a list of captions, in batches."""
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embedding captions", disable=not progress, leave=False):
        tokens = tokenizer(texts[start : start + batch_size]).to(device, non_blocking=True)
        chunks.append(model.encode_text(tokens, normalize=True).float().cpu())
    return torch.cat(chunks) if chunks else torch.empty(0)
