"""Search speed: single-query latency and batched queries/s over an index of random unit embeddings.

    python benchmarks/search.py [--images 100000] [--dim 512] [--device cpu] [--batch 1024]

Times `cyclip.search.top_k` (the ranking `cyclip search` runs: matrix product and `topk` over blocks of
queries) for top-10 on an index of `--images` random L2-normalised float32 embeddings: the median of 50 single
queries, and queries/s for one batch of `--batch` queries. A correctness check against a float64 brute force
runs first. The index is built in memory; embedding the queries is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from cyclip.runtime import resolve_device
from cyclip.search import top_k

K = 10


def _unit_rows(rows: int, dim: int, seed: int, device: torch.device) -> torch.Tensor:
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
    return (x / x.norm(dim=1, keepdim=True)).to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000, help="indexed images (default: 100000)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (default: 512)")
    parser.add_argument("--batch", type=int, default=1024, help="queries in the batched run (default: 1024)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    index = _unit_rows(args.images, args.dim, 0, device)
    queries = _unit_rows(args.batch, args.dim, 1, device)

    scores, indices = top_k(queries[:8], index, K)
    exact = (queries[:8].double() @ index.double().T).topk(K, dim=1)
    assert torch.equal(indices, exact.indices), "ranking differs from the float64 brute force"

    latencies = []
    for row in range(50):
        _synchronize(device)
        started = time.perf_counter()
        top_k(queries[row : row + 1], index, K)
        _synchronize(device)
        latencies.append(time.perf_counter() - started)
    top_k(queries, index, K)  # warm-up of the batched shapes
    _synchronize(device)
    started = time.perf_counter()
    top_k(queries, index, K)
    _synchronize(device)
    batched = time.perf_counter() - started

    print(f"search on {device}, {torch.get_num_threads()} threads: {args.images} x {args.dim} index, top-{K}")
    print(f"  single query: {statistics.median(latencies) * 1e3:.2f} ms median latency (50 queries)")
    print(f"  batch of {args.batch}: {args.batch / batched:.0f} queries/s ({batched:.2f} s)")


if __name__ == "__main__":
    main()
