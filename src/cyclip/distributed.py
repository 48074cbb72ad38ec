"""torch.distributed: process-group set-up under torchrun, who we are, and the collectives the objective needs.

Every function is a no-op (or identity) in a single process, so the objective reads the same
whether or not a process group exists.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist

# torch >= 2.14 renamed the tensor collectives; keep older releases working.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


_acting_alone = False
# The gloo group for the small host-side messages of the training loop (see `any_rank`); None: the default one.
_control_group: dist.ProcessGroup | None = None
_control_made = False


def is_distributed() -> bool:
    """True when a process group with more than one rank is initialised (and not inside `local_only`)."""
    return not _acting_alone and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextlib.contextmanager
def local_only() -> Iterator[None]:
    """Within the block this process acts alone: world size 1, rank 0, no collectives in the objective.

    For work that ranks split unevenly (validation batches), where a collective per batch would hang.
    """
    global _acting_alone
    previous, _acting_alone = _acting_alone, True
    try:
        yield
    finally:
        _acting_alone = previous


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def launched_by_torchrun() -> bool:
    """True inside a process that torchrun (or SLURM's srun with the same variables) started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside a DistributedDataParallel wrapper (its parameters, its state dict), or `model` itself."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def init_process_group(device: torch.device, timeout_minutes: float = 30.0) -> None:
    """Join the job's process group: NCCL on CUDA, gloo on CPU, rendezvous from torchrun's environment.

    The timeout bounds how long a rank waits in a collective for a rank that died, so a job never hangs
    for good; torchrun itself stops every rank as soon as one exits with an error.
    """
    if dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        timeout=datetime.timedelta(minutes=timeout_minutes),
        device_id=device if device.type == "cuda" else None,
    )


def destroy_process_group() -> None:
    global _control_group, _control_made
    _control_group, _control_made = None, False
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over all ranks in place (not differentiable) and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def _control() -> dist.ProcessGroup | None:
    """A gloo group over all ranks (the default group when that is gloo already), made on first use.

    Decisions the loop takes on the host (stop? save now?) travel through it as CPU tensors, so that
    agreeing on them never waits for the GPU. Every rank must make its first call at the same point.
    """
    global _control_group, _control_made
    if not _control_made:
        if dist.get_backend() != "gloo":
            group = dist.new_group(backend="gloo")
            _control_group = group if isinstance(group, dist.ProcessGroup) else None
        _control_made = True
    return _control_group


def any_rank(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true when it is true on at least one rank; one all-reduce of a few CPU integers."""
    if not is_distributed():
        return flags
    values = torch.tensor([int(flag) for flag in flags], dtype=torch.int32)
    dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control())
    return tuple(bool(value) for value in values.tolist())


def gather_to_first(value: object) -> list[object] | None:
    """Every rank's `value` (plain data and CPU tensors), in rank order, on rank 0; None on the others."""
    if not is_distributed():
        return [value]
    gathered: list[object] | None = [None] * world_size() if rank() == 0 else None
    dist.gather_object(value, gathered, dst=0, group=_control())
    return gathered


def all_reduce_logsumexp(tensor: torch.Tensor) -> torch.Tensor:
    """log of the sum over ranks of exp(tensor), elementwise and stable (not differentiable).

    Merges per-rank partial log-sum-exps into global ones; entries that are -inf on every rank stay -inf.
    """
    if not is_distributed():
        return tensor
    peak = tensor.clone()
    dist.all_reduce(peak, op=dist.ReduceOp.MAX)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = (tensor - peak).exp()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total.log() + peak


def all_gather(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `local` (equal shapes) along dim 0, without a graph."""
    if not is_distributed():
        return local
    local = local.contiguous()
    gathered = local.new_empty((world_size() * local.shape[0], *local.shape[1:]))
    _all_gather_single(gathered, local)
    return gathered


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for the local rows."""

    @staticmethod
    def forward(ctx, local: torch.Tensor) -> torch.Tensor:
        return all_gather(local)

    @staticmethod
    def backward(ctx, grad_gathered: torch.Tensor) -> torch.Tensor:
        grad_gathered = grad_gathered.contiguous()
        rows = grad_gathered.shape[0] // world_size()
        grad_local = grad_gathered.new_empty((rows, *grad_gathered.shape[1:]))
        _reduce_scatter_single(grad_local, grad_gathered, op=dist.ReduceOp.SUM)
        return grad_local


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `local` (equal shapes) along dim 0, keeping the graph.

    The gradient reaching `local` is the sum over ranks of each rank's gradient for these rows,
    i.e. world_size x the single-process gradient when every rank computes its share of a mean.
    """
    return _GatherWithGrad.apply(local) if is_distributed() else local


def global_mean(local_value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over ranks as value, with the gradient of the local term.

    Lets every rank report the global-batch loss while backpropagating only its own share (the
    other shares reach this rank's features through `gather_with_grad`).
    """
    if not is_distributed():
        return local_value
    mean = all_reduce_sum_(local_value.detach().clone()) / world_size()
    return local_value + (mean - local_value.detach())
