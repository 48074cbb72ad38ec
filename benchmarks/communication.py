"""Bytes moved between processes per training step by the cyclic regularizers: cyclip's all-reduce of
three d x d matrices against the all-gather of image and text features in the paper's released code.

Cost model (float32 = 4 bytes; W processes; global batch N; embedding dim d; ring collectives, as NCCL
and gloo run large messages):
    all-reduce of a B-byte tensor        each rank receives (and sends) 2 (W-1)/W * B bytes
    all-gather into a B-byte result      each rank receives (W-1)/W * B bytes
    reduce-scatter of a B-byte input     each rank receives (W-1)/W * B bytes
Totals over all ranks are W times the per-rank numbers.

    ours, regularizers:  one all-reduce of G_D, G_P, K (3 d^2 numbers)   2 (W-1)/W * 12 d^2 bytes per rank,
                         whatever N; their backward communicates nothing.
    paper, regularizers: dist.all_gather of the N x d image and text features, from which it builds the
                         N x N matrices                                     (W-1)/W * 8 N d bytes per rank.
So ours moves fewer bytes whenever N > 3d, by the factor N / (3d).

The contrastive term needs the gathered features in both codes, so in the paper's code the regularizers
reuse that gather. For the whole objective: the paper gathers without gradient (each rank computes the
full N x N loss; no backward communication), while cyclip gathers with gradient (each rank computes its
own rows) and reduce-scatters the feature gradients in backward, then adds the regularizers' all-reduce:
    whole objective per rank: paper (W-1)/W * 8 N d;  ours 2 (W-1)/W * (8 N d + 12 d^2 + 4)  (+4: the loss mean)
All of it is small next to DDP's all-reduce of the parameter gradients (4 bytes x ~150 M for ViT-B/32).

The table is the model; the measured part runs one real `cyclip.losses.cyclip_loss` forward + backward and
the paper's gather + N x N regularizers in 2 gloo processes and records every tensor handed to a
collective (a TorchDispatchMode sees the c10d ops, backward included), to check the model's sizes.

    python benchmarks/communication.py [--world-size 8] [--batches 4096 ... 65536] [--dims 512 1024]
"""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from cyclip.losses import cyclip_loss

FLOAT_BYTES = 4
MB = 1e6


# --- the cost model ---------------------------------------------------------------------------------------------


def all_reduce_bytes(message: float, world: int) -> float:
    return 2 * (world - 1) / world * message


def gathered_bytes(result: float, world: int) -> float:
    """Per rank, for an all-gather into `result` bytes or a reduce-scatter of `result` bytes."""
    return (world - 1) / world * result


def ours_regularizers(batch: int, dim: int, world: int) -> float:
    return all_reduce_bytes(3 * dim * dim * FLOAT_BYTES, world)


def paper_regularizers(batch: int, dim: int, world: int) -> float:
    return gathered_bytes(2 * batch * dim * FLOAT_BYTES, world)


def ours_objective(batch: int, dim: int, world: int) -> float:
    features = 2 * batch * dim * FLOAT_BYTES
    return 2 * gathered_bytes(features, world) + ours_regularizers(batch, dim, world) + all_reduce_bytes(4, world)


def paper_objective(batch: int, dim: int, world: int) -> float:
    return paper_regularizers(batch, dim, world)


