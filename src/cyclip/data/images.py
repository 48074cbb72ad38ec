"""Decode any image file into RGB, turning every way a file can be broken into one `BadSampleError`.

Training must not die on one broken image among millions, so callers need a single exception type to
catch; and every colour mode must land in the same 0..255 RGB space the model's transform expects.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cyclip.errors import BadSampleError

# What PIL raises on corrupt data varies by format and version; all of it means "this file is broken".
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_WHITE = (255, 255, 255, 255)


def load_rgb_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode `path` (so truncation shows up here, not later in a worker) as RGB."""
    path = Path(path)
    try:
        if path.is_dir():
            raise BadSampleError(f"{path}: is a folder, not an image file")
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadSampleError(f"{path}: image file not found") from None
    except OSError as error:
        raise BadSampleError(f"{path}: cannot read ({error.strerror or error})") from None
    if size == 0:
        raise BadSampleError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except UnidentifiedImageError:
        raise BadSampleError(f"{path}: not an image file PIL can read") from None
    except DECODE_ERRORS as error:
        raise BadSampleError(f"{path}: cannot decode image ({error})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """A new RGB image: transparency composited onto white, 16-bit and float ranges scaled to 0..255.

    PIL's own `convert` drops alpha (transparent pixels turn to whatever colour they hide) and clips
    16-bit grayscale at 255 instead of scaling it, so those cases are done here.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # 16-bit grayscale (PNG/TIFF): 0..65535 maps linearly onto 0..255; 'I' is read the same way.
        values = np.asarray(image).astype(np.float64)
        return _gray_to_rgb(np.clip(values, 0, 65535) * (255 / 65535))
    if mode == "F":
        # Floats all within [0, 1] are normalised intensities; anything else is read as 0..255 (PIL's rule).
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if values.size and values.min() >= 0 and values.max() <= 1 else 1.0
        return _gray_to_rgb(np.clip(values * scale, 0, 255))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")
    return image.convert("RGB")


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    return Image.fromarray(np.rint(values).astype(np.uint8)).convert("RGB")
