"""WebDataset shards of digit pairs, as img2dataset writes them, with one corrupt image to skip."""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image


def write_digit_shards(rows: list[list[str]], images: Path, folder: Path, per_shard: int, corrupt_after: int) -> None:
    """len(rows) // per_shard shards of (image path relative to `images`, caption) rows as jpg + txt, each with
    its *_stats.json; shard 1 also holds a corrupt jpg after its first `corrupt_after` samples."""
    import webdataset as wds

    for shard in range(len(rows) // per_shard):
        written = 0
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as writer:
            for index, (image, caption) in enumerate(rows[shard * per_shard : (shard + 1) * per_shard]):
                if shard == 1 and index == corrupt_after:
                    writer.write({"__key__": "00001corrupt", "jpg": b"\xff\xd8 not a jpeg", "txt": "a broken image"})
                    written += 1
                jpeg = io.BytesIO()
                Image.open(images / image).convert("RGB").save(jpeg, format="JPEG", quality=95)
                writer.write({"__key__": f"{shard:05d}{index:04d}", "jpg": jpeg.getvalue(), "txt": caption})
                written += 1
            if shard == 1 and corrupt_after >= per_shard:
                writer.write({"__key__": "00001corrupt", "jpg": b"\xff\xd8 not a jpeg", "txt": "a broken image"})
                written += 1
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"successes": written}))