def print_table(batches: list[int], dims: list[int], world: int) -> None:
    print(f"Bytes received per training step, float32, W = {world} processes, ring collectives (MB = 1e6 bytes)")
    print(f"  ours:  all-reduce of 3 d^2 numbers: 2(W-1)/W * 12 d^2 = {2 * (world - 1) / world * 12:g} d^2 bytes")
    print(
        f"  paper: all-gather of N x d image and text features: (W-1)/W * 8 N d = {(world - 1) / world * 8:g} N d bytes"
    )
    print()
    header = (
        f"{'N':>6} {'d':>5} | {'regularizers, per rank':^31} | {'all ranks':^21} | {'whole objective, per rank':^21}"
    )
    print(header)
    print(
        f"{'':>6} {'':>5} | {'ours MB':>9} {'paper MB':>10} {'paper/ours':>10} | {'ours MB':>10} {'paper MB':>10} | "
        f"{'ours MB':>10} {'paper MB':>10}"
    )
    print("-" * len(header))
    for dim in dims:
        for batch in batches:
            ours, paper = ours_regularizers(batch, dim, world), paper_regularizers(batch, dim, world)
            print(
                f"{batch:>6} {dim:>5} | {ours / MB:>9.2f} {paper / MB:>10.2f} {paper / ours:>10.2f} | "
                f"{world * ours / MB:>10.2f} {world * paper / MB:>10.2f} | "
                f"{ours_objective(batch, dim, world) / MB:>10.2f} {paper_objective(batch, dim, world) / MB:>10.2f}"
            )
    crossover = ", ".join(f"N > {3 * dim} for d = {dim}" for dim in dims)
    print(f"ours moves fewer bytes for the regularizers when N > 3d ({crossover}).")
    print("The paper's regularizers reuse the contrastive gather, so over the whole objective the paper moves less:")
    print("cyclip also reduce-scatters the feature gradients (each rank computes its own rows of the loss exactly")
    print("instead of the full N x N loss on every rank).")


# --- the measurement --------------------------------------------------------------------------------------------


@dataclass
class Collective:
    code: str  # "ours" or "paper"
    phase: str  # "forward" or "backward"
    op: str
    shapes: list[tuple[int, ...]]
    message: int  # bytes of the tensor the model prices: all-reduce input, gather result, reduce-scatter input
    received: float  # per rank under the ring model


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


class CollectiveLog(TorchDispatchMode):
    """Records every c10d collective dispatched while active, with the size its cost model prices."""

    def __init__(self, world: int) -> None:
        super().__init__()
        self.world = world
        self.code, self.phase = "", ""
        self.calls: list[Collective] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name()
        if name.startswith("c10d::"):
            op = name.removeprefix("c10d::")
            if "allreduce" in op:
                priced = _tensors(args[0])
                received = all_reduce_bytes(sum(t.numel() * t.element_size() for t in priced), self.world)
            elif "allgather" in op:
                priced = _tensors(args[0])  # the gathered result
                received = gathered_bytes(sum(t.numel() * t.element_size() for t in priced), self.world)
            elif "reduce_scatter" in op:
                priced = _tensors(args[1])  # the full-size input
                received = gathered_bytes(sum(t.numel() * t.element_size() for t in priced), self.world)
            else:
                raise RuntimeError(f"no cost model for collective {name}")
            message = sum(t.numel() * t.element_size() for t in priced)
            shapes = [tuple(t.shape) for t in priced]
            self.calls.append(Collective(self.code, self.phase, op, shapes, message, received))
        return func(*args, **(kwargs or {}))


