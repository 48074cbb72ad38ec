"""The cost of long-run safety: writing step checkpoints, and continuing WebDataset shards mid-epoch.

1. Checkpoints. For the bundled CPU models and for RN50 / ViT-B-32 (random init, built locally, no download),
   with the state a step checkpoint holds (model, AdamW moments, schedule, random states): its size; the time
   `cyclip train` spends writing it (atomically: a temporary file, flushed to disk, renamed, linked as
   latest.pt; the loop waits for all of it); the part of that a background writer would still hold the loop
   for (copying the state to host memory); and the share of training time at `--save-every-steps 100` and at
   `--save-every-minutes 30`. Step time is measured on this CPU for the bundled models; for RN50 / ViT-B-32
   it is an assumed GPU step time (`--gpu-step-seconds`), printed as such.
2. WebDataset resume. A run resumed part-way through an epoch re-reads each worker's shards up to its position
   without decoding them. Measured: the time until the first new batch when continuing after `skip` batches
   this way, against decoding those batches again (what a replay with decoding would cost).

    python benchmarks/checkpointing.py [--folder DIR] [--repeats 3]

`--folder` is where checkpoints are written: use the disk your runs write to.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cyclip.checkpoint_folder import CheckpointFolder
from cyclip.config import TrainConfig
from cyclip.data.batch import PairBatch
from cyclip.models import create_model
from cyclip.objective import build_objective
from cyclip.runtime import rng_state
from cyclip.train import build_optimizer, cosine_with_warmup

CPU_MODELS = ("cyclip-rn-tiny", "cyclip-vit-tiny")
GPU_MODELS = ("RN50", "ViT-B-32")
CPU_BATCH = 64


def training_state(name: str) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    """A model with AdamW's moments filled by one step, and the payload a step checkpoint holds for it."""
    model, _, _, _ = create_model(name)
    config = TrainConfig(model=name)
    optimizer = build_optimizer(model, config)
    scheduler = cosine_with_warmup(optimizer, config.warmup, 10_000)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    payload = {
        "model": model.state_dict(),
        "model_name": name,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": 1,
        "epoch": 0,
        "rng": [rng_state()],
        "config": config.to_dict(),
    }
    return model, optimizer, payload


