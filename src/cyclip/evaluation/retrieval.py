"""Image-text retrieval Recall@k on L2-normalised embeddings, several captions per image allowed.

Similarity is the dot product s(i, t) = <I_i, T_t>; `image_of_text[t]` is the image that caption t describes.

    image_to_text_R@k = (1/N_i) sum_i [ some caption t of image i is among the k texts of highest s(i, .) ]
    text_to_image_R@k = (1/N_t) sum_t [ image_of_text[t] is among the k images of highest s(., t) ]
    mean_recall       = mean of the 2 x len(ks) numbers above (with ks = 1, 5, 10: the six numbers
                        whose mean the CLIP and CyCLIP papers report)

Values are fractions in [0, 1]. k larger than the gallery counts the whole gallery. Ties in s are broken
by `torch.topk`. Rows are processed `chunk` at a time (matmul then topk), so memory is O(chunk x N) and
the N_i x N_t similarity matrix (5k x 25k for COCO) never exists at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

RECALL_K = (1, 5, 10)


def _check(image_embeddings: torch.Tensor, text_embeddings: torch.Tensor, image_of_text: torch.Tensor) -> None:
    for name, tensor in (("image_embeddings", image_embeddings), ("text_embeddings", text_embeddings)):
        if not isinstance(tensor, torch.Tensor) or tensor.dim() != 2 or not tensor.is_floating_point():
            raise ValueError(f"{name} must be a floating-point (N, d) tensor, got {getattr(tensor, 'shape', tensor)}")
        if tensor.shape[0] == 0:
            raise ValueError(f"{name} has no rows")
    if image_embeddings.shape[1] != text_embeddings.shape[1]:
        raise ValueError(
            f"image_embeddings have {image_embeddings.shape[1]} dimensions but text_embeddings "
            f"{text_embeddings.shape[1]}: both must come from one model"
        )
    if (
        not isinstance(image_of_text, torch.Tensor)
        or image_of_text.dim() != 1
        or image_of_text.is_floating_point()
        or image_of_text.shape[0] != text_embeddings.shape[0]
    ):
        raise ValueError(
            f"image_of_text must be an integer tensor of shape ({text_embeddings.shape[0]},), one image index per "
            f"caption, got {getattr(image_of_text, 'dtype', type(image_of_text))} "
            f"{tuple(getattr(image_of_text, 'shape', ()))}"
        )
    num_images = image_embeddings.shape[0]
    if int(image_of_text.min()) < 0 or int(image_of_text.max()) >= num_images:
        raise ValueError(f"image_of_text holds indices outside 0..{num_images - 1}")
    captioned = torch.bincount(image_of_text.cpu(), minlength=num_images)
    if bool((captioned == 0).any()):
        missing = (captioned == 0).nonzero().squeeze(1)
        raise ValueError(
            f"{len(missing)} images have no caption (rows {missing[:5].tolist()}...): drop them or add their captions"
        )


def ranked_blocks(
    queries: torch.Tensor, gallery: torch.Tensor, depth: int, chunk: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """For each block of `chunk` query rows: (its first row, [rows, depth] scores and gallery indices of its `depth`
    most similar gallery rows, best first). Only one block's similarities exist at a time."""
    for start in range(0, queries.shape[0], chunk):
        scores, indices = (queries[start : start + chunk] @ gallery.T).topk(depth, dim=1)
        yield start, scores, indices


def retrieval_recall(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    image_of_text: torch.Tensor,
    ks: Sequence[int] = RECALL_K,
    chunk: int = 1024,
) -> dict[str, float]:
    """image_to_text_R@k, text_to_image_R@k for each k, and mean_recall (module docstring)."""
    _check(image_embeddings, text_embeddings, image_of_text)
    if not ks or min(ks) < 1 or chunk < 1:
        raise ValueError(f"ks must be positive integers and chunk >= 1, got ks={list(ks)}, chunk={chunk}")
    dtype = torch.promote_types(torch.promote_types(image_embeddings.dtype, text_embeddings.dtype), torch.float32)
    images = image_embeddings.to(dtype)
    texts = text_embeddings.to(device=images.device, dtype=dtype)
    image_of_text = image_of_text.to(images.device)
    num_images, num_texts = images.shape[0], texts.shape[0]
    image_hits = torch.zeros(len(ks), dtype=torch.long, device=images.device)
    text_hits = torch.zeros(len(ks), dtype=torch.long, device=images.device)

    depth = min(max(ks), num_texts)
    for start, _, ranked in ranked_blocks(images, texts, depth, chunk):
        rows = torch.arange(start, start + ranked.shape[0], device=images.device)
        hits = image_of_text[ranked] == rows[:, None]
        image_hits += torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])

    depth = min(max(ks), num_images)
    for start, _, ranked in ranked_blocks(texts, images, depth, chunk):
        hits = ranked == image_of_text[start : start + ranked.shape[0], None]
        text_hits += torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])

    results = {f"image_to_text_R@{k}": hit / num_images for k, hit in zip(ks, image_hits.tolist(), strict=True)}
    results |= {f"text_to_image_R@{k}": hit / num_texts for k, hit in zip(ks, text_hits.tolist(), strict=True)}
    results["mean_recall"] = sum(results.values()) / len(results)
    return results
