"""The training loop: data and model in, checkpoints and metrics out. The objective lives in
`cyclip.losses`; this module only feeds it.

Everything needed to continue a run exactly (model, optimizer, scheduler, scaler, step, epoch, RNG
states, config) goes into one atomically written checkpoint per epoch, plus `latest.pt`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cyclip import distributed
from cyclip.checkpoints import read_checkpoint, require_training_state, save_checkpoint
from cyclip.config import TrainConfig
from cyclip.data.loading import PairBatches
from cyclip.evaluation.zeroshot import zeroshot_classification
from cyclip.losses import cyclip_loss
from cyclip.models import create_model

log = logging.getLogger("cyclip.train")

LOGIT_SCALE_MAX = math.log(100.0)
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    output: Path
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)  # one summary per epoch


def resolve_device(name: str) -> torch.device:
    """`auto` = CUDA when there is a GPU; under torchrun each process takes the GPU of its LOCAL_RANK."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", distributed.local_rank() if distributed.launched_by_torchrun() else 0)
    return device


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: gains, biases and the logit scale are exempt."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "logit_scale" in name or name.endswith(".bias")
        (no_decay if exempt else decay).append(parameter)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": config.wd}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`; stepped per iteration."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def rng_state() -> dict[str, Any]:
    numpy_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class MetricsWriter:
    """metrics.jsonl and TensorBoard, written by rank 0 only."""

    def __init__(self, output: Path, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.jsonl = (output / "metrics.jsonl").open("a")
            self.tensorboard = SummaryWriter(str(output / "tensorboard"))

    def write(self, split: str, step: int, epoch: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"split": split, "step": step, "epoch": epoch, **values}) + "\n")
        self.jsonl.flush()
        for name, value in values.items():
            self.tensorboard.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            self.tensorboard.close()


