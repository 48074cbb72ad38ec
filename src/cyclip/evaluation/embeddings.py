"""Batched, no-grad embedding of images and captions; shared by every evaluation task.

Batch size and data-loading workers are required here: their defaults live in `EvalConfig`. The model is
any open_clip model; mypy reads `encode_image`/`encode_text` through nn.Module's `__getattr__`, typed as
returning a Tensor or Module, hence the two `type: ignore[operator]`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm


@torch.no_grad()
def embed_images(
    model: torch.nn.Module,
    dataset: Dataset,
    device: torch.device | str,
    batch_size: int,
    workers: int,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised image embeddings (float32, on CPU) of a dataset of (image, label, ...), and the labels."""
    model.eval()
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda")
    embeddings, labels = [], []
    for images, batch_labels, *_ in tqdm(loader, desc="embedding images", disable=not progress, leave=False):
        encoded = model.encode_image(images.to(device, non_blocking=True), normalize=True)  # type: ignore[operator]
        embeddings.append(encoded.float().cpu())
        labels.append(torch.as_tensor(batch_labels))
    return torch.cat(embeddings), torch.cat(labels)


@torch.no_grad()
def embed_texts(
    model: torch.nn.Module,
    tokenizer: Callable,
    texts: list[str],
    device: torch.device | str,
    batch_size: int,
    progress: bool = True,
) -> torch.Tensor:
    """L2-normalised embeddings (float32, on CPU) of a list of captions, in batches."""
    model.eval()
    chunks = []
    for start in tqdm(range(0, len(texts), batch_size), desc="embedding captions", disable=not progress, leave=False):
        tokens = tokenizer(texts[start : start + batch_size]).to(device, non_blocking=True)
        chunks.append(model.encode_text(tokens, normalize=True).float().cpu())  # type: ignore[operator]
    return torch.cat(chunks) if chunks else torch.empty(0)
