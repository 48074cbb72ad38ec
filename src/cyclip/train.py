"""The training loop: data and model in, checkpoints and metrics out. What a batch's loss is belongs to
`cyclip.objective`; this module owns the step (accumulation, precision, clipping, schedule) around it.

Everything needed to continue a run exactly (model, optimizer, scheduler, scaler, step, the data position,
every rank's random state, the open metrics window, config) goes into an atomically written checkpoint after
each epoch and, with --save-every-steps / --save-every-minutes, between epochs (`cyclip.checkpoint_folder`,
`cyclip.run_state`). SIGTERM, SIGINT and --preempt-signal stop the run after the current optimizer step with a
checkpoint (`cyclip.preemption`); all ranks agree on the step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cyclip import distributed
from cyclip.checkpoint_folder import CheckpointFolder
from cyclip.checkpoints import read_checkpoint, require_training_state
from cyclip.config import TrainConfig
from cyclip.data.batch import PairBatch
from cyclip.data.loading import PairBatches, TrainEpoch
from cyclip.distributed import unwrap
from cyclip.errors import NonFiniteLossError
from cyclip.evaluation.zeroshot import zeroshot_classification
from cyclip.metrics_log import MetricsWriter
from cyclip.models import convolutional_image_tower, create_model, lock_towers
from cyclip.objective import TERM_NAMES, LossTerms, PairFeatures, build_objective, logit_parameters
from cyclip.preemption import EXIT_INTERRUPTED, EXIT_STOPPED, RunStopped, StopSignals
from cyclip.preflight import check_training_run
from cyclip.progress import IntervalClock, TrainProgress, peak_memory, terms_text
from cyclip.run_state import BatchLayout, DataPosition, rank_state
from cyclip.runtime import autocast, resolve_device, resolve_precision, rng_state, seed_everything, set_rng_state

log = logging.getLogger("cyclip.train")

LOGIT_SCALE_MAX = math.log(100.0)


@dataclass
class TrainResult:
    output: Path
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)  # one summary per epoch


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: gains, biases and the logit scale are exempt.

    The fused kernel (one pass over all parameters) when the model is on CUDA or the CPU, where it beats
    the default per-parameter loop (about 1.7x on cyclip-rn-tiny's update on CPU); the multi-tensor one
    elsewhere.
    """
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "logit_scale" in name or name.endswith(".bias")
        (no_decay if exempt else decay).append(parameter)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": config.wd}]
    device = next(model.parameters()).device
    kernel = {"fused": True} if device.type in ("cuda", "cpu") else {"foreach": True}
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=config.eps, **kernel)


