"""How interchangeable the image and text spaces are, on held-out image-caption pairs (I_j, T_j), j = 1..N.

    inmodal_gap            = mean_{j != k} |<I_j,I_k> - <T_j,T_k>|
    crossmodal_gap         = mean_{j != k} |<I_j,T_k> - <I_k,T_j>|
    inmodal_regularizer    = (1/N) sum_{j,k} (<I_j,I_k> - <T_j,T_k>)^2       (the training regularizers,
    crossmodal_regularizer = (1/N) sum_{j,k} (<I_j,T_k> - <I_k,T_j>)^2        docs/objective.md, in float64)
    neighbour_agreement@k  = (1/N) sum_j |NN_k(I_j) ∩ NN_k(T_j)| / k

where NN_k(I_j) is the set of indices of the k images most similar to I_j among the other images (self
excluded) and NN_k(T_j) the same among the captions. With C class embeddings (zero-shot classifier rows):

    consistency@k = (1/N) sum_j [ argmax_c <T_j, C_c> is among the k classes of highest <I_j, C_c> ]

i.e. the class read from the caption is among the top-k classes read from its image. Similarities in
ties are ordered by `torch.topk`. Every N x N quantity is computed in row blocks, so memory stays
O(block x N); the regularizers are the training loss's, from three d x d matrices.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cyclip import distributed
from cyclip.losses import cyclic_regularizers

NEIGHBOUR_K = (1, 5, 10)
CONSISTENCY_K = (1, 3, 5, 10)


def _check_pairs(images: torch.Tensor, texts: torch.Tensor, minimum: int = 2) -> None:
    if (
        not isinstance(images, torch.Tensor)
        or not isinstance(texts, torch.Tensor)
        or images.shape != texts.shape
        or images.dim() != 2
        or images.shape[0] < minimum
    ):
        raise ValueError(
            f"need two (N, d) embedding matrices of paired rows with N >= {minimum}, "
            f"got {tuple(getattr(images, 'shape', ()))} and {tuple(getattr(texts, 'shape', ()))}"
        )


def _working_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.float32
    for tensor in tensors:
        dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def consistency_gaps(images: torch.Tensor, texts: torch.Tensor, block: int = 1024) -> dict[str, float]:
    """The two mean absolute gaps over ordered pairs j != k of L2-normalised embeddings."""
    _check_pairs(images, texts)
    images, texts = images.double(), texts.double()
    batch = images.shape[0]
    inmodal = crossmodal = 0.0
    for start in range(0, batch, block):
        stop = min(start + block, batch)
        diagonal = (torch.arange(stop - start), torch.arange(start, stop))
        inmodal_block = images[start:stop] @ images.T - texts[start:stop] @ texts.T
        crossmodal_block = images[start:stop] @ texts.T - texts[start:stop] @ images.T
        inmodal_block[diagonal] = 0.0
        crossmodal_block[diagonal] = 0.0
        inmodal += inmodal_block.abs().sum().item()
        crossmodal += crossmodal_block.abs().sum().item()
    pairs = batch * (batch - 1)
    return {"inmodal_gap": inmodal / pairs, "crossmodal_gap": crossmodal / pairs}


@torch.no_grad()
def regularizer_values(images: torch.Tensor, texts: torch.Tensor) -> dict[str, float]:
    """The two cyclic regularizers of the training objective (`cyclip.losses.cyclic_regularizers`), in float64.

    Under `distributed.local_only()`: the loss sums over torch.distributed ranks, and an evaluation must
    measure exactly the rows it is given.
    """
    _check_pairs(images, texts, minimum=1)
    with distributed.local_only():
        inmodal, crossmodal = cyclic_regularizers(images.double(), texts.double().to(images.device))
    return {"inmodal_regularizer": inmodal.item(), "crossmodal_regularizer": crossmodal.item()}


def _neighbours(embeddings: torch.Tensor, start: int, stop: int, depth: int) -> torch.Tensor:
    """Indices [stop - start, depth] of the nearest other rows of rows start..stop-1, most similar first."""
    similarity = embeddings[start:stop] @ embeddings.T
    rows = torch.arange(stop - start, device=embeddings.device)
    similarity[rows, rows + start] = float("-inf")
    return similarity.topk(depth, dim=1).indices


def neighbour_agreement(
    images: torch.Tensor, texts: torch.Tensor, ks: Sequence[int] = NEIGHBOUR_K, chunk: int = 1024
) -> dict[str, float]:
    """neighbour_agreement@k: mean overlap of each pair's k nearest images and k nearest captions."""
    _check_pairs(images, texts)
    if not ks or min(ks) < 1 or max(ks) >= images.shape[0]:
        raise ValueError(f"ks must lie in 1..N-1 = 1..{images.shape[0] - 1}, got {list(ks)}")
    dtype = _working_dtype(images, texts)
    images, texts = images.to(dtype), texts.to(device=images.device, dtype=dtype)
    batch, depth = images.shape[0], max(ks)
    overlap = torch.zeros(len(ks), dtype=torch.float64, device=images.device)
    for start in range(0, batch, chunk):
        stop = min(start + chunk, batch)
        image_nn = _neighbours(images, start, stop, depth)
        text_nn = _neighbours(texts, start, stop, depth)
        for position, k in enumerate(ks):
            shared = (image_nn[:, :k, None] == text_nn[:, None, :k]).sum()
            overlap[position] += shared.double() / k
    return {f"neighbour_agreement@{k}": value / batch for k, value in zip(ks, overlap.tolist(), strict=True)}