class Trainer:
    """Holds one run's state; `fit()` runs the remaining epochs."""

    def __init__(self, config: TrainConfig) -> None:
        if not config.train_data:
            raise ValueError("--train-data is required: a CSV/TSV of image paths and captions, or WebDataset shards")
        self.config = config
        self.device = resolve_device(config.device)
        self.output = Path(config.output)
        if not config.resume and (self.output / "latest.pt").exists():
            raise ValueError(
                f"{self.output} already holds a run (latest.pt); continue it with --resume latest "
                "or choose another --output"
            )
        self.is_main = distributed.rank() == 0
        if not self.is_main:
            logging.getLogger("cyclip").setLevel(logging.WARNING)  # rank 0 alone reports progress
        seed_everything(config.seed)
        model, self.preprocess_train, self.preprocess_val, self.tokenizer = create_model(
            config.model, pretrained=config.pretrained, device=self.device
        )
        if config.grad_checkpointing:
            model.set_grad_checkpointing(True)
        self.model = model
        augment = None
        if config.inmodal:
            from cyclip.data.augment import PairAugmenter

            augment = PairAugmenter(image_policy=config.inmodal_image_augmentation)
        self.train_set = PairBatches(
            config.train_data, self.preprocess_train, self.tokenizer, config, self.device, train=True, augment=augment
        )
        self.val_set = (
            PairBatches(config.val_data, self.preprocess_val, self.tokenizer, config, self.device, train=False)
            if config.val_data
            else None
        )
        self.steps_per_epoch = self.train_set.batches_per_epoch // config.accum_freq
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{config.train_data}: {self.train_set.num_samples} pairs are fewer than one step needs "
                f"(batch-size {config.batch_size} x accum-freq {config.accum_freq} x {distributed.world_size()} "
                "processes); lower --batch-size"
            )
        self.optimizer = build_optimizer(model, config)
        self.scheduler = cosine_with_warmup(self.optimizer, config.warmup, self.steps_per_epoch * config.epochs)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.step = 0
        self.epoch = 0
        self.skipped_samples = 0
        if config.resume:
            self._resume(config.resume)
        if distributed.is_distributed():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    # --- checkpoints -------------------------------------------------------------------------------

    def _resume(self, resume: str) -> None:
        path = self.output / "latest.pt" if resume == "latest" else Path(resume)
        checkpoint = read_checkpoint(path, device="cpu")
        require_training_state(checkpoint, path)
        if checkpoint.get("model_name") != self.config.model:
            raise ValueError(
                f"{path}: checkpoint is for model {checkpoint.get('model_name')!r}, not {self.config.model!r}"
            )
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step, self.epoch = checkpoint["step"], checkpoint["epoch"]
        self.skipped_samples = checkpoint.get("skipped_samples", 0)
        set_rng_state(checkpoint["rng"])
        log.info("resumed from %s at epoch %d, step %d", path, self.epoch, self.step)

    def _save(self) -> Path:
        path = self.output / f"epoch_{self.epoch}.pt"
        if self.is_main:
            payload = {
                "model": unwrap(self.model).state_dict(),
                "model_name": self.config.model,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "skipped_samples": self.skipped_samples,
                "rng": rng_state(),
                "config": self.config.to_dict(),
            }
            save_checkpoint(payload, path)
            _replace_with_link(path, self.output / "latest.pt")
        return path

    # --- one optimizer step ------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST_DTYPES.get(self.config.precision)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def _features(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """[image, text] features, or with in-modal augmentation [image, text, augmented image, augmented text].

        Augmented views go through the model in the same forward pass as the originals, as in the paper's code.
        """
        # Evaluation bypasses the DDP wrapper, whose forward may broadcast buffers (a collective).
        model = self.model if self.model.training else unwrap(self.model)
        with self._autocast():
            if len(inputs) == 2:
                image_features, text_features, _ = model(*inputs)
                return [image_features, text_features]
            images, texts, augmented_images, augmented_texts = inputs
            image_features, text_features, _ = model(
                torch.cat([images, augmented_images]), torch.cat([texts, augmented_texts])
            )
            batch = images.shape[0]
            return [image_features[:batch], text_features[:batch], image_features[batch:], text_features[batch:]]

    def _loss(self, features: list[torch.Tensor], scale_grad: bool = True):
        logit_scale = unwrap(self.model).logit_scale
        augmented = {}
        if len(features) == 4:
            augmented = {"augmented_image_features": features[2], "augmented_text_features": features[3]}
        with self._autocast():
            return cyclip_loss(
                features[0],
                features[1],
                logit_scale if scale_grad else logit_scale.detach(),
                self.config.lambda_inmodal,
                self.config.lambda_crossmodal,
                **augmented,
            )

    def _optimizer_step(self, micro_batches: list[tuple[torch.Tensor, ...]]):
        """One step over `accum_freq` micro-batches, with the loss over all of them together.

        With accumulation the features of every micro-batch are first computed without a graph;
        then each micro-batch is re-run with a graph and its fresh features replace the cached
        ones, so the gradients add up to those of one big contrastive batch (OpenCLIP's scheme). The
        logit scale takes its gradient from the last pass only: every pass sees the whole batch.
        """
        self.model.train()
        if len(micro_batches) == 1:
            output = self._loss(self._features(*micro_batches[0]))
            self.scaler.scale(output.total).backward()
        else:
            with torch.no_grad():
                cached = [self._features(*inputs) for inputs in micro_batches]
            for index, inputs in enumerate(micro_batches):
                last = index == len(micro_batches) - 1
                sync = contextlib.nullcontext() if last or not distributed.is_distributed() else self.model.no_sync()
                with sync:
                    fresh = self._features(*inputs)
                    features = [
                        torch.cat([fresh[kind] if i == index else part[kind] for i, part in enumerate(cached)])
                        for kind in range(len(fresh))
                    ]
                    output = self._loss(features, scale_grad=last)
                    self.scaler.scale(output.total).backward()
        if self.config.grad_clip_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        with torch.no_grad():
            unwrap(self.model).logit_scale.clamp_(0, LOGIT_SCALE_MAX)
        return output

    # --- epochs ------------------------------------------------------------------------------------

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(self.device, non_blocking=True)

    def _train_epoch(self, metrics: MetricsWriter) -> dict[str, float]:
        config = self.config
        batches = iter(self.train_set.epoch(self.epoch))
        # Running sums stay on the device; they are read (one sync) only every `log_every` steps.
        sums = torch.zeros(4, device=self.device)
        first_bad_step = torch.full((), -1, device=self.device, dtype=torch.long)
        step_on_device = torch.full((), self.step, device=self.device, dtype=torch.long)
        skipped = torch.zeros((), dtype=torch.long)
        count, last_log_time, last_log_step = 0, time.perf_counter(), self.step
        summary: dict[str, float] = {}
        progress = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {self.epoch + 1}/{config.epochs}",
            disable=not self.is_main,
            leave=False,
            dynamic_ncols=True,
        )
        for _ in range(self.steps_per_epoch):
            micro_batches = []
            for _ in range(config.accum_freq):
                *inputs, batch_skipped = next(batches)
                skipped += batch_skipped.sum()
                micro_batches.append(tuple(self._to_device(tensor) for tensor in inputs))
            output = self._optimizer_step(micro_batches)
            values = torch.stack([part.detach().float() for part in output])
            newly_bad = (first_bad_step < 0) & ~torch.isfinite(values).all()
            first_bad_step = torch.where(newly_bad, step_on_device, first_bad_step)
            step_on_device += 1
            sums += values
            count += 1
            self.step += 1
            progress.update(1)
            if count == config.log_every or self.step == (self.epoch + 1) * self.steps_per_epoch:
                summary = self._log_train(metrics, sums / count, first_bad_step, skipped, last_log_time, last_log_step)
                progress.set_postfix(loss=f"{summary['loss']:.4f}", scale=f"{summary['logit_scale']:.1f}")
                sums.zero_()
                count, last_log_time, last_log_step = 0, time.perf_counter(), self.step
        progress.close()
        return summary

    def _log_train(self, metrics, means, first_bad_step, skipped, since, since_step) -> dict[str, float]:
        bad = int(first_bad_step)
        if bad >= 0:
            raise NonFiniteLossError(
                f"the loss became non-finite at step {bad} (epoch {self.epoch + 1}); training stopped and the last "
                f"good checkpoint is kept in {self.output}. Try a lower --lr, --grad-clip-norm, or --precision fp32"
            )
        self.skipped_samples += int(skipped)
        skipped.zero_()
        elapsed = time.perf_counter() - since
        samples = (self.step - since_step) * self.config.batch_size * self.config.accum_freq * distributed.world_size()
        total, contrastive, inmodal, crossmodal = means.tolist()
        summary = {
            "loss": total,
            "contrastive": contrastive,
            "inmodal_cyclic": inmodal,
            "crossmodal_cyclic": crossmodal,
            "lr": self.scheduler.get_last_lr()[0],
            "logit_scale": unwrap(self.model).logit_scale.exp().item(),
            "samples_per_second": samples / max(elapsed, 1e-9),
            "skipped_samples": self.skipped_samples,
        }
        metrics.write("train", self.step, self.epoch, summary)
        return summary

    @torch.no_grad()
    def validation_loss(self) -> dict[str, float]:
        """Mean loss parts over the validation set's batches of --batch-size pairs.

        Each rank takes a share of the batches and computes their losses alone, so the value does not
        depend on the number of processes and uneven shares cannot hang a collective.
        """
        self.model.eval()
        sums = torch.zeros(5, dtype=torch.float64, device=self.device)
        rank, ranks = distributed.rank(), distributed.world_size()
        with distributed.local_only():
            for images, texts, _ in self.val_set.epoch(0, rank=rank, world_size=ranks):
                if images.shape[0] < 2:
                    continue
                output = self._loss(self._features(self._to_device(images), self._to_device(texts)))
                sums[:4] += torch.stack([part.double() for part in output])
                sums[4] += 1
        distributed.all_reduce_sum_(sums)
        total, contrastive, inmodal, crossmodal = (sums[:4] / sums[4].clamp(min=1)).tolist()
        return {"loss": total, "contrastive": contrastive, "inmodal_cyclic": inmodal, "crossmodal_cyclic": crossmodal}

    def fit(self) -> TrainResult:
        config = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            config.save_yaml(self.output / "config.yaml")
        global_batch = config.batch_size * config.accum_freq * distributed.world_size()
        log.info(
            "training %s on %d pairs, global batch %d (%d per process x %d accumulation x %d processes), "
            "%d steps per epoch, lambdas %.3g/%.3g, %s on %s",
            config.model,
            self.train_set.num_samples,
            global_batch,
            config.batch_size,
            config.accum_freq,
            distributed.world_size(),
            self.steps_per_epoch,
            config.lambda_inmodal,
            config.lambda_crossmodal,
            config.precision,
            self.device,
        )
        metrics = MetricsWriter(self.output, enabled=self.is_main)
        history, checkpoint = [], self.output / "latest.pt"
        try:
            while self.epoch < config.epochs:
                train_summary = self._train_epoch(metrics)
                self.epoch += 1
                summary = {"epoch": self.epoch, "step": self.step, "train": train_summary}
                if self.val_set is not None:
                    summary["val"] = self.validation_loss()
                    metrics.write("val", self.step, self.epoch, summary["val"])
                if config.zeroshot_data and self.is_main:
                    summary["zeroshot"] = zeroshot_classification(
                        unwrap(self.model),
                        self.preprocess_val,
                        self.tokenizer,
                        config.zeroshot_data,
                        device=self.device,
                        batch_size=config.batch_size,
                        workers=config.workers,
                        progress=False,
                    )
                    metrics.write("zeroshot", self.step, self.epoch, summary["zeroshot"])
                checkpoint = self._save()
                distributed.barrier()  # no rank starts the next epoch before the checkpoint is complete
                history.append(summary)
                if self.is_main:
                    log.info("%s", _format_epoch(summary))
        finally:
            metrics.close()
        return TrainResult(output=self.output, checkpoint=checkpoint, history=history)


def train(config: TrainConfig) -> TrainResult:
    """Train (or continue, with `config.resume`) a CLIP/CyCLIP model; returns where things went.

    Under torchrun every process calls this; it joins the process group (and leaves it at the end).
    """
    joined = False
    if distributed.launched_by_torchrun() and not distributed.is_distributed():
        distributed.init_process_group(resolve_device(config.device))
        joined = True
    try:
        return Trainer(config).fit()
    finally:
        if joined:
            distributed.destroy_process_group()


def _replace_with_link(source: Path, target: Path) -> None:
    """Point `target` at `source`'s bytes atomically: a hard link when possible, else a copy."""
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)
    except OSError:
        shutil.copyfile(source, temporary)
    os.replace(temporary, target)


def _format_epoch(summary: dict[str, Any]) -> str:
    parts = [f"epoch {summary['epoch']}"]
    for split in ("train", "val"):
        if split in summary and summary[split]:
            values = summary[split]
            parts.append(
                f"{split} loss {values['loss']:.4f} (contrastive {values['contrastive']:.4f}, "
                f"in-modal {values['inmodal_cyclic']:.4f}, cross-modal {values['crossmodal_cyclic']:.4f})"
            )
    if "zeroshot" in summary:
        parts.append(f"zero-shot top-1 {100 * summary['zeroshot']['top1']:.1f}%")
    return " | ".join(parts)