def cosine_with_warmup(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup` steps, then cosine decay to zero at `total`; stepped per iteration."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class LogWindow:
    """The metrics of the steps since the last log, kept on the device (read, one sync, only when logged),
    and saved with a checkpoint so that a resumed run logs the very records of an uninterrupted one."""

    def __init__(self, device: torch.device) -> None:
        self.sums = torch.zeros(len(TERM_NAMES), device=device)
        self.count = 0
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.long)
        self.skipped = torch.zeros((), dtype=torch.long)  # bad samples met, summed on the host from the batches

    def add(self, output: LossTerms[torch.Tensor], step: int) -> None:
        values = torch.stack([part.detach().float() for part in output])
        newly_bad = (self.first_bad_step < 0) & ~torch.isfinite(values).all()
        self.first_bad_step = torch.where(newly_bad, step, self.first_bad_step)
        self.sums += values
        self.count += 1

    def reset(self) -> None:
        self.sums.zero_()
        self.count = 0
        self.skipped.zero_()

    def state(self) -> dict[str, Any]:
        return {"sums": self.sums.cpu(), "count": self.count, "skipped": int(self.skipped)}

    def load(self, state: dict[str, Any]) -> None:
        self.sums.copy_(state["sums"])
        self.count = state["count"]
        self.skipped.fill_(state["skipped"])


class Trainer:
    """Holds one run's state; `fit()` runs the remaining epochs."""

    def __init__(self, config: TrainConfig) -> None:
        if not config.train_data:
            raise ValueError("--train-data is required: a CSV/TSV of image paths and captions, or WebDataset shards")
        self.config = config
        self.device = resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.output = Path(config.output)
        if not config.resume and (self.output / "latest.pt").exists():
            raise ValueError(
                f"{self.output} already holds a run (latest.pt); continue it with --resume latest "
                "or choose another --output"
            )
        check_training_run(config)
        self.is_main = distributed.rank() == 0
        if not self.is_main:
            logging.getLogger("cyclip").setLevel(logging.WARNING)  # rank 0 alone reports progress
        seed_everything(config.seed)
        model, self.preprocess_train, self.preprocess_val, self.tokenizer = create_model(
            config.model, pretrained=config.pretrained, device=self.device, sigmoid_head=config.loss == "siglip"
        )
        lock_towers(model, **config.lock_options())
        if config.grad_checkpointing:
            model.set_grad_checkpointing(True)
        if self.device.type == "cuda" and convolutional_image_tower(model):
            model.visual.to(memory_format=torch.channels_last)
        self.model = model
        self.objective = build_objective(config)
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
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.layout = BatchLayout(
            batch_size=config.batch_size,
            accum_freq=config.accum_freq,
            world_size=distributed.world_size(),
            workers=config.workers,
            sharded=self.train_set.sharded,
            steps_per_epoch=self.steps_per_epoch,
        )
        self.folder = CheckpointFolder(self.output, self.steps_per_epoch)
        self.step = 0  # optimizer steps done
        self.epoch = 0  # epochs done: the 0-based index of the epoch in progress
        self.steps_in_epoch = 0  # optimizer steps done in it
        self.streams: list[int] | None = None  # this rank's shard-stream positions to continue the epoch from
        self.last_save_time = time.monotonic()
        self.window = LogWindow(self.device)
        self.skipped_samples = 0
        self.stop_signals = StopSignals(config.preempt_signal, announce=self.is_main)
        if config.resume == "auto" and not self.folder.has_checkpoint():
            log.info("%s holds no checkpoint yet: starting the run", self.output)
        elif config.resume:
            self._resume(config.resume)
        if config.compile:
            model.compile()  # in place: the state dict keeps its keys; the loss stays outside the graph
        if distributed.is_distributed():
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    # --- checkpoints -------------------------------------------------------------------------------

    def _resume(self, resume: str) -> None:
        """Continue from `resume` (latest/auto: the newest readable checkpoint in --output, else a path)."""
        if resume in ("latest", "auto"):
            path, checkpoint = self.folder.read_newest(announce=self.is_main)
        else:
            path = Path(resume)
            checkpoint = read_checkpoint(path, device="cpu")
            require_training_state(checkpoint, path)
            self.folder.last = path
        if checkpoint.get("model_name") != self.config.model:
            raise ValueError(
                f"{path}: checkpoint is for model {checkpoint.get('model_name')!r}, not {self.config.model!r}"
            )
        position = DataPosition.from_checkpoint(checkpoint, self.layout).continued_in(self.layout, str(path))
        self.epoch, self.steps_in_epoch = position.epoch, position.steps
        self.streams = None if position.streams is None else rank_state(position.streams, distributed.rank())
        saved_epochs = checkpoint.get("config", {}).get("epochs")
        if self.is_main and saved_epochs not in (None, self.config.epochs):
            log.warning(
                "--epochs %d: the run was started with %d epochs, so its learning-rate schedule changes from here on "
                "(the cosine decay now ends at step %d)",
                self.config.epochs,
                saved_epochs,
                self.steps_per_epoch * self.config.epochs,
            )
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.scaler.load_state_dict(checkpoint["scaler"])
        self.step = checkpoint["step"]
        self.skipped_samples = checkpoint.get("skipped_samples", 0)
        set_rng_state(rank_state(checkpoint["rng"], distributed.rank()), self.device)
        if "log_window" in checkpoint:
            self.window.load(checkpoint["log_window"])
        log.info(
            "resumed from %s at step %d (epoch %d, %d of %d steps done)",
            path,
            self.step,
            self.epoch + 1,
            self.steps_in_epoch,
            self.steps_per_epoch,
        )

    def _save(self, path: Path, data: TrainEpoch | None = None) -> Path:
        """Write the run's state at this step to `path` (rank 0; every rank contributes its random state
        and data-stream position) and make it latest.pt; the ranks leave together once it is complete."""
        self._check_finite()
        streams = data.streams() if data is not None and self.steps_in_epoch else None
        ranks = distributed.gather_to_first({"rng": rng_state(self.device), "streams": streams})
        if self.is_main:
            position = DataPosition(
                epoch=self.epoch,
                steps=self.steps_in_epoch,
                layout=self.layout,
                streams=[rank["streams"] for rank in ranks] if streams is not None else None,
            )
            payload = {
                "model": unwrap(self.model).state_dict(),
                "model_name": self.config.model,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "data": position.to_dict(),
                "skipped_samples": self.skipped_samples,
                "log_window": self.window.state(),
                "rng": [rank["rng"] for rank in ranks],
                "config": {**self.config.to_dict(), "resume": None},
            }
            self.folder.write(payload, path)
            self.folder.prune(self.config.keep_last, self.config.keep_epochs, self.step)
        else:
            self.folder.last = path
        self.last_save_time = time.monotonic()
        distributed.barrier()  # no rank goes on (or exits) before the checkpoint is complete
        return path

    def _check_finite(self) -> None:
        """NonFiniteLossError if a step since the last log had a NaN or infinite loss: its weights must not
        become a checkpoint."""
        bad = int(self.window.first_bad_step)
        if bad >= 0:
            kept = (
                f"the last good checkpoint is {self.folder.last}"
                if self.folder.last
                else "no checkpoint was written before it"
            )
            raise NonFiniteLossError(
                f"the loss became non-finite at step {bad} (epoch {self.epoch + 1}); training stopped and {kept}. "
                "Try a lower --lr, --grad-clip-norm, or --precision fp32"
            )

    def _save_or_stop_after_step(self, data: TrainEpoch) -> None:
        """Write a step checkpoint when one is due, and stop (with one) when any rank received a stop signal.

        The ranks agree through one all-reduce of two CPU integers: rank 0's clock decides
        --save-every-minutes, so every rank saves and stops at the same step.
        """
        config = self.config
        due = bool(config.save_every_steps) and self.step % config.save_every_steps == 0
        if config.save_every_minutes is not None and self.is_main:
            due = due or time.monotonic() - self.last_save_time >= 60 * config.save_every_minutes
        stop, save = distributed.any_rank(self.stop_signals.requested is not None, due)
        epoch_end = self.steps_in_epoch == self.steps_per_epoch  # the epoch checkpoint follows
        if stop or (save and not epoch_end):
            self._save(self.folder.step_file(self.step), data)
        if stop:
            self._stop()

    def _stop(self) -> None:
        """Raise RunStopped after the checkpoint written at this step."""
        message = ""
        if self.is_main:
            cause = self.stop_signals.requested or "a signal to another process"
            where = f"epoch {self.epoch + 1}, {self.steps_in_epoch} of {self.steps_per_epoch} steps done"
            if not self.steps_in_epoch:
                where = f"the end of epoch {self.epoch}"
            message = (
                f"stopped by {cause} at step {self.step} ({where}); checkpoint {self.folder.last}; continue with "
                f"--output {self.output} --resume latest"
            )
        raise RunStopped(message, EXIT_STOPPED)

    def _interrupted(self) -> RunStopped:
        """What a second Ctrl-C ends with: nothing saved at this step."""
        message = ""
        if self.is_main:
            where = f"interrupted after step {self.step} (epoch {self.epoch + 1}) without saving"
            if self.folder.last is None:
                message = f"{where}; no checkpoint was written yet (--resume auto starts the run again)"
            else:
                message = f"{where}; the last checkpoint is {self.folder.last}: continue with --resume latest"
        return RunStopped(message, EXIT_INTERRUPTED)

    # --- one optimizer step ------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)

    def _optimizer_step(self, micro_batches: list[PairBatch]) -> LossTerms[torch.Tensor]:
        """One step over `accum_freq` micro-batches, with the loss over all of them together.

        With accumulation the features of every micro-batch are first computed without a graph;
        then each micro-batch is re-run with a graph and its fresh features replace the cached
        ones, so the gradients add up to those of one big contrastive batch (OpenCLIP's scheme). The
        logit scale (and a sigmoid loss's bias) take their gradient from the last pass only: every pass sees the
        whole batch.
        """
        self.model.train()
        objective, model, head = self.objective, self.model, logit_parameters(self.model)
        if len(micro_batches) == 1:
            with self._autocast():
                output = objective(model, micro_batches[0])
            self.scaler.scale(output.loss).backward()
        else:
            with torch.no_grad(), self._autocast():
                cached = [objective.features(model, batch) for batch in micro_batches]
            for index, batch in enumerate(micro_batches):
                last = index == len(micro_batches) - 1
                sync = contextlib.nullcontext() if last or not distributed.is_distributed() else model.no_sync()
                with sync:
                    with self._autocast():
                        fresh = objective.features(model, batch)
                        features = PairFeatures.cat([fresh if i == index else part for i, part in enumerate(cached)])
                        output = objective.loss(features, *(p if last else p.detach() for p in head))
                    self.scaler.scale(output.loss).backward()
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

    def _train_epoch(self, metrics: MetricsWriter) -> dict[str, float]:
        """The remaining steps of the epoch in progress (all of them, unless resumed part-way through)."""
        config = self.config
        summary: dict[str, float] = {}
        if self.steps_in_epoch == self.steps_per_epoch:  # stopped after the last step, before the epoch's end
            return summary
        skip = self.steps_in_epoch * config.accum_freq
        data = self.train_set.train_epoch(self.epoch, skip=skip, streams=self.streams)
        self.streams = None
        batches = iter(data)
        clock = IntervalClock(self.step)
        self.progress.start_epoch(self.epoch, done=self.steps_in_epoch)
        try:  # the bar is closed (cleared) on a stop too, so that the stop's message starts a line
            while self.steps_in_epoch < self.steps_per_epoch:
                micro_batches = []
                with clock.waiting_for_data():
                    for _ in range(config.accum_freq):
                        batch = next(batches)
                        self.window.skipped += batch.skipped.sum()
                        micro_batches.append(batch.to(self.device))
                output = self._optimizer_step(micro_batches)
                self.window.add(output, self.step)
                self.step += 1
                self.steps_in_epoch += 1
                self.progress.advance()
                # On the same steps whether or not the run was resumed, so that the logs agree.
                if self.steps_in_epoch % config.log_every == 0 or self.steps_in_epoch == self.steps_per_epoch:
                    summary = self._log_train(metrics, clock)
                    clock.restart(self.step)
                self._save_or_stop_after_step(data)
        finally:
            self.progress.end_epoch()
        return summary

    def _log_train(self, metrics: MetricsWriter, clock: IntervalClock) -> dict[str, float]:
        """Write the mean metrics of the steps since the last log (NonFiniteLossError if one was not finite)."""
        self._check_finite()
        window = self.window
        self.skipped_samples += int(window.skipped)
        samples_per_step = self.config.batch_size * self.config.accum_freq
        summary = {
            **LossTerms(*(window.sums / window.count).tolist()).as_dict(),
            "lr": self.scheduler.get_last_lr()[0],
            "logit_scale": unwrap(self.model).logit_scale.exp().item(),
            **clock.timings(self.step, samples_per_step, distributed.world_size()),
            **peak_memory(self.device),
            "skipped_samples": self.skipped_samples,
        }
        window.reset()
        metrics.write("train", self.step, round(self.step / self.steps_per_epoch, 4), summary)  # epochs done
        self.progress.report(self.step, self.epoch, summary)
        return summary

    @torch.no_grad()
    def validation_loss(self) -> dict[str, float]:
        """Mean loss parts over the validation set's batches of --batch-size pairs.

        Each rank takes a share of the batches and computes their losses alone, so the value does not
        depend on the number of processes and uneven shares cannot hang a collective.
        """
        self.model.eval()
        terms = len(TERM_NAMES)
        sums = torch.zeros(terms + 1, dtype=torch.float64, device=self.device)  # the terms, then the batch count
        rank, ranks = distributed.rank(), distributed.world_size()
        with distributed.local_only():
            for batch in self.val_set.epoch(0, rank=rank, world_size=ranks):
                if len(batch) < 2:
                    continue
                with self._autocast():  # the bare model: DDP's forward may broadcast buffers (a collective)
                    output = self.objective(unwrap(self.model), batch.to(self.device))
                sums[:terms] += torch.stack([part.double() for part in output])
                sums[terms] += 1
        distributed.all_reduce_sum_(sums)
        return LossTerms(*(sums[:terms] / sums[terms].clamp(min=1)).tolist()).as_dict()

    def fit(self) -> TrainResult:
        """Train the remaining epochs. A stop signal ends it with RunStopped after a checkpoint; a second
        Ctrl-C with RunStopped at once (exit codes in `cyclip.preemption`)."""
        config = self.config
        self.output.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            self.folder.remove_stale_temporaries()
            config.save_yaml(self.output / "config.yaml")
        if self.epoch >= config.epochs:
            log.info(
                "%s: the run is finished (epoch %d of %d, step %d); nothing to train (raise --epochs to train longer)",
                self.output,
                self.epoch,
                config.epochs,
                self.step,
            )
            return TrainResult(output=self.output, checkpoint=self.folder.last or self.output / "latest.pt")
        log.info(
            "training %s on %d pairs, global batch %d (%d per process x %d accumulation x %d processes), "
            "%d steps per epoch, lambdas %.3g/%.3g, %s on %s%s",
            config.model,
            self.train_set.num_samples,
            self.layout.global_batch,
            config.batch_size,
            config.accum_freq,
            self.layout.world_size,
            self.steps_per_epoch,
            config.lambda_inmodal,
            config.lambda_crossmodal,
            self.precision + (" (--precision auto)" if config.precision == "auto" else ""),
            self.device,
            ", compiled" if config.compile else "",
        )
        metrics = MetricsWriter(self.output, enabled=self.is_main, start_step=self.step)
        self.progress = TrainProgress(self.steps_per_epoch, config.epochs, self.step, enabled=self.is_main)
        history: list[dict[str, Any]] = []
        self.last_save_time = time.monotonic()
        try:
            with self.stop_signals:
                while self.epoch < config.epochs:
                    history.append(self._run_epoch(metrics))
                    requested = self.stop_signals.requested is not None  # e.g. during validation
                    if self.epoch < config.epochs and distributed.any_rank(requested)[0]:
                        self._stop()
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            self.progress.close()
            metrics.close()
        return TrainResult(output=self.output, checkpoint=self.folder.last, history=history)

    def _run_epoch(self, metrics: MetricsWriter) -> dict[str, Any]:
        """Train the rest of the epoch, validate, evaluate, write epoch_N.pt; the epoch's summary."""
        config = self.config
        train_summary = self._train_epoch(metrics)
        self.epoch += 1
        self.steps_in_epoch = 0
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
        self._save(self.folder.epoch_file(self.epoch))
        if self.is_main:
            log.info("%s", _format_epoch(summary))
        return summary


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


def _format_epoch(summary: dict[str, Any]) -> str:
    parts = [f"epoch {summary['epoch']}"]
    for split in ("train", "val"):
        if split in summary and summary[split]:
            parts.append(f"{split} {terms_text(summary[split])}")
    if "zeroshot" in summary:
        parts.append(f"zero-shot top-1 {summary['zeroshot']['top1']:.4f}")
    return " | ".join(parts)
