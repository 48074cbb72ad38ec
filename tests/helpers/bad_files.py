"""Hostile-but-plausible image files for the bad-input tests, made on the fly and small on disk."""

from __future__ import annotations

import io
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile

EXIF_ORIENTATION = 0x0112
# EXIF orientation -> numpy rotation (np.rot90's k, counter-clockwise quarter turns) that displays the image upright.
UPRIGHT_ROTATION = {3: 2, 6: -1, 8: 1}
HUGE_SIDE = 12_000  # 144 M pixels: above cyclip's default limit and PIL's warning threshold, below PIL's refusal
BOMB_SIDE = 14_000  # 196 M pixels: above the size PIL refuses to open at all


def quadrant_pixels(width: int = 48, height: int = 32) -> np.ndarray:
    """An RGB array whose four quadrants have clearly different colours, so any rotation or flip shows."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[: height // 2, : width // 2] = (250, 10, 10)
    pixels[: height // 2, width // 2 :] = (10, 250, 10)
    pixels[height // 2 :, : width // 2] = (10, 10, 250)
    pixels[height // 2 :, width // 2 :] = (240, 240, 20)
    return pixels


def exif_jpeg_bytes(orientation: int, pixels: np.ndarray | None = None) -> bytes:
    """A JPEG whose stored pixels are `pixels` and whose EXIF says to show them turned by `orientation`."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    Image.fromarray(quadrant_pixels() if pixels is None else pixels).save(
        buffer, "JPEG", quality=100, exif=exif.tobytes()
    )
    return buffer.getvalue()


def stored_pixels(data: bytes) -> np.ndarray:
    """The pixels as stored in the file (what a loader that ignores EXIF would use)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def upright(data: bytes, orientation: int) -> np.ndarray:
    """The reference: the stored pixels turned with numpy, independently of PIL's ImageOps."""
    return np.rot90(stored_pixels(data), k=UPRIGHT_ROTATION[orientation]).copy()


def huge_png_bytes(side: int = HUGE_SIDE) -> bytes:
    """A valid 1-bit PNG of side x side pixels: a few KB on disk, side**2 bytes (and 3x as RGB) once decoded."""
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@contextmanager
def decoded_sizes(monkeypatch):
    """Record the size of every image PIL decodes (ImageFile.load) while the block runs."""
    sizes: list[tuple[int, int]] = []
    original = ImageFile.ImageFile.load

    def recording_load(self):
        sizes.append(self.size)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", recording_load)
    try:
        yield sizes
    finally:
        monkeypatch.setattr(ImageFile.ImageFile, "load", original)
