"""Forward + backward time and extra peak memory of the objective, CPU float32, each case in a fresh process.

Three suites (all by default):
  regularizers  cyclip's d x d cyclic regularizers against the direct N x N formula of the paper's released
                code, N 1k-32k at d 512 and 1024, plus float32 precision at a small image-text gap.
  crossover     dense against tiled CLIP and SigLIP for small batches, and the tile edge at N = 8,192: the
                measurements behind cyclip.losses.chunking's CROSSOVER_BATCH and TILE.
  objective     dense against tiled CLIP, CyCLIP and SigLIP at d = 512, N = 8,192 ... 262,144. A dense case
                whose estimated memory exceeds --memory-limit-gb is marked "does not fit" and never run; a
                tiled case above --max-measured-batch is extrapolated from the largest measured one (time
                as N², memory as N) and marked "extrapolated".

"Extra peak" is the process's peak resident memory minus its resident memory once the features exist.

    python benchmarks/objective.py [--suites regularizers crossover objective] [--max-measured-batch 65536]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from cyclip.losses import clip_loss, cyclic_regularizers, cyclip_loss, siglip_loss
from cyclip.losses.chunking import auto_tile_size

BYTES_PER_GB = 1e9
FLOAT32_BYTES = 4
SIGLIP_INIT = (math.log(10), -10.0)
TILE = auto_tile_size("cpu")
# float32 N x N buffers alive at the dense losses' peak (forward + backward), from measurements at N = 4,096
# and 8,192 by this script; they decide beforehand which dense cases could not fit.
DENSE_LOGIT_BUFFERS = {"clip": 6, "cyclip": 6, "siglip": 6}


def direct_regularizers(images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code's way: three N x N similarity matrices."""
    batch = images.shape[0]
    inmodal = (images @ images.T - texts @ texts.T).square().sum() / batch
    crossmodal = (images @ texts.T - texts @ images.T).square().sum() / batch
    return inmodal, crossmodal


def gram_regularizers(images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The textbook d x d Gram form, which cancels catastrophically when the modalities agree."""
    batch = images.shape[0]
    gram_ii, gram_tt, gram_it = images.T @ images, texts.T @ texts, images.T @ texts
    inmodal = (gram_ii.square().sum() + gram_tt.square().sum() - 2 * gram_it.square().sum()) / batch
    crossmodal = 2 * (gram_it.square().sum() - (gram_it * gram_it.T).sum()) / batch
    return inmodal, crossmodal


def regularizer_objective(method: str):
    regularizers = {"cyclip": cyclic_regularizers, "direct": direct_regularizers}[method]
    return lambda images, texts, scale, bias, chunk: sum(regularizers(images, texts))


def loss_objective(loss: str):
    """(images, texts, log scale, bias, chunk_size) -> scalar for each loss of the objective suite."""
    return {
        "clip": lambda i, t, s, b, chunk: clip_loss(i, t, s, chunk_size=chunk),
        "cyclip": lambda i, t, s, b, chunk: cyclip_loss(i, t, s, 0.25, 0.25, chunk_size=chunk).total,
        "siglip": lambda i, t, s, b, chunk: siglip_loss(i, t, s, b, chunk_size=chunk),
    }[loss]


def features(batch: int, dim: int, gap: float | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    noise = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    texts = noise if gap is None else F.normalize(images + gap * noise, dim=1)
    return images, texts


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss_bytes() -> int:
    """Resident memory now (Linux); elsewhere the peak so far, which only makes "extra peak" smaller."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def run_case(kind: str, name: str, batch: int, dim: int, chunk: int, repeats: int) -> dict:
    """Time forward + backward in this process: best of `repeats` after one warm-up, or one cold run if 0."""
    objective = regularizer_objective(name) if kind == "regularizers" else loss_objective(name)
    images, texts = features(batch, dim)
    inputs = [images.requires_grad_(), texts.requires_grad_()] + [
        torch.tensor(x, requires_grad=True) for x in (SIGLIP_INIT if name == "siglip" else (math.log(1 / 0.07), 0.0))
    ]
    baseline = current_rss_bytes()
    times = []
    for _ in range(max(repeats, 0) + 1):
        for tensor in inputs:
            tensor.grad = None
        start = time.perf_counter()
        objective(*inputs, chunk or None).backward()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times[1:] or times), "extra_peak_gb": (peak_rss_bytes() - baseline) / BYTES_PER_GB}


