"""Images/s one data-loading worker delivers: JPEG decode + the training transform at 224 px, on CPU.

Measured two ways: the per-sample work alone in this process (one thread, as in a DataLoader worker),
and the real WebDataset loader (`ShardBatches`: tar reading, shuffle buffer, seeding, decode, transform,
tokenizer, collation) with 1..`--max-workers` workers. A GPU step that consumes R samples/s needs
about R / (images/s per worker) workers; the table prints that for a few rates.

    python benchmarks/data_loading.py [--source-size 512x384] [--samples 1024] [--max-workers 2]
"""

from __future__ import annotations

import argparse
import io
import math
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from gpu_throughput import write_shards
from PIL import Image

from cyclip.data.images import to_rgb
from cyclip.data.shards import ShardBatches
from cyclip.models import create_model

TRAINING_RATES = (1000, 3000, 10000)  # samples/s a GPU step may consume (e.g. ViT-B-32 bf16 on one GPU)


def per_sample_rate(shard_folder: Path, preprocess, tokenizer, samples: int) -> float:
    """Decode + transform + tokenize of every sample in the shards, in this process with one thread."""
    payloads = []
    for path in sorted(shard_folder.glob("*.tar")):
        with tarfile.open(path) as tar:
            members = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
        images = [name for name in members if name.endswith(".jpg")]
        payloads += [(members[name], members[name[:-3] + "txt"].decode()) for name in images]
    payloads = payloads[:samples]
    start = time.perf_counter()
    for data, caption in payloads:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            preprocess(to_rgb(image))
        tokenizer([caption])
    return len(payloads) / (time.perf_counter() - start)


def loader_rate(pattern: str, preprocess, tokenizer, samples: int, workers: int, batch_size: int) -> float:
    """Samples/s of one epoch of the training loader, after its first batch (worker start-up)."""
    batches = ShardBatches(
        pattern, preprocess, tokenizer, batch_size=batch_size, num_samples=samples, seed=0, epoch=0, rank=0,
        world_size=1, workers=workers, resampled=False, on_bad_sample="skip",
    )  # fmt: skip
    iterator = iter(batches)
    next(iterator)
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="open_clip model whose training transform is used")
    parser.add_argument("--source-size", default="512x384", help="WxH of the generated JPEGs (CC3M-like)")
    parser.add_argument("--samples", type=int, default=1024, help="samples per measurement")
    parser.add_argument("--batch-size", type=int, default=64, help="loader batch size")
    parser.add_argument("--max-workers", type=int, default=2, help="largest loader worker count to measure")
    args = parser.parse_args()
    width, height = (int(side) for side in args.source_size.split("x"))
    torch.set_num_threads(1)  # what a DataLoader worker runs with
    _, preprocess, _, tokenizer = create_model(args.model)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "shards"
        pattern = write_shards(folder, args.samples, 2 * args.max_workers, width, height)
        alone = per_sample_rate(folder, preprocess, tokenizer, args.samples)
        loaders = {
            workers: loader_rate(pattern, preprocess, tokenizer, args.samples, workers, args.batch_size)
            for workers in range(1, args.max_workers + 1)
        }
    print(f"{args.model} training transform ({preprocess.transforms[0]}), {width}x{height} JPEGs, CPU")
    print()
    print("| measurement | images/s | per worker |")
    print("|---|---|---|")
    print(f"| decode + transform + tokenize, one thread | {alone:.0f} | {alone:.0f} |")
    for workers, rate in loaders.items():
        print(f"| WebDataset loader, {workers} worker(s) | {rate:.0f} | {rate / workers:.0f} |")
    per_worker = loaders[1]
    print()
    print("| training rate (samples/s) | workers needed at this rate per worker |")
    print("|---|---|")
    for rate in TRAINING_RATES:
        print(f"| {rate} | {math.ceil(rate / per_worker)} |")


if __name__ == "__main__":
    main()
