"""Training throughput on one device, side by side: `cyclip train` (CLIP and CyCLIP) against OpenCLIP's
`open_clip_train.main`, same model, batch, precision and workers, on WebDataset shards it writes itself.

Every run is a whole process timed from outside (`trainer_runs`): samples/s over the steps after
`--warmup-steps`, from the arrival times of the trainers' step lines. The runs go one after the other
on the same device: eager first (identical settings), then each trainer's compiled mode (cyclip
`--compile`, OpenCLIP `--torchcompile`). MFU is the model FLOPs of one training step (forward and
backward, counted by `torch.utils.flop_counter.FlopCounterMode`) times steps/s over `--peak-tflops`.

    python benchmarks/gpu_throughput.py --device cuda --models ViT-B-32,RN50 --batch-size 256 \\
        --precision bf16 --peak-tflops 989
    python benchmarks/gpu_throughput.py --device cpu --models cyclip-rn-tiny --batch-size 16 \\
        --precision fp32 --workers 2 --warmup-steps 2 --steps 4 --log-every 1 --no-compile
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode
from trainer_runs import RunTiming, cyclip_command, openclip_command, run_timed

from cyclip.losses import cyclip_loss
from cyclip.models import create_model, model_config

WORDS = "a photo of the small large red blue green dog cat car tree house bird on in with near".split()
DISTINCT_IMAGES = 512  # encoded once and repeated under new keys: decoding costs the same
CYCLIP_LAMBDAS = {"CLIP": (0.0, 0.0), "CyCLIP": (0.25, 0.25)}
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def write_shards(folder: Path, samples: int, shards: int, width: int, height: int, seed: int = 0) -> str:
    """`shards` tar files of `samples` random JPEGs (smooth colour fields plus noise, like photos to a
    decoder) with short captions, and the sizes.json both trainers read; returns the brace pattern."""
    rng = np.random.default_rng(seed)
    words = random.Random(seed)
    encoded = []
    for _ in range(min(samples, DISTINCT_IMAGES)):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((width, height))
        noisy = np.asarray(coarse, dtype=np.int16) + rng.integers(-12, 13, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for shard in range(shards):
        name = f"{shard:05d}.tar"
        indices = range(shard, samples, shards)
        sizes[name] = len(indices)
        with tarfile.open(folder / name, "w") as tar:
            for index in indices:
                caption = " ".join(words.choice(WORDS) for _ in range(8)).encode()
                for extension, payload in (("jpg", encoded[index % len(encoded)]), ("txt", caption)):
                    info = tarfile.TarInfo(f"{index:08d}.{extension}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    (folder / "sizes.json").write_text(json.dumps(sizes))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def flops_per_step(model_name: str, batch: int, device: torch.device, precision: str, lambdas) -> float:
    """Forward + backward FLOPs of one training step of `batch` pairs, counted on the device."""
    model, *_ = create_model(model_name, device=device)
    config = model_config(model_name)
    size = config["vision_cfg"]["image_size"]
    size = size if isinstance(size, int) else size[0]
    images = torch.randn(batch, 3, size, size, device=device)
    tokens = torch.randint(1, 49407, (batch, config["text_cfg"].get("context_length", 77)), device=device)
    dtype = AUTOCAST.get(precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with FlopCounterMode(display=False) as counter:
        with autocast:
            image_features, text_features, _ = model(images, tokens)
            output = cyclip_loss(image_features, text_features, model.logit_scale, *lambdas)
        output.total.backward()
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return float(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--models", default="ViT-B-32,RN50", help="comma-separated open_clip model names")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per step")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"], help="same for both")
    parser.add_argument("--workers", type=int, default=8, help="data-loading processes for both trainers")
    parser.add_argument("--warmup-steps", type=int, default=10, help="steps not measured (compilation, start-up)")
    parser.add_argument("--steps", type=int, default=20, help="measured steps after the warm-up")
    parser.add_argument("--log-every", type=int, default=5, help="steps between the trainers' step lines")
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs")
    parser.add_argument("--peak-tflops", type=float, help="device peak TFLOP/s at this precision, for MFU")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled runs")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU here; try --device cpu with a tiny model")
    # OpenCLIP rounds its batches per epoch up to a multiple of the workers; so does this, so both run the same.
    workers = max(1, args.workers)
    steps = -(-(args.warmup_steps + args.steps) // workers) * workers
    samples = steps * args.batch_size
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        shards = write_shards(scratch / "shards", samples, 2 * workers, args.image_size, args.image_size)
        common = dict(
            batch_size=args.batch_size, workers=args.workers, precision=args.precision, epochs=1,
        )  # fmt: skip
        for model in args.models.split(","):
            flops = {
                name: flops_per_step(model, args.batch_size, device, args.precision, lambdas)
                for name, lambdas in CYCLIP_LAMBDAS.items()
            }
            for compiled in (False, True) if not args.no_compile else (False,):
                runs: list[tuple[str, RunTiming, float]] = []
                for name, lambdas in CYCLIP_LAMBDAS.items():
                    command = cyclip_command(
                        shards, scratch / f"{model}-{name}-{compiled}", model=model, **common, device=args.device,
                        train_num_samples=samples, log_every=args.log_every, lambda_inmodal=lambdas[0],
                        lambda_crossmodal=lambdas[1], compile=compiled,
                    )  # fmt: skip
                    label = f"cyclip {name}" + (" --compile" if compiled else "")
                    runs.append((label, run_timed(label, command, args.batch_size, steps), flops[name]))
                command = openclip_command(
                    shards, scratch / f"{model}-openclip-{compiled}", model=model, **common, device=args.device,
                    dataset_type="webdataset", train_num_samples=samples, log_every_n_steps=args.log_every,
                    torchcompile=compiled,
                )  # fmt: skip
                label = "OpenCLIP" + (" --torchcompile" if compiled else "")
                runs.append((label, run_timed(label, command, args.batch_size, steps), flops["CLIP"]))
                reference = runs[-1][1].samples_per_second(args.warmup_steps)
                for label, timing, step_flops in runs:
                    rate = timing.samples_per_second(args.warmup_steps)
                    mfu = step_flops * rate / args.batch_size / (args.peak_tflops * 1e12) if args.peak_tflops else None
                    rows.append((model, label, rate, rate / reference, timing.data_share(args.warmup_steps),
                                 timing.peak_memory_gib, mfu, timing.wall_seconds))  # fmt: skip
                    print(f"  {model} {label}: {rate:.1f} samples/s", file=sys.stderr, flush=True)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(
        f"{name}; batch {args.batch_size}, {args.precision}, {args.workers} workers; {args.steps} measured steps "
        f"after {args.warmup_steps} warm-up steps (of {steps}); {args.image_size}-px JPEG shards"
    )
    print()
    print("| model | trainer | samples/s | vs OpenCLIP | data share | peak memory | MFU | whole run |")
    print("|---|---|---|---|---|---|---|---|")
    for model, label, rate, ratio, share, memory, mfu, wall in rows:
        print(
            f"| {model} | {label} | {rate:.1f} | {ratio:.2f}x | {100 * share:.1f}% "
            f"| {'-' if memory is None else f'{memory:.2f} GiB'} | {'-' if mfu is None else f'{100 * mfu:.1f}%'} "
            f"| {wall:.0f} s |"
        )


if __name__ == "__main__":
    main()
