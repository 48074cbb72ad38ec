"""Evaluation throughput: images/s for embedding, and time to rank a COCO-sized retrieval set.

    python benchmarks/evaluation.py [--model cyclip-rn-tiny] [--device cpu] [--images 2048]

Embedding runs the model's val preprocessing and `encode_image` over an in-memory dataset of random
RGB images (224x224 JPEG-sized PIL images resized by the model's own transform), so the number is what
`cyclip eval` gets before disk reads. Ranking times `retrieval_recall` on 5,000 images x 25,000 captions
(5 per image, as COCO's Karpathy test split) of random unit vectors, d = 512.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from cyclip.evaluation.embeddings import embed_images
from cyclip.evaluation.retrieval import retrieval_recall
from cyclip.evaluation.settings import EvalConfig
from cyclip.models import create_model
from cyclip.runtime import resolve_device


class RandomImages(Dataset):
    def __init__(self, count: int, transform) -> None:
        generator = np.random.default_rng(0)
        self.images = [Image.fromarray(generator.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(64)]
        self.count, self.transform = count, transform

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        return self.transform(self.images[index % len(self.images)]), 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="cyclip-rn-tiny", help="model to embed with (default: cyclip-rn-tiny)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    parser.add_argument("--images", type=int, default=2048, help="images to embed (default: 2048)")
    defaults = EvalConfig()
    parser.add_argument(
        "--batch-size",
        type=int,
        default=defaults.batch_size,
        help=f"images per forward pass (default: {defaults.batch_size})",
    )
    parser.add_argument(
        "--workers", type=int, default=defaults.workers, help=f"data-loading processes (default: {defaults.workers})"
    )
    args = parser.parse_args()
    device = resolve_device(args.device)

    model, _, preprocess, _ = create_model(args.model, device=device)
    dataset = RandomImages(args.images, preprocess)
    embed_images(
        model, RandomImages(args.batch_size, preprocess), device, args.batch_size, 0, progress=False
    )  # warm-up
    started = time.perf_counter()
    embed_images(model, dataset, device, args.batch_size, args.workers, progress=False)
    seconds = time.perf_counter() - started
    print(f"embedding: {args.model} on {device}: {args.images / seconds:.0f} images/s ({args.images} images)")

    generator = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(5000, 512, generator=generator), dim=1).to(device)
    texts = torch.nn.functional.normalize(torch.randn(25000, 512, generator=generator), dim=1).to(device)
    image_of_text = torch.arange(5000).repeat_interleave(5).to(device)
    retrieval_recall(images[:100], texts[:500], image_of_text[:500] % 100)  # warm-up
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        retrieval_recall(images, texts, image_of_text)
        if device.type == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    print(f"ranking: 5,000 images x 25,000 captions, d = 512, on {device}: {1000 * min(timings):.0f} ms (best of 3)")


if __name__ == "__main__":
    main()
