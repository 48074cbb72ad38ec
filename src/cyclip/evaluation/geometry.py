"""Alignment and uniformity on the hypersphere (Wang & Isola, 2020), and the CyCLIP paper's cross-modal use.

Wang & Isola, for positive pairs (x_i, y_i) and samples x_1..x_N:

    alignment(x, y; alpha) = (1/N) sum_i ||x_i - y_i||^alpha                              (alpha = 2)
    uniformity(x; t)       = log [ 2 / (N(N-1)) sum_{i<j} exp(-t ||x_i - x_j||^2) ]        (t = 2)

The CyCLIP paper (Goel et al. 2022, analysis of alignment and uniformity; the released
`utils/hypersphere_labels.py` and `hypersphere_captions.py`) scores an image space against a text space:
images I_i with their matching text T_i, where for a labelled set T_i = C_{y_i} is the zero-shot class
embedding of the image's label, and for captioned pairs T_i is the image's caption:

    alignment  = (1/N) sum_i ||I_i - T_i||^2
    uniformity = log mean_{(i,j) in P} exp(-2 ||I_i - T_j||^2)

a uniformity of images against the texts of other samples. The released code takes P = {(i, j): j < i}
in file order (`pairs="lower"`, reproduces its numbers exactly); the default here is P = {(i, j): i != j}
(`pairs="off_diagonal"`), which estimates the same expectation over independent pairs but does not
depend on the order of the rows. The reports also give the within-modality Wang-Isola uniformity of
the images (and of the captions).

Squared distances are ||a||^2 + ||b||^2 - 2<a,b> in float64, clamped at 0; the log-mean-exp is a
logsumexp over row blocks, so memory is O(chunk x N) and nothing underflows.
"""

from __future__ import annotations

import math

import torch

PAIRS = ("off_diagonal", "lower")


def _check_matrix(name: str, x: torch.Tensor, minimum_rows: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or not x.is_floating_point() or x.shape[0] < minimum_rows:
        raise ValueError(
            f"{name} must be a floating-point (N, d) tensor with N >= {minimum_rows}, got "
            f"{tuple(getattr(x, 'shape', ())) or type(x).__name__}"
        )


def _check_paired(x: torch.Tensor, y: torch.Tensor, minimum_rows: int) -> None:
    _check_matrix("x", x, minimum_rows)
    _check_matrix("y", y, minimum_rows)
    if x.shape != y.shape:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must be paired rows of one shape")


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """(1/N) sum_i ||x_i - y_i||^alpha over the paired rows of x and y, in float64."""
    _check_paired(x, y, 1)
    return (x.double() - y.double().to(x.device)).norm(dim=1).pow(alpha).mean().item()


def _log_mean_exp_distances(x: torch.Tensor, y: torch.Tensor, t: float, keep: str, chunk: int) -> float:
    """log of the mean of exp(-t ||x_i - y_j||^2) over pairs (i, j) with j > i, j < i or j != i (`keep`)."""
    x, y = x.double(), y.double().to(x.device)
    x_norms, y_norms = x.pow(2).sum(dim=1), y.pow(2).sum(dim=1)
    columns = torch.arange(y.shape[0], device=x.device)
    blocks, pairs = [], 0
    for start in range(0, x.shape[0], chunk):
        rows = torch.arange(start, min(start + chunk, x.shape[0]), device=x.device)
        squared = (x_norms[rows, None] + y_norms[None, :] - 2 * x[rows] @ y.T).clamp_min_(0)
        if keep == "upper":
            mask = columns[None, :] > rows[:, None]
        elif keep == "lower":
            mask = columns[None, :] < rows[:, None]
        else:
            mask = columns[None, :] != rows[:, None]
        pairs += int(mask.sum())
        blocks.append(torch.logsumexp((-t * squared).masked_fill_(~mask, float("-inf")).flatten(), dim=0))
    return (torch.logsumexp(torch.stack(blocks), dim=0) - math.log(pairs)).item()


def uniformity(x: torch.Tensor, t: float = 2.0, chunk: int = 256) -> float:
    """log mean_{i<j} exp(-t ||x_i - x_j||^2) over the rows of x (Wang & Isola's uniformity)."""
    _check_matrix("x", x, 2)
    return _log_mean_exp_distances(x, x, t, "upper", chunk)


def cross_uniformity(
    x: torch.Tensor, y: torch.Tensor, t: float = 2.0, pairs: str = "off_diagonal", chunk: int = 256
) -> float:
    """log mean_{(i,j) in P} exp(-t ||x_i - y_j||^2): P is i != j ("off_diagonal") or j < i ("lower")."""
    _check_paired(x, y, 2)
    if pairs not in PAIRS:
        raise ValueError(f"pairs must be one of {PAIRS}, got {pairs!r}")
    return _log_mean_exp_distances(x, y, t, pairs, chunk)


def paired_geometry(
    images: torch.Tensor, texts: torch.Tensor, t: float = 2.0, pairs: str = "off_diagonal"
) -> dict[str, float]:
    """alignment and cross-modal uniformity of image-caption pairs, plus each modality's own uniformity."""
    return {
        "alignment": alignment(images, texts),
        "uniformity": cross_uniformity(images, texts, t, pairs),
        "image_uniformity": uniformity(images, t),
        "text_uniformity": uniformity(texts, t),
    }


def class_geometry(
    images: torch.Tensor,
    labels: torch.Tensor,
    class_embeddings: torch.Tensor,
    t: float = 2.0,
    pairs: str = "off_diagonal",
) -> dict[str, float]:
    """The CyCLIP paper's image-class variant: each image against the zero-shot embedding of its class."""
    _check_matrix("images", images, 2)
    _check_matrix("class_embeddings", class_embeddings, 1)
    if (
        not isinstance(labels, torch.Tensor)
        or labels.shape != (images.shape[0],)
        or labels.is_floating_point()
        or int(labels.min()) < 0
        or int(labels.max()) >= class_embeddings.shape[0]
    ):
        raise ValueError(
            f"labels must be {images.shape[0]} integer class indices in 0..{class_embeddings.shape[0] - 1}, "
            f"got {getattr(labels, 'shape', labels)}"
        )
    matched = class_embeddings.to(images.device)[labels.to(images.device)]
    return {
        "alignment": alignment(images, matched),
        "uniformity": cross_uniformity(images, matched, t, pairs),
        "image_uniformity": uniformity(images, t),
    }
