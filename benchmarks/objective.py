"""Forward + backward time and peak memory of the cyclic regularizers: cyclip's d x d form against the
direct N x N formula of the paper's released code, plus float32 precision at a small image-text gap.

Each (method, N, d) case runs in a fresh process so that its peak resident memory is its own.

    python benchmarks/objective.py [--sizes 1024 4096 8192 16384 32768] [--dims 512 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from cyclip.losses import cyclic_regularizers

BYTES_PER_GB = 1e9


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


METHODS = {"cyclip": cyclic_regularizers, "direct": direct_regularizers}


def features(batch: int, dim: int, gap: float | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    noise = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
    texts = noise if gap is None else F.normalize(images + gap * noise, dim=1)
    return images, texts


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(method: str, batch: int, dim: int, repeats: int) -> dict:
    """Time forward + backward (best of `repeats` after one warm-up) in this process."""
    images, texts = features(batch, dim)
    images.requires_grad_()
    texts.requires_grad_()
    baseline = peak_rss_bytes()
    times = []
    for _ in range(repeats + 1):
        images.grad = texts.grad = None
        start = time.perf_counter()
        inmodal, crossmodal = METHODS[method](images, texts)
        (inmodal + crossmodal).backward()
        times.append(time.perf_counter() - start)
    return {
        "seconds": min(times[1:]),
        "peak_gb": peak_rss_bytes() / BYTES_PER_GB,
        "baseline_gb": baseline / BYTES_PER_GB,
    }


def run_in_fresh_process(method: str, batch: int, dim: int, repeats: int) -> dict:
    command = [sys.executable, __file__, "--case", method, str(batch), str(dim), "--repeats", str(repeats)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def direct_memory_estimate_gb(batch: int) -> float:
    """Autograd keeps the three N x N similarity matrices and two N x N differences alive."""
    return 5 * batch * batch * 4 / BYTES_PER_GB


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 8192, 16384, 32768], help="batch sizes N")
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 1024], help="embedding sizes d")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per case (best is reported)")
    parser.add_argument(
        "--direct-memory-limit-gb", type=float, default=8.0, help="skip the direct formula where it would need more"
    )
    parser.add_argument("--case", nargs=3, metavar=("METHOD", "N", "D"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    if args.case:
        method, batch, dim = args.case[0], int(args.case[1]), int(args.case[2])
        print(json.dumps(run_case(method, batch, dim, args.repeats)))
        return

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, forward + backward")
    print()
    print("| N | d | cyclip s | direct s | speed-up | cyclip peak GB | direct peak GB |")
    print("|---|---|---|---|---|---|---|")
    for dim in args.dims:
        for batch in args.sizes:
            ours = run_in_fresh_process("cyclip", batch, dim, args.repeats)
            estimate = direct_memory_estimate_gb(batch)
            if estimate <= args.direct_memory_limit_gb:
                direct = run_in_fresh_process("direct", batch, dim, 1 if batch > 8192 else args.repeats)
                direct_s, direct_gb = f"{direct['seconds']:.3f}", f"{direct['peak_gb']:.2f}"
                ratio = f"{direct['seconds'] / ours['seconds']:.1f}x"
            else:
                direct_s, direct_gb, ratio = "-", f"> {estimate:.0f} (est.)", "-"
            cells = [batch, dim, f"{ours['seconds']:.3f}", direct_s, ratio, f"{ours['peak_gb']:.2f}", direct_gb]
            print("| " + " | ".join(map(str, cells)) + " |", flush=True)
    print()
    print("\n".join(precision_table(8192, 512, 3e-4)))


if __name__ == "__main__":
    main()
