"""Stand-ins for the model's transform and tokenizer in data tests (module level, so workers can pickle them)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def to_tensor(image: Image.Image) -> torch.Tensor:
    """[3, H, W] uint8, no resizing: tests compare exact pixel values."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


class CharTokenizer:
    """Stands in for open_clip's tokenizer: [len(texts), 16] of character codes, zero-padded."""

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), 16, dtype=torch.long)
        for row, text in enumerate(texts):
            codes = [ord(c) for c in text[:16]]
            out[row, : len(codes)] = torch.tensor(codes)
        return out