def run_in_fresh_process(kind: str, name: str, batch: int, dim: int, chunk: int, repeats: int) -> dict:
    case = [kind, name, str(batch), str(dim), str(chunk), str(repeats)]
    completed = subprocess.run([sys.executable, __file__, "--case", *case], capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def dense_memory_estimate_gb(loss: str, batch: int) -> float:
    return DENSE_LOGIT_BUFFERS[loss] * batch * batch * FLOAT32_BYTES / BYTES_PER_GB


def direct_regularizer_memory_estimate_gb(batch: int) -> float:
    """Autograd keeps the three N x N similarity matrices and two N x N differences alive."""
    return 5 * batch * batch * FLOAT32_BYTES / BYTES_PER_GB


def precision_table(batch: int, dim: int, gap: float) -> list[str]:
    images, texts = features(batch, dim, gap=gap, seed=1)
    with torch.no_grad():
        reference = direct_regularizers(images.double(), texts.double())
        rows = []
        for name, function in (("cyclip (D/P form)", cyclic_regularizers), ("textbook Gram form", gram_regularizers)):
            errors = [
                abs(v.double().item() - r.item()) / abs(r.item())
                for v, r in zip(function(images, texts), reference, strict=True)
            ]
            rows.append(f"| {name} | {errors[0]:.1e} | {errors[1]:.1e} |")
    return [
        f"float32 relative error vs float64 direct formula, N={batch}, d={dim}, image-text gap {gap:g}:",
        "",
        "| form | in-modal | cross-modal |",
        "|---|---|---|",
        *rows,
    ]


def regularizers_suite(args: argparse.Namespace) -> None:
    print("## Cyclic regularizers: d x d form against the direct N x N formula")
    print()
    print("| N | d | cyclip s | direct s | speed-up | cyclip extra peak GB | direct extra peak GB |")
    print("|---|---|---|---|---|---|---|")
    for dim in args.regularizer_dims:
        for batch in args.regularizer_sizes:
            ours = run_in_fresh_process("regularizers", "cyclip", batch, dim, 0, args.repeats)
            estimate = direct_regularizer_memory_estimate_gb(batch)
            if estimate <= args.memory_limit_gb:
                direct = run_in_fresh_process("regularizers", "direct", batch, dim, 0, 1 if batch > 8192 else 3)
                direct_s, direct_gb = f"{direct['seconds']:.3f}", f"{direct['extra_peak_gb']:.2f}"
                ratio = f"{direct['seconds'] / ours['seconds']:.1f}x"
            else:
                direct_s, direct_gb, ratio = "-", f"does not fit (est. {estimate:.0f})", "-"
            cells = [batch, dim, f"{ours['seconds']:.3f}", direct_s, ratio, f"{ours['extra_peak_gb']:.2f}", direct_gb]
            print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    print()
    print("\n".join(precision_table(8192, 512, 3e-4)))
    print()


def crossover_suite(args: argparse.Namespace) -> None:
    print(f"## Crossover: dense against tiled (tile {TILE}), d = {args.dim}")
    print()
    print("| N | loss | dense s | dense extra peak GB | tiled s | tiled extra peak GB | tiled speed / dense |")
    print("|---|---|---|---|---|---|---|")
    for loss in ("clip", "siglip"):
        for batch in args.crossover_sizes:
            dense = run_in_fresh_process("objective", loss, batch, args.dim, 0, args.repeats)
            tiled = run_in_fresh_process("objective", loss, batch, args.dim, TILE, args.repeats)
            cells = [f"{case[key]:.3f}" for case in (dense, tiled) for key in ("seconds", "extra_peak_gb")]
            ratio = f"{dense['seconds'] / tiled['seconds']:.2f}"
            print(f"| {batch} | {loss} | " + " | ".join([*cells, ratio]) + " |", flush=True)
    print()
    batch = max(args.crossover_sizes)
    print(f"Tile edge at N = {batch}, CLIP:")
    print()
    print("| tile | seconds | extra peak GB |")
    print("|---|---|---|")
    for tile in args.tiles:
        tiled = run_in_fresh_process("objective", "clip", batch, args.dim, tile, args.repeats)
        print(f"| {tile} | {tiled['seconds']:.3f} | {tiled['extra_peak_gb']:.3f} |", flush=True)
    print()


def objective_suite(args: argparse.Namespace) -> None:
    limit = args.memory_limit_gb
    print(f"## Whole objective at d = {args.dim}: dense against tiled (tile {TILE}), CPU float32")
    print()
    print("| N | loss | dense s | dense extra peak GB | tiled s | tiled extra peak GB | tiled speed / dense |")
    print("|---|---|---|---|---|---|---|")
    measured: dict[str, list[tuple[int, dict]]] = {}
    for batch in args.sizes:
        for loss in args.losses:
            estimate = dense_memory_estimate_gb(loss, batch)
            if estimate > limit:
                dense, dense_cells = None, ["-", f"does not fit (est. {estimate:.0f} > {limit:g})"]
            else:
                dense = run_in_fresh_process(
                    "objective", loss, batch, args.dim, 0, args.repeats if batch <= 8192 else 0
                )
                dense_cells = [f"{dense['seconds']:.2f}", f"{dense['extra_peak_gb']:.2f}"]
            if batch <= args.max_measured_batch and (loss == "cyclip" or batch < args.max_measured_batch):
                repeats = args.repeats if batch <= 8192 else 0
                tiled = run_in_fresh_process("objective", loss, batch, args.dim, TILE, repeats)
                measured.setdefault(loss, []).append((batch, tiled))
                tiled_cells = [f"{tiled['seconds']:.2f}", f"{tiled['extra_peak_gb']:.2f}"]
            else:
                tiled = extrapolate(measured[loss], batch)
                tiled_cells = [f"{tiled['seconds']:.0f} (extrapolated)", f"{tiled['extra_peak_gb']:.2f} (extrapolated)"]
            ratio = f"{dense['seconds'] / tiled['seconds']:.2f}" if dense else "-"
            print(f"| {batch} | {loss} | " + " | ".join([*dense_cells, *tiled_cells, ratio]) + " |", flush=True)
    print()
    for loss, cases in measured.items():
        largest = largest_batch_within(cases, limit)
        dense_largest = math.isqrt(int(limit * BYTES_PER_GB / (DENSE_LOGIT_BUFFERS[loss] * FLOAT32_BYTES)))
        print(f"- {loss}: largest N within {limit:g} GB extra peak: tiled ~{largest:,}, dense ~{dense_largest:,}")
    print()


def extrapolate(cases: list[tuple[int, dict]], batch: int) -> dict:
    """From the largest measured case: time grows as N² (the logits), memory as N (features and gradients)."""
    measured_batch, case = cases[-1]
    growth = batch / measured_batch
    return {"seconds": case["seconds"] * growth**2, "extra_peak_gb": case["extra_peak_gb"] * growth}


def largest_batch_within(cases: list[tuple[int, dict]], limit_gb: float) -> int:
    """Memory is linear in N: fit it through the two largest measured cases (or the origin) and solve."""
    (small_batch, small), (large_batch, large) = ([(0, {"extra_peak_gb": 0.0})] + cases)[-2:]
    per_sample = (large["extra_peak_gb"] - small["extra_peak_gb"]) / (large_batch - small_batch)
    return int(large_batch + (limit_gb - large["extra_peak_gb"]) / per_sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--suites",
        nargs="+",
        choices=["regularizers", "crossover", "objective"],
        default=["regularizers", "crossover", "objective"],
    )
    parser.add_argument("--dim", type=int, default=512, help="embedding size d of the crossover and objective suites")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768, 65536, 131072, 262144])
    parser.add_argument(
        "--losses", nargs="+", choices=["clip", "cyclip", "siglip"], default=["clip", "cyclip", "siglip"]
    )
    parser.add_argument(
        "--max-measured-batch",
        type=int,
        default=65536,
        help="tiled cases above are extrapolated; at this size only CyCLIP is measured",
    )
    parser.add_argument("--crossover-sizes", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096, 8192])
    parser.add_argument("--tiles", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    parser.add_argument("--regularizer-sizes", type=int, nargs="+", default=[1024, 4096, 8192, 16384, 32768])
    parser.add_argument("--regularizer-dims", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per small case after a warm-up (best)")
    parser.add_argument(
        "--memory-limit-gb", type=float, default=8.0, help="dense cases estimated above this are not run"
    )
    parser.add_argument("--case", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:
        kind, name, batch, dim, chunk, repeats = args.case
        print(json.dumps(run_case(kind, name, int(batch), int(dim), int(chunk), int(repeats))))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward + backward")
    print()
    suites = {"regularizers": regularizers_suite, "crossover": crossover_suite, "objective": objective_suite}
    for suite in args.suites:
        suites[suite](args)


if __name__ == "__main__":
    main()
