"""Digits typeset in the fonts matplotlib ships, drawn the way scikit-learn's handwritten digit scans were made.

Why: a model trained on the handwritten scans scores near 100% on held-out scans, which says nothing about
robustness. These digits keep the scans' format (8x8 images of 0..16 grey levels, the digit filling the
frame) but change the style: printed glyphs with serifs, slants and bold weights, at several sizes,
small rotations and positions. They make a shifted test set that needs no download, since matplotlib (a
dependency) ships the fonts.

The scans (UCI "optdigits") are 32x32 binary bitmaps of a digit scaled to the frame's height; the
on-pixels of each 4x4 block are counted, giving 8x8 values 0..16. Each typeset digit goes through the
same steps: drawn large with PIL, rotated, cropped to its ink, scaled to a height and width, thresholded
into a binary bitmap placed in the 32x32 frame, and block-counted.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cyclip.data.digits import DIGIT_NAMES, HELDOUT_TEMPLATES

# Font files under matplotlib's mpl-data/fonts/ttf that hold plain lining digits. DejaVu Sans Mono is left
# out: its dotted zero reads as an eight at 8x8.
FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmr10.ttf",
    "cmss10.ttf",
    "cmtt10.ttf",
    "cmb10.ttf",
    "cmti10.ttf",
)
FRAME = 32  # the scans' bitmap side, before 4x4 block counting
BLOCK = 4
HEIGHTS = (24, 28, 32)  # digit height in the 32 px frame; every scan fills all 32
EXTRA_STROKES = (0.0, 0.025)  # outline added around the glyph, as a fraction of RENDER_SIZE: a bolder weight
MAX_ROTATION = 10.0  # degrees, either way
WIDTH_STRETCH = (1.0, 1.2)  # the scans' digits are a little wider than a glyph's own proportions
MAX_OFFSET = 2  # pixels of the 32 px frame, in x and y
RENDER_SIZE = 128  # font size in pixels of the large drawing that is scaled down
VARIANTS = 6  # random renderings of each (font, digit)


@dataclass(frozen=True)
class Rendering:
    """How one digit is drawn: font file, size, weight, rotation, width and position in the frame."""

    font: str
    digit: int
    height: int
    extra_stroke: float
    rotation: float
    width_stretch: float
    offset_x: int
    offset_y: int


def font_path(font: str) -> Path:
    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / font


def render_digit(rendering: Rendering) -> np.ndarray:
    """The digit as an 8x8 array of ink counts 0..16, like a scan from scikit-learn's `load_digits`."""
    font = ImageFont.truetype(str(font_path(rendering.font)), RENDER_SIZE)
    canvas = Image.new("L", (3 * RENDER_SIZE, 3 * RENDER_SIZE), 0)
    ImageDraw.Draw(canvas).text(
        (1.5 * RENDER_SIZE, 1.5 * RENDER_SIZE),
        str(rendering.digit),
        font=font,
        fill=255,
        anchor="mm",
        stroke_width=round(rendering.extra_stroke * RENDER_SIZE),
        stroke_fill=255,
    )
    canvas = canvas.rotate(rendering.rotation, resample=Image.Resampling.BILINEAR)
    glyph = canvas.crop(canvas.point(lambda value: 255 if value >= 128 else 0).getbbox())
    height = rendering.height
    width = min(FRAME, max(1, round(glyph.width / glyph.height * height * rendering.width_stretch)))
    ink = np.asarray(glyph.resize((width, height), Image.Resampling.BOX), dtype=np.float64) >= 127.5
    left = min(max((FRAME - width) // 2 + rendering.offset_x, 0), FRAME - width)
    top = min(max((FRAME - height) // 2 + rendering.offset_y, 0), FRAME - height)
    bitmap = np.zeros((FRAME, FRAME), dtype=np.int64)
    bitmap[top : top + height, left : left + width] = ink
    side = FRAME // BLOCK
    return bitmap.reshape(side, BLOCK, side, BLOCK).sum(axis=(1, 3))


def draw_renderings(seed: int = 0, variants: int = VARIANTS) -> list[Rendering]:
    """`variants` random renderings of every digit in every font, in (font, digit, variant) order."""
    if variants < 1:
        raise ValueError(f"variants must be at least 1, got {variants}")
    rng = np.random.default_rng(seed)
    return [
        Rendering(
            font=font,
            digit=digit,
            height=int(rng.choice(HEIGHTS)),
            extra_stroke=float(rng.choice(EXTRA_STROKES)),
            rotation=float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)),
            width_stretch=float(rng.uniform(*WIDTH_STRETCH)),
            offset_x=int(rng.integers(-MAX_OFFSET, MAX_OFFSET + 1)),
            offset_y=int(rng.integers(-MAX_OFFSET, MAX_OFFSET + 1)),
        )
        for font in FONTS
        for digit in range(10)
        for _ in range(variants)
    ]


def write_typeset_digits(root: str | os.PathLike, seed: int = 0, variants: int = VARIANTS) -> Path:
    """Write a labelled folder of typeset digits under `root` and return it.

    `root/labels.csv` has columns image, label (0..9), caption (a held-out template, as in the handwritten
    demo's zero-shot folder) and font; `root/classes.json` the ten digit names and the held-out templates;
    the images are `root/images/NNNN.png`, 8x8 greyscale with the scans' 17 levels (0..16 scaled to 0..255).
    Every digit has len(FONTS) * variants images. The same seed gives the same bytes.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 1])  # captions: a stream of their own, apart from the renderings
    rows = []
    for index, rendering in enumerate(draw_renderings(seed, variants)):
        name = f"images/{index:04d}.png"
        counts = render_digit(rendering)
        Image.fromarray(np.rint(counts * (255 / 16)).astype(np.uint8)).save(root / name)
        caption = HELDOUT_TEMPLATES[rng.integers(len(HELDOUT_TEMPLATES))].format(DIGIT_NAMES[rendering.digit])
        rows.append((name, rendering.digit, caption, Path(rendering.font).stem))
    with open(root / "labels.csv", "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(("image", "label", "caption", "font"))
        writer.writerows(rows)
    classes = {"classes": DIGIT_NAMES, "templates": HELDOUT_TEMPLATES}
    (root / "classes.json").write_text(json.dumps(classes, indent=2) + "\n", encoding="utf-8")
    return root