def _top_classes(embeddings: torch.Tensor, classes: torch.Tensor, depth: int, chunk: int) -> torch.Tensor:
    """[N, depth] indices of the classes of highest <x, C_c> for each row x, most similar first."""
    classes = classes.to(device=embeddings.device, dtype=_working_dtype(embeddings, classes))
    return torch.cat(
        [
            (embeddings[start : start + chunk].to(classes.dtype) @ classes.T).topk(depth, dim=1).indices
            for start in range(0, embeddings.shape[0], chunk)
        ]
    )


def consistency_at_k(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    class_embeddings: torch.Tensor,
    ks: Sequence[int] = CONSISTENCY_K,
    chunk: int = 4096,
) -> dict[str, float]:
    """consistency@k: the caption's zero-shot class is among the image's top-k zero-shot classes."""
    _check_pairs(image_embeddings, text_embeddings, minimum=1)
    if (
        not isinstance(class_embeddings, torch.Tensor)
        or class_embeddings.dim() != 2
        or class_embeddings.shape[1] != image_embeddings.shape[1]
    ):
        raise ValueError(
            f"class_embeddings must be (num_classes, {image_embeddings.shape[1]}), "
            f"got {tuple(getattr(class_embeddings, 'shape', ()))}"
        )
    ks = [k for k in ks if k <= class_embeddings.shape[0]]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must hold values in 1..{class_embeddings.shape[0]} (the number of classes)")
    caption_class = _top_classes(text_embeddings, class_embeddings, 1, chunk)
    image_top = _top_classes(image_embeddings, class_embeddings, max(ks), chunk)
    found = image_top == caption_class.to(image_top.device)
    hits = [found[:, :k].any(dim=1).sum().item() for k in ks]
    return {f"consistency@{k}": hit / image_embeddings.shape[0] for k, hit in zip(ks, hits, strict=True)}


def consistency_report(
    images: torch.Tensor,
    texts: torch.Tensor,
    class_embeddings: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    neighbour_ks: Sequence[int] = NEIGHBOUR_K,
    consistency_ks: Sequence[int] = CONSISTENCY_K,
) -> dict[str, float]:
    """Gaps, regularizers and neighbour agreement; consistency@k with class embeddings.

    With `labels` too, also the zero-shot top-1 accuracy read from the images and from the captions
    (image_zeroshot_top1, caption_zeroshot_top1), the two predictions consistency@1 compares.
    """
    _check_pairs(images, texts)
    report = consistency_gaps(images, texts) | regularizer_values(images, texts)
    neighbour_ks = [k for k in neighbour_ks if k < images.shape[0]]
    if neighbour_ks:
        report |= neighbour_agreement(images, texts, neighbour_ks)
    if class_embeddings is not None:
        report |= consistency_at_k(images, texts, class_embeddings, consistency_ks)
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.shape != (images.shape[0],):
                raise ValueError(
                    f"labels must be a tensor of shape ({images.shape[0]},), got {getattr(labels, 'shape', labels)}"
                )
            for name, embeddings in (("image", images), ("caption", texts)):
                predicted = _top_classes(embeddings, class_embeddings, 1, 4096)[:, 0]
                report[f"{name}_zeroshot_top1"] = (predicted.cpu() == labels.cpu()).double().mean().item()
    return report