def paper_style_regularizers(images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code's way: gather features without gradient, put the local ones back, N x N matrices."""
    rank, world = dist.get_rank(), dist.get_world_size()
    gathered_images = [torch.zeros_like(images) for _ in range(world)]
    gathered_texts = [torch.zeros_like(texts) for _ in range(world)]
    dist.all_gather(gathered_images, images)
    dist.all_gather(gathered_texts, texts)
    all_images = torch.cat(gathered_images[:rank] + [images] + gathered_images[rank + 1 :])
    all_texts = torch.cat(gathered_texts[:rank] + [texts] + gathered_texts[rank + 1 :])
    batch = all_images.shape[0]
    inmodal = (all_images @ all_images.T - all_texts @ all_texts.T).square().sum() / batch
    crossmodal = (all_images @ all_texts.T - all_texts @ all_images.T).square().sum() / batch
    return inmodal, crossmodal


def measure_rank(rank: int, world: int, port: int, batch: int, dim: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        generator = torch.Generator().manual_seed(0)  # the same global batch on every rank; each takes its rows
        all_images = F.normalize(torch.randn(batch, dim, generator=generator), dim=1)
        all_texts = F.normalize(all_images + 0.5 * torch.randn(batch, dim, generator=generator), dim=1)
        rows = slice(rank * batch // world, (rank + 1) * batch // world)
        log = CollectiveLog(world)
        values = {}
        for code in ("ours", "paper"):
            images = all_images[rows].clone().requires_grad_()
            texts = all_texts[rows].clone().requires_grad_()
            with log:
                log.code, log.phase = code, "forward"
                if code == "ours":
                    # The dense contrastive path, the one the cost model prices (the tiled one gathers only
                    # the texts and all-reduces 2 N column statistics instead of gathering both modalities).
                    output = cyclip_loss(images, texts, torch.tensor(2.0), 0.25, 0.25, chunk_size=None)
                    inmodal, crossmodal, total = output.inmodal_cyclic, output.crossmodal_cyclic, output.total
                else:
                    inmodal, crossmodal = paper_style_regularizers(images, texts)
                    total = 0.25 * inmodal + 0.25 * crossmodal
                log.phase = "backward"
                total.backward()
            values[code] = (inmodal.item(), crossmodal.item())
        if rank == 0:
            results.put((log.calls, values))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure(batch: int, dim: int, world: int = 2) -> None:
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    mp.spawn(measure_rank, args=(world, free_port(), batch, dim, results), nprocs=world)
    calls, values = results.get()
    print()
    print(
        f"Measured: one forward + backward in {world} gloo processes, global N = {batch}, d = {dim}; every tensor "
        "rank 0 handed to a collective"
    )
    print(f"{'code':<6} {'phase':<9} {'collective':<22} {'tensors':<16} {'bytes':>8} {'received/rank':>14}  serves")
    for call in calls:
        shapes = " + ".join("x".join(map(str, shape)) or "scalar" for shape in call.shapes)
        if call.code == "paper":
            serves = "features for the N x N regularizers (and contrastive term)"
        elif "allreduce" in call.op and call.shapes == [(3, dim, dim)]:
            serves = "regularizers (G_D, G_P, K)"
        else:
            serves = "contrastive term"
        print(
            f"{call.code:<6} {call.phase:<9} {call.op:<22} {shapes:<16} {call.message:>8} {call.received:>14.1f}  "
            f"{serves}"
        )
    ours = sum(c.received for c in calls if c.code == "ours" and "allreduce" in c.op and c.shapes == [(3, dim, dim)])
    paper = sum(c.received for c in calls if c.code == "paper")
    whole = sum(c.received for c in calls if c.code == "ours")
    for label, measured, model in (
        ("ours, regularizers", ours, ours_regularizers(batch, dim, world)),
        ("paper, regularizers", paper, paper_regularizers(batch, dim, world)),
        ("ours, whole objective", whole, ours_objective(batch, dim, world)),
    ):
        verdict = "matches the model" if measured == model else "DIFFERS from the model"
        print(f"{label:<22} measured {measured:>10.1f} bytes/rank, model {model:>10.1f}: {verdict}")
    (our_in, our_cross), (paper_in, paper_cross) = values["ours"], values["paper"]
    print(
        f"same regularizer values both ways: in-modal {our_in:.6f} vs {paper_in:.6f}, "
        f"cross-modal {our_cross:.6f} vs {paper_cross:.6f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-size", type=int, default=8, help="processes for the table (default 8)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    parser.add_argument("--dims", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--measure-batch", type=int, default=256, help="global batch of the 2-process check")
    parser.add_argument("--measure-dim", type=int, default=32, help="embedding dim of the 2-process check")
    parser.add_argument("--no-measure", action="store_true", help="print the table only")
    args = parser.parse_args()
    if args.world_size < 2:
        parser.error("--world-size must be at least 2: one process communicates nothing")
    if args.measure_batch % 2:
        parser.error("--measure-batch must be even: it is split over 2 processes")
    print_table(args.batches, args.dims, args.world_size)
    if not args.no_measure:
        measure(args.measure_batch, args.measure_dim)


if __name__ == "__main__":
    main()
