"""`cyclip train --dry-run`: what a run would do — data, batch, schedule, model — resolved without training.

Read before a long cluster job, it catches in seconds what would otherwise surface hours in: a data path
that does not exist, a global batch other than intended, a warm-up longer than the whole run.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from cyclip.config import TrainConfig

ADAMW_STATES = 2  # AdamW keeps two float32 moments per parameter


def planned_world_size() -> int:
    """The processes the run will have: torchrun's WORLD_SIZE when launched by it, else 1."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def training_plan(config: TrainConfig, world_size: int | None = None) -> dict[str, Any]:
    """The run's resolved numbers; reads the data's row or shard counts and builds the model (on the CPU, no
    weights are downloaded), exactly as training would, so that a bad path or model fails here."""
    from cyclip.data.loading import PairBatches
    from cyclip.models import create_model

    if not config.train_data:
        raise ValueError("--train-data is required: a CSV/TSV of image paths and captions, or WebDataset shards")
    world_size = planned_world_size() if world_size is None else world_size
    cpu = torch.device("cpu")
    model, preprocess_train, preprocess_val, tokenizer = create_model(
        config.model, pretrained=config.pretrained, sigmoid_head=config.loss == "siglip"
    )
    train = PairBatches(config.train_data, preprocess_train, tokenizer, config, cpu, train=True)
    val = PairBatches(config.val_data, preprocess_val, tokenizer, config, cpu, train=False) if config.val_data else None
    global_batch = config.batch_size * config.accum_freq * world_size
    steps_per_epoch = train.num_samples // global_batch
    parameters = sum(parameter.numel() for parameter in model.parameters())
    return {
        "model": config.model,
        "parameters": parameters,
        "checkpoint_bytes": parameters * 4 * (1 + ADAMW_STATES),
        "train_data": config.train_data,
        "train_samples": train.num_samples,
        "val_data": config.val_data,
        "val_samples": val.num_samples if val is not None else None,
        "processes": world_size,
        "batch_size": config.batch_size,
        "accum_freq": config.accum_freq,
        "global_batch": global_batch,
        "steps_per_epoch": steps_per_epoch,
        "epochs": config.epochs,
        "total_steps": steps_per_epoch * config.epochs,
        "warmup": config.warmup,
        "lr": config.lr,
        "loss": config.loss,
        "lambda_inmodal": config.lambda_inmodal,
        "lambda_crossmodal": config.lambda_crossmodal,
        "precision": config.precision,
        "output": config.output,
    }


def format_plan(plan: dict[str, Any]) -> str:
    """The plan as the lines `--dry-run` prints, with a warning where the numbers cannot be what was meant."""
    val = f", validation {plan['val_samples']:,} pairs" if plan["val_samples"] is not None else ""
    lines = [
        f"model:     {plan['model']}, {plan['parameters'] / 1e6:.1f} M parameters "
        f"(checkpoint with AdamW state ~{plan['checkpoint_bytes'] / 2**20:,.0f} MiB)",
        f"data:      {plan['train_samples']:,} training pairs from {plan['train_data']}{val}",
        f"batch:     global {plan['global_batch']:,} = {plan['batch_size']} per process x {plan['accum_freq']} "
        f"accumulation x {plan['processes']} process(es)",
        f"schedule:  {plan['epochs']} epochs x {plan['steps_per_epoch']:,} steps = {plan['total_steps']:,} steps; "
        f"linear warm-up {plan['warmup']:,} steps to lr {plan['lr']:g}, then cosine decay to 0",
        f"objective: {plan['loss']} loss, lambda_inmodal {plan['lambda_inmodal']:g}, "
        f"lambda_crossmodal {plan['lambda_crossmodal']:g}; "
        f"precision {plan['precision']}",
        f"output:    {plan['output']}",
    ]
    if plan["steps_per_epoch"] == 0:
        lines.append("warning:   fewer pairs than one global batch: no step would run; lower --batch-size")
    elif plan["warmup"] >= plan["total_steps"]:
        lines.append(
            f"warning:   the warm-up ({plan['warmup']:,} steps) is not shorter than the run "
            f"({plan['total_steps']:,} steps): the learning rate never reaches its peak and never decays"
        )
    return "\n".join(lines)
