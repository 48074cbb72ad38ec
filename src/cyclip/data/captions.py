"""Image-caption pairs from a CSV/TSV file (the CC3M format the CyCLIP paper trains on).

Everything a user can get wrong in the file is checked when the dataset is built, so a run stops in
seconds with one line saying what to fix rather than hours later inside a worker. Images that turn out
broken while training are skipped (or fail fast with on_bad_sample="error") without shrinking the batch.
"""

from __future__ import annotations

import logging
import os
import stat
from array import array
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from cyclip.config import BAD_SAMPLE_POLICIES
from cyclip.data.images import load_rgb_image
from cyclip.errors import BadSampleError, BadSampleWarnings, DataError
from cyclip.files import CsvReader

log = logging.getLogger("cyclip.data")

SKIP_HINT = "(or run with --on-bad-sample skip)"
MAX_BAD_ROWS_KEPT = 100
_PROBLEM_SUMMARIES = {
    "missing": "images not found",
    "empty": "image files are empty (0 bytes)",
    "caption": "captions are empty or hold NUL/U+FFFD characters",
}
_SEPARATORS = {"\t": ("tab", "'\\t'"), ",": ("comma", "','"), ";": ("semicolon", "';'"), "|": ("pipe", "'|'")}


class ImageCaptionDataset(Dataset):
    """Rows of (image path, caption); `dataset[i]` is `(image_tensor, token_ids, skipped)`, or with `augment`
    (in-modal training) `(image, tokens, augmented_image, augmented_tokens, skipped)`: `augment(image, caption)`
    (e.g. `PairAugmenter`) makes the second view, which goes through the same `transform` and `tokenizer`.

    `skipped` is 1 when row i was bad and stood in for, else 0, so that summing it counts the bad rows
    the sampler met (each once per epoch). With on_bad_sample="skip" a bad row is replaced by the next
    good row (wrapping around), so batches keep their size, which the distributed all-gather and exact
    resume need; once the sampler shuffles, the stand-in is a random
    other sample. Image paths are relative to the CSV file's folder, or absolute.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        transform: Callable,
        tokenizer: Callable,
        *,
        image_key: str,
        caption_key: str,
        separator: str,
        on_bad_sample: str,
        augment: Callable[[Image.Image, str], tuple[Image.Image, str]] | None = None,
    ) -> None:
        if on_bad_sample not in BAD_SAMPLE_POLICIES:
            raise ValueError(f"on_bad_sample must be 'skip' or 'error', got {on_bad_sample!r}")
        self.path = Path(path)
        self.transform = transform
        if augment is not None and not callable(augment):
            raise ValueError(f"augment must be a function (image, caption) -> (image, caption), got {augment!r}")
        self.augment = augment
        self.tokenizer = tokenizer
        self.on_bad_sample = on_bad_sample
        self._root = os.path.abspath(self.path.parent)  # absolute: workers may run in another directory
        images, captions, lines = read_pairs(self.path, image_key, caption_key, separator)
        self._images = StringColumn(images)
        self._captions = StringColumn(captions)
        self._lines = np.asarray(lines, dtype=np.int64)
        self._bad = np.zeros(len(lines), dtype=bool)
        self.missing_files = 0  # also counts empty paths and paths that are not files
        self.empty_files = 0
        self.bad_captions = 0
        self.bad_rows: list[tuple[int, str]] = []  # (line, reason) of the first MAX_BAD_ROWS_KEPT bad rows
        self._check_rows(images, captions, lines)
        self._found_bad: set[int] = set()  # rows whose image failed to decode, per process
        self._warnings = BadSampleWarnings(log)

    def __len__(self) -> int:
        return len(self._lines)

    def image_path(self, index: int) -> str:
        return os.path.join(self._root, self._images[index])

    def caption(self, index: int) -> str:
        return self._captions[index]

    def line(self, index: int) -> int:
        """1-based line of row `index` in the file (the header is line 1)."""
        return int(self._lines[index])

    def __getitem__(self, index: int) -> tuple:
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"row {index} out of range for {count} rows")
        for skipped in range(count):
            row = (index + skipped) % count
            if self._bad[row] or row in self._found_bad:
                continue
            try:
                image = load_rgb_image(self.image_path(row))
            except BadSampleError as error:
                if self.on_bad_sample == "error":
                    raise BadSampleError(f"{self.path}: line {self.line(row)}: {error} {SKIP_HINT}") from None
                self._found_bad.add(row)
                self._warn_bad_sample(row, error)
                continue
            caption = self.caption(row)
            if self.augment is None:
                return self.transform(image), self.tokenizer([caption])[0], int(skipped > 0)
            augmented_image, augmented_caption = self.augment(image, caption)
            tokens = self.tokenizer([caption, augmented_caption])
            return self.transform(image), tokens[0], self.transform(augmented_image), tokens[1], int(skipped > 0)
        raise DataError(f"{self.path}: all {count} rows are unusable (images missing or broken, or bad captions)")

    def _check_rows(self, images: list[str], captions: list[str], lines: list[int]) -> None:
        """Find missing or empty image files and unusable captions now: counted once, reported up front."""
        counts: Counter[str] = Counter()
        first: dict[str, str] = {}  # kind -> "line N detail" of the first row with that problem
        for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
            resolved = os.path.join(self._root, image)
            problems = [
                problem for problem in (image_file_problem(image, resolved), caption_problem(caption)) if problem
            ]
            if not problems:
                continue
            reason = "; ".join(text for _, text in problems)
            if self.on_bad_sample == "error":
                where = f" ({resolved})" if image.strip() and not os.path.isabs(image) else ""
                raise DataError(f"{self.path}: line {lines[index]}: {reason}{where} {SKIP_HINT}")
            for kind, text in problems:
                counts[kind] += 1
                detail = text if kind == "caption" else image if os.path.isabs(image) else f"{image} (as {resolved})"
                first.setdefault(kind, f"line {lines[index]} {detail}")
            self._bad[index] = True
            if len(self.bad_rows) < MAX_BAD_ROWS_KEPT:
                self.bad_rows.append((lines[index], reason))
        self.missing_files, self.empty_files, self.bad_captions = counts["missing"], counts["empty"], counts["caption"]
        if self._bad.all():
            line, reason = self.bad_rows[0]
            raise DataError(
                f"{self.path}: none of the {len(lines)} rows is usable (first: line {line}: {reason}); "
                "check the image paths (relative to the file's folder) and the caption column"
            )
        for kind, what in _PROBLEM_SUMMARIES.items():
            if counts[kind]:
                log.warning(
                    "%s: %d of %d %s (first: %s); they will be skipped",
                    self.path,
                    counts[kind],
                    len(lines),
                    what,
                    first[kind],
                )

    def _warn_bad_sample(self, row: int, error: BadSampleError) -> None:
        self._warnings.warn(f"{self.path}: line {self.line(row)}: {error}; skipped")


def image_file_problem(image: str, resolved: str) -> tuple[str, str] | None:
    """("missing" | "empty", reason) for an image file that cannot be used, found with one stat call."""
    if not image.strip():
        return "missing", "empty image path"
    try:
        info = os.stat(resolved)
    except OSError:
        return "missing", f"image not found: {image}"
    if not stat.S_ISREG(info.st_mode):
        return "missing", f"not a file: {image}"
    if info.st_size == 0:
        return "empty", f"empty image file (0 bytes): {image}"
    return None


def caption_problem(caption: str) -> tuple[str, str] | None:
    """("caption", reason) for a caption that cannot be trained on; U+FFFD marks text damaged by a bad decode."""
    if not caption.strip():
        return "caption", "empty caption"
    if "\x00" in caption:
        return "caption", "caption contains a NUL character"
    if "\ufffd" in caption:
        return "caption", "caption contains U+FFFD (text damaged by an earlier encoding error)"
    return None


def read_pairs(path: Path, image_key: str, caption_key: str, separator: str) -> tuple[list[str], list[str], list[int]]:
    """(image paths, captions, 1-based line numbers) of the data rows; any problem is one DataError line."""
    if len(separator) != 1:
        raise DataError(
            f"{path}: the separator must be one character, got {separator!r}; for a TSV pass --csv-separator '\\t'"
        )
    if not path.is_file():
        raise DataError(
            f"{path}: {'is a folder, not a file' if path.is_dir() else 'file not found'}; "
            "pass the CSV/TSV of image paths and captions"
        )
    images: list[str] = []
    captions: list[str] = []
    lines: list[int] = []
    with CsvReader(path, separator) as table:
        if not table.header:
            raise DataError(
                f"{path}: empty file; expected a header line ({image_key}{separator}{caption_key}) "
                "and one row per image-caption pair"
            )
        image_column, caption_column = _find_columns(path, table.header, image_key, caption_key, separator)
        for start, row in table.rows():
            images.append(row[image_column])
            captions.append(row[caption_column])
            lines.append(start)
    if not lines:
        raise DataError(f"{path}: no data rows after the header; add one row per image-caption pair")
    return images, captions, lines


def _find_columns(path: Path, header: list[str], image_key: str, caption_key: str, separator: str) -> tuple[int, int]:
    if len(header) == 1:  # one column that holds another separator: the file uses a different one
        others = [s for s in _SEPARATORS if s != separator and s in header[0]]
        if others:
            name, flag = _SEPARATORS[max(others, key=header[0].count)]
            raise DataError(
                f"{path}: the header {header[0]!r} is a single column when split on {separator!r}; the "
                f"file looks {name}-separated: pass --csv-separator {flag}"
            )
    missing = [key for key in (image_key, caption_key) if key not in header]
    if missing:
        flags = " / ".join(
            flag for key, flag in ((image_key, "--csv-img-key"), (caption_key, "--csv-caption-key")) if key in missing
        )
        names = ", ".join(repr(key) for key in missing)
        raise DataError(
            f"{path}: no column{'s' if len(missing) > 1 else ''} {names} (columns: {', '.join(header)}); pass {flags}"
        )
    return header.index(image_key), header.index(caption_key)


class StringColumn:
    """Many strings held as one UTF-8 blob plus end offsets.

    A list of millions of `str` objects is copied page by page into every forked DataLoader worker
    (reading an object writes its reference count) and is slow to pickle for spawned ones; two flat
    buffers are neither.
    """

    def __init__(self, strings: Iterable[str]) -> None:
        blob = bytearray()
        ends = array("q")
        for text in strings:
            blob += text.encode("utf-8")
            ends.append(len(blob))
        self._blob = bytes(blob)
        self._ends = np.array(ends, dtype=np.int64)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index: int) -> str:
        index = range(len(self._ends))[index]  # IndexError and negative indices as for a list
        start = int(self._ends[index - 1]) if index > 0 else 0
        return self._blob[start : int(self._ends[index])].decode("utf-8")