def cpu_step_seconds(name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, repeats: int) -> float:
    """Median time of forward + backward + AdamW step at batch CPU_BATCH, random images and tokens."""
    size = model.visual.image_size
    size = size[0] if isinstance(size, tuple) else size
    generator = torch.Generator().manual_seed(0)
    batch = PairBatch(
        torch.randn(CPU_BATCH, 3, size, size, generator=generator),
        torch.randint(1, 49407, (CPU_BATCH, model.context_length), generator=generator),
        torch.zeros(CPU_BATCH, dtype=torch.long),
    )
    objective = build_objective(TrainConfig(model=name, lambda_inmodal=0.25, lambda_crossmodal=0.25))
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        objective(model, batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def write_seconds(payload: dict, folder: Path, repeats: int) -> float:
    """Median time of a step checkpoint write as the trainer does it (atomic, fsynced, linked as latest.pt)."""
    checkpoints = CheckpointFolder(folder, steps_per_epoch=1000)
    times = []
    for step in range(repeats):
        start = time.perf_counter()
        checkpoints.write(payload, checkpoints.step_file(step))
        times.append(time.perf_counter() - start)
        checkpoints.prune(keep_last=1, keep_epochs=True, step=step)
    for path in folder.glob("*.pt"):
        path.unlink()
    return statistics.median(times)


def copy_seconds(payload: dict, repeats: int) -> float:
    """Median time to copy the payload's tensors to new host memory (a background writer's snapshot)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _copied(payload)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _copied(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(item) for item in value)
    return value


def checkpoint_table(folder: Path, repeats: int, gpu_step: float) -> None:
    print("| model | checkpoint MB | write s (loop waits) | copy to host s | step s | share at 100 steps "
          "| share at 30 min |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name in CPU_MODELS + GPU_MODELS:
        model, optimizer, payload = training_state(name)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        megabytes = len(buffer.getvalue()) / 1e6
        write = write_seconds(payload, folder, repeats)
        copy = copy_seconds(payload, repeats)
        if name in CPU_MODELS:
            step, step_note = cpu_step_seconds(name, model, optimizer, repeats), f"{{:.3f}} (CPU, batch {CPU_BATCH})"
        else:
            step, step_note = gpu_step, "{:.2f} (assumed GPU)"
        share_steps = write / (100 * step + write)
        share_minutes = write / (30 * 60 + write)
        print(
            f"| {name} | {megabytes:.0f} | {write:.2f} | {copy:.2f} | {step_note.format(step)} "
            f"| {100 * share_steps:.1f} % | {100 * share_minutes:.3f} % |"
        )


def write_shards(folder: Path, shards: int, per_shard: int) -> str:
    """Shards of 256x256 JPEGs (smooth gradients with noise, ~20 kB each) and captions, with stats files."""
    import webdataset as wds

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 256)
    for shard in range(shards):
        with wds.TarWriter(str(folder / f"{shard:05d}.tar")) as writer:
            for index in range(per_shard):
                base = ramp[None, :, None] * rng.uniform(0.3, 1.0, 3) + ramp[:, None, None] * rng.uniform(0, 0.5, 3)
                pixels = np.clip(base + rng.normal(0, 8, (256, 256, 3)), 0, 255).astype(np.uint8)
                jpeg = io.BytesIO()
                Image.fromarray(pixels).save(jpeg, format="JPEG", quality=90)
                key = f"{shard:05d}{index:04d}"
                writer.write({"__key__": key, "jpg": jpeg.getvalue(), "txt": f"a gradient picture number {key}"})
        (folder / f"{shard:05d}_stats.json").write_text(json.dumps({"successes": per_shard}))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def shard_resume_table(folder: Path, batch_size: int, skip: int) -> None:
    from cyclip.data.shards import ShardBatches

    _, preprocess, _, tokenizer = create_model("RN50")  # 224 px random-resized crops, as a real run decodes them
    urls = write_shards(folder, shards=4, per_shard=(skip + 2) * batch_size // 4)
    options = dict(batch_size=batch_size, num_samples=None, seed=0, epoch=0, rank=0, world_size=1, workers=0,
                   resampled=False, on_bad_sample="skip")  # fmt: skip

    first = ShardBatches(urls, preprocess, tokenizer, **options)
    batches = iter(first)
    start = time.perf_counter()
    for _ in range(skip):
        next(batches)
    decoding = time.perf_counter() - start
    positions = list(first.positions)
    batches.close()

    start = time.perf_counter()
    next(iter(ShardBatches(urls, preprocess, tokenizer, skip=skip, streams=positions, **options)))
    replay = time.perf_counter() - start
    start = time.perf_counter()
    next(iter(ShardBatches(urls, preprocess, tokenizer, **options)))
    one_batch = time.perf_counter() - start
    samples = skip * batch_size
    print(f"Continuing after {skip} batches of {batch_size} (256 px JPEGs, RN50 preprocessing, one process):")
    print()
    print("| how | s until the next batch | ms per skipped sample |")
    print("|---|---|---|")
    print(f"| replay without decoding (cyclip) | {replay:.2f} | {1000 * (replay - one_batch) / samples:.3f} |")
    print(f"| decode the skipped batches again | {decoding + one_batch:.2f} | {1000 * decoding / samples:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, help="where to write checkpoints (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per number (the median is shown)")
    parser.add_argument(
        "--gpu-step-seconds",
        type=float,
        default=0.25,
        help="assumed step time of RN50 / ViT-B-32 on one GPU (bf16, batch 256: about 1,000 samples/s)",
    )
    parser.add_argument("--shard-batch-size", type=int, default=64, help="batch size of the WebDataset part")
    parser.add_argument("--shard-skip", type=int, default=30, help="batches to continue after")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.folder) as scratch:
        scratch = Path(scratch)
        print(f"Checkpoints written to {scratch}; {torch.get_num_threads()} CPU threads")
        print()
        checkpoint_table(scratch, args.repeats, args.gpu_step_seconds)
        print()
        (scratch / "shards").mkdir()
        shard_resume_table(scratch / "shards", args.shard_batch_size, args.shard_skip)


if __name__ == "__main__":
    main()
