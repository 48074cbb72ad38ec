"""Decode any image file into RGB, turning every way a file can be broken into one `BadSampleError`.

Training must not die on one broken image among millions, so callers need a single exception type to
catch; and every colour mode must land in the same 0..255 RGB space the model's transform expects.
Images are turned upright by their EXIF orientation (as cameras and phones store them), and an image
larger than `max_pixels` is refused from its header alone: it is never decoded.
"""

from __future__ import annotations

import os
import re
import struct
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cyclip.config import DEFAULT_MAX_IMAGE_PIXELS, PIL_PIXEL_CEILING
from cyclip.errors import BadSampleError, ImageTooLargeError

MAX_PIXELS_FLAG = "--max-image-pixels"
MAX_PIXELS_HINT = f"raise the limit with {MAX_PIXELS_FLAG}"

# What PIL raises on corrupt data varies by format and version; all of it means "this file is broken".
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)
_WHITE = (255, 255, 255, 255)


def check_max_pixels(max_pixels: int) -> None:
    """A pixel limit must be a positive integer PIL can honour (it refuses larger images on its own)."""
    ceiling = PIL_PIXEL_CEILING
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"{MAX_PIXELS_FLAG} must be a positive number of pixels, got {max_pixels!r}")
    if ceiling is not None and max_pixels > ceiling:
        raise ValueError(
            f"{MAX_PIXELS_FLAG} {max_pixels} is above {ceiling}, the size PIL refuses to open; pass at most {ceiling}"
        )


def load_rgb_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open and fully decode `path` (so truncation shows up here, not later in a worker) as upright RGB."""
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
        return decode_rgb(path, max_pixels)
    except BadSampleError as error:
        raise type(error)(f"{path}: {error}") from None


def decode_rgb(source: str | os.PathLike | BinaryIO, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Upright RGB pixels of an image file or stream; BadSampleError says why not (without naming the source)."""
    try:
        with open_checked(source, max_pixels) as image:
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return to_rgb(image)
    except BadSampleError:
        raise
    except UnidentifiedImageError:
        raise BadSampleError("not an image file PIL can read") from None
    except DECODE_ERRORS as error:
        raise BadSampleError(f"cannot decode image ({error})") from None


def check_image_size(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Refuse an image file above `max_pixels` from its header, for readers that decode files themselves."""
    try:
        open_checked(path, max_pixels).close()
    except BadSampleError as error:
        raise type(error)(f"{path}: {error}") from None
    except (UnidentifiedImageError, *DECODE_ERRORS):
        pass  # the reader's own decoding reports what is wrong with the file


def open_checked(source: str | os.PathLike | BinaryIO, max_pixels: int) -> Image.Image:
    """PIL's lazy open (the header only), refused with BadSampleError when the image is above `max_pixels`.

    PIL itself only warns up to twice its own limit and refuses beyond it; here the warning is not needed
    (this check decides) and PIL's refusal becomes the same message.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as error:
        pixels = re.search(r"\((\d+) pixels\)", str(error))
        raise ImageTooLargeError(_too_large(int(pixels.group(1)) if pixels else None, None, max_pixels)) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(_too_large(width * height, image.size, max_pixels))
    return image


def _too_large(pixels: int | None, size: tuple[int, int] | None, max_pixels: int) -> str:
    shape = f"{size[0]}x{size[1]} = " if size else ""
    amount = f"{shape}{pixels:,} pixels" if pixels else "more pixels than PIL opens"
    return f"image too large to decode ({amount}, above the limit of {max_pixels:,})"


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
