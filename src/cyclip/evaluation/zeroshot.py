"""Zero-shot classification: class embeddings averaged over prompt templates, top-k accuracy.

open_clip and the dataset readers are imported by the functions that use them: the task registry imports
this module for `topk_accuracy`, and the command line builds its parser from the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from cyclip.evaluation.embeddings import embed_images

TOP_K = (1, 3, 5, 10)


def class_embeddings(
    model: torch.nn.Module,
    tokenizer: Callable,
    classes: Sequence[str],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """[num_classes, dim]: per class, the normalised mean of its normalised template embeddings."""
    from open_clip.zero_shot_classifier import build_zero_shot_classifier

    model.eval()
    weights = build_zero_shot_classifier(model, tokenizer, list(classes), list(templates), device=device)
    return weights.T.float().cpu()


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOP_K) -> dict[str, float]:
    """Fraction of rows whose label is among the k highest logits, for each k <= number of classes."""
    ks = [k for k in ks if k <= logits.shape[1]]
    top = logits.topk(max(ks), dim=1).indices
    hits = top == labels[:, None]
    return {f"top{k}": hits[:, :k].any(dim=1).double().mean().item() for k in ks}


def mean_per_class_recall(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over the classes present in `labels` of the fraction of their rows whose top-1 class is right
    (scikit-learn's balanced accuracy; clip_benchmark's `mean_per_class_recall`)."""
    correct = (logits.argmax(dim=1) == labels).double()
    classes, index = torch.unique(labels, return_inverse=True)
    per_class = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, index.cpu(), correct.cpu())
    return (per_class / torch.bincount(index.cpu(), minlength=len(classes))).mean().item()


def zeroshot_classification(
    model: torch.nn.Module,
    preprocess: Callable,
    tokenizer: Callable,
    folder: str | Path,
    device: torch.device | str,
    batch_size: int,
    workers: int,
    progress: bool = True,
) -> dict[str, float]:
    """Top-1/3/5/10 accuracy on a labelled folder (labels.csv + classes.json)."""
    from cyclip.evaluation.datasets.labelled import LabelledImageDataset, read_labelled_folder

    data = read_labelled_folder(folder)
    image_features, labels = embed_images(
        model, LabelledImageDataset(data, preprocess), device, batch_size, workers, progress
    )
    weights = class_embeddings(model, tokenizer, data.classes, data.templates, device)
    results = topk_accuracy(image_features @ weights.T, labels)
    return {**results, "num_images": len(labels), "num_classes": len(data.classes)}
