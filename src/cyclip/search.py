"""Image search: embed a collection once into an index file, then rank its images by a caption or an image.

The index is an embeddings file (`cyclip.evaluation.embeddings_file`) holding the image embeddings, the image
paths and the identity of the model that embedded them (name, source and weights fingerprint). Embeddings of two
different models live in unrelated spaces, so a query is only ever compared with an index of the same weights.
Ranking is a matrix product and `topk` over blocks of queries, sized so that one block's scores stay under
`MAX_BLOCK_SCORES` numbers whatever the size of the index.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from cyclip.errors import DataError
from cyclip.evaluation.embeddings_file import load_embeddings, save_embeddings
from cyclip.evaluation.retrieval import ranked_blocks
from cyclip.models import LoadedModel

__all__ = ["ImageIndex", "check_same_model", "load_index", "save_index", "search", "top_k"]

MAX_BLOCK_SCORES = 2**24  # query rows x indexed images scored at once (64 MiB in float32)


@dataclass
class ImageIndex:
    embeddings: torch.Tensor  # [N, d] L2-normalised image embeddings
    paths: list[str]  # the image file of each row
    model_name: str
    model_source: str
    model_fingerprint: str

    @classmethod
    def of(cls, embeddings: torch.Tensor, paths: list[Path], loaded: LoadedModel) -> ImageIndex:
        """An index of `paths` embedded by `loaded`, recording the model's identity; paths are stored absolute, so
        that the index works from any folder."""
        absolute = [str(Path(path).resolve()) for path in paths]
        return cls(embeddings, absolute, loaded.name, str(Path(loaded.source).resolve()), loaded.fingerprint)


def save_index(index: ImageIndex, path: str | os.PathLike) -> Path:
    """Write the index as an embeddings file (atomically)."""
    return save_embeddings(
        path,
        image_embeddings=index.embeddings,
        image_paths=index.paths,
        model_name=index.model_name,
        model_source=index.model_source,
        model_fingerprint=index.model_fingerprint,
    )


def load_index(path: str | os.PathLike) -> ImageIndex:
    """Read an index written by `save_index` (`cyclip index`); any other file is one DataError."""
    embeddings = load_embeddings(path)
    missing = [
        name
        for name in ("image_paths", "model_name", "model_source", "model_fingerprint")
        if getattr(embeddings, name) is None
    ]
    if missing:
        raise DataError(
            f"{path}: not a search index (no {', '.join(missing)}); "
            f"build one with `cyclip index FOLDER --output {path}`"
        )
    assert embeddings.image_paths is not None and embeddings.model_name is not None  # checked above
    assert embeddings.model_source is not None and embeddings.model_fingerprint is not None
    return ImageIndex(
        embeddings.image_embeddings.float(),
        embeddings.image_paths,
        embeddings.model_name,
        embeddings.model_source,
        embeddings.model_fingerprint,
    )


def check_same_model(index: ImageIndex, loaded: LoadedModel, index_path: str | os.PathLike) -> None:
    """Refuse to search an index with another model's embeddings: their similarities would mean nothing."""
    if loaded.fingerprint != index.model_fingerprint:
        raise DataError(
            f"{index_path}: built by model {index.model_name} from {index.model_source} (weights "
            f"{index.model_fingerprint}), not by {loaded.name} from {loaded.source} (weights {loaded.fingerprint}); "
            "search it with the model that built it, or rebuild it with `cyclip index`"
        )


def top_k(queries: torch.Tensor, gallery: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[Q, k'] scores and indices of the k' = min(k, N) gallery rows of highest dot product with each query row."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    queries = queries.to(device=gallery.device, dtype=gallery.dtype)
    chunk = max(1, MAX_BLOCK_SCORES // max(1, gallery.shape[0]))
    depth = min(k, gallery.shape[0])
    blocks = list(ranked_blocks(queries, gallery, depth, chunk))
    return torch.cat([scores for _, scores, _ in blocks]), torch.cat([indices for _, _, indices in blocks])


def search(index: ImageIndex, queries: torch.Tensor, k: int = 10) -> list[list[tuple[str, float]]]:
    """Per query embedding, the k most similar indexed images as (path, cosine similarity), best first."""
    scores, indices = top_k(queries, index.embeddings, k)
    return [
        [(index.paths[i], score) for i, score in zip(row_indices, row_scores, strict=True)]
        for row_indices, row_scores in zip(indices.tolist(), scores.tolist(), strict=True)
    ]
